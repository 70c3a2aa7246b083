package wal

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Write-back hints are handed to a background goroutine: WriteBack never
// waits for the disk (here: a hint that blocks), a full queue drops hints
// instead of blocking, and a hint for a file closed meanwhile is harmless.
func TestWriteBackIsAsync(t *testing.T) {
	f, err := os.OpenFile(filepath.Join(t.TempDir(), "seg"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	of := osFile{f}
	if _, err := of.WriteAt(make([]byte, 1<<20), 0); err != nil {
		t.Fatal(err)
	}
	if err := of.WriteBack(0, 1<<20); err != nil { // starts the hinter
		t.Fatal(err)
	}
	waitHintsIdle(t)

	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	defer unblock()
	entered := make(chan struct{}, 1)
	block := func(fd int, off, n int64, flags int) error {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
		return nil
	}
	syncFileRangeHook.Store(&block)
	defer syncFileRangeHook.Store(nil)

	done0, dropped0 := writeBackDone.Load(), writeBackDropped.Load()
	of.WriteBack(0, 1<<20)
	<-entered // the hinter is stuck in the disk
	const calls = writeBackQueueLen + 50
	start := time.Now()
	for range calls {
		if err := of.WriteBack(0, 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("%d hints took %v while the hinter was blocked: WriteBack waited", calls, d)
	}
	if got := writeBackDropped.Load() - dropped0; got != calls-writeBackQueueLen {
		t.Fatalf("%d hints dropped, want %d (the queue holds %d)", got, calls-writeBackQueueLen, writeBackQueueLen)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	unblock()
	// Every queued hint runs (on a closed file now: an error, ignored).
	waitHintsIdle(t)
	if got := writeBackDone.Load() - done0; got != 1+writeBackQueueLen {
		t.Fatalf("%d hints issued, want %d", got, 1+writeBackQueueLen)
	}
}

// waitHintsIdle waits until every WriteBack so far was issued or dropped.
func waitHintsIdle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for writeBackDone.Load()+writeBackDropped.Load() != writeBackCalls.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("hints: %d calls, %d issued, %d dropped after 10 s", writeBackCalls.Load(), writeBackDone.Load(), writeBackDropped.Load())
		}
		time.Sleep(time.Millisecond)
	}
}
