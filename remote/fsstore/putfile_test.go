package fsstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/storetest"
	"github.com/cespare/xxhash/v2"
)

// filePuts is a Store whose every Put goes through PutFile: the body is
// written to a file next to the store (same file system), which PutFile
// then takes.
type filePuts struct {
	*Store
	dir string
}

func (s filePuts) Put(ctx context.Context, key string, r io.Reader, opts remote.PutOptions) (remote.PutResult, error) {
	f, err := os.CreateTemp(s.dir, "body-")
	if err != nil {
		return remote.PutResult{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if r != nil {
		if _, err := io.Copy(f, r); err != nil {
			return remote.PutResult{}, err
		}
	}
	return s.PutFile(ctx, key, f, opts)
}

// The store contract holds for puts made by PutFile.
func TestConformancePutFile(t *testing.T) {
	storetest.Run(t, func(t *testing.T) remote.Store {
		dir := t.TempDir()
		return filePuts{Store: newStore(t, filepath.Join(dir, "root")), dir: dir}
	}, storetest.Options{})
}

func writeFile(t *testing.T, path string, b []byte) *os.File {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	ai, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	bi, err := os.Stat(b)
	if err != nil {
		t.Fatal(err)
	}
	return os.SameFile(ai, bi)
}

func tempEmpty(t *testing.T, s *Store) {
	t.Helper()
	des, err := os.ReadDir(s.tmp)
	if err != nil {
		t.Fatal(err)
	}
	if len(des) != 0 {
		t.Fatalf("temp folder holds %d files after the put", len(des))
	}
}

func nlink(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	_, n := inode(fi)
	return n
}

// PutFile on the store's file system makes the file itself the object (no
// copy), reports the hash of the bytes it holds, and leaves no temp file.
// A file that already has a second name (given to PutFile before) is
// copied: its mtime is the first object's ETag, which must not change.
func TestPutFileLinks(t *testing.T) {
	dir := t.TempDir()
	s := newStore(t, filepath.Join(dir, "root"))
	ctx := t.Context()
	body := bytes.Repeat([]byte("staged object "), 50000) // 700 KB: several chunks
	src := filepath.Join(dir, "staging")
	f := writeFile(t, src, body)

	res, err := s.PutFile(ctx, "db/obj/a", f, remote.PutOptions{Size: int64(len(body))})
	if err != nil {
		t.Fatal(err)
	}
	if res.Size != int64(len(body)) || res.XXH64 != xxhash.Sum64(body) {
		t.Fatalf("result %+v, want %d bytes with hash %016x", res, len(body), xxhash.Sum64(body))
	}
	if !sameFile(t, src, s.path("db/obj/a")) {
		t.Fatal("the object is a copy, not the file")
	}
	h, err := s.Head(ctx, "db/obj/a")
	if err != nil || h.ETag != res.ETag || h.Size != res.Size {
		t.Fatalf("Head %+v, %v; Put said %+v", h, err, res)
	}
	tempEmpty(t, s)

	// Given again (two names now): copied, and the first object keeps its
	// ETag.
	res2, err := s.PutFile(ctx, "db/obj/b", f, remote.PutOptions{Size: -1})
	if err != nil {
		t.Fatal(err)
	}
	if sameFile(t, src, s.path("db/obj/b")) {
		t.Fatal("a file with two names was linked again")
	}
	if res2.XXH64 != res.XXH64 || res2.ETag == res.ETag {
		t.Fatalf("second put %+v, first %+v", res2, res)
	}
	if h2, err := s.Head(ctx, "db/obj/a"); err != nil || h2.ETag != res.ETag {
		t.Fatalf("first object's ETag %q -> %q (%v)", res.ETag, h2.ETag, err)
	}
	// The caller removes its name: the object stays.
	f.Close()
	if err := os.Remove(src); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"db/obj/a", "db/obj/b"} {
		rc, _, err := s.Get(ctx, k, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("%s: %d bytes, %v", k, len(got), err)
		}
	}
	tempEmpty(t, s)
}

// A PutFile that fails (condition, size) stores nothing, leaves the file
// as it was (one name) and no temp file.
func TestPutFileFailuresStoreNothing(t *testing.T) {
	dir := t.TempDir()
	s := newStore(t, filepath.Join(dir, "root"))
	ctx := t.Context()
	if _, err := s.Put(ctx, "db/log/1", bytes.NewReader([]byte("first")), remote.PutOptions{Size: 5}); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "staging")
	f := writeFile(t, src, []byte("second"))

	if _, err := s.PutFile(ctx, "db/log/1", f, remote.PutOptions{IfNoneMatch: true, Size: 6}); !errors.Is(err, remote.ErrPrecondition) {
		t.Fatalf("create over an existing key: %v", err)
	}
	if _, err := s.PutFile(ctx, "db/log/1", f, remote.PutOptions{IfMatch: "nope", Size: 6}); !errors.Is(err, remote.ErrPrecondition) {
		t.Fatalf("stale IfMatch: %v", err)
	}
	if _, err := s.PutFile(ctx, "db/log/2", f, remote.PutOptions{Size: 7}); err == nil {
		t.Fatal("a file of 6 bytes declared 7 was stored")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.PutFile(cctx, "db/log/3", f, remote.PutOptions{Size: 6}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	rc, _, err := s.Get(ctx, "db/log/1", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if string(got) != "first" {
		t.Fatalf("key holds %q", got)
	}
	for _, k := range []string{"db/log/2", "db/log/3"} {
		if _, err := s.Head(ctx, k); !errors.Is(err, remote.ErrNotFound) {
			t.Fatalf("%s after a failed put: %v", k, err)
		}
	}
	if n := nlink(t, src); n != 1 {
		t.Fatalf("the file has %d names after failed puts", n)
	}
	tempEmpty(t, s)
}

// The temp name a PutFile links is flock'ed from its first moment: a
// Sweep (of any process) meanwhile leaves it alone, and removes it once
// the put is gone; the caller's file is never touched.
func TestPutFileTempSurvivesSweep(t *testing.T) {
	dir := t.TempDir()
	s := newStore(t, filepath.Join(dir, "root"))
	src := filepath.Join(dir, "staging")
	f := writeFile(t, src, []byte("content"))
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	g, tmp, ok := s.linkTemp(f, fi)
	if !ok {
		t.Fatal("linkTemp refused a file on the store's file system")
	}
	other := newStore(t, s.root) // another Store value: as another process would
	if n, err := other.Sweep(t.Context()); err != nil || n != 0 {
		t.Fatalf("sweep during the put removed %d (%v)", n, err)
	}
	if !sameFile(t, src, tmp) {
		t.Fatal("the temp name is gone or not the file")
	}
	g.Close() // the writer died
	if n, err := other.Sweep(t.Context()); err != nil || n != 1 {
		t.Fatalf("sweep after the writer died removed %d (%v)", n, err)
	}
	if b, err := os.ReadFile(src); err != nil || string(b) != "content" || nlink(t, src) != 1 {
		t.Fatalf("the caller's file: %q, %v", b, err)
	}
}

// A file on another file system cannot be linked: PutFile copies it.
func TestPutFileOtherFileSystem(t *testing.T) {
	dir := t.TempDir()
	s := newStore(t, filepath.Join(dir, "root"))
	var other string
	for _, d := range []string{"/dev/shm", os.TempDir()} {
		var a, b syscall.Stat_t
		if syscall.Stat(d, &a) == nil && syscall.Stat(s.root, &b) == nil && a.Dev != b.Dev {
			other = d
			break
		}
	}
	if other == "" {
		t.Skip("no second file system to stage on")
	}
	f, err := os.CreateTemp(other, "bop-putfile-")
	if err != nil {
		t.Skip(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if _, err := f.WriteString("elsewhere"); err != nil {
		t.Fatal(err)
	}
	res, err := s.PutFile(t.Context(), "db/obj/x", f, remote.PutOptions{Size: 9})
	if err != nil {
		t.Fatal(err)
	}
	if res.XXH64 != xxhash.Sum64String("elsewhere") || sameFile(t, f.Name(), s.path("db/obj/x")) {
		t.Fatalf("result %+v", res)
	}
	tempEmpty(t, s)
}
