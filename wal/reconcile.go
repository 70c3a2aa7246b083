package wal

import (
	"bytes"
	"fmt"
)

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
//     held any record: they are then captured from frame 1, which replays
//     states that existed only from an empty database. Adopting a
//     database with data is AppendImage's (adopt.go): its image record
//     carries the WAL identity of the last commit frame it includes, so
//     case 2 resumes after it.
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
	// Where the followed generation's records begin, if it is new to the
	// state (spoolState.walStart): after every record so far, unless the
	// spool already holds records of it.
	seenAfter := sp.Status().LastTxid
	if scan != nil {
		var start uint32
		switch {
		case hasWAL && lastWAL.WAL.sameGeneration(scan.hdr.salt1, scan.hdr.salt2):
			if !scan.holds(lastWAL.WAL) {
				return c.failLocked(fmt.Errorf("wal: %s no longer holds frame %d, which committed txid %d and was confirmed durable: the WAL was changed outside bop: %w",
					f.Name(), lastWAL.WAL.Frame, lastWAL.Txid, ErrLost))
			}
			start, follow = lastWAL.WAL.Frame, true
			// The spool holds records of this generation already: where it
			// began is not known, unless the newest of them is an adopted
			// image (the first record of an adoption), which holds every
			// page of the generation before it.
			seenAfter = unknownStart
			if lastWAL.Kind == KindImage {
				seenAfter = lastWAL.Txid
			}
		case hasEnded && ended == scan.hdr.raw:
			// A generation SQLite ended and capture spooled whole, whose
			// file was kept: nothing new in it.
			start = scan.last
		case hasSeen && seen == scan.hdr.raw:
			start, follow = 0, true
		case scan.last == 0:
			start, follow = 0, true // an unknown generation, but nothing committed in it
		case c.opts.Adopt && !hasSeen && !hasWAL && sp.Status().LastTxid == 0:
			// Nothing spooled, not even an image: the frames apply to an
			// empty database (the VFS adopts a file with data through
			// AppendImage, never here). Replaying them on top of a
			// database image would publish states that never existed
			// when a checkpoint had copied some of them into the file.
			start, follow = 0, true
			c.logf("reconcile: adopting %d committed frames of %s", scan.last, f.Name())
		case c.opts.Adopt && !hasSeen && !hasWAL:
			return fmt.Errorf("wal: %s (salts %08x/%08x) has %d committed frames bop never captured, and the spool already holds txids up to %d: adopt the database with wal.AppendImage, which includes them: %w",
				f.Name(), scan.hdr.salt1, scan.hdr.salt2, scan.last, sp.Status().LastTxid, ErrUnknownWAL)
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
		c.readBack, c.pagePow = c.opts.ReadBack, stepPower(scan.hdr.pageSize/8)
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
	if err := sp.persist(c.confirmTargetLocked(), nil, seenNow, seenAfter); err != nil {
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
//
// With CaptureOptions.Coalesce all of them become one record (regroup):
// they are what capture held in memory, or in an unsynced buffer, when
// the process died, and the txids it reported for them (LastFinal) were
// those of their groups, all at or above the first one not spooled. One
// record with that first txid names a state that holds every one of them;
// spooled one record per transaction, a reported txid could name a state
// before the commits it was reported for.
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
	var group []scanCommit // regroup: the transactions' commit frames
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
		if c.opts.Coalesce > 0 {
			group = append(group, cm)
		} else {
			id := WALIdentity{Salt1: scan.hdr.salt1, Salt2: scan.hdr.salt2, Frame: cm.frame, Cksum: cm.ck}
			if err := c.appendFromWAL(f, &scan.hdr, prev+1, cm.frame, cm.dbPages, id, nil); err != nil {
				return err
			}
		}
		c.stats.Reconciled++
		var err error
		if prevPage, prevHdr, err = readFramePage(f, &scan.hdr, cm.frame); err != nil {
			return err
		}
		prev = cm.frame
	}
	if len(group) == 0 {
		return nil
	}
	last := group[len(group)-1]
	id := WALIdentity{Salt1: scan.hdr.salt1, Salt2: scan.hdr.salt2, Frame: last.frame, Cksum: last.ck}
	return c.appendFromWAL(f, &scan.hdr, start+1, last.frame, last.dbPages, id, group)
}

// limitsFor returns, for frames first.. of a group of transactions (their
// commit frames in group, ascending), the highest page number a version
// written in that frame can keep in the merged record: the smallest
// database size of its own transaction and of every later one. A version
// past it was cut by a shrink and never written again (or a later frame
// would be the newest): replaying the transactions one by one drops it,
// and so must the group (as coalesceLocked does live).
func limitsFor(first uint32, group []scanCommit, n int) []uint32 {
	limit := make([]uint32, n)
	k := len(group) - 1
	m := group[k].dbPages
	for i := n - 1; i >= 0; i-- {
		fr := first + uint32(i)
		for k > 0 && fr <= group[k-1].frame {
			k--
			m = min(m, group[k].dbPages)
		}
		limit[i] = m
	}
	return limit
}

// appendFromWAL spools frames first..last of f as one record: one
// transaction, or (group not nil: its transactions' commit frames) a group
// of them, holding the newest version of each page that replaying them
// one by one would leave.
func (c *Capture) appendFromWAL(f WALFile, h *walHeader, first, last, dbPages uint32, id WALIdentity, group []scanCommit) error {
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
	pgno := func(i int) uint32 { return pgnos[i] }
	if group != nil {
		// A page past the size of a later transaction of the group is
		// not a page of the group's state: page number 0 makes
		// markNewest skip it.
		limit := limitsFor(first, group, n)
		pgno = func(i int) uint32 {
			if pgnos[i] > limit[i] {
				return 0
			}
			return pgnos[i]
		}
	}
	keep, count := c.markNewest(n, pgno, dbPages)
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
