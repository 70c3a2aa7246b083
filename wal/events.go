package wal

// The signals other than WAL writes (syncs, truncation, deletion, commit
// phase two, checkpoints, publishing) and the durability bookkeeping they
// drive: WAL generations, the durable frames, the confirmed watermark.

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

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
	c.readBack, c.pagePow = c.opts.ReadBack, stepPower(h.pageSize/8)
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
	// Every record so far belongs to an earlier generation: the next
	// one's records begin after the spool's last txid.
	if err := c.spool.persist(c.confirmTargetLocked(), ended, next, c.spool.Status().LastTxid); err != nil {
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
	if err := c.spool.persist(c.confirmTargetLocked(), nil, nil, unknownStart); err != nil {
		return c.failLocked(err)
	}
	return nil
}

// Sync wraps SQLite's WAL sync: the VFS passes the real sync as do.
// Capture notes which frames were written before the sync started (only
// those are made durable by it), runs it, and then: on failure withdraws
// the provisional transaction if this connection is committing it (SQLite
// rolls it back); on success finalizes it, notes what became durable
// and fsyncs the spool (the held group is appended and fsynced beside
// the sync). Nothing is confirmed here: C rises only at a persist, after
// a WAL sync that succeeded. do's error is returned unchanged.
func (cn *Conn) Sync(do func() error) error {
	c := cn.c
	c.mu.Lock()
	// Final transactions held for coalescing are appended beside the WAL
	// sync (a goroutine: encoding, hashing and writing a group of up to
	// Coalesce bytes overlap SQLite's fsync instead of preceding it), and
	// what is appended is fsynced there too, not after the WAL's fsync
	// (one wait for the disk instead of two); again after it for what
	// finalizes meanwhile. Neither appending nor the spool's fsync
	// confirms anything: the records stay above C until
	// markDurableLocked and a persist, after the WAL sync succeeded, so a
	// power loss in between finds them ahead of the WAL, which
	// reconciliation checks (invariant 4 in docs/arch/wal.md). A failed
	// append fails this sync (after the WAL's fsync ran: as an fsync
	// error does, it leaves SQLite unsure the WAL is durable, and
	// capture has stopped).
	var spoolSynced chan error
	if c.pend.n > 0 || c.spool.hasUnsynced() {
		spoolSynced = make(chan error, 1)
		go func() {
			c.mu.Lock()
			err := c.flushPendingLocked()
			c.mu.Unlock()
			if err == nil {
				err = c.spool.Sync()
			}
			spoolSynced <- err
		}()
	}
	gen, frame := c.genSeq, c.written
	cn.syncing = true
	c.wakeLocked() // a checkpoint waiting for cn's commit leaves it provisional now
	c.mu.Unlock()

	err := do()
	var serr error
	if spoolSynced != nil {
		serr = <-spoolSynced
	}

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
		if serr != nil {
			c.failLocked(serr)
		}
		return err
	}
	if serr != nil {
		return c.failLocked(serr)
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
// the WAL can be restarted. Every transaction the checkpoint may copy is
// made final, durable in the spool and confirmed first (the WAL is fsynced
// here if SQLite did not, e.g. with synchronous=OFF). If it fails, the VFS
// must fail the checkpoint (return an error from its database writes until
// CheckpointDone), or the WAL could be discarded before the spool holds it.
//
// It may wait, up to a few seconds, for another connection's commit in
// progress to show its outcome (settleForCheckpointLocked); if none shows,
// the checkpoint is refused with ErrCommitPending.
func (cn *Conn) CheckpointStart() error {
	c := cn.c
	c.mu.Lock()
	cn.inCkpt = true
	if err := c.usableLocked(); err != nil {
		c.mu.Unlock()
		return err
	}
	if err := c.settleForCheckpointLocked(cn); err != nil {
		c.mu.Unlock()
		return err
	}
	if err := c.flushPendingLocked(); err != nil {
		c.mu.Unlock()
		return err
	}
	var h WALFile
	gen, frame := c.genSeq, c.written
	if len(c.unconfirmed) > 0 {
		var release func()
		h, release = c.borrowWALLocked(cn)
		defer release()
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

// ErrCommitPending: CheckpointStart refused the checkpoint because another
// connection's commit in progress showed no outcome (commit sync, phase
// two, rollback) within the wait. Nothing was copied; a later checkpoint
// can succeed.
var ErrCommitPending = errors.New("wal: another connection's commit is in progress")

// checkpointWait bounds how long CheckpointStart waits for another
// connection's commit in progress (settleForCheckpointLocked). A commit
// shows its outcome within microseconds (or one fsync) of its commit
// frame; the bound only matters when a commit failed after its commit
// frame without a signal capture sees. <= 0: refuse at once (tests that
// drive every connection from one goroutine).
var checkpointWait atomic.Int64 // a time.Duration

func init() { checkpointWait.Store(int64(5 * time.Second)) }

// settleForCheckpointLocked makes final the provisional transaction P if,
// and only if, the checkpoint that cn is starting may copy it.
//
// What a checkpoint copies (sqlite3WalCheckpoint, walCheckpoint): frames
// up to mxSafeFrame <= mxFrame of the wal-index header the checkpointer
// read before CKPT_START. A writer updates that header (walIndexAppend,
// walIndexWriteHdr, end of sqlite3WalFrames) after its commit frame, after
// its padding and after its commit sync if it syncs (synchronous=FULL):
// P is copyable only if its writer got past all of them before the
// checkpointer read the header. Hence, for P written by connection W:
//   - W is inside its commit sync: W has not updated the header, so the
//     checkpointer's copy of it predates P. P stays provisional (its sync
//     may still fail, and SQLite would then roll P back and write over it).
//   - W is another open connection between its commit frame and an
//     outcome: W may be about to sync (the header is not updated yet) or
//     may not sync at all (synchronous=NORMAL/OFF: the header may already
//     include P, and a WAL restart may follow the copy before W's phase
//     two arrives). Capture cannot tell which, so it waits for the next
//     thing W does: its sync starts (P stays provisional, as above), its
//     COMMIT_PHASETWO or next frame (P final), a failed sync or a rewrite
//     (P withdrawn). All of these come within microseconds, or one fsync;
//     if none comes within checkpointWait, W's commit failed in a way no
//     event shows, and the checkpoint is refused (ErrCommitPending), which
//     copies nothing and is always safe.
//   - W is cn itself, or closed (or unknown): W's commit returned (a
//     connection does one thing at a time), so P is committed unless its
//     commit failed after the commit frame with no signal (see "Known
//     limits" in docs/arch/wal.md). P is made final.
//
// A transaction that becomes provisional after CKPT_START arrived was
// committed after the checkpointer read the header: it is never copyable
// by this checkpoint and stays provisional.
func (c *Capture) settleForCheckpointLocked(cn *Conn) error {
	if c.prov == nil {
		return nil
	}
	seq := c.provSeq
	var timer *time.Timer
	var wait time.Duration
	expired := false
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if err := c.usableLocked(); err != nil {
			return err
		}
		P := c.prov
		if P == nil || c.provSeq != seq {
			return nil // P became final or was withdrawn meanwhile
		}
		w := P.writer
		if w != nil && w.syncing {
			return nil
		}
		_, open := c.conns[w]
		if w == nil || w == cn || !open {
			c.stats.FinalCkpt++
			return c.finalizeLocked()
		}
		if expired {
			return c.commitPendingLocked(P, wait)
		}
		if timer == nil {
			c.stats.CkptWaits++
			if wait = time.Duration(checkpointWait.Load()); wait <= 0 {
				return c.commitPendingLocked(P, 0)
			}
			timer = time.NewTimer(wait)
		}
		if c.wake == nil {
			c.wake = make(chan struct{})
		}
		wake := c.wake
		c.mu.Unlock()
		select {
		case <-wake:
		case <-timer.C:
			expired = true
		}
		c.mu.Lock()
	}
}

func (c *Capture) commitPendingLocked(P *provisional, waited time.Duration) error {
	c.logf("checkpoint refused: frames %d..%d of %s, committed by another connection, showed no outcome within %v", P.first, P.commit, c.walName, waited)
	return fmt.Errorf("wal: checkpoint refused: frames %d..%d of %s, committed by another connection, showed no outcome within %v: %w",
		P.first, P.commit, c.walName, waited, ErrCommitPending)
}

// wakeLocked wakes the CheckpointStart calls waiting for a commit to show
// its outcome: called when the provisional transaction becomes final or is
// withdrawn, when a connection starts a sync or closes, and when capture
// stops or closes.
func (c *Capture) wakeLocked() {
	if c.wake != nil {
		close(c.wake)
		c.wake = nil
	}
}

// CheckpointDone is called at SQLITE_FCNTL_CKPT_DONE.
func (cn *Conn) CheckpointDone() {
	c := cn.c
	c.mu.Lock()
	cn.inCkpt = false
	c.mu.Unlock()
}

// ConfirmWith confirms the transactions whose WAL frames are not yet
// known durable by fsyncing the WAL through h, a handle the caller opened
// on the WAL file capture follows. SyncForPublish can fsync only through
// a connection's WAL handle; when the last connection closed without
// ending the generation (a read-only connection closing last: SQLite
// checkpoints and deletes the WAL only from a read-write one), there is
// none, and the final publish would leave those transactions for the
// next open. The VFS calls it at the database's close, before that
// publish.
func (c *Capture) ConfirmWith(h WALFile) error {
	c.mu.Lock()
	if err := c.usableLocked(); err != nil {
		c.mu.Unlock()
		return err
	}
	if err := c.flushPendingLocked(); err != nil {
		c.mu.Unlock()
		return err
	}
	if len(c.unconfirmed) == 0 {
		c.mu.Unlock()
		return nil
	}
	gen, frame := c.genSeq, c.written
	c.mu.Unlock()
	if err := h.Sync(); err != nil {
		return fmt.Errorf("wal: fsync %s: %w", h.Name(), err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.usableLocked(); err != nil {
		return err
	}
	c.markDurableLocked(gen, frame)
	return c.persistConfirmedLocked()
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
		var release func()
		h, release = c.borrowWALLocked(nil)
		defer release()
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
