package wal

import (
	"bytes"
	"fmt"
)

// frameMeta is the header of a frame capture holds, and how many of its
// bytes (header+page, contiguous from the start) have been written.
type frameMeta struct {
	hdr    frameHeader
	filled uint32
	// With read-back: the page's own checksum F(0, page), if sumOK (the
	// page was last written whole, so capture had it in hand).
	sum   [2]uint32
	sumOK bool
}

// frameMetas is a chunked slice: growing it never copies (and never
// doubles memory), which keeps a huge transaction's metadata bounded.
type frameMetas struct {
	chunks [][]frameMeta
	n      int
}

const metaChunk = 4096

func (m *frameMetas) at(i int) *frameMeta { return &m.chunks[i/metaChunk][i%metaChunk] }

func (m *frameMetas) grow(n int) {
	for len(m.chunks)*metaChunk < n {
		m.chunks = append(m.chunks, make([]frameMeta, metaChunk))
	}
	for i := m.n; i < n; i++ {
		*m.at(i) = frameMeta{}
	}
	m.n = max(m.n, n)
}

// truncate keeps the first n entries, freeing whole chunks beyond.
func (m *frameMetas) truncate(n int) {
	m.n = min(m.n, n)
	keep := (m.n + metaChunk - 1) / metaChunk
	keep = max(keep, 1)
	if len(m.chunks) > keep+1 {
		clear(m.chunks[keep+1:])
		m.chunks = m.chunks[:keep+1]
	}
}

// Write is called after SQLite's write to the WAL succeeded. p aliases
// SQLite's memory: capture copies what it keeps (with ReadBack, the frame
// header and the page's checksum; the page is read back when spooled). An
// error fails SQLite's write (it then rolls back its transaction).
func (cn *Conn) Write(p []byte, off int64) error {
	c := cn.c
	// Backpressure: wait for spool space before taking the lock, so the
	// publisher can still sync and truncate meanwhile.
	if err := cn.waitForSpace(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.usableLocked(); err != nil {
		return err
	}
	if !c.reconciled {
		return fmt.Errorf("wal: WAL write before the WAL was attached and reconciled")
	}
	return c.writeLocked(cn, p, off)
}

func (c *Capture) writeLocked(cn *Conn, p []byte, off int64) error {
	if off < 0 {
		return fmt.Errorf("wal: write at offset %d: %w", off, ErrBadWAL)
	}
	if off < walHeaderSize {
		if off != 0 || len(p) < walHeaderSize {
			// SQLite writes the header whole. Anything else means the
			// file is not what capture thinks: stop rather than guess.
			return c.failLocked(fmt.Errorf("wal: partial WAL header write (%d bytes at %d) to %s: %w", len(p), off, c.walName, ErrBadWAL))
		}
		if err := c.newGenerationLocked(p[:walHeaderSize]); err != nil {
			return err
		}
		p, off = p[walHeaderSize:], walHeaderSize
	}
	if len(p) == 0 {
		return nil
	}
	if !c.hdrValid {
		return fmt.Errorf("wal: frame write at offset %d of %s without a valid WAL header: %w", off, c.walName, ErrBadWAL)
	}
	fsz := int64(frameHeaderSz) + int64(c.hdr.pageSize)
	for len(p) > 0 {
		rel := off - walHeaderSize
		idx := rel/fsz + 1
		if idx > 1<<32-1 {
			return fmt.Errorf("wal: write at offset %d of %s: beyond the last possible frame: %w", off, c.walName, ErrBadWAL)
		}
		in := int(rel % fsz)
		n := min(len(p), int(fsz)-in)
		if err := c.writeFrameLocked(cn, uint32(idx), in, p[:n]); err != nil {
			return err
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// writeFrameLocked applies bytes p at offset in of frame idx.
func (c *Capture) writeFrameLocked(cn *Conn, idx uint32, in int, p []byte) error {
	if idx <= c.base {
		return c.failLocked(fmt.Errorf("wal: SQLite wrote frame %d of %s, at or below frame %d which ends a transaction capture spooled as committed (txid %d): %w",
			idx, c.walName, c.base, c.spool.last, ErrLost))
	}
	if P := c.prov; P != nil {
		if idx <= P.end {
			// SQLite writes here again only if it rolled P back (its
			// commit failed): withdraw it, capture continues.
			c.withdrawLocked(fmt.Sprintf("frame %d rewritten", idx))
		} else if in == 0 && (idx > P.end+1 || !c.samePaddingHeader(p)) {
			// A new frame past P that is not a copy of P's commit
			// frame: SQLite's writer moved on, so P committed.
			c.stats.FinalNextFrame++
			if err := c.finalizeLocked(); err != nil {
				return err
			}
		}
	}
	slot := int(idx - c.storeBase)
	if slot > c.meta.n {
		return c.failLocked(fmt.Errorf("wal: write to frame %d of %s while frame %d was never written: %w",
			idx, c.walName, c.storeBase+uint32(c.meta.n), ErrBadWAL))
	}
	if slot == c.meta.n {
		c.meta.grow(slot + 1)
	}
	m := c.meta.at(slot)
	ps := int(c.hdr.pageSize)
	fsz := frameHeaderSz + ps
	if in < frameHeaderSz {
		k := min(len(p), frameHeaderSz-in)
		copy(m.hdr[in:], p[:k])
	}
	if end := in + len(p); end > frameHeaderSz && c.readBack {
		// The page is not kept: its sum is, when it came whole.
		m.sumOK = in <= frameHeaderSz && end == fsz
		if m.sumOK {
			m.sum = walChecksum(c.hdr.bigEndian, p[len(p)-ps:], [2]uint32{})
		}
	} else if end > frameHeaderSz {
		skip := max(frameHeaderSz-in, 0)
		if slot >= c.store.memSlots() {
			c.stats.Spilled++
		}
		if err := c.store.write(slot, max(in-frameHeaderSz, 0), p[skip:]); err != nil {
			return c.failLocked(err)
		}
	}
	if uint32(in) <= m.filled {
		m.filled = max(m.filled, uint32(in+len(p)))
	}
	complete := m.filled == uint32(fsz)
	if complete && idx > c.written {
		c.written = idx
	}
	c.lastFrameWriter = cn
	if idx <= c.chainTo {
		c.chainTo = idx - 1
	}
	if idx <= c.failedFrame {
		c.failedFrame = 0 // it, or a frame its checksum chains from, changed
	}
	if !complete {
		return nil
	}
	// The page bytes of this frame are in hand if the write covered all
	// of them: checksum those (hot in cache) instead of re-reading.
	var inHand []byte
	if in <= frameHeaderSz && in+len(p) == fsz {
		inHand = p[len(p)-ps:]
	}
	return c.extendChainLocked(cn, idx, inHand)
}

// samePaddingHeader: p starts with a frame header with the page number
// and commit size of the provisional commit frame (a padding copy).
func (c *Capture) samePaddingHeader(p []byte) bool {
	if len(p) < 8 || !c.lastCommit.valid {
		return false
	}
	var h frameHeader
	copy(h[:], p)
	return h.pgno() == c.lastCommit.pgno && h.commit() == c.lastCommit.commit
}

// ckAtLocked is the cumulative checksum after frame j (base <= j <= chainTo).
func (c *Capture) ckAtLocked(j uint32) [2]uint32 {
	if j == c.base {
		return c.baseCk
	}
	return c.meta.at(int(j - c.storeBase)).hdr.ck()
}

// extendChainLocked verifies frames chainTo+1..upto (never beyond the
// frame just written: frames past it may be stale leftovers of a rolled
// back transaction) and acts on a commit frame the chain reaches.
func (c *Capture) extendChainLocked(cn *Conn, upto uint32, inHand []byte) error {
	for c.chainTo < upto {
		j := c.chainTo + 1
		slot := int(j - c.storeBase)
		m := c.meta.at(slot)
		// As SQLite's recovery: a frame counts only if complete, with the
		// generation's salts, a page number and a chaining checksum.
		if m.filled != uint32(frameHeaderSz)+c.hdr.pageSize || m.hdr.pgno() == 0 ||
			m.hdr.salt1() != c.hdr.salt1 || m.hdr.salt2() != c.hdr.salt2 {
			return nil
		}
		if j == c.failedFrame {
			// Failed before and unchanged since: it fails again (after an
			// in-place overwrite every later frame would retry it).
			return nil
		}
		var page []byte // loaded only where needed (chainPage)
		if j == upto {
			page = inHand
		}
		var ck [2]uint32
		if c.readBack && m.sumOK {
			ck = pageChecksum(c.hdr.bigEndian, &m.hdr, m.sum, c.pagePow, c.ckAtLocked(j-1))
		} else {
			var err error
			if page, err = c.chainPage(page, j); err != nil {
				return err
			}
			ck = frameChecksum(c.hdr.bigEndian, &m.hdr, page, c.ckAtLocked(j-1))
		}
		if ck != m.hdr.ck() {
			c.stats.ChainBreaks++
			c.failedFrame = j
			return nil
		}
		c.chainTo = j
		if P := c.prov; P != nil && j > P.end {
			if m.hdr.commit() != 0 && j == P.end+1 {
				var err error
				if page, err = c.chainPage(page, j); err != nil {
					return err
				}
				if c.isPadding(m, page) {
					P.end = j
					c.stats.PaddingFrames++
					continue
				}
			}
			// A later frame: P committed.
			c.stats.FinalNextFrame++
			if err := c.finalizeLocked(); err != nil {
				return err
			}
			slot = int(j - c.storeBase)
			m = c.meta.at(slot)
			// Settling moved the store's pages (without read-back): a
			// page taken from it before is stale.
			page = nil
			if j == upto {
				page = inHand
			}
		}
		if m.hdr.commit() == 0 {
			continue
		}
		// A commit frame: its page is compared (padding) and kept.
		var err error
		if page, err = c.chainPage(page, j); err != nil {
			return err
		}
		if c.prov == nil && j == c.base+1 && c.isPadding(m, page) {
			// A padding copy of a commit frame that is already final
			// (a signal made it final before its writer's padding came,
			// which SQLite's order of events does not do; capture does
			// not rely on that): settle it.
			c.stats.PaddingFrames++
			if err := c.settleLocked(j); err != nil {
				return err
			}
			continue
		}
		c.provBuf = provisional{first: c.base + 1, commit: j, end: j, writer: cn, dbPages: m.hdr.commit(), ck: ck}
		c.prov = &c.provBuf
		c.provSeq++
		c.lastCommit.valid = true
		c.lastCommit.pgno, c.lastCommit.commit = m.hdr.pgno(), m.hdr.commit()
		c.lastCommit.page = append(c.lastCommit.page[:0], page...)
		// Frames after the commit frame (other than those written just
		// now) are leftovers of a rolled back transaction: SQLite writes
		// the next one from here.
		c.meta.truncate(max(slot, int(upto-c.storeBase)) + 1)
	}
	return nil
}

// chainPage returns page if it is in hand, else frame j's page from the
// store or read back (stopping capture if that fails).
func (c *Capture) chainPage(page []byte, j uint32) ([]byte, error) {
	if page != nil {
		return page, nil
	}
	page, err := c.framePageLocked(j, c.scratch())
	if err != nil {
		return nil, c.failLocked(err)
	}
	return page, nil
}

func (c *Capture) isPadding(m *frameMeta, page []byte) bool {
	lc := &c.lastCommit
	return lc.valid && m.hdr.pgno() == lc.pgno && m.hdr.commit() == lc.commit && bytes.Equal(page, lc.page)
}

func (c *Capture) scratch() []byte {
	if len(c.buf) < int(c.hdr.pageSize) {
		c.buf = make([]byte, c.hdr.pageSize)
	}
	return c.buf[:c.hdr.pageSize]
}

// withdrawLocked forgets the provisional transaction: SQLite rolled it
// back. Its frames stay in the store as pending frames (SQLite is writing
// over them now).
func (c *Capture) withdrawLocked(why string) {
	P := c.prov
	if P == nil {
		return
	}
	c.stats.Withdrawn++
	c.logf("withdrawn provisional transaction (frames %d..%d of %s): %s", P.first, P.commit, c.walName, why)
	c.prov = nil
	c.chainTo = min(c.chainTo, P.first-1)
	c.lastCommit.valid = false
	c.wakeLocked()
}

// settleLocked makes frames up to upto settled: base moves there and the
// store drops them (frames after upto move to the start).
func (c *Capture) settleLocked(upto uint32) error {
	ck := c.ckAtLocked(upto)
	drop := int(upto - c.storeBase + 1)
	rest := c.meta.n - drop
	if rest > 0 {
		if !c.readBack {
			if err := c.store.move(0, drop, rest, c.scratch()); err != nil {
				return c.failLocked(err)
			}
		}
		for i := 0; i < rest; i++ {
			*c.meta.at(i) = *c.meta.at(drop + i)
		}
	}
	c.meta.truncate(max(rest, 0))
	if rest <= 0 {
		c.store.reset()
	}
	c.base, c.baseCk = upto, ck
	c.storeBase = upto + 1
	c.chainTo = max(c.chainTo, upto)
	return nil
}

// WriteFailed is called when SQLite's write to the WAL at off failed (the
// VFS's write returned an error, so Write never saw it). A failed write by
// the connection whose commit is provisional, past that commit frame, is
// the commit's sector padding (synchronous=FULL with psow off): SQLite
// rolls the transaction back without a sync, so no Sync outcome would
// withdraw it, and a later checkpoint by the same connection or the end
// of the generation would otherwise make it final. The writer cannot have
// begun its next transaction: that needs the commit's phase two, which
// finalizes it first.
func (cn *Conn) WriteFailed(off int64) {
	c := cn.c
	c.mu.Lock()
	defer c.mu.Unlock()
	P := c.prov
	if P == nil || P.writer != cn || !c.hdrValid {
		return
	}
	commitEnd := int64(walHeaderSize) + int64(P.commit)*int64(frameHeaderSz+c.hdr.pageSize)
	if off >= commitEnd {
		c.withdrawLocked("a write after its commit frame (its padding) failed")
	}
}
