package fsstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/storetest"
)

func newStore(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) remote.Store { return newStore(t, t.TempDir()) }, storetest.Options{})
}

// TestConformanceSharedRoot runs the suite with every store on its own
// root but through two Store values: the second one opened on the root
// checks that state lives on disk, not in the Store value.
func TestTwoStoresOneRoot(t *testing.T) {
	dir := t.TempDir()
	a, b := newStore(t, dir), newStore(t, dir)
	ctx := t.Context()
	r1, err := a.Put(ctx, "k/x", strings.NewReader("one"), remote.PutOptions{IfNoneMatch: true, Size: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put(ctx, "k/x", strings.NewReader("two"), remote.PutOptions{IfNoneMatch: true, Size: 3}); !errors.Is(err, remote.ErrPrecondition) {
		t.Fatalf("second store's create over an existing key: %v", err)
	}
	h, err := b.Head(ctx, "k/x")
	if err != nil || h.ETag != r1.ETag {
		t.Fatalf("Head via the second store = %+v, %v; want ETag %q", h, err, r1.ETag)
	}
	if _, err := b.Put(ctx, "k/x", strings.NewReader("two"), remote.PutOptions{IfMatch: r1.ETag, Size: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Put(ctx, "k/x", strings.NewReader("three"), remote.PutOptions{IfMatch: r1.ETag, Size: 5}); !errors.Is(err, remote.ErrPrecondition) {
		t.Fatalf("stale IfMatch via the first store: %v", err)
	}
}

// TestETagsNeverRepeat replaces one key many times with same-size content,
// from two Store values on one root (as two processes would), deleting it
// now and then so that inode numbers are freed and reused: every ETag must
// be new, and the mtimes strictly increase.
func TestETagsNeverRepeat(t *testing.T) {
	dir := t.TempDir()
	stores := []*Store{newStore(t, dir), newStore(t, dir)}
	ctx := t.Context()
	seen := map[string]int{}
	inodes := map[uint64]bool{}
	var last time.Time
	for i := range 150 {
		s := stores[i%2]
		if i%7 == 0 {
			if err := s.Delete(ctx, "e/k"); err != nil {
				t.Fatal(err)
			}
		}
		body := bytes.Repeat([]byte{byte(i)}, 100)
		res, err := s.Put(ctx, "e/k", bytes.NewReader(body), remote.PutOptions{Size: 100})
		if err != nil {
			t.Fatal(err)
		}
		if j, ok := seen[res.ETag]; ok {
			t.Fatalf("put %d got the ETag %q of put %d", i, res.ETag, j)
		}
		seen[res.ETag] = i
		fi, err := os.Stat(filepath.Join(dir, "e", "k"))
		if err != nil {
			t.Fatal(err)
		}
		ino, _ := inode(fi)
		inodes[ino] = true
		if !fi.ModTime().After(last) {
			t.Fatalf("put %d: mtime %v not after %v", i, fi.ModTime(), last)
		}
		last = fi.ModTime()
	}
	t.Logf("150 puts used %d distinct inodes", len(inodes))
}

// TestStampAfterClock: a stamp is one microsecond past the last one issued
// when the clock lags it (here: a last stamp in the future), so a clock
// that steps back cannot repeat an mtime.
func TestStampAfterClock(t *testing.T) {
	dir := t.TempDir()
	s := newStore(t, dir)
	future := time.Now().Add(24 * time.Hour).UnixMicro()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(future))
	if err := os.WriteFile(filepath.Join(dir, reserved, "lock"), b[:], 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := s.Put(t.Context(), "st/k", strings.NewReader("x"), remote.PutOptions{Size: 1}); err != nil {
			t.Fatal(err)
		}
		h, err := s.Head(t.Context(), "st/k")
		if err != nil {
			t.Fatal(err)
		}
		if want := future + int64(i) + 1; h.ModTime.UnixMicro() != want {
			t.Fatalf("put %d: mtime %d µs, want %d", i, h.ModTime.UnixMicro(), want)
		}
	}
}

// TestTempFilesInvisible: temp files, the reserved folder and stray names
// that cannot be keys never show up as objects.
func TestTempFilesInvisible(t *testing.T) {
	dir := t.TempDir()
	s := newStore(t, dir)
	ctx := t.Context()
	if _, err := s.Put(ctx, "v/real", strings.NewReader("r"), remote.PutOptions{Size: 1}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{filepath.Join(reserved, "tmp", "put-abc"), "stray file", "v/x#y", "v/.."} {
		os.WriteFile(filepath.Join(dir, name), []byte("junk"), 0o644)
	}
	var keys []string
	if err := s.List(ctx, "", func(info remote.ObjectInfo) error { keys = append(keys, info.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0] != "v/real" {
		t.Fatalf("List = %q; want [v/real]", keys)
	}
}

// TestSweep: Sweep removes temp files that no writer holds, and keeps the
// ones a writer (here: another open file description) has locked.
func TestSweep(t *testing.T) {
	dir := t.TempDir()
	s := newStore(t, dir)
	orphan := filepath.Join(s.tmp, "put-orphan")
	if err := os.WriteFile(orphan, []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	busy, name, err := s.createTemp() // a writer in progress
	if err != nil {
		t.Fatal(err)
	}
	n, err := s.Sweep(t.Context())
	if err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1 removed", n, err)
	}
	if _, err := os.Stat(orphan); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("orphan still there: %v", err)
	}
	if _, err := os.Stat(name); err != nil {
		t.Fatalf("Sweep removed a temp file in use: %v", err)
	}
	busy.Close()
	if n, err := s.Sweep(t.Context()); err != nil || n != 1 {
		t.Fatalf("Sweep after the writer let go = %d, %v; want 1", n, err)
	}
}

// TestSweptBeforeLock: a temp file swept between its creation and its
// writer's flock is detected (no links left), and the Put still succeeds.
func TestCreateTempAfterSweep(t *testing.T) {
	s := newStore(t, t.TempDir())
	f, name, err := s.createTemp()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if _, nlink := inode(fi); nlink != 1 {
		t.Fatalf("fresh temp file has %d links", nlink)
	}
	unlink(name) // what a sweep would do
	fi, err = f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if _, nlink := inode(fi); nlink != 0 {
		t.Fatalf("unlinked temp file reports %d links: createTemp's check would miss a sweep", nlink)
	}
}

// TestLockHonoursContext: a Put waiting for the tree lock, which another
// process holds (here: another open file description), gives up when its
// ctx ends, and stores nothing.
func TestLockHonoursContext(t *testing.T) {
	dir := t.TempDir()
	s := newStore(t, dir)
	other, err := os.OpenFile(filepath.Join(dir, reserved, "lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := flock(other); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err = s.Put(ctx, "lk/a", strings.NewReader("a"), remote.PutOptions{Size: 1})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Put while the lock is held elsewhere: %v; want DeadlineExceeded", err)
	}
	funlock(other)
	if _, err := s.Head(t.Context(), "lk/a"); !errors.Is(err, remote.ErrNotFound) {
		t.Fatalf("Head after the abandoned Put: %v", err)
	}
	if n, _ := os.ReadDir(s.tmp); len(n) != 0 {
		t.Fatalf("abandoned Put left %d temp files", len(n))
	}
	if _, err := s.Put(t.Context(), "lk/a", strings.NewReader("a"), remote.PutOptions{Size: 1, IfNoneMatch: true}); err != nil {
		t.Fatal(err)
	}
}

// TestKeyFolderConflict: a key cannot also be a folder of keys on a file
// system; such a Put fails with an error (not ErrPrecondition, which would
// claim the key exists) and changes nothing.
func TestKeyFolderConflict(t *testing.T) {
	s := newStore(t, t.TempDir())
	ctx := t.Context()
	if _, err := s.Put(ctx, "c/a/b", strings.NewReader("1"), remote.PutOptions{Size: 1}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		key  string
		opts remote.PutOptions
	}{
		{"c/a", remote.PutOptions{Size: 1}},
		{"c/a", remote.PutOptions{Size: 1, IfNoneMatch: true}},
		{"c/a/b/c", remote.PutOptions{Size: 1}},
		{"c/a/b/c/d", remote.PutOptions{Size: 1, IfNoneMatch: true}},
	} {
		_, err := s.Put(ctx, c.key, strings.NewReader("2"), c.opts)
		if err == nil || errors.Is(err, remote.ErrPrecondition) {
			t.Errorf("Put(%q, %+v) = %v; want a conflict error", c.key, c.opts, err)
		}
	}
	rc, _, err := s.Get(ctx, "c/a/b", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "1" {
		t.Fatalf("c/a/b = %q", b)
	}
	if n, _ := os.ReadDir(s.tmp); len(n) != 0 {
		t.Fatalf("failed puts left %d temp files", len(n))
	}
}

// TestShrunkFileIsAnError: a file truncated behind the store's back while
// a Get reads it ends in io.ErrUnexpectedEOF, never a clean short read.
func TestShrunkFileIsAnError(t *testing.T) {
	dir := t.TempDir()
	s := newStore(t, dir)
	ctx := t.Context()
	if _, err := s.Put(ctx, "sh/k", bytes.NewReader(make([]byte, 100_000)), remote.PutOptions{Size: 100_000}); err != nil {
		t.Fatal(err)
	}
	rc, _, err := s.Get(ctx, "sh/k", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := os.Truncate(filepath.Join(dir, "sh", "k"), 50_000); err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, rc)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("read of a shrunk file: %d bytes, %v; want io.ErrUnexpectedEOF", n, err)
	}
}

// TestNewRejectsFile: a root that is a file is an error, not a panic.
func TestNewRejectsFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if s, err := New(p); err == nil {
		s.Close()
		t.Fatal("New on a file succeeded")
	}
}

// TestDeletePrunesFolders: Delete removes the folders it empties, and
// only those.
func TestDeletePrunesFolders(t *testing.T) {
	dir := t.TempDir()
	s := newStore(t, dir)
	ctx := t.Context()
	for _, k := range []string{"p/a/b/c", "p/a/x"} {
		if _, err := s.Put(ctx, k, strings.NewReader("z"), remote.PutOptions{Size: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(ctx, "p/a/b/c"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "p", "a", "b")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("emptied folder p/a/b still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "p", "a", "x")); err != nil {
		t.Fatalf("sibling gone: %v", err)
	}
	if err := s.Delete(ctx, "p/a/x"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "p")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("emptied folder p still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, reserved, "lock")); err != nil {
		t.Fatalf("reserved folder touched: %v", err)
	}
}

// failReader fails the test if a Put reads its body.
type failReader struct{ t *testing.T }

func (r failReader) Read([]byte) (int, error) {
	r.t.Error("the body of a Put whose precondition fails was read")
	return 0, io.ErrUnexpectedEOF
}

// TestPreconditionBeforeBody: a conditional Put that must fail (the key
// exists for IfNoneMatch; it is absent or has another ETag for IfMatch)
// fails with ErrPrecondition before writing its body, leaves no temp
// file, and leaves the object as it was.
func TestPreconditionBeforeBody(t *testing.T) {
	dir := t.TempDir()
	s := newStore(t, dir)
	ctx := t.Context()
	r1, err := s.Put(ctx, "a/b", strings.NewReader("one"), remote.PutOptions{IfNoneMatch: true, Size: 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		key  string
		opts remote.PutOptions
	}{
		{"a/b", remote.PutOptions{IfNoneMatch: true, Size: 3}},
		{"a/b", remote.PutOptions{IfMatch: `"not-the-etag"`, Size: 3}},
		{"a/absent", remote.PutOptions{IfMatch: r1.ETag, Size: 3}},
	} {
		if _, err := s.Put(ctx, c.key, failReader{t}, c.opts); !errors.Is(err, remote.ErrPrecondition) {
			t.Fatalf("put %s %+v: %v, want ErrPrecondition", c.key, c.opts, err)
		}
	}
	tmps, err := os.ReadDir(filepath.Join(dir, reserved, "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	if len(tmps) != 0 {
		t.Fatalf("temp files left: %v", tmps)
	}
	rc, info, err := s.Get(ctx, "a/b", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "one" || info.ETag != r1.ETag {
		t.Fatalf("object now %q %s, want %q %s", b, info.ETag, "one", r1.ETag)
	}
	if _, err := os.Stat(filepath.Join(dir, "a", "absent")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a/absent: %v", err)
	}
	// And the same Put succeeds when its condition holds.
	if _, err := s.Put(ctx, "a/b", strings.NewReader("two"), remote.PutOptions{IfMatch: r1.ETag, Size: 3}); err != nil {
		t.Fatal(err)
	}
}
