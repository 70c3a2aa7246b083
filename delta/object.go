package delta

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sort"
	"sync"
)

// openWhole is the size up to which Open reads an object in one ReadAt.
// Small deltas (a few pages) are common and a remote read costs a round
// trip, so one read beats two; larger objects cost a header read and one
// read of directory plus trailer.
const openWhole = 64 << 10

// Object is an opened, checked object: its header, directory and content
// hash are in memory; page bytes are read on demand, one ReadAt per page.
// It is safe for concurrent use if its ReaderAt is (io.ReaderAt's contract
// says it must be).
type Object struct {
	r       io.ReaderAt
	size    int64
	h       Header
	entries []Entry
	hash    uint64
}

// Open reads and checks the header, directory and trailer of the object of
// size bytes behind r (one ReadAt for objects up to 64 KiB, two above). It
// does not read or check frames: ReadPage checks each page it returns, and
// Verify checks everything. A damaged or truncated object is ErrCorrupt, a
// newer format ErrVersion; other read errors are returned wrapped.
//
// Open allocates nothing beyond size bytes: every length in the object is
// matched against size first.
func Open(r io.ReaderAt, size int64) (*Object, error) {
	return open(r, size, openWhole)
}

// open is Open with the one-read threshold as a parameter, so tests and
// fuzzing run both paths on every input.
func open(r io.ReaderAt, size int64, whole int64) (*Object, error) {
	if smallest := ObjectSize(MinPageSize, 1); size < smallest {
		return nil, fmt.Errorf("%w: object of %d bytes, the smallest is %d", ErrCorrupt, size, smallest)
	}
	var hdr, tail []byte
	if size <= whole {
		whole := make([]byte, size)
		if err := readFull(r, whole, 0); err != nil {
			return nil, fmt.Errorf("delta: open: %w", err)
		}
		hdr = whole[:HeaderSize]
		tail = whole // trimmed below once the header gives the layout
	} else {
		hdr = make([]byte, HeaderSize)
		if err := readFull(r, hdr, 0); err != nil {
			return nil, fmt.Errorf("delta: open: header: %w", err)
		}
	}
	h, err := DecodeHeader(hdr)
	if err != nil {
		return nil, fmt.Errorf("delta: open: %w", err)
	}
	if want := ObjectSize(h.PageSize, h.PageCount); size != want {
		return nil, fmt.Errorf("%w: object is %d bytes, header (%d pages of %d) implies %d",
			ErrCorrupt, size, h.PageCount, h.PageSize, want)
	}
	dirOff := DirOffset(h.PageSize, h.PageCount)
	if tail != nil {
		tail = tail[dirOff:]
	} else {
		// size matched the header, so this allocation is at most the
		// object's own directory and trailer.
		tail = make([]byte, size-dirOff)
		if err := readFull(r, tail, dirOff); err != nil {
			return nil, fmt.Errorf("delta: open: directory: %w", err)
		}
	}
	dirEnd := len(tail) - TrailerSize
	entries, err := decodeDirSection(h, hdr, tail[:dirEnd])
	if err != nil {
		return nil, fmt.Errorf("delta: open: %w", err)
	}
	sum, err := decodeTrailer(h, tail[dirEnd:])
	if err != nil {
		return nil, fmt.Errorf("delta: open: %w", err)
	}
	return &Object{r: r, size: size, h: h, entries: entries, hash: sum}, nil
}

// FromSummary returns the Object described by s (from DecodeDirectory of
// the catalog's local copy, or an Encoder's Close) reading pages through
// r, without reading anything now. ReadPage still checks every frame, so
// a summary of another object yields errors, never wrong pages. A summary
// that describes no valid object is ErrMisuse.
func FromSummary(r io.ReaderAt, s Summary) (*Object, error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("delta: object from summary: %w", err)
	}
	return &Object{r: r, size: s.Size, h: s.Header, entries: s.Entries, hash: s.Hash}, nil
}

// readFull reads len(p) bytes at off. A short read (the object is shorter
// than its size says) is ErrCorrupt, wrapping the reader's error too.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil // io.ReaderAt may report io.EOF with a full read at the end
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: short read of %d bytes at %d: got %d: %w", ErrCorrupt, len(p), off, n, err)
	}
	return fmt.Errorf("read %d bytes at %d: %w", len(p), off, err)
}

// Header returns the object's header.
func (o *Object) Header() Header { return o.h }

// Size returns the object's size in bytes.
func (o *Object) Size() int64 { return o.size }

// Hash returns the content hash recorded in the trailer (the store key's
// hash). Open checks the trailer's own hash; only Verify recomputes this.
func (o *Object) Hash() uint64 { return o.hash }

// Directory returns the directory, sorted by pgno. The slice is shared:
// callers must not modify it.
func (o *Object) Directory() []Entry { return o.entries }

// Summary returns the object's Summary (for EncodeDirectory). Its Entries
// slice is shared: callers must not modify it.
func (o *Object) Summary() Summary {
	return Summary{Header: o.h, Size: o.size, Hash: o.hash, PageCount: o.h.PageCount, Entries: o.entries}
}

// Lookup finds pgno's directory entry: by arithmetic in a base object, by
// binary search in a delta.
func (o *Object) Lookup(pgno uint32) (Entry, bool) {
	if o.h.Kind == KindBase {
		// Base invariant (checked at Open): entry i is FirstPgno+i.
		if pgno < o.h.FirstPgno || pgno-o.h.FirstPgno >= o.h.PageCount {
			return Entry{}, false
		}
		return o.entries[pgno-o.h.FirstPgno], true
	}
	i := sort.Search(len(o.entries), func(i int) bool { return o.entries[i].Pgno >= pgno })
	if i < len(o.entries) && o.entries[i].Pgno == pgno {
		return o.entries[i], true
	}
	return Entry{}, false
}

// ReadPage returns page pgno, read with exactly one ReadAt of its frame
// and checked against the frame header and the directory hash. The page
// goes into dst if cap(dst) >= the page size, else into a new slice. A
// page the object lacks is ErrPageNotFound; a damaged frame ErrCorrupt.
func (o *Object) ReadPage(pgno uint32, dst []byte) ([]byte, error) {
	e, ok := o.Lookup(pgno)
	if !ok {
		return nil, fmt.Errorf("%w: page %d in %s object %d", ErrPageNotFound, pgno, o.h.Kind, o.h.ObjectID)
	}
	bp := getFrame(o.h.PageSize)
	defer putFrameBuf(o.h.PageSize, bp)
	frame := *bp
	if err := readFull(o.r, frame, e.Offset); err != nil {
		return nil, fmt.Errorf("delta: read page %d: %w", pgno, err)
	}
	page, sum, err := DecodeFrame(frame, pgno, o.h.PageSize)
	if err != nil {
		return nil, fmt.Errorf("delta: read page %d of object %d: %w", pgno, o.h.ObjectID, err)
	}
	if sum != e.Hash {
		return nil, fmt.Errorf("%w: page %d: frame hash %016x, directory says %016x", ErrCorrupt, pgno, sum, e.Hash)
	}
	if cap(dst) < len(page) {
		dst = make([]byte, len(page))
	}
	dst = dst[:len(page)]
	copy(dst, page)
	return dst, nil
}

// Frame buffers are pooled per page size (2^9 .. 2^16) so concurrent
// ReadPage calls do not allocate a frame each.
var framePools [8]sync.Pool

func poolIndex(pageSize uint32) int { return bits.TrailingZeros32(pageSize) - 9 }

func getFrame(pageSize uint32) *[]byte {
	if bp, ok := framePools[poolIndex(pageSize)].Get().(*[]byte); ok {
		return bp
	}
	b := make([]byte, FrameSize(pageSize))
	return &b
}

func putFrameBuf(pageSize uint32, bp *[]byte) { framePools[poolIndex(pageSize)].Put(bp) }
