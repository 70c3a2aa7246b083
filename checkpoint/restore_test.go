package checkpoint

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/bopstore/bop/delta"
	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fault"
)

// deltaHeavy publishes an adopted image and then many small deltas over
// it, keeping the model at every boundary.
func deltaHeavy(t *testing.T, store remote.Store) (*synth, []uint64) {
	s := newSynth(t, store, synthOpts{chunkPages: 8, seed: 60, keep: true})
	p := s.publisher(nil)
	s.commit(70, nil, true)
	boundaries := []uint64{publishNow(t, p)}
	for range 15 {
		var pages []uint32
		for range 6 {
			pages = append(pages, 2+uint32(s.rng.IntN(69)))
		}
		s.commit(70, pages, false)
		if s.rng.IntN(3) == 0 {
			s.commit(70, pages[:2], false)
		}
		boundaries = append(boundaries, publishNow(t, p))
	}
	return s, boundaries
}

// restoreSmallReads restores boundary txid with 3 workers reading two
// frames at a time (objects cut into many pieces) and checks the file
// against the model's bytes at txid.
func restoreSmallReads(t *testing.T, s *synth, txid uint64, label string) RestoreResult {
	t.Helper()
	path := filepath.Join(t.TempDir(), "r.db")
	res, err := Restore(context.Background(), RestoreOptions{Store: s.store, Catalog: s.cat, Txid: txid, Path: path,
		Parallel: 3, MaxRead: 2 * 4096})
	must(t, err)
	got, _ := os.ReadFile(path)
	sameBytes(t, label, got, s.byTxid[txid], 4096)
	return res
}

// Restore with tiny buffers: reads of one frame (MaxRead of 2 pages),
// one write per page, objects cut into pieces; every boundary still
// restores byte for byte, with fewer GETs than pages.
func TestRestoreSmallBuffers(t *testing.T) {
	s, boundaries := deltaHeavy(t, fsStore(t))
	for _, b := range boundaries {
		res := restoreSmallReads(t, s, b, "small buffers")
		if res.Gets == 0 || res.GetBytes < res.Size {
			t.Fatalf("boundary %d: %d GETs, %d bytes for a %d-byte file", b, res.Gets, res.GetBytes, res.Size)
		}
	}
	// Default buffers: far fewer GETs than pages (coalesced reads).
	_, res := restoreBytes(t, s.store, s.cat, 0)
	if res.Gets >= int64(res.DBPages)/2 {
		t.Fatalf("%d GETs for %d pages", res.Gets, res.DBPages)
	}
}

// Every frame is verified: a flipped byte in any object fails the restore
// with a corruption error, and no file is left at the path.
func TestRestoreRefusesCorruptObjects(t *testing.T) {
	store := fsStore(t)
	s, _ := deltaHeavy(t, store)
	ctx := context.Background()
	refused := 0
	for i, o := range s.cat.Snapshot().Objects() {
		rc, _, err := store.Get(ctx, o.Key, 0, -1)
		must(t, err)
		orig, err := io.ReadAll(rc)
		rc.Close()
		must(t, err)
		bad := bytes.Clone(orig)
		// A byte inside the frame of the object's first visible page.
		pos := delta.FrameOffset(4096, 0) + delta.FrameHeaderSize + int64(100+i)
		bad[pos] ^= 0x40
		_, err = store.Put(ctx, o.Key, bytes.NewReader(bad), remote.PutOptions{Size: int64(len(bad))})
		must(t, err)
		path := filepath.Join(t.TempDir(), "r.db")
		_, err = Restore(ctx, RestoreOptions{Store: store, Catalog: s.cat, Path: path})
		if !errors.Is(err, delta.ErrCorrupt) {
			// A frame the boundary does not use may be flipped: then
			// the restore succeeds, but only if the bytes are right.
			if err != nil {
				t.Fatalf("object %s: %v", o.Key, err)
			}
			got, _ := os.ReadFile(path)
			sameBytes(t, "unused frame flipped", got, s.model, 4096)
		} else if _, serr := os.Stat(path); serr == nil {
			t.Fatalf("a failed restore left %s", path)
		} else {
			refused++
		}
		_, err = store.Put(ctx, o.Key, bytes.NewReader(orig), remote.PutOptions{Size: int64(len(orig))})
		must(t, err)
	}
	if refused == 0 {
		t.Fatal("no corrupted object was detected")
	}
	// A store that truncates bodies: an error, never a short file.
	fs := fault.New(store, fault.Config{})
	must(t, fs.Inject(fault.Fault{Kind: fault.TruncateEOF, Op: fault.OpGet, Keep: 5000, Sticky: true}))
	path := filepath.Join(t.TempDir(), "r.db")
	if _, err := Restore(ctx, RestoreOptions{Store: fs, Catalog: s.cat, Path: path}); err == nil {
		t.Fatal("restore through truncated reads succeeded")
	}
	if _, err := os.Stat(path); err == nil {
		t.Fatal("a failed restore left its file")
	}
}

func TestRestoreRefuses(t *testing.T) {
	s, _ := deltaHeavy(t, fsStore(t))
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "exists.db")
	must(t, os.WriteFile(path, []byte("x"), 0o644))
	if _, err := Restore(ctx, RestoreOptions{Store: s.store, Catalog: s.cat, Path: path}); err == nil {
		t.Fatal("restore over an existing file without Overwrite")
	}
	if _, err := Restore(ctx, RestoreOptions{Store: s.store, Catalog: s.cat, Path: path, Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Restore(cctx, RestoreOptions{Store: s.store, Catalog: s.cat, Path: filepath.Join(t.TempDir(), "c.db")}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled restore: %v", err)
	}
	// Nothing published: a clear error.
	empty := newSynth(t, fsStore(t), synthOpts{})
	if _, err := Restore(ctx, RestoreOptions{Store: empty.store, Catalog: empty.cat, Path: filepath.Join(t.TempDir(), "e.db")}); !errors.Is(err, ErrNothingPublished) {
		t.Fatalf("restore of nothing: %v", err)
	}
	// Cold restore of a database the store does not hold.
	if _, err := Restore(ctx, RestoreOptions{Store: fsStore(t), Layout: testLayout, Path: filepath.Join(t.TempDir(), "n.db")}); err == nil {
		t.Fatal("cold restore from an empty store")
	}
	_ = manifest.ErrCorrupt
}

// An earlier database's WAL, shared-memory index or journal at the path
// would be applied to the restored file by the next SQLite to open it:
// without Overwrite the restore refuses them (even with no file at the
// path), with Overwrite it removes them, and the file restored is the
// boundary's.
func TestRestoreSidecars(t *testing.T) {
	s, boundaries := deltaHeavy(t, fsStore(t))
	ctx := context.Background()
	for _, side := range []string{"-wal", "-shm", "-journal"} {
		path := filepath.Join(t.TempDir(), "r.db")
		must(t, os.WriteFile(path+side, []byte("left by an earlier database"), 0o644))
		_, err := Restore(ctx, RestoreOptions{Store: s.store, Catalog: s.cat, Path: path})
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(path+side+" exists")) {
			t.Fatalf("restore beside a %s without Overwrite: %v", side, err)
		}
		must(t, os.WriteFile(path, []byte("an earlier database"), 0o644))
		b := boundaries[len(boundaries)-1]
		if _, err := Restore(ctx, RestoreOptions{Store: s.store, Catalog: s.cat, Path: path, Txid: b, Overwrite: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(path + side); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s still there after an overwriting restore (%v)", side, err)
		}
		got, _ := os.ReadFile(path)
		sameBytes(t, "overwritten "+side, got, s.byTxid[b], 4096)
		// Readable by others, as SQLite or cp would create it.
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
			t.Fatalf("restored file mode %v (%v), want 0644", fi.Mode().Perm(), err)
		}
	}
}
