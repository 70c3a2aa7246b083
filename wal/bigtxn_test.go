package wal_test

import (
	"encoding/binary"
	"fmt"
	"io"
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

// synthWAL is the WAL of hugeTxn's transaction, generated on read: its
// bytes are fed to capture directly and not kept (keeping them would cost
// the test the very memory it measures), and a capture that reads pages
// back gets them computed again. Frame i holds page i of the transaction
// (synthPage), the last one commits it.
type synthWAL struct {
	hdr  []byte // the WAL header
	n    uint32 // frames
	size int64  // bytes written so far (reads stop there)
	// Frame at, generated (fh, page), and the checksum chain after it.
	// Reads go forward; one before it starts the chain again.
	at       uint32
	ck       [2]uint32
	fh, page []byte
}

const synthPS = 4096

func synthPage(page []byte, i uint32) {
	for j := 0; j < len(page); j += 8 {
		binary.LittleEndian.PutUint32(page[j:], i)
		binary.LittleEndian.PutUint32(page[j+4:], uint32(j))
	}
}

// frame writes frame i (header and page) into fh and page, chaining
// from prev, and returns its checksum.
func (w *synthWAL) frame(i uint32, prev [2]uint32, fh, page []byte) [2]uint32 {
	synthPage(page, i)
	commit := uint32(0)
	if i == w.n {
		commit = w.n
	}
	binary.BigEndian.PutUint32(fh[0:], i)
	binary.BigEndian.PutUint32(fh[4:], commit)
	ck := walgen.Checksum(false, fh[:8], prev)
	ck = walgen.Checksum(false, page, ck)
	binary.BigEndian.PutUint32(fh[8:], 1)
	binary.BigEndian.PutUint32(fh[12:], 2)
	binary.BigEndian.PutUint32(fh[16:], ck[0])
	binary.BigEndian.PutUint32(fh[20:], ck[1])
	return ck
}

func (w *synthWAL) ReadAt(p []byte, off int64) (int, error) {
	const fsz = 24 + synthPS
	if w.fh == nil {
		w.fh, w.page = make([]byte, 24), make([]byte, synthPS)
	}
	n := 0
	for n < len(p) {
		o := off + int64(n)
		if o >= w.size {
			return n, io.EOF
		}
		if o < 32 {
			n += copy(p[n:], w.hdr[o:])
			continue
		}
		i := uint32((o-32)/fsz) + 1
		if i > w.n {
			return n, io.EOF
		}
		if i < w.at || w.at == 0 {
			w.at, w.ck = 0, [2]uint32{binary.BigEndian.Uint32(w.hdr[24:]), binary.BigEndian.Uint32(w.hdr[28:])}
		}
		for w.at < i {
			w.at++
			w.ck = w.frame(w.at, w.ck, w.fh, w.page)
		}
		in := (o - 32) % fsz
		if in < 24 {
			n += copy(p[n:], w.fh[in:])
		} else {
			n += copy(p[n:], w.page[in-24:])
		}
	}
	return n, nil
}
func (w *synthWAL) Size() (int64, error) { return w.size, nil }
func (w *synthWAL) Sync() error          { return nil }
func (w *synthWAL) Name() string         { return "synthetic-wal" }

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
func hugeTxn(t *testing.T, total int64, memBytes int, readBack bool) uint64 {
	const ps = synthPS
	n := uint32(total / ps)
	dir := t.TempDir()
	sp, err := wal.OpenSpool(filepath.Join(dir, "spool"), wal.SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	c, _ := wal.NewCapture(sp, wal.CaptureOptions{MemoryBytes: memBytes, ReadBack: readBack})
	defer c.Close()
	conn := c.NewConn(nopMain{})
	w := walgen.New(ps, 1, 2, func([]byte, int64) error { return nil })
	hdr := w.HeaderBytes()
	file := &synthWAL{hdr: hdr, n: n}
	if err := conn.AttachWAL(file); err != nil {
		t.Fatal(err)
	}
	gen := &synthWAL{hdr: hdr, n: n} // the writer's own chain
	page := make([]byte, ps)
	fh := make([]byte, 24)

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	hp := sampleHeap()

	file.size = 32
	if err := conn.Write(hdr, 0); err != nil {
		t.Fatal(err)
	}
	ck := [2]uint32{binary.BigEndian.Uint32(hdr[24:]), binary.BigEndian.Uint32(hdr[28:])}
	off := int64(32)
	for i := uint32(1); i <= n; i++ {
		ck = gen.frame(i, ck, fh, page)
		file.size = off + 24 + ps
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
	t.Logf("%d MiB transaction (%d frames, read back %v): peak heap growth %.1f MiB (memory limit %d MiB), spilled %d frames",
		total>>20, n, readBack, float64(growth)/(1<<20), memBytes>>20, c.Stats().Spilled)
	return growth
}

func TestLargeTransactionBoundedMemory(t *testing.T) {
	for _, readBack := range []bool{false, true} {
		t.Run(fmt.Sprintf("readback=%v", readBack), func(t *testing.T) {
			if g := hugeTxn(t, 48<<20, 4<<20, readBack); g > 24<<20 {
				t.Fatalf("a 48 MiB transaction grew the heap by %d MiB", g>>20)
			}
		})
	}
}

// The bound: a 2 GiB transaction with less than 64 MiB of heap
// growth (the default 8 MiB of frame memory, the rest spilled to disk; or
// nothing held, read back from the WAL).
func TestHeavyTwoGiBTransaction(t *testing.T) {
	testutil.Heavy(t)
	for _, readBack := range []bool{false, true} {
		t.Run(fmt.Sprintf("readback=%v", readBack), func(t *testing.T) {
			if g := hugeTxn(t, 2<<30, 8<<20, readBack); g >= 64<<20 {
				t.Fatalf("a 2 GiB transaction grew the heap by %.1f MiB (limit 64)", float64(g)/(1<<20))
			}
		})
	}
}
