package fdsync

import (
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

func TestFileSyncsThroughDescriptor(t *testing.T) {
	name := filepath.Join(t.TempDir(), "x-wal")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("frames"); err != nil {
		t.Fatal(err)
	}
	var dir atomic.Bool
	var wg sync.WaitGroup
	for range 4 { // concurrent syncs of one file are safe
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ok, err := File(f, name, &dir); !ok || err != nil {
				t.Errorf("File = %v, %v", ok, err)
			}
		}()
	}
	wg.Wait()
	if !dir.Load() {
		t.Fatal("directory not marked synced")
	}
	f.Close()
	if ok, err := File(f, name, &dir); !ok || err == nil {
		t.Fatalf("sync of a closed file: %v, %v; want an error", ok, err)
	}
	if ok, _ := File(struct{}{}, name, nil); ok {
		t.Fatal("a value without a descriptor reported ok")
	}
}
