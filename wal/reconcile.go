package wal

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

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

// scanWAL reads f. ok is false for an absent or empty WAL (shorter than a
// header, or a header never written: all zero). A header that is not a
// valid SQLite WAL header is ErrBadWAL naming the file.
func scanWAL(f WALFile) (s *walScan, ok bool, err error) {
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
			if fh.commit() != 0 {
				idx := uint32(i + j + 1)
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

// Reconcile reconciles the spool with the WAL file on disk (nil: there is
// none). AttachWAL does it at the first attach; the VFS calls it directly
// when it opens a database that has no -wal file. It is done once.
func (c *Capture) Reconcile(f WALFile) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.usableLocked(); err != nil {
		return err
	}
	if c.reconciled {
		return nil
	}
	return c.reconcileLocked(f)
}

// reconcileLocked brings spool and WAL into agreement, the way SQLite's
// own recovery will see the WAL:
//
//  1. Records above the confirmed watermark (possibly ahead of the WAL
//     after a power loss) are kept only while the WAL holds their commit
//     frame in the same generation with the same checksum; the first that
//     it does not hold is dropped with everything after it.
//  2. Committed frames after the last spooled identity, in the same
//     generation, are captured as new transactions (never those at or
//     before it: they are spooled already). A generation capture saw
//     SQLite start (recorded at the header write) is captured from frame 1.
//  3. Committed frames of a generation capture never saw are
//     ErrUnknownWAL, unless CaptureOptions.Adopt and the spool has never
//     held a WAL identity.
//
// The WAL is then fsynced and everything spooled is confirmed.
func (c *Capture) reconcileLocked(f WALFile) error {
	sp := c.spool
	scan, ok, err := scanWAL(f)
	if err != nil {
		return err
	}
	if !ok {
		scan = nil
	}
	// 1. Unconfirmed records.
	st := sp.Status()
	keep := st.ConfirmedTxid
	for txid := st.ConfirmedTxid + 1; txid <= st.LastTxid; txid++ {
		h, err := sp.Header(txid)
		if err != nil {
			return err
		}
		if h.Kind == KindWAL && !scan.holds(h.WAL) {
			break
		}
		keep = txid
	}
	if keep < st.LastTxid {
		c.logf("reconcile: dropping spooled txids %d..%d: the WAL %s no longer holds them", keep+1, st.LastTxid, c.walName)
		if err := sp.dropAfter(keep); err != nil {
			return c.failLocked(err)
		}
		c.stats.ReconDropped += st.LastTxid - keep
	}

	// 2. Where capture resumes.
	lastWAL, hasWAL, err := sp.lastWALHeader()
	if err != nil {
		return err
	}
	seen, hasSeen, ended, hasEnded := sp.walHeaders()
	follow := false // the WAL's generation becomes the one capture follows
	if scan != nil {
		var start uint32
		switch {
		case hasWAL && lastWAL.WAL.sameGeneration(scan.hdr.salt1, scan.hdr.salt2):
			if !scan.holds(lastWAL.WAL) {
				return c.failLocked(fmt.Errorf("wal: %s no longer holds frame %d, which committed txid %d and was confirmed durable: the WAL was changed outside bop: %w",
					f.Name(), lastWAL.WAL.Frame, lastWAL.Txid, ErrLost))
			}
			start, follow = lastWAL.WAL.Frame, true
		case hasEnded && ended == scan.hdr.raw:
			// A generation SQLite ended and capture spooled whole, whose
			// file was kept: nothing new in it.
			start = scan.last
		case hasSeen && seen == scan.hdr.raw:
			start, follow = 0, true
		case scan.last == 0:
			start, follow = 0, true // an unknown generation, but nothing committed in it
		case c.opts.Adopt && !hasSeen && !hasWAL:
			start, follow = 0, true
			c.logf("reconcile: adopting %d committed frames of %s", scan.last, f.Name())
		default:
			return fmt.Errorf("wal: %s (salts %08x/%08x) has %d committed frames of a WAL generation bop never captured: %w",
				f.Name(), scan.hdr.salt1, scan.hdr.salt2, scan.last, ErrUnknownWAL)
		}
		if err := c.captureFromWAL(f, scan, start); err != nil {
			return c.failLocked(err)
		}
	}

	// 3. Resume state: the generation on disk, settled up to its last
	// commit frame (SQLite's mxFrame after its own recovery).
	c.genSeq++
	c.hdrValid = scan != nil
	c.base, c.chainTo, c.written, c.storeBase, c.failedFrame = 0, 0, 0, 1, 0
	c.meta.truncate(0)
	c.prov = nil
	c.lastCommit.valid = false
	c.unconfirmed = c.unconfirmed[:0]
	if scan != nil {
		c.hdr = scan.hdr
		c.store.setPageSize(int(scan.hdr.pageSize))
		c.base, c.baseCk = scan.last, scan.hdr.ck
		if scan.last > 0 {
			c.baseCk = scan.lastCk
			page, pc, err := readFramePage(f, &scan.hdr, scan.last)
			if err != nil {
				return c.failLocked(err)
			}
			c.lastCommit = commitFrame{valid: true, pgno: pc.pgno(), commit: pc.commit(), page: page}
		}
		c.chainTo, c.written, c.storeBase = c.base, c.base, c.base+1
	}

	// 4. Make it durable: the WAL first (what was kept or captured must be
	// durable there before it is confirmed), then the spool and state.
	if f != nil {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("wal: fsync %s: %w", f.Name(), err)
		}
	}
	var seenNow *[walHeaderSize]byte
	if follow {
		seenNow = &scan.hdr.raw
	}
	if err := sp.persist(c.confirmTargetLocked(), nil, seenNow); err != nil {
		return c.failLocked(err)
	}
	c.reconciled = true
	return nil
}

// readFramePage reads frame idx of f: its page and header.
func readFramePage(f WALFile, h *walHeader, idx uint32) ([]byte, frameHeader, error) {
	var fh frameHeader
	fsz := int64(frameHeaderSz) + int64(h.pageSize)
	b := make([]byte, fsz)
	if _, err := f.ReadAt(b, walHeaderSize+int64(idx-1)*fsz); err != nil {
		return nil, fh, fmt.Errorf("wal: read frame %d of %s: %w", idx, f.Name(), err)
	}
	copy(fh[:], b)
	return b[frameHeaderSz:], fh, nil
}

// captureFromWAL spools every committed transaction of scan after frame
// start. A one-frame "transaction" that repeats the previous commit frame
// is sector padding, not a transaction.
func (c *Capture) captureFromWAL(f WALFile, scan *walScan, start uint32) error {
	prev := start
	var prevPage []byte
	var prevHdr frameHeader
	if start > 0 {
		var err error
		if prevPage, prevHdr, err = readFramePage(f, &scan.hdr, start); err != nil {
			return err
		}
	}
	for _, cm := range scan.commits {
		if cm.frame <= start {
			continue
		}
		if cm.frame == prev+1 && prevPage != nil {
			page, fh, err := readFramePage(f, &scan.hdr, cm.frame)
			if err != nil {
				return err
			}
			if fh.pgno() == prevHdr.pgno() && fh.commit() == prevHdr.commit() && bytes.Equal(page, prevPage) {
				prev = cm.frame
				continue
			}
		}
		id := WALIdentity{Salt1: scan.hdr.salt1, Salt2: scan.hdr.salt2, Frame: cm.frame, Cksum: cm.ck}
		if err := c.appendFromWAL(f, &scan.hdr, prev+1, cm.frame, cm.dbPages, id); err != nil {
			return err
		}
		c.stats.Reconciled++
		var err error
		if prevPage, prevHdr, err = readFramePage(f, &scan.hdr, cm.frame); err != nil {
			return err
		}
		prev = cm.frame
	}
	return nil
}

// appendFromWAL spools frames first..last of f as one transaction.
func (c *Capture) appendFromWAL(f WALFile, h *walHeader, first, last, dbPages uint32, id WALIdentity) error {
	if testHookAppend != nil {
		testHookAppend(*h, first, last, c.spool.lastTxid()+1, false)
	}
	n := int(last - first + 1)
	ps := int(h.pageSize)
	fsz := int64(frameHeaderSz + ps)
	pgnos := make([]uint32, n)
	var fh frameHeader
	for i := range n {
		if _, err := f.ReadAt(fh[:], walHeaderSize+int64(int(first)-1+i)*fsz); err != nil {
			return fmt.Errorf("wal: read frame %d of %s: %w", int(first)+i, f.Name(), err)
		}
		pgnos[i] = fh.pgno()
	}
	keep, count := c.markNewest(n, func(i int) uint32 { return pgnos[i] }, dbPages)
	a, err := c.spool.begin(RecordHeader{Kind: KindWAL, PageSize: h.pageSize, DBPages: dbPages, NPages: uint32(count), WAL: id})
	if err != nil {
		return err
	}
	frame := make([]byte, fsz)
	for i := range n {
		if keep[i/64]&(1<<(i%64)) == 0 {
			continue
		}
		if _, err := f.ReadAt(frame, walHeaderSize+int64(int(first)-1+i)*fsz); err != nil {
			a.Abort()
			return fmt.Errorf("wal: read frame %d of %s: %w", int(first)+i, f.Name(), err)
		}
		if err := a.Add(pgnos[i], frame[frameHeaderSz:]); err != nil {
			a.Abort()
			return err
		}
	}
	_, err = a.Commit()
	return err
}
