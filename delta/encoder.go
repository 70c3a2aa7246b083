package delta

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/cespare/xxhash/v2"
)

// Encoder writes one object to an io.Writer as pages arrive, in ascending
// pgno order. It holds one frame buffer and the directory (an Entry per
// page), never the object: a 64 MiB base chunk costs about 0.5 MiB.
//
// The header is written first and declares the page count, so the caller
// must know how many pages it will add (the checkpoint planner does: it
// sorts the page set before encoding). Close fails if fewer arrived.
//
// An Encoder is not safe for concurrent use.
type Encoder struct {
	w       io.Writer
	h       Header
	hdr     []byte         // encoded header, also the seed of the directory hash
	content *xxhash.Digest // hash of every byte written before the trailer
	frame   []byte         // one frame, reused
	entries []Entry
	last    uint32 // pgno of the last page added; 0 before the first
	off     int64  // bytes written so far
	err     error  // sticky write error
	closed  bool
	sum     Summary
}

// NewEncoder checks h, writes the header to w and returns an Encoder for
// h.PageCount pages. A zero h.Version means CurrentVersion; any other
// version, or a header breaking a format rule, is ErrMisuse.
func NewEncoder(w io.Writer, h Header) (*Encoder, error) {
	if h.Version == 0 {
		h.Version = CurrentVersion
	}
	if why := h.check(); why != "" {
		return nil, fmt.Errorf("%w: new encoder: %s", ErrMisuse, why)
	}
	e := &Encoder{
		w:       w,
		h:       h,
		hdr:     appendHeader(nil, h),
		content: xxhash.New(),
		frame:   make([]byte, FrameSize(h.PageSize)),
		// PageCount comes from the caller and may be large; let append
		// grow the directory past a modest start.
		entries: make([]Entry, 0, min(h.PageCount, 1<<14)),
	}
	if err := e.write(e.hdr); err != nil {
		return nil, err
	}
	return e, nil
}

// write sends b, hashing it into the content hash. A failure is sticky:
// the object is incomplete and every later call reports it.
func (e *Encoder) write(b []byte) error {
	n, err := e.w.Write(b)
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		e.err = fmt.Errorf("delta: write at offset %d: %w", e.off, err)
		return e.err
	}
	e.content.Write(b)
	e.off += int64(n)
	return nil
}

// Add appends page pgno. Pages must arrive in strictly ascending pgno
// order starting at h.FirstPgno; a base object takes exactly FirstPgno,
// FirstPgno+1, ... with no gaps. len(page) must be the page size. Breaking
// a rule is ErrMisuse and writes nothing, so the caller may continue with
// a correct page; a write error is final.
func (e *Encoder) Add(pgno uint32, page []byte) error {
	return e.add(pgno, page, 0, false)
}

// AddHashed is Add for a page whose hash (xxhash64 of page, the frame's
// hash) the caller already has, verified: a page read from the spool
// (wal.Page.Hash). It saves hashing the page again. A wrong hash makes a
// frame that does not verify (Object.Verify, which checkpoint runs on
// every staged object, finds it).
func (e *Encoder) AddHashed(pgno uint32, page []byte, hash uint64) error {
	return e.add(pgno, page, hash, true)
}

func (e *Encoder) add(pgno uint32, page []byte, hash uint64, hashed bool) error {
	if e.err != nil {
		return e.err
	}
	n := uint32(len(e.entries))
	switch {
	case e.closed:
		return fmt.Errorf("%w: add page %d after Close", ErrMisuse, pgno)
	case pgno == 0:
		return fmt.Errorf("%w: add page 0 (pgno is 1-based)", ErrMisuse)
	case uint64(len(page)) != uint64(e.h.PageSize):
		return fmt.Errorf("%w: add page %d: %d bytes, page size %d", ErrMisuse, pgno, len(page), e.h.PageSize)
	case n == e.h.PageCount:
		return fmt.Errorf("%w: add page %d: header declared %d pages", ErrMisuse, pgno, e.h.PageCount)
	case n == 0 && pgno != e.h.FirstPgno:
		return fmt.Errorf("%w: first page is %d, header says first pgno %d", ErrMisuse, pgno, e.h.FirstPgno)
	case n > 0 && pgno <= e.last:
		return fmt.Errorf("%w: add page %d after page %d (must ascend)", ErrMisuse, pgno, e.last)
	case e.h.Kind == KindBase && uint64(pgno) != uint64(e.h.FirstPgno)+uint64(n):
		return fmt.Errorf("%w: base object: add page %d, want %d (no gaps)", ErrMisuse, pgno, uint64(e.h.FirstPgno)+uint64(n))
	}
	off := e.off
	// Invariant: frame n starts at FrameOffset(PageSize, n), because the
	// header and every earlier frame were written whole.
	if off != FrameOffset(e.h.PageSize, n) {
		return fmt.Errorf("delta: internal: frame %d at %d, want %d", n, off, FrameOffset(e.h.PageSize, n))
	}
	var sum uint64
	if hashed {
		sum = putFrameHashed(e.frame, pgno, page, hash)
	} else {
		sum = putFrame(e.frame, pgno, page)
	}
	if err := e.write(e.frame); err != nil {
		return err
	}
	e.entries = append(e.entries, Entry{Pgno: pgno, Index: n, Offset: off, Length: e.h.PageSize, Hash: sum})
	e.last = pgno
	return nil
}

// Close writes the directory and trailer and returns the object's
// Summary. It does not close the underlying writer. Closing before every
// declared page was added is ErrMisuse (the object is unusable). A second
// Close returns the first one's result.
func (e *Encoder) Close() (Summary, error) {
	if e.closed || e.err != nil {
		return e.sum, e.err
	}
	e.closed = true
	if n := uint32(len(e.entries)); n != e.h.PageCount {
		e.err = fmt.Errorf("%w: close after %d pages, header declared %d", ErrMisuse, n, e.h.PageCount)
		return Summary{}, e.err
	}
	// The directory goes out in bounded batches; its hash is seeded with
	// the header bytes.
	dir := xxhash.New()
	dir.Write(e.hdr)
	buf := make([]byte, 0, 512*DirEntrySize)
	for i, ent := range e.entries {
		buf = appendEntry(buf, ent)
		if len(buf) == cap(buf) || i == len(e.entries)-1 {
			dir.Write(buf)
			if err := e.write(buf); err != nil {
				return Summary{}, err
			}
			buf = buf[:0]
		}
	}
	buf = binary.LittleEndian.AppendUint64(buf, dir.Sum64())
	if err := e.write(buf); err != nil {
		return Summary{}, err
	}
	contentHash := e.content.Sum64()
	if err := e.write(appendTrailer(buf[:0], e.h, contentHash)); err != nil {
		return Summary{}, err
	}
	if e.off != ObjectSize(e.h.PageSize, e.h.PageCount) {
		e.err = fmt.Errorf("delta: internal: wrote %d bytes, want %d", e.off, ObjectSize(e.h.PageSize, e.h.PageCount))
		return Summary{}, e.err
	}
	// The content hash went on over the trailer: the whole object's.
	e.sum = Summary{Header: e.h, Size: e.off, Hash: contentHash, FileHash: e.content.Sum64(), PageCount: e.h.PageCount, Entries: e.entries}
	return e.sum, nil
}
