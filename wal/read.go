package wal

import (
	"encoding/binary"
	"fmt"
	"io"
	"iter"
	"path/filepath"
	"slices"

	"github.com/cespare/xxhash/v2"
)

// recordVerifier checks records in place with bounded memory: the
// directory and the body are read in chunks.
type recordVerifier struct {
	dir  []byte
	body []byte
}

const verifyChunkPages = 64

func newRecordVerifier() *recordVerifier { return &recordVerifier{} }

// verify checks the record at off (file size size) and returns its header
// and end offset. deep also verifies every page against its hash.
func (v *recordVerifier) verify(f io.ReaderAt, off, size int64, txid uint64, deep bool) (RecordHeader, int64, error) {
	var hb [recHeaderSize]byte
	if off+recHeaderSize > size {
		return RecordHeader{}, 0, fmt.Errorf("record header cut off by end of file")
	}
	if _, err := f.ReadAt(hb[:], off); err != nil {
		return RecordHeader{}, 0, err
	}
	h, err := decodeRecordHeader(hb[:])
	if err != nil {
		return h, 0, err
	}
	if h.Txid != txid {
		return h, 0, fmt.Errorf("record has txid %d, expected %d", h.Txid, txid)
	}
	end := off + h.size()
	if end > size || end < off {
		return h, 0, fmt.Errorf("record of %d bytes cut off by end of file", h.size())
	}
	ps := int64(h.PageSize)
	body := off + recHeaderSize
	dirOff := body + int64(h.NPages)*ps
	d := xxhash.New()
	d.Write(hb[:])
	seen := map[uint32]struct{}{}
	for i := uint32(0); i < h.NPages; {
		k := min(h.NPages-i, verifyChunkPages)
		v.dir = grow(v.dir, int(k)*dirEntrySize)
		if _, err := f.ReadAt(v.dir, dirOff+int64(i)*dirEntrySize); err != nil {
			return h, 0, err
		}
		d.Write(v.dir)
		if deep {
			v.body = grow(v.body, int(int64(k)*ps))
			if _, err := f.ReadAt(v.body, body+int64(i)*ps); err != nil {
				return h, 0, err
			}
		}
		for j := uint32(0); j < k; j++ {
			e := v.dir[j*dirEntrySize:]
			pgno := binary.LittleEndian.Uint32(e)
			if pgno == 0 || pgno > h.DBPages {
				return h, 0, fmt.Errorf("page %d in a database of %d pages", pgno, h.DBPages)
			}
			if _, dup := seen[pgno]; dup {
				return h, 0, fmt.Errorf("page %d twice", pgno)
			}
			seen[pgno] = struct{}{}
			if deep {
				page := v.body[int64(j)*ps : int64(j+1)*ps]
				if xxhash.Sum64(page) != binary.LittleEndian.Uint64(e[8:]) {
					return h, 0, fmt.Errorf("page %d checksum mismatch", pgno)
				}
			}
		}
		i += k
	}
	var tr [trailerSize]byte
	if _, err := f.ReadAt(tr[:], end-trailerSize); err != nil {
		return h, 0, err
	}
	if err := checkTrailer(tr[:], d, h.NPages); err != nil {
		return h, 0, err
	}
	if cap(v.body) > 1<<20 {
		v.body = nil
	}
	return h, end, nil
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// Page is one page image read from the spool. Data is valid until the
// iteration moves on.
type Page struct {
	Pgno uint32
	Txid uint64 // the record it came from
	Data []byte
	Hash uint64 // xxhash64 of Data, as the record's directory holds it (verified)
}

// Record is one spooled transaction, as yielded by Spool.Records.
type Record struct {
	RecordHeader
	s   *Spool
	g   *segment
	off int64
}

// Pages yields the record's pages in the order they were appended (for a
// WAL record: the order of their newest frames). Each page is verified
// against its hash: a mismatch is ErrCorrupt naming the file and txid.
func (r *Record) Pages() iter.Seq2[Page, error] {
	return func(yield func(Page, error) bool) {
		ps := int64(r.PageSize)
		body := r.off + recHeaderSize
		dirOff := body + int64(r.NPages)*ps
		var dir, buf []byte
		for i := uint32(0); i < r.NPages; {
			k := min(r.NPages-i, verifyChunkPages)
			dir = grow(dir, int(k)*dirEntrySize)
			buf = grow(buf, int(int64(k)*ps))
			if _, err := r.g.f.ReadAt(dir, dirOff+int64(i)*dirEntrySize); err != nil {
				yield(Page{}, r.errf("read directory: %w", err))
				return
			}
			if _, err := r.g.f.ReadAt(buf, body+int64(i)*ps); err != nil {
				yield(Page{}, r.errf("read pages: %w", err))
				return
			}
			for j := uint32(0); j < k; j++ {
				e := dir[j*dirEntrySize:]
				pgno := binary.LittleEndian.Uint32(e)
				page := buf[int64(j)*ps : int64(j+1)*ps]
				sum := binary.LittleEndian.Uint64(e[8:])
				if xxhash.Sum64(page) != sum {
					yield(Page{}, fmt.Errorf("%w", r.corrupt(fmt.Sprintf("page %d checksum mismatch", pgno))))
					return
				}
				if !yield(Page{Pgno: pgno, Txid: r.Txid, Data: page, Hash: sum}, nil) {
					return
				}
			}
			i += k
		}
	}
}

func (r *Record) path() string { return filepath.Join(r.s.dir, r.g.name) }

func (r *Record) errf(format string, args ...any) error {
	return fmt.Errorf("wal: spool segment %s, txid %d: %w", r.path(), r.Txid, fmt.Errorf(format, args...))
}

func (r *Record) corrupt(what string) error {
	return fmt.Errorf("wal: spool segment %s, txid %d: %s: %w", r.path(), r.Txid, what, ErrCorrupt)
}

// checkRangeLocked validates [from, to] against the records held.
func (s *Spool) checkRangeLocked(from, to uint64) error {
	if err := s.usableLocked(); err != nil {
		return err
	}
	if from == 0 || from > to || from <= s.state.cur.truncated || to > s.last {
		return fmt.Errorf("wal: txids %d..%d not in spool %s (holds %d..%d): %w",
			from, to, s.dir, s.state.cur.truncated+1, s.last, ErrRange)
	}
	return nil
}

// Records yields the records from..to in txid order (every version of every
// page: use Record.Pages). The range is leased while the iteration runs.
func (s *Spool) Records(from, to uint64) iter.Seq2[*Record, error] {
	return func(yield func(*Record, error) bool) {
		release, err := s.Lease(from, to, "spool iterator")
		if err != nil {
			yield(nil, err)
			return
		}
		defer release()
		for txid := from; txid <= to; txid++ {
			s.mu.Lock()
			if err := s.usableLocked(); err != nil {
				s.mu.Unlock()
				yield(nil, err)
				return
			}
			g, off, err := s.segmentForLocked(txid)
			s.mu.Unlock()
			if err != nil {
				yield(nil, err)
				return
			}
			h, err := s.readHeaderAt(g, off, txid)
			if err != nil {
				yield(nil, err)
				return
			}
			if !yield(&Record{RecordHeader: h, s: s, g: g, off: off}, nil) {
				return
			}
		}
	}
}

// PageSet is the newest version of every page in a txid range, as of the
// range's end: an index of page locations (not the bytes), built from the
// records' directories. Close it to release its lease on the range.
type PageSet struct {
	From, To uint64
	// PageSize and DBPages are those of record To.
	PageSize uint32
	DBPages  uint32
	// PageSizeChanged is true if the page size changed inside the range:
	// only versions written after the last change are in the set, and
	// pages not in it must not be taken from an earlier state (which has
	// the other page size).
	PageSizeChanged bool

	s       *Spool
	locs    map[uint32]pageLoc
	order   []uint32 // pgnos in first-seen order (some may have been dropped from locs)
	release func()
}

type pageLoc struct {
	g    *segment
	off  int64
	hash uint64
	txid uint64
}

// Newest builds the PageSet of from..to. Versions of pages beyond a later
// record's database size are dropped (the database was truncated past
// them), so every page in the set is <= DBPages.
func (s *Spool) Newest(from, to uint64) (*PageSet, error) {
	release, err := s.Lease(from, to, "spool page set")
	if err != nil {
		return nil, err
	}
	ps := &PageSet{From: from, To: to, s: s, locs: map[uint32]pageLoc{}, release: release}
	var dir []byte
	maxPgno := uint32(0)
	for rec, err := range s.Records(from, to) {
		if err != nil {
			release()
			return nil, err
		}
		if ps.PageSize != 0 && rec.PageSize != ps.PageSize {
			clear(ps.locs)
			ps.order = ps.order[:0]
			maxPgno = 0
			ps.PageSizeChanged = true
		}
		ps.PageSize, ps.DBPages = rec.PageSize, rec.DBPages
		body := rec.off + recHeaderSize
		dirOff := body + int64(rec.NPages)*int64(rec.PageSize)
		dir = grow(dir, int(rec.NPages)*dirEntrySize)
		if _, err := rec.g.f.ReadAt(dir, dirOff); err != nil {
			release()
			return nil, rec.errf("read directory: %w", err)
		}
		for i := uint32(0); i < rec.NPages; i++ {
			e := dir[i*dirEntrySize:]
			pgno := binary.LittleEndian.Uint32(e)
			if pgno == 0 || pgno > rec.DBPages {
				release()
				return nil, rec.corrupt(fmt.Sprintf("directory names page %d of %d", pgno, rec.DBPages))
			}
			if _, ok := ps.locs[pgno]; !ok {
				ps.order = append(ps.order, pgno)
			}
			ps.locs[pgno] = pageLoc{g: rec.g, off: body + int64(i)*int64(rec.PageSize),
				hash: binary.LittleEndian.Uint64(e[8:]), txid: rec.Txid}
			maxPgno = max(maxPgno, pgno)
		}
		if rec.DBPages < maxPgno {
			// Pages beyond the new size: the database was truncated.
			keep := ps.order[:0]
			for _, p := range ps.order {
				if p > rec.DBPages {
					delete(ps.locs, p)
				} else {
					keep = append(keep, p)
				}
			}
			ps.order = keep
			maxPgno = rec.DBPages
		}
	}
	return ps, nil
}

// Len is the number of pages in the set.
func (ps *PageSet) Len() int { return len(ps.locs) }

// Pgnos returns the set's page numbers, ascending.
func (ps *PageSet) Pgnos() []uint32 {
	pgnos := slices.Clone(ps.order)
	slices.Sort(pgnos)
	return pgnos
}

// Pages yields the set's pages in ascending pgno order, each verified
// against its hash (a mismatch is ErrCorrupt naming the file and txid).
func (ps *PageSet) Pages() iter.Seq2[Page, error] {
	return ps.PagesIn(ps.Pgnos(), 0, ^uint32(0))
}

// PagesIn yields the set's pages with lo <= pgno <= hi in ascending pgno
// order, each verified against its hash, reading only those pages. pgnos,
// if not nil, must be the result of Pgnos (it saves sorting the set again
// for every range). Pages stored back to back in one record (an image, or
// a transaction's run of pages) are read with one call.
func (ps *PageSet) PagesIn(pgnos []uint32, lo, hi uint32) iter.Seq2[Page, error] {
	return func(yield func(Page, error) bool) {
		if pgnos == nil {
			pgnos = ps.Pgnos()
		}
		i, _ := slices.BinarySearch(pgnos, lo)
		size := int64(ps.PageSize)
		const maxRun = 64
		var buf []byte
		for i < len(pgnos) && pgnos[i] <= hi {
			first, ok := ps.locs[pgnos[i]]
			if !ok {
				yield(Page{}, fmt.Errorf("wal: page %d is not in the page set of txids %d..%d", pgnos[i], ps.From, ps.To))
				return
			}
			n := 1
			for i+n < len(pgnos) && pgnos[i+n] <= hi && n < maxRun {
				l, ok := ps.locs[pgnos[i+n]]
				if !ok || l.g != first.g || l.off != first.off+int64(n)*size {
					break
				}
				n++
			}
			buf = grow(buf, int(int64(n)*size))
			if _, err := first.g.f.ReadAt(buf, first.off); err != nil {
				yield(Page{}, fmt.Errorf("wal: spool segment %s, txid %d: read page %d: %w", filepath.Join(ps.s.dir, first.g.name), first.txid, pgnos[i], err))
				return
			}
			for k := 0; k < n; k++ {
				p := pgnos[i+k]
				l := ps.locs[p]
				data := buf[int64(k)*size : int64(k+1)*size]
				if xxhash.Sum64(data) != l.hash {
					yield(Page{}, fmt.Errorf("wal: spool segment %s, txid %d: page %d checksum mismatch: %w", filepath.Join(ps.s.dir, l.g.name), l.txid, p, ErrCorrupt))
					return
				}
				if !yield(Page{Pgno: p, Txid: l.txid, Data: data, Hash: l.hash}, nil) {
					return
				}
			}
			i += n
		}
	}
}

// Close releases the set's lease.
func (ps *PageSet) Close() {
	if ps.release != nil {
		ps.release()
		ps.release = nil
	}
}

// Lease protects from..to against Truncate until release is called (a
// checkpoint job holds one while it stages and publishes the range). The
// range must be held by the spool.
func (s *Spool) Lease(from, to uint64, holder string) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkRangeLocked(from, to); err != nil {
		return nil, err
	}
	s.leaseSeq++
	id := s.leaseSeq
	s.leases[id] = LeaseInfo{From: from, To: to, Holder: holder}
	released := false
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !released {
			released = true
			delete(s.leases, id)
		}
	}, nil
}

// Truncate removes the records up to upto, which must be confirmed. It is
// refused (ErrLeased, naming the holder) while a lease covers any of them.
// Whole segment files are deleted; a segment that still holds later
// records stays until those are truncated too. The txid and WAL identity
// of record upto are kept in the state file, so txids continue and
// reconciliation still knows the last spooled frame when nothing is left.
func (s *Spool) Truncate(upto uint64) error {
	s.appendMu.Lock() // no append may create or extend a segment meanwhile
	defer s.appendMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked(); err != nil {
		return err
	}
	st := s.state.cur
	if upto <= st.truncated {
		return nil
	}
	if upto > st.confirmed {
		return fmt.Errorf("wal: truncate spool %s to txid %d: only %d is confirmed durable", s.dir, upto, st.confirmed)
	}
	for _, l := range s.leases {
		if l.From <= upto && l.To > st.truncated {
			return fmt.Errorf("wal: truncate spool %s to txid %d: txids %d..%d are leased by %s: %w", s.dir, upto, l.From, l.To, l.Holder, ErrLeased)
		}
	}
	g, _, err := s.segmentForLocked(upto)
	if err != nil {
		return err
	}
	h, err := s.readHeader(g, upto)
	if err != nil {
		return err
	}
	st.truncated, st.lastTruncated = upto, h
	if err := s.state.save(st); err != nil {
		return s.failLocked(fmt.Errorf("wal: %w", err))
	}
	// The removals are not made durable (no fsync of the directory): a
	// segment that comes back after a power loss holds only records at or
	// below the truncation point the state file now records, and
	// OpenSpool deletes it again (TestSpoolTruncatedSegmentsComeBack).
	keep := s.segs[:0]
	for _, g := range s.segs {
		if g.last() <= upto {
			s.addBytesLocked(-(g.size))
			g.f.Close()
			if err := s.removeUnsynced(filepath.Join(s.dir, g.name)); err != nil {
				return s.failLocked(err)
			}
			continue
		}
		keep = append(keep, g)
	}
	clear(s.segs[len(keep):])
	s.segs = keep
	s.cond.Broadcast()
	return nil
}
