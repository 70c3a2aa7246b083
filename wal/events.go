package wal

// The signals other than WAL writes (syncs, truncation, deletion, commit
// phase two, checkpoints, publishing) and the durability bookkeeping they
// drive: WAL generations, the durable frames, the confirmed watermark.

import "fmt"

// newGenerationLocked handles a WAL header write: SQLite starts (or
// restarts) the WAL.
func (c *Capture) newGenerationLocked(b []byte) error {
	h, err := parseWALHeader(b)
	if err != nil {
		return c.failLocked(fmt.Errorf("wal: header written to %s: %v: %w", c.walName, err, ErrBadWAL))
	}
	c.stats.Headers++
	same := c.hdrValid && c.base == 0 && h.raw == c.hdr.raw
	if c.prov != nil && same {
		// The same header again: mxFrame went back to 0 without a
		// checkpoint, so the generation's first transaction was rolled
		// back.
		c.withdrawLocked("WAL header rewritten")
	}
	// Record the generation before SQLite can write a frame of it (this
	// runs before the header write returns to SQLite): at the next open,
	// frames of a generation capture never saw are refused.
	if err := c.endGenerationLocked(&h.raw); err != nil {
		return err
	}
	c.hdr, c.hdrValid = h, true
	c.base, c.baseCk, c.chainTo, c.storeBase, c.written, c.failedFrame = 0, h.ck, 0, 1, 0, 0
	c.store.setPageSize(int(h.pageSize))
	return nil
}

// endGenerationLocked ends the current WAL generation: SQLite wrote a new
// header (next), truncated the WAL below its header, deleted it, or wrote
// the database directly (rollback-journal mode). SQLite discards a generation only after a complete checkpoint, so
// a provisional transaction still there was committed: it is finalized.
// Every final transaction of the generation is then confirmed, and the
// generation recorded as ended (all its committed frames are spooled), in
// one state write with the next generation's header if there is one.
func (c *Capture) endGenerationLocked(next *[walHeaderSize]byte) error {
	if c.prov != nil {
		c.stats.FinalRestart++
		if err := c.finalizeLocked(); err != nil {
			return err
		}
	}
	if err := c.flushPendingLocked(); err != nil {
		return err
	}
	var ended *[walHeaderSize]byte
	if c.hdrValid {
		old := c.hdr.raw
		ended = &old
	}
	c.meta.truncate(0)
	c.store.reset()
	c.lastCommit.valid = false
	c.hdrValid = false
	c.genSeq++
	c.unconfirmed = c.unconfirmed[:0]
	if ended == nil && next == nil {
		return c.persistConfirmedLocked()
	}
	if err := c.spool.persist(c.confirmTargetLocked(), ended, next); err != nil {
		return c.failLocked(err)
	}
	return nil
}

// markDurableLocked records that the WAL frames up to frame of generation
// gen are durable, and drops the records they cover from unconfirmed.
func (c *Capture) markDurableLocked(gen uint64, frame uint32) {
	if gen == c.genSeq && (gen != c.durableGen || frame > c.durableFrame) {
		c.durableGen, c.durableFrame = gen, frame
	}
	i := 0
	for i < len(c.unconfirmed) {
		u := c.unconfirmed[i]
		if u.gen == c.durableGen && u.frame <= c.durableFrame {
			i++
			continue
		}
		break
	}
	if i > 0 {
		c.unconfirmed = append(c.unconfirmed[:0], c.unconfirmed[i:]...)
	}
}

// confirmTargetLocked is the highest txid whose record and WAL frames are
// both known durable (the spool must be synced to it first).
func (c *Capture) confirmTargetLocked() uint64 {
	last := c.spool.Status().LastTxid
	if len(c.unconfirmed) > 0 {
		last = c.unconfirmed[0].txid - 1
	}
	return last
}

// persistConfirmedLocked fsyncs the spool and raises the persisted
// confirmed watermark as far as the WAL's durability allows.
func (c *Capture) persistConfirmedLocked() error {
	if err := c.flushPendingLocked(); err != nil {
		return err
	}
	if err := c.spool.persist(c.confirmTargetLocked(), nil, nil); err != nil {
		return c.failLocked(err)
	}
	return nil
}

// Sync wraps SQLite's WAL sync: the VFS passes the real sync as do.
// Capture notes which frames were written before the sync started (only
// those are made durable by it), runs it, and then: on failure withdraws
// the provisional transaction if this connection is committing it (SQLite
// rolls it back); on success finalizes it, confirms what became durable
// and fsyncs the spool. The spool is never fsynced before the WAL sync
// succeeded. do's error is returned unchanged.
func (cn *Conn) Sync(do func() error) error {
	c := cn.c
	c.mu.Lock()
	gen, frame := c.genSeq, c.written
	cn.syncing = true
	c.mu.Unlock()

	err := do()

	c.mu.Lock()
	defer c.mu.Unlock()
	cn.syncing = false
	if uerr := c.usableLocked(); uerr != nil {
		if err != nil {
			return err
		}
		return uerr
	}
	P := c.prov
	mine := P != nil && P.writer == cn && gen == c.genSeq && P.commit <= frame
	if err != nil {
		if mine {
			c.withdrawLocked("its commit sync failed")
		}
		return err
	}
	c.markDurableLocked(gen, frame)
	if mine {
		c.stats.FinalSync++
		if ferr := c.finalizeLocked(); ferr != nil {
			return ferr
		}
	}
	// The spool is made current (coalesced transactions appended) and
	// then synced.
	if ferr := c.flushPendingLocked(); ferr != nil {
		return ferr
	}
	c.markDurableLocked(gen, frame)
	if serr := c.spool.Sync(); serr != nil {
		return c.failLocked(serr)
	}
	return nil
}

// Truncate is called after SQLite truncated the WAL to size.
func (cn *Conn) Truncate(size int64) error {
	c := cn.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.usableLocked(); err != nil {
		return err
	}
	if !c.reconciled {
		return nil
	}
	if size < walHeaderSize {
		return c.endGenerationLocked(nil)
	}
	if !c.hdrValid {
		return nil
	}
	fsz := int64(frameHeaderSz) + int64(c.hdr.pageSize)
	cut := uint32((size-walHeaderSize)/fsz) + 1 // first frame not wholly kept
	if cut <= c.base {
		return c.failLocked(fmt.Errorf("wal: %s truncated to %d bytes, cutting frame %d of a spooled transaction: %w", c.walName, size, cut, ErrLost))
	}
	if P := c.prov; P != nil && cut <= P.end {
		c.withdrawLocked(fmt.Sprintf("WAL truncated to %d bytes", size))
	}
	if n := int(cut - c.storeBase); n < c.meta.n {
		c.meta.truncate(max(n, 0))
	}
	c.chainTo = min(c.chainTo, cut-1)
	if cut <= c.failedFrame {
		c.failedFrame = 0
	}
	c.written = min(c.written, cut-1)
	return nil
}

// Deleted is called after the VFS deleted the database's -wal file.
func (c *Capture) Deleted() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.usableLocked(); err != nil {
		return err
	}
	if !c.reconciled {
		return nil
	}
	return c.endGenerationLocked(nil)
}

// CommitPhaseTwo is called when SQLite signals SQLITE_FCNTL_COMMIT_PHASETWO
// on the connection's main database file: pager_end_transaction after a
// successful commit. In WAL mode it finalizes the transaction this
// connection just committed; in rollback-journal mode it ends the
// transaction's direct writes (the journal is already finalized).
func (cn *Conn) CommitPhaseTwo() error {
	c := cn.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.usableLocked(); err != nil {
		return err
	}
	if c.prov != nil && c.lastFrameWriter == cn {
		c.stats.FinalPhaseTwo++
		if err := c.finalizeLocked(); err != nil {
			return err
		}
	}
	if c.directOwner == cn {
		return c.emitDirectLocked(cn)
	}
	return nil
}

// CheckpointStart is called at SQLITE_FCNTL_CKPT_START on the main database
// file: SQLite is about to copy WAL frames into the database, after which
// the WAL can be restarted. Every final transaction is made durable in the
// spool and confirmed first (the WAL is fsynced here if SQLite did not,
// e.g. with synchronous=OFF). If it fails, the VFS must fail the
// checkpoint (return an error from its database writes until
// CheckpointDone), or the WAL could be discarded before the spool holds it.
func (cn *Conn) CheckpointStart() error {
	c := cn.c
	c.mu.Lock()
	cn.inCkpt = true
	if err := c.usableLocked(); err != nil {
		c.mu.Unlock()
		return err
	}
	if P := c.prov; P != nil && (P.writer == nil || !P.writer.syncing) {
		// The checkpoint may copy P: it is committed (its writer is not
		// waiting on a commit sync that could still fail).
		c.stats.FinalCkpt++
		if err := c.finalizeLocked(); err != nil {
			c.mu.Unlock()
			return err
		}
	}
	if err := c.flushPendingLocked(); err != nil {
		c.mu.Unlock()
		return err
	}
	var h WALFile
	gen, frame := c.genSeq, c.written
	if len(c.unconfirmed) > 0 {
		h = c.walHandleLocked(cn)
	}
	c.mu.Unlock()
	if h != nil {
		if err := h.Sync(); err != nil {
			return fmt.Errorf("wal: fsync %s before checkpoint: %w", h.Name(), err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if h != nil {
		c.markDurableLocked(gen, frame)
	}
	return c.persistConfirmedLocked()
}

// CheckpointDone is called at SQLITE_FCNTL_CKPT_DONE.
func (cn *Conn) CheckpointDone() {
	c := cn.c
	c.mu.Lock()
	cn.inCkpt = false
	c.mu.Unlock()
}

// SyncForPublish fsyncs the WAL and then the spool and returns the highest
// txid durable in both: the publisher publishes nothing above it.
func (c *Capture) SyncForPublish() (uint64, error) {
	c.mu.Lock()
	if err := c.usableLocked(); err != nil {
		c.mu.Unlock()
		return 0, err
	}
	if err := c.flushPendingLocked(); err != nil {
		c.mu.Unlock()
		return 0, err
	}
	var h WALFile
	gen, frame := c.genSeq, c.written
	if len(c.unconfirmed) > 0 {
		h = c.walHandleLocked(nil)
	}
	c.mu.Unlock()
	if h != nil {
		if err := h.Sync(); err != nil {
			return 0, fmt.Errorf("wal: fsync %s for publish: %w", h.Name(), err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.usableLocked(); err != nil {
		return 0, err
	}
	if h != nil {
		c.markDurableLocked(gen, frame)
	}
	if err := c.persistConfirmedLocked(); err != nil {
		return 0, err
	}
	return c.spool.Confirmed(), nil
}
