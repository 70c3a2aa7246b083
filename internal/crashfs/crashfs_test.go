package crashfs

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

func TestRestoreModes(t *testing.T) {
	for _, mode := range []Mode{LoseUnsynced, KeepUnsynced, RandomSubset} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			tr := New()
			fsys := FS{T: tr}
			path := filepath.Join(dir, "f")
			f, err := fsys.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			synced := bytes.Repeat([]byte{1}, 3*pieceSize)
			f.WriteAt(synced, 0)
			f.Sync()
			later := bytes.Repeat([]byte{2}, 4*pieceSize)
			f.WriteAt(later, pieceSize) // overwrites 1..3, extends by one piece
			f.Truncate(4 * pieceSize)
			tr.Crash()
			if _, err := f.WriteAt([]byte{9}, 0); err != ErrCrashed {
				t.Fatalf("write after crash: %v", err)
			}
			if err := f.Sync(); err != ErrCrashed {
				t.Fatalf("sync after crash: %v", err)
			}
			f.Close()
			rep, err := tr.Restore(mode, rand.New(rand.NewPCG(1, 2)))
			if err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(path)
			switch mode {
			case LoseUnsynced:
				if !bytes.Equal(got, synced) {
					t.Fatalf("lose: got %d bytes", len(got))
				}
			case KeepUnsynced:
				want := append(bytes.Repeat([]byte{1}, pieceSize), bytes.Repeat([]byte{2}, 3*pieceSize)...)
				if !bytes.Equal(got, want) {
					t.Fatalf("keep: got %d bytes", len(got))
				}
			case RandomSubset:
				// Every piece is either its synced or its later content.
				for i := 0; i < len(got); i += pieceSize {
					v := got[i]
					if !bytes.Equal(got[i:min(i+pieceSize, len(got))], bytes.Repeat([]byte{v}, min(pieceSize, len(got)-i))) || v > 2 {
						t.Fatalf("random: piece %d mixed", i/pieceSize)
					}
				}
				if rep.OpsKept+rep.OpsLost+rep.OpsTorn != 2 {
					t.Fatalf("report %v", rep)
				}
			}
			// The machine is up again and the file is forgotten.
			if err := tr.Check(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRemoveIsDurable(t *testing.T) {
	dir := t.TempDir()
	tr := New()
	fsys := FS{T: tr}
	path := filepath.Join(dir, "f")
	f, _ := fsys.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	f.WriteAt([]byte("x"), 0)
	f.Sync()
	f.Close()
	if err := fsys.Remove(path); err != nil {
		t.Fatal(err)
	}
	tr.Crash()
	if _, err := tr.Restore(KeepUnsynced, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("removed file came back: %v", err)
	}
}

// TestFollowDir: in a followed directory a file's creation, a rename and a
// removal are durable only at SyncDir; the bytes follow the file through
// the rename; an unfollowed directory keeps the old model.
func TestFollowDir(t *testing.T) {
	for _, mode := range []Mode{LoseUnsynced, KeepUnsynced, RandomSubset} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			tr := New()
			tr.FollowDir(dir)
			fsys := FS{T: tr}
			meta, tmp, gone := filepath.Join(dir, "meta"), filepath.Join(dir, "meta.tmp"), filepath.Join(dir, "gone")
			for _, p := range []string{meta, gone} {
				if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			// The atomic replace: write, fsync, rename, no folder fsync.
			f, err := fsys.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt([]byte("new"), 0)
			f.Sync()
			f.Close()
			if err := fsys.Rename(tmp, meta); err != nil {
				t.Fatal(err)
			}
			if err := fsys.Remove(gone); err != nil {
				t.Fatal(err)
			}
			other := filepath.Join(t.TempDir(), "other") // unfollowed: durable at once
			g, _ := fsys.OpenFile(other, os.O_RDWR|os.O_CREATE, 0o644)
			g.Close()
			tr.Crash()
			if err := fsys.SyncDir(dir); err != ErrCrashed {
				t.Fatalf("SyncDir after the crash: %v", err)
			}
			rep, err := tr.Restore(mode, rand.New(rand.NewPCG(3, 4)))
			if err != nil {
				t.Fatal(err)
			}
			m, merr := os.ReadFile(meta)
			_, terr := os.Stat(tmp)
			_, gerr := os.Stat(gone)
			if _, err := os.Stat(other); err != nil {
				t.Fatalf("a file of an unfollowed directory was lost: %v", err)
			}
			switch mode {
			case LoseUnsynced:
				if merr != nil || string(m) != "old" || !os.IsNotExist(terr) || gerr != nil || rep.DirOpsLost != 3 {
					t.Fatalf("lose: meta %q %v, tmp %v, gone %v, %v", m, merr, terr, gerr, rep)
				}
			case KeepUnsynced:
				if merr != nil || string(m) != "new" || !os.IsNotExist(terr) || !os.IsNotExist(gerr) || rep.DirOpsKept != 3 {
					t.Fatalf("keep: meta %q %v, tmp %v, gone %v, %v", m, merr, terr, gerr, rep)
				}
			case RandomSubset:
				// meta is old or new, never empty or missing; the new bytes
				// are at one name at most.
				if merr != nil || (string(m) != "old" && string(m) != "new") {
					t.Fatalf("random: meta %q %v", m, merr)
				}
				if terr == nil && string(m) == "new" {
					t.Fatal("random: the new file at two names")
				}
				if rep.DirOpsKept+rep.DirOpsLost != 3 {
					t.Fatalf("random: %v", rep)
				}
			}
		})
	}
}

// TestSyncDir: after SyncDir the entries survive any crash; KeepDirOps
// picks the entry operations a crash keeps.
func TestSyncDir(t *testing.T) {
	dir := t.TempDir()
	tr := New()
	tr.FollowDir(dir)
	fsys := FS{T: tr}
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	f, _ := fsys.OpenFile(a, os.O_RDWR|os.O_CREATE, 0o644)
	f.WriteAt([]byte("a"), 0)
	f.Sync()
	f.Close()
	if err := fsys.SyncDir(dir); err != nil {
		t.Fatal(err)
	}
	g, _ := fsys.OpenFile(b, os.O_RDWR|os.O_CREATE, 0o644)
	g.WriteAt([]byte("b"), 0)
	g.Sync()
	g.Close()
	if err := fsys.Remove(a); err != nil {
		t.Fatal(err)
	}
	tr.Crash()
	// Keep the removal of a, lose the creation of b.
	tr.KeepDirOps(func(kind, name string) bool { return kind == "remove" })
	if _, err := tr.Restore(KeepUnsynced, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(a); !os.IsNotExist(err) {
		t.Fatalf("a: %v", err)
	}
	if _, err := os.Stat(b); !os.IsNotExist(err) {
		t.Fatalf("b: %v", err)
	}
	// Restore forgot the boot's entry operations: a second crash with
	// nothing followed since changes nothing.
	tr.Crash()
	if _, err := tr.Restore(LoseUnsynced, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(a); !os.IsNotExist(err) {
		t.Fatalf("a after a second restore: %v", err)
	}
}
