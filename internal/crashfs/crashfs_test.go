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
