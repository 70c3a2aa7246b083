package delta

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/bopstore/bop/internal/testutil"

	"github.com/cespare/xxhash/v2"
)

// countingWriter discards bytes, counting and hashing them.
type countingWriter struct {
	n int64
	d *xxhash.Digest
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	w.d.Write(p)
	return len(p), nil
}

// allocated reports the bytes allocated while f runs. TotalAlloc only
// grows, so a buffer freed again before the end still counts: this bounds
// the peak from above.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// A 64 MiB base chunk (16384 pages of 4 KiB) streams through the encoder
// without the encoder holding it: what it allocates is the directory
// (32 bytes per page) and one frame, far below the object's size. The
// seed implementation buffered whole objects.
func TestStreamingEncodeBoundedMemory(t *testing.T) {
	const ps, n = 4096, 16384
	h := Header{Kind: KindBase, PageSize: ps, ObjectID: 1, FirstPgno: 1 + 3*n, PageCount: n, MinTxid: 1, MaxTxid: 99}
	w := &countingWriter{d: xxhash.New()}
	page := make([]byte, ps)
	var sum Summary
	var err error
	used := allocated(func() {
		var enc *Encoder
		enc, err = NewEncoder(w, h)
		if err != nil {
			return
		}
		for i := uint32(0); i < n; i++ {
			binary.LittleEndian.PutUint32(page, h.FirstPgno+i)
			if err = enc.Add(h.FirstPgno+i, page); err != nil {
				return
			}
		}
		sum, err = enc.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	if w.n != ObjectSize(ps, n) || w.n < 64<<20 || sum.Size != w.n {
		t.Fatalf("wrote %d bytes, summary %d, want %d", w.n, sum.Size, ObjectSize(ps, n))
	}
	const limit = 4 << 20
	if used > limit {
		t.Fatalf("encoding a %d MiB object allocated %d bytes (limit %d)", w.n>>20, used, limit)
	}
	t.Logf("encoded %d bytes allocating %d bytes", w.n, used)
}

// Verify, Open and ReadPage of a 64 MiB object on disk stay bounded too.
func TestVerifyBoundedMemory(t *testing.T) {
	const ps, n = 4096, 16384
	path := filepath.Join(t.TempDir(), "obj")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := Header{Kind: KindDelta, PageSize: ps, ObjectID: 2, FirstPgno: 2, PageCount: n, MinTxid: 1, MaxTxid: 1}
	enc, err := NewEncoder(f, h)
	if err != nil {
		t.Fatal(err)
	}
	page := make([]byte, ps)
	for i := uint32(0); i < n; i++ {
		binary.LittleEndian.PutUint32(page, 2+2*i)
		if err := enc.Add(2+2*i, page); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := enc.Close()
	if err != nil {
		t.Fatal(err)
	}
	var verr error
	used := allocated(func() { verr = Verify(f, sum.Size) })
	if verr != nil {
		t.Fatal(verr)
	}
	usedVerify := used
	// Directory as read (24 B/page) and decoded (32 B/page), plus one
	// 256 KiB block.
	if limit := uint64(2 << 20); used > limit {
		t.Fatalf("Verify of %d MiB allocated %d bytes (limit %d)", sum.Size>>20, used, limit)
	}
	o, err := Open(f, sum.Size)
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, ps)
	used = allocated(func() {
		for i := uint32(0); i < n; i += 97 {
			if _, verr = o.ReadPage(2+2*i, dst); verr != nil {
				return
			}
		}
	})
	if verr != nil {
		t.Fatal(verr)
	}
	t.Logf("Verify allocated %d bytes; %d ReadPage calls %d bytes", usedVerify, n/97+1, used)
	// Frame buffers are pooled: without -race the calls share a few.
	// The race detector makes sync.Pool drop items at random, so there
	// the bound is one frame per call, still never more.
	limit := uint64(64 << 10)
	if testutil.RaceEnabled {
		limit = uint64(n/97+1) * uint64(FrameSize(ps)+64)
	}
	if used > limit {
		t.Fatalf("%d ReadPage calls allocated %d bytes (limit %d)", n/97+1, used, limit)
	}
	// Damage one page in the middle: Verify finds it.
	if _, err := f.WriteAt([]byte{0xFF}, FrameOffset(ps, n/2)+FrameHeaderSize+100); err != nil {
		t.Fatal(err)
	}
	if err := Verify(f, sum.Size); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Verify of a damaged page: %v", err)
	}
}
