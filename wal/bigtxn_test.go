package wal_test

import (
	"encoding/binary"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bopstore/bop/internal/testutil"
	"github.com/bopstore/bop/internal/walgen"
	"github.com/bopstore/bop/wal"
)

// emptyWAL is a WAL file with nothing in it (the transaction's bytes are
// fed to capture directly and not kept: keeping them would cost the test
// the very memory it measures).
type emptyWAL struct{}

func (emptyWAL) ReadAt(p []byte, off int64) (int, error) { return 0, nil }
func (emptyWAL) Size() (int64, error)                    { return 0, nil }
func (emptyWAL) Sync() error                             { return nil }
func (emptyWAL) Name() string                            { return "synthetic-wal" }

// heapPeak samples the heap in use until stop is called.
type heapPeak struct {
	peak atomic.Uint64
	stop chan struct{}
	wg   sync.WaitGroup
}

func sampleHeap() *heapPeak {
	h := &heapPeak{stop: make(chan struct{})}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if v := ms.HeapInuse; v > h.peak.Load() {
				h.peak.Store(v)
			}
			select {
			case <-h.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return h
}

func (h *heapPeak) done() uint64 {
	close(h.stop)
	h.wg.Wait()
	return h.peak.Load()
}

// hugeTxn feeds capture one transaction of total bytes of 4 KiB pages,
// written as SQLite writes them (a header write and a page write per
// frame, checksums chained), commits it, and returns the peak heap growth
// measured during the whole run against the heap in use before.
func hugeTxn(t *testing.T, total int64, memBytes int) uint64 {
	const ps = 4096
	n := uint32(total / ps)
	dir := t.TempDir()
	sp, err := wal.OpenSpool(filepath.Join(dir, "spool"), wal.SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	c, _ := wal.NewCapture(sp, wal.CaptureOptions{MemoryBytes: memBytes})
	defer c.Close()
	conn := c.NewConn(nopMain{})
	if err := conn.AttachWAL(emptyWAL{}); err != nil {
		t.Fatal(err)
	}
	w := walgen.New(ps, 1, 2, func([]byte, int64) error { return nil })
	hdr := w.HeaderBytes()
	page := make([]byte, ps)
	fh := make([]byte, 24)

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	hp := sampleHeap()

	if err := conn.Write(hdr, 0); err != nil {
		t.Fatal(err)
	}
	ck := [2]uint32{binary.BigEndian.Uint32(hdr[24:]), binary.BigEndian.Uint32(hdr[28:])}
	off := int64(32)
	for i := uint32(1); i <= n; i++ {
		for j := 0; j < ps; j += 8 {
			binary.LittleEndian.PutUint32(page[j:], i)
			binary.LittleEndian.PutUint32(page[j+4:], uint32(j))
		}
		commit := uint32(0)
		if i == n {
			commit = n
		}
		binary.BigEndian.PutUint32(fh[0:], i)
		binary.BigEndian.PutUint32(fh[4:], commit)
		ck = walgen.Checksum(false, fh[:8], ck)
		ck = walgen.Checksum(false, page, ck)
		binary.BigEndian.PutUint32(fh[8:], 1)
		binary.BigEndian.PutUint32(fh[12:], 2)
		binary.BigEndian.PutUint32(fh[16:], ck[0])
		binary.BigEndian.PutUint32(fh[20:], ck[1])
		if err := conn.Write(fh, off); err != nil {
			t.Fatal(err)
		}
		if err := conn.Write(page, off+24); err != nil {
			t.Fatal(err)
		}
		off += 24 + ps
	}
	if err := conn.CommitPhaseTwo(); err != nil {
		t.Fatal(err)
	}
	peak := hp.done()
	growth := uint64(0)
	if peak > before.HeapInuse {
		growth = peak - before.HeapInuse
	}

	st := sp.Status()
	if st.LastTxid != 1 {
		t.Fatalf("spool %+v", st)
	}
	got := uint32(0)
	for rec, err := range sp.Records(1, 1) {
		if err != nil {
			t.Fatal(err)
		}
		if rec.NPages != n || rec.DBPages != n {
			t.Fatalf("record: %+v", rec.RecordHeader)
		}
		for p, err := range rec.Pages() {
			if err != nil {
				t.Fatal(err)
			}
			if binary.LittleEndian.Uint32(p.Data) != p.Pgno || binary.LittleEndian.Uint32(p.Data[ps-8:]) != p.Pgno {
				t.Fatalf("page %d has the wrong bytes", p.Pgno)
			}
			got++
		}
	}
	if got != n {
		t.Fatalf("%d pages read back, want %d", got, n)
	}
	t.Logf("%d MiB transaction (%d frames): peak heap growth %.1f MiB (memory limit %d MiB), spilled %d frames",
		total>>20, n, float64(growth)/(1<<20), memBytes>>20, c.Stats().Spilled)
	return growth
}

func TestLargeTransactionBoundedMemory(t *testing.T) {
	if g := hugeTxn(t, 48<<20, 4<<20); g > 24<<20 {
		t.Fatalf("a 48 MiB transaction grew the heap by %d MiB", g>>20)
	}
}

// The bound: a 2 GiB transaction with less than 64 MiB of heap
// growth (the default 8 MiB of frame memory, the rest spilled to disk).
func TestHeavyTwoGiBTransaction(t *testing.T) {
	testutil.Heavy(t)
	if g := hugeTxn(t, 2<<30, 8<<20); g >= 64<<20 {
		t.Fatalf("a 2 GiB transaction grew the heap by %.1f MiB (limit 64)", float64(g)/(1<<20))
	}
}
