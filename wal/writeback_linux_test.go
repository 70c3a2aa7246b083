package wal

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Write-back hints are handed to a background goroutine: WriteBack never
// waits for the disk, a full queue drops hints instead of blocking, and a
// hint for a file closed meanwhile is harmless.
func TestWriteBackIsAsync(t *testing.T) {
	f, err := os.OpenFile(filepath.Join(t.TempDir(), "seg"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	of := osFile{f}
	chunk := make([]byte, 1<<20)
	for i := range 8 {
		if _, err := of.WriteAt(chunk, int64(i)<<20); err != nil {
			t.Fatal(err)
		}
	}
	before := writeBackDone.Load() + writeBackDropped.Load()
	const calls = 1000
	for i := range calls - 1 {
		if err := of.WriteBack(int64(i%8)<<20, 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := of.WriteBack(0, 1<<20); err != nil { // the file is closed
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for writeBackDone.Load()+writeBackDropped.Load()-before < calls {
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s, %d of %d hints issued or dropped", writeBackDone.Load()+writeBackDropped.Load()-before, calls)
		}
		time.Sleep(time.Millisecond)
	}
	if writeBackDone.Load() == 0 {
		t.Fatal("no hint was ever issued")
	}
}
