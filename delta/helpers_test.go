package delta

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
)

// pageFor returns deterministic page bytes for (object, pgno) that differ
// between pages, carrying the pgno in the first 4 bytes so a page served
// for the wrong pgno is visible.
func pageFor(objectID uint64, pgno uint32, pageSize uint32) []byte {
	p := make([]byte, pageSize)
	r := rand.New(rand.NewPCG(objectID, uint64(pgno)))
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	binary.LittleEndian.PutUint32(p, pgno)
	return p
}

// encodeObject encodes the given pages (ascending) with header h and
// returns the bytes, the summary and the page contents.
func encodeObject(t testing.TB, h Header, pgnos []uint32) ([]byte, Summary, map[uint32][]byte) {
	t.Helper()
	h.PageCount = uint32(len(pgnos))
	if len(pgnos) > 0 {
		h.FirstPgno = pgnos[0]
	}
	var buf bytes.Buffer
	enc, err := NewEncoder(&buf, h)
	if err != nil {
		t.Fatalf("NewEncoder(%+v): %v", h, err)
	}
	pages := make(map[uint32][]byte, len(pgnos))
	for _, p := range pgnos {
		pages[p] = pageFor(h.ObjectID, p, h.PageSize)
		if err := enc.Add(p, pages[p]); err != nil {
			t.Fatalf("Add(%d): %v", p, err)
		}
	}
	sum, err := enc.Close()
	if err != nil {
		t.Fatalf("Close: %v", err)
	}
	return buf.Bytes(), sum, pages
}

func seq(first uint32, n int) []uint32 {
	s := make([]uint32, n)
	for i := range s {
		s[i] = first + uint32(i)
	}
	return s
}

// countingReaderAt counts ReadAt calls and bytes, safe for concurrent use.
type countingReaderAt struct {
	r     io.ReaderAt
	mu    sync.Mutex
	calls int
	bytes int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	c.calls++
	c.bytes += int64(len(p))
	c.mu.Unlock()
	return c.r.ReadAt(p, off)
}

func (c *countingReaderAt) reset() (calls int, n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	calls, n = c.calls, c.bytes
	c.calls, c.bytes = 0, 0
	return calls, n
}
