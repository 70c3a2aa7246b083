package wal

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cespare/xxhash/v2"
)

// Appender writes one record. Get one from Spool.Begin, add exactly
// NPages pages, then Commit (or Abort). Only one appender exists at a time.
type Appender struct {
	s       *Spool
	g       *segment
	hdr     RecordHeader
	start   int64 // record offset
	pos     int64 // next write offset
	n       uint32
	err     error
	ioErr   bool // err is a failed write: the spool stops
	dirHash *xxhash.Digest
	digest  xxhash.Digest // dirHash points here
	// Header and trailer bytes: here, not on the stack, because writes go
	// through an interface and would make a stack array escape.
	hb [recHeaderSize]byte
	tr [trailerSize]byte
	// checkPgnos: verify at Commit that no pgno was added twice (for
	// records built by other packages; capture builds them distinct).
	checkPgnos bool
	done       bool
}

// Begin starts a record, waiting (as WaitForSpace) while the spool is over
// its limit. h.Txid is ignored: the record gets the next txid, returned by
// Commit. h.NPages must be the exact number of pages that will be added.
func (s *Spool) Begin(h RecordHeader) (*Appender, error) {
	if err := s.WaitForSpace(context.Background()); err != nil {
		return nil, err
	}
	s.appendMu.Lock()
	a := &Appender{}
	if err := s.beginLocked(a, h); err != nil {
		s.appendMu.Unlock()
		return nil, err
	}
	a.checkPgnos = true
	return a, nil
}

// begin starts a record without waiting for space (capture waits before
// taking its own lock, then appends unconditionally: a transaction SQLite
// has committed is never refused). The appender is the spool's own,
// reused for every record (capture appends one record per commit and
// never touches it after Commit or Abort): no allocation per commit.
func (s *Spool) begin(h RecordHeader) (*Appender, error) {
	s.appendMu.Lock()
	a := &s.app
	if err := s.beginLocked(a, h); err != nil {
		s.appendMu.Unlock()
		return nil, err
	}
	return a, nil
}

// beginLocked starts a record in a (caller holds appendMu).
func (s *Spool) beginLocked(a *Appender, h RecordHeader) error {
	s.mu.Lock()
	if err := s.usableLocked(); err != nil {
		s.mu.Unlock()
		return err
	}
	h.Txid = s.last + 1
	if err := h.check(); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("wal: append: %w", err)
	}
	var g *segment
	if n := len(s.segs); n > 0 && s.segs[n-1].size < s.opts.SegmentBytes {
		g = s.segs[n-1]
	}
	var prev *segment
	var prevSize int64
	if g == nil && len(s.segs) > 0 {
		prev = s.segs[len(s.segs)-1]
		prevSize = prev.size
	}
	s.mu.Unlock()

	if g == nil {
		// Start a new segment. The previous one is fsynced first, so that
		// only the active segment can ever hold unsynced records (Sync
		// relies on it), after freeing the space reserved past its last
		// record (segFile). The new file's directory entry is synced by
		// the next Sync, before any record in it counts as synced.
		if prev != nil {
			if err := prev.f.Truncate(prevSize); err != nil {
				s.mu.Lock()
				defer s.mu.Unlock()
				return s.failLocked(fmt.Errorf("wal: trim spool segment %s: %w", prev.name, err))
			}
			if err := prev.f.Sync(); err != nil {
				s.mu.Lock()
				defer s.mu.Unlock()
				return s.failLocked(fmt.Errorf("wal: fsync spool segment %s: %w", prev.name, err))
			}
		}
		var err error
		if g, err = s.createSegment(h.Txid); err != nil {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.failLocked(err)
		}
	}
	*a = Appender{s: s, g: g, hdr: h, start: g.size, pos: g.size}
	a.digest.Reset()
	a.dirHash = &a.digest
	if need := int(h.NPages) * dirEntrySize; cap(s.dbuf) < need {
		s.dbuf = make([]byte, 0, need)
	}
	s.dbuf = s.dbuf[:0]
	h.encode(a.hb[:])
	a.dirHash.Write(a.hb[:])
	a.write(a.hb[:])
	return nil
}

func (s *Spool) createSegment(first uint64) (*segment, error) {
	name := segmentName(first)
	path := filepath.Join(s.dir, name)
	f, err := s.fs.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("wal: create spool segment %s: %w", path, err)
	}
	var hb [segHeaderSize]byte
	encodeSegmentHeader(hb[:], first)
	if _, err := f.WriteAt(hb[:], 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("wal: write %s: %w", path, err)
	}
	g := &segment{name: name, first: first, f: s.wrapSegment(f), size: segHeaderSize}
	s.mu.Lock()
	s.segs = append(s.segs, g)
	s.addBytesLocked(segHeaderSize)
	s.dirDirty = true
	s.mu.Unlock()
	return g, nil
}

// Txid is the txid the record will have.
func (a *Appender) Txid() uint64 { return a.hdr.Txid }

// write appends b to the segment, through its buffer (segFile).
func (a *Appender) write(b []byte) {
	if a.err != nil {
		return
	}
	if _, err := a.g.f.WriteAt(b, a.pos); err != nil {
		a.err = fmt.Errorf("wal: write spool segment %s: %w", filepath.Join(a.s.dir, a.g.name), err)
		a.ioErr = true
		return
	}
	a.pos += int64(len(b))
}

// Add appends one page. Pages must have distinct page numbers no larger
// than the header's DBPages, and exactly PageSize bytes.
func (a *Appender) Add(pgno uint32, page []byte) error {
	if err := a.checkPage(pgno, page); err != nil {
		return err
	}
	a.entry(pgno, page)
	a.write(page)
	return a.err
}

// AddRun appends len(pgnos) pages stored back to back in pages.
func (a *Appender) AddRun(pgnos []uint32, pages []byte) error {
	ps := int(a.hdr.PageSize)
	if len(pages) != len(pgnos)*ps {
		return a.fail(fmt.Errorf("wal: append: %d bytes for %d pages", len(pages), len(pgnos)))
	}
	for i, p := range pgnos {
		page := pages[i*ps : (i+1)*ps]
		if err := a.checkPage(p, page); err != nil {
			return err
		}
		a.entry(p, page)
	}
	a.write(pages)
	return a.err
}

func (a *Appender) checkPage(pgno uint32, page []byte) error {
	if a.err != nil {
		return a.err
	}
	if a.done {
		return a.fail(fmt.Errorf("wal: append after commit"))
	}
	if len(page) != int(a.hdr.PageSize) {
		return a.fail(fmt.Errorf("wal: append page %d: %d bytes, page size %d", pgno, len(page), a.hdr.PageSize))
	}
	if pgno == 0 || pgno > a.hdr.DBPages {
		return a.fail(fmt.Errorf("wal: append page %d to a database of %d pages", pgno, a.hdr.DBPages))
	}
	if a.n >= a.hdr.NPages {
		return a.fail(fmt.Errorf("wal: append: more than the %d pages declared", a.hdr.NPages))
	}
	return nil
}

func (a *Appender) entry(pgno uint32, page []byte) {
	var e [dirEntrySize]byte
	binary.LittleEndian.PutUint32(e[0:], pgno)
	binary.LittleEndian.PutUint64(e[8:], xxhash.Sum64(page))
	a.s.dbuf = append(a.s.dbuf, e[:]...)
	a.n++
}

func (a *Appender) fail(err error) error {
	if a.err == nil {
		a.err = err
	}
	return a.err
}

// Commit writes the directory and trailer and makes the record visible.
// It does not fsync: Spool.Sync does.
func (a *Appender) Commit() (uint64, error) {
	if a.done {
		return 0, fmt.Errorf("wal: commit twice")
	}
	if a.err == nil && a.n != a.hdr.NPages {
		a.err = fmt.Errorf("wal: append: %d pages added, %d declared", a.n, a.hdr.NPages)
	}
	if a.err == nil && a.checkPgnos {
		a.checkDistinct()
	}
	if a.err != nil {
		a.Abort()
		return 0, a.err
	}
	s := a.s
	a.dirHash.Write(s.dbuf)
	encodeTrailer(a.tr[:], a.dirHash, a.n)
	a.write(s.dbuf)
	a.write(a.tr[:])
	if s.opts.BufferBytes == 0 && a.err == nil {
		// Unbuffered spool: the record reaches the file system now.
		if err := a.g.f.(*segFile).Flush(); err != nil {
			a.err = fmt.Errorf("wal: write spool segment %s: %w", filepath.Join(s.dir, a.g.name), err)
			a.ioErr = true
		}
	}
	if a.err != nil {
		a.Abort()
		return 0, a.err
	}
	a.done = true
	s.mu.Lock()
	a.g.offs = append(a.g.offs, a.start)
	a.g.size = a.pos
	s.addBytesLocked(a.pos - a.start)
	s.last = a.hdr.Txid
	s.lastHdr = a.hdr
	s.mu.Unlock()
	if cap(s.dbuf) > 4<<20 {
		s.dbuf = nil // do not keep a huge record's directory buffer
	}
	s.appendMu.Unlock()
	return a.hdr.Txid, nil
}

// checkDistinct rejects a record with a page number twice: readers index
// pages by pgno, so a duplicate would make one version unreachable.
func (a *Appender) checkDistinct() {
	d := a.s.dbuf
	seen := make(map[uint32]struct{}, a.n)
	for i := 0; i+dirEntrySize <= len(d); i += dirEntrySize {
		p := binary.LittleEndian.Uint32(d[i:])
		if _, ok := seen[p]; ok {
			a.err = fmt.Errorf("wal: append: page %d added twice", p)
			return
		}
		seen[p] = struct{}{}
	}
}

// Abort abandons the record: the segment is cut back to where it started.
// If even that fails the spool stops (its tail is unknown).
func (a *Appender) Abort() {
	if a.done {
		return
	}
	a.done = true
	s := a.s
	if err := a.g.f.Truncate(a.start); err != nil {
		s.mu.Lock()
		s.failLocked(fmt.Errorf("wal: cut aborted record from %s: %w", a.g.name, err))
		s.mu.Unlock()
	}
	if a.ioErr {
		s.mu.Lock()
		s.failLocked(a.err)
		s.mu.Unlock()
	}
	s.appendMu.Unlock()
}
