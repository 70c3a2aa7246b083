package wal

import (
	"errors"
	"fmt"
	"io"
)

// The one reader of a WAL file as SQLite's recovery reads it, used by
// reconciliation (reconcile.go) and adoption (adopt.go).

// walScan is what SQLite's recovery would find in a WAL file: the frames
// of the checksum chain from the header, up to the first frame that fails
// (wrong salts, page number 0, bad checksum, end of file), and the commit
// frames among them. Frames after the last commit frame are an unfinished
// transaction and count for nothing.
type walScan struct {
	hdr     walHeader
	commits []scanCommit // commit frames in the valid chain, ascending
	last    uint32       // last commit frame (0 if none): SQLite's mxFrame after recovery
	lastCk  [2]uint32
}

type scanCommit struct {
	frame   uint32
	ck      [2]uint32
	dbPages uint32
	pgno    uint32
}

// lastCommit is the last commit frame of the valid chain (ok false: none).
func (s *walScan) lastCommit() (scanCommit, bool) {
	if s == nil || len(s.commits) == 0 {
		return scanCommit{}, false
	}
	return s.commits[len(s.commits)-1], true
}

// identity names the last commit frame (zero if there is none).
func (s *walScan) identity() WALIdentity {
	if s == nil || s.last == 0 {
		return WALIdentity{}
	}
	return WALIdentity{Salt1: s.hdr.salt1, Salt2: s.hdr.salt2, Frame: s.last, Cksum: s.lastCk}
}

// scanWAL reads f. ok is false for an absent or empty WAL (shorter than a
// header, or a header never written: all zero). A header that is not a
// valid SQLite WAL header is ErrBadWAL naming the file.
func scanWAL(f WALFile) (s *walScan, ok bool, err error) {
	return scanWALFrames(f, nil)
}

// scanWALFrames is scanWAL that also calls visit with the index and page
// number of every frame of the valid chain, in order (including frames
// after the last commit frame: the caller ignores those above s.last).
func scanWALFrames(f WALFile, visit func(frame, pgno uint32)) (s *walScan, ok bool, err error) {
	if f == nil {
		return nil, false, nil
	}
	size, err := f.Size()
	if err != nil {
		return nil, false, fmt.Errorf("wal: size of %s: %w", f.Name(), err)
	}
	if size < walHeaderSize {
		return nil, false, nil
	}
	var hb [walHeaderSize]byte
	if _, err := f.ReadAt(hb[:], 0); err != nil {
		return nil, false, fmt.Errorf("wal: read %s: %w", f.Name(), err)
	}
	if isZero(hb[:]) {
		return nil, false, nil
	}
	h, err := parseWALHeader(hb[:])
	if err != nil {
		return nil, false, fmt.Errorf("wal: %s: %v: %w", f.Name(), err, ErrBadWAL)
	}
	s = &walScan{hdr: h}
	ps := int64(h.pageSize)
	fsz := frameHeaderSz + ps
	nframes := (size - walHeaderSize) / fsz
	// SQLite's frame index is a uint32: frames beyond are not in any
	// chain it reads.
	nframes = min(nframes, 1<<32-1)
	const chunk = 64
	buf := make([]byte, chunk*fsz)
	ck := h.ck
	for i := int64(0); i < nframes; {
		k := min(nframes-i, chunk)
		b := buf[:k*fsz]
		if _, err := f.ReadAt(b, walHeaderSize+i*fsz); err != nil && !errors.Is(err, io.EOF) {
			return nil, false, fmt.Errorf("wal: read %s: %w", f.Name(), err)
		}
		for j := int64(0); j < k; j++ {
			fr := b[j*fsz : (j+1)*fsz]
			var fh frameHeader
			copy(fh[:], fr)
			if fh.pgno() == 0 || fh.salt1() != h.salt1 || fh.salt2() != h.salt2 {
				return s, true, nil
			}
			ck = frameChecksum(h.bigEndian, &fh, fr[frameHeaderSz:], ck)
			if ck != fh.ck() {
				return s, true, nil
			}
			idx := uint32(i + j + 1)
			if visit != nil {
				visit(idx, fh.pgno())
			}
			if fh.commit() != 0 {
				s.commits = append(s.commits, scanCommit{frame: idx, ck: ck, dbPages: fh.commit(), pgno: fh.pgno()})
				s.last, s.lastCk = idx, ck
			}
		}
		i += k
	}
	return s, true, nil
}

// commitAt returns the commit frame idx of the valid chain, if it is one.
func (s *walScan) commitAt(frame uint32) (scanCommit, bool) {
	lo, hi := 0, len(s.commits)
	for lo < hi {
		m := (lo + hi) / 2
		if s.commits[m].frame < frame {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(s.commits) && s.commits[lo].frame == frame {
		return s.commits[lo], true
	}
	return scanCommit{}, false
}

// holds reports whether the WAL holds the commit frame named by id.
func (s *walScan) holds(id WALIdentity) bool {
	if s == nil || !id.sameGeneration(s.hdr.salt1, s.hdr.salt2) {
		return false
	}
	c, ok := s.commitAt(id.Frame)
	return ok && c.ck == id.Cksum
}
