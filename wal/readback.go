package wal

import (
	"errors"
	"fmt"
	"io"
)

// Read-back (CaptureOptions.ReadBack): capture keeps no copy of the pages
// SQLite writes to the WAL. It verifies each frame's checksum from
// SQLite's own buffer as the write arrives, notes the frame's header, and
// reads the page back from the WAL file when it spools it (once, for the
// newest version of each page of a record), verifying it again.
//
// Why: the copy into capture's memory was the largest single cost capture
// added to a write-heavy workload: every version of every page SQLite
// wrote, copied into an arena of up to MemoryBytes that evicted SQLite's
// own working set from the CPU caches (bench/vfs W1: ~50 ms of ~1 s of
// CPU in a build without it, more than the spool's write of the same
// pages), then copied again into a coalesced group. Read back, a page is
// copied once, by the kernel, and only its newest version in the record
// (bench/RESULTS-vfs.md, session 13).
//
// A frame whose header SQLite rewrites after its page (walRewriteChecksums,
// when a spilled page was written again in place) is verified without
// reading the page: capture keeps the page's own checksum, taken when the
// page was written whole (frameMeta.sum, pageChecksum in cksum.go); a page
// written in part has none and is read back.
//
// Why it is safe: the frames capture reads back are final transactions
// (the coalesced group, or the transaction being appended) and the
// provisional one, and SQLite never writes over such frames while their
// generation lives: it writes at or below a committed frame only after a
// complete checkpoint, by starting a new generation, which capture ends
// (appending every held transaction) while handling the new header's
// write, before SQLite writes a frame of it (the header write overwrites
// the first 32 bytes only). What could take the frames away is handled
// before it happens:
//   - a truncation of the WAL into known frames: the VFS calls
//     BeforeTruncate, which appends the group and copies the remaining
//     frames into memory (materialize);
//   - the last WAL handle closing (before the -wal file may be deleted):
//     DetachWAL does the same.
//
// After a materialization the generation continues as without read-back
// (pages copied into the store as they are written) until it ends. And
// every page read back is verified against the frame as capture verified
// it when it was written (salts, cumulative checksum, the checksum
// recomputed over the page read; a materialized page against its own
// checksum or the chain): a WAL that changed under capture stops it
// (ErrLost) instead of spooling other bytes than SQLite committed.

// frameRef is a frame capture verified when it was written: enough to
// read its page back and check that it is still the same.
type frameRef struct {
	idx    uint32    // frame index in the current generation
	pgno   uint32    // its page number
	prevCk [2]uint32 // the cumulative checksum before it
	ck     [2]uint32 // its own (after it)
}

// readBackBytes bounds the buffer pages are read back through: runs of
// frames up to this size are one read.
const readBackBytes = 1 << 20

// readBackGap: frames of other versions between two wanted ones are read
// too (and skipped) when there are at most this many; a longer gap ends
// the read.
const readBackGap = 2

// refLocked returns the reference of frame idx, which capture holds in
// meta (idx >= storeBase).
func (c *Capture) refLocked(idx uint32) frameRef {
	m := c.meta.at(int(idx - c.storeBase))
	return frameRef{idx: idx, pgno: m.hdr.pgno(), prevCk: c.ckAtLocked(idx - 1), ck: m.hdr.ck()}
}

// walReaderLocked returns an attached handle on the WAL, or nil.
func (c *Capture) walReaderLocked() WALFile {
	for cn := range c.conns {
		if cn.wal != nil {
			return cn.wal
		}
	}
	return nil
}

// frameOffset is the file offset of frame idx's header.
func (c *Capture) frameOffset(idx uint32) int64 {
	return walHeaderSize + int64(idx-1)*(int64(frameHeaderSz)+int64(c.hdr.pageSize))
}

// readWALLocked reads b at off of the WAL through an attached handle
// (idx names the frame in errors). A short read is not an error here: the
// callers say what the missing bytes mean.
func (c *Capture) readWALLocked(b []byte, off int64, idx uint32) (int, error) {
	f := c.walReaderLocked()
	if f == nil {
		return 0, fmt.Errorf("wal: read frame %d of %s back: no open handle on the WAL: %w", idx, c.walName, ErrLost)
	}
	n, err := f.ReadAt(b, off)
	if n < len(b) && err != nil && !errors.Is(err, io.EOF) {
		return n, fmt.Errorf("wal: read frame %d of %s back: %w", idx, c.walName, err)
	}
	return n, nil
}

// readFramesLocked reads len(b) bytes of the WAL at frame first's header.
func (c *Capture) readFramesLocked(b []byte, first uint32) error {
	n, err := c.readWALLocked(b, c.frameOffset(first), first)
	if err != nil {
		return err
	}
	if n < len(b) {
		// The file is shorter than the frames capture verified.
		return fmt.Errorf("wal: read frames %d.. of %s back: %d of %d bytes in the file: %w", first, c.walName, n, len(b), ErrLost)
	}
	return nil
}

// framePageLocked returns frame idx's page (idx >= storeBase): from the
// store, or read back from the WAL into buf. Only its bytes are read: the
// callers check them (extendChain, materializeLocked).
func (c *Capture) framePageLocked(idx uint32, buf []byte) ([]byte, error) {
	if !c.readBack {
		return c.store.page(int(idx-c.storeBase), buf)
	}
	ps := int(c.hdr.pageSize)
	n, err := c.readWALLocked(buf[:ps], c.frameOffset(idx)+frameHeaderSz, idx)
	if err != nil {
		return nil, err
	}
	// Not (wholly) written yet: zeros, as the store holds. A frame capture
	// counts as complete was written whole, and what is spooled is checked.
	clear(buf[n:ps])
	return buf[:ps], nil
}

// readBuffer returns the read-back buffer with at least n bytes: it
// grows (doubling, from 64 KiB) to the largest read asked, so a database
// of small transactions keeps a small one.
func (c *Capture) readBuffer(n int) []byte {
	if len(c.rbuf) < n {
		c.rbuf = make([]byte, max(n, min(2*len(c.rbuf), readBackBytes), 64<<10))
	}
	return c.rbuf[:n]
}

// appendRefsLocked reads the pages of refs (in ascending frame order;
// entries with pgno 0 are skipped) back from the WAL, verifies each, and
// adds them to a: runs of nearby frames are one read, their pages moved
// together in the buffer.
func (c *Capture) appendRefsLocked(a *Appender, refs []frameRef) error {
	ps := int(c.hdr.pageSize)
	fsz := frameHeaderSz + ps
	maxFrames := max(readBackBytes/fsz, 1)
	for i := 0; i < len(refs); {
		if refs[i].pgno == 0 {
			i++
			continue
		}
		first := refs[i].idx
		j, last := i+1, i // refs[i:j] is the span, last its last live entry
		for j < len(refs) {
			if refs[j].pgno == 0 {
				j++
				continue
			}
			if refs[j].idx-refs[last].idx > readBackGap+1 || int(refs[j].idx-first) >= maxFrames {
				break
			}
			last = j
			j++
		}
		span := c.readBuffer(int(refs[last].idx-first+1) * fsz)
		buf := span
		if err := c.readFramesLocked(span, first); err != nil {
			return err
		}
		c.pgnos = c.pgnos[:0]
		for k := i; k <= last; k++ {
			r := &refs[k]
			if r.pgno == 0 {
				continue
			}
			at := int(r.idx-first) * fsz
			h := &c.rbHdr // not a local: &h would escape (an allocation per page)
			copy(h[:], span[at:])
			page := span[at+frameHeaderSz : at+fsz]
			if h.pgno() != r.pgno || h.salt1() != c.hdr.salt1 || h.salt2() != c.hdr.salt2 || h.ck() != r.ck ||
				frameChecksum(c.hdr.bigEndian, h, page, r.prevCk) != r.ck {
				return fmt.Errorf("wal: frame %d of %s (page %d) changed after capture verified it: %w", r.idx, c.walName, r.pgno, ErrLost)
			}
			// Pages move down to make one run (never over a page not
			// yet moved: the destination is always below the source).
			copy(buf[len(c.pgnos)*ps:], page)
			c.pgnos = append(c.pgnos, r.pgno)
		}
		if err := a.AddRun(c.pgnos, buf[:len(c.pgnos)*ps]); err != nil {
			return err
		}
		i = last + 1
	}
	return nil
}

// materializeLocked stops reading back for the rest of the generation:
// it appends the coalesced group and copies the frames capture holds
// (the provisional transaction, the open one) into the store, before the
// WAL loses them (a truncation, the last handle closing).
func (c *Capture) materializeLocked() error {
	if !c.readBack {
		return nil
	}
	if err := c.flushPendingLocked(); err != nil {
		return err
	}
	buf := c.scratch()
	fsz := uint32(frameHeaderSz) + c.hdr.pageSize
	for slot := 0; slot < c.meta.n; slot++ {
		idx := c.storeBase + uint32(slot)
		page, err := c.framePageLocked(idx, buf)
		if err != nil {
			return c.failLocked(err)
		}
		// A complete frame's page must be the one capture saw: against
		// its own checksum, or the chain it verified.
		if m := c.meta.at(slot); m.filled == fsz {
			changed := false
			switch {
			case m.sumOK:
				changed = walChecksum(c.hdr.bigEndian, page, [2]uint32{}) != m.sum
			case idx <= c.chainTo:
				changed = frameChecksum(c.hdr.bigEndian, &m.hdr, page, c.ckAtLocked(idx-1)) != m.hdr.ck()
			}
			if changed {
				return c.failLocked(fmt.Errorf("wal: frame %d of %s (page %d) changed after capture saw it: %w", idx, c.walName, m.hdr.pgno(), ErrLost))
			}
		}
		if err := c.store.write(slot, 0, page); err != nil {
			return c.failLocked(err)
		}
	}
	c.readBack = false
	c.stats.Materialized++
	return nil
}

// BeforeTruncate is called before SQLite truncates the WAL to size. With
// read-back, frames capture still needs would go with the cut: they are
// appended or copied into memory first. An error must fail the
// truncation.
func (cn *Conn) BeforeTruncate(size int64) error {
	c := cn.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.usableLocked(); err != nil {
		return err
	}
	if !c.readBack || !c.reconciled || !c.hdrValid {
		return nil
	}
	// The end of the frames held (the group's are below them).
	held := c.frameOffset(c.storeBase + uint32(c.meta.n))
	if size >= held || (c.pend.n == 0 && c.meta.n == 0) {
		return nil
	}
	return c.materializeLocked()
}
