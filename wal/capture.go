package wal

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sync"
)

// WALFile is the VFS's handle on a database's -wal file, given to capture
// at each open of the WAL. Capture reads it to reconcile at open and syncs
// it before confirming transactions for publishing.
type WALFile interface {
	io.ReaderAt
	Size() (int64, error)
	// Sync fsyncs the WAL file.
	Sync() error
	// Name is the file's path, for error messages.
	Name() string
}

// MainFile is the VFS's handle on the main database file of a connection.
// When a rollback-journal-mode transaction ends, capture reads back the
// pages it wrote (the connection still holds its EXCLUSIVE lock).
type MainFile interface {
	io.ReaderAt
	Size() (int64, error)
}

// CaptureOptions configure a Capture.
type CaptureOptions struct {
	// MemoryBytes bounds the memory that holds the frames of transactions
	// not yet in the spool; beyond it they spill to a scratch file in the
	// spool directory. Default 8 MiB.
	MemoryBytes int
	// Adopt lets reconciliation capture a WAL generation capture never saw
	// (every committed frame of it becomes a transaction) when the spool
	// has never held any record, so that the frames replay onto an empty
	// database. A database with data is adopted with AppendImage instead
	// (main file plus the WAL's committed frames as one image record):
	// replaying a WAL over a main-file image can produce states that
	// never existed, because a checkpoint may already have copied some of
	// its frames into the main file.
	Adopt bool
	// Logf, if set, receives a line for unusual events (withdrawn
	// transactions, reconciliation results).
	Logf func(format string, args ...any)
	// Coalesce, if > 0, lets consecutive small final transactions of one
	// WAL generation share one spool record (the newest version of each
	// page among them, up to Coalesce bytes of pages, held in memory on
	// top of MemoryBytes) until something needs the spool current: a WAL
	// sync, a checkpoint, SyncForPublish, the end of the generation, a
	// rollback-mode transaction, Flush, Close. A spool txid then names a
	// group of SQLite transactions, and Spool.LastHeader and Status do not
	// show a group until it is appended: Capture.LastFinal gives the
	// group's txid (the one it is appended with); a caller that needs the
	// commit in the spool right after it must call Flush first (or
	// SyncForPublish, which does), or not coalesce. 0: one record per
	// transaction. Why it is safe: coalesce.go. The VFS coalesces. A
	// process that coalesced must reopen coalescing: reconciliation
	// regroups the transactions a crash lost only then (captureFromWAL).
	Coalesce int
	// ReadBack: keep no copy of the pages SQLite writes; read each back
	// from the WAL file when it is spooled (verified against the frame
	// as written). Saves a copy of every page version into memory
	// (MemoryBytes then only bounds what a materialization holds). Why it
	// is safe: readback.go. The VFS reads back.
	ReadBack bool
}

// Stats counts capture events (for tests, the status pragma and metrics).
type Stats struct {
	Headers        uint64 // WAL headers written (new generations)
	Commits        uint64 // transactions made final and spooled from the live WAL
	Withdrawn      uint64 // provisional transactions withdrawn (rolled back by SQLite)
	PaddingFrames  uint64 // sector-padding copies of a commit frame
	ChainBreaks    uint64 // frames whose checksum did not (yet) verify when written
	FinalPhaseTwo  uint64 // finalized by SQLITE_FCNTL_COMMIT_PHASETWO
	FinalSync      uint64 // finalized by the writer's successful commit sync
	FinalNextFrame uint64 // finalized by a later frame
	FinalCkpt      uint64 // finalized by a checkpoint start
	CkptWaits      uint64 // checkpoint starts that waited for another connection's commit in progress
	FinalRestart   uint64 // finalized by a WAL restart, truncation or deletion
	DirectTxns     uint64 // rollback-journal-mode transactions spooled
	Reconciled     uint64 // transactions captured from the WAL by reconciliation
	ReconDropped   uint64 // unconfirmed spool records dropped by reconciliation
	Spilled        uint64 // frames written to the spill file
	Coalesced      uint64 // transactions that joined the ones before them in one record (Coalesce)
	Materialized   uint64 // generations whose held frames were copied into memory before the WAL lost them (ReadBack)
}

// Capture turns the stream of WAL writes SQLite makes for one database
// into spooled transactions: every committed transaction exactly once, in
// commit order, durable before it is published. All connections of the
// database share one Capture (each through its own Conn); SQLite
// serialises writers, and a mutex serialises the events.
//
// The state of the current WAL generation, by frame index:
//
//	1 .. base                 settled: final transactions (spooled) and their padding
//	base+1 .. prov.end        the provisional transaction, if any (with its padding)
//	above                     frames of the open transaction (pending)
//
// Invariants (kept by the functions named):
//   - Frames 1..chainTo (chainTo >= base) have a verified checksum chain
//     from the WAL header (extendChain). A transaction is captured only at
//     a commit frame the chain reaches, so its pages are exactly what
//     SQLite's recovery would read.
//   - At most one transaction is provisional. It becomes final when
//     SQLite shows it committed: its writer's commit sync succeeded, its
//     writer called COMMIT_PHASETWO, a later non-padding frame was written,
//     its own connection (or any, once its writer closed) started a
//     checkpoint, or the WAL generation ended. A write at or below its
//     frames, or its writer's failed commit sync, withdraws it (SQLite
//     rolled it back) and capture goes on with the next one.
//   - A checkpoint copies no transaction that is not final, and makes none
//     final whose commit may still fail: a checkpoint started by another
//     connection while the writer's commit is in progress waits for the
//     commit's next signal, and a commit inside its sync (not yet in the
//     wal-index the checkpointer read) stays provisional
//     (settleForCheckpointLocked).
//   - Only final transactions are appended to the spool, in commit order,
//     each with txid = previous + 1 (finalize), or with Coalesce several
//     consecutive ones of a generation as one record (coalesce.go).
//   - SQLite never writes at or below base; if it does, capture stops with
//     ErrLost rather than guess (writeFrame).
//   - The spool is fsynced at every WAL sync (beside it: its fsync
//     confirms nothing), and before a checkpoint copies the WAL into the
//     database, each time with what coalescing holds appended first
//     (beside the WAL sync too, in the same goroutine): a
//     record may be durable in the spool ahead of its frames in the WAL
//     only while it is above the persisted confirmed watermark, which
//     reconciliation checks against the WAL (Sync, CheckpointStart). What is only in memory (coalesced,
//     or in a buffered spool's segFile) is lost by a crash like an
//     unsynced record by a power loss, and captured again from the WAL.
//   - The confirmed watermark covers a record only once the WAL sync that
//     made its frames durable started after they were written (durable).
//   - Before a WAL generation can be discarded (restart, truncation,
//     deletion, all after a complete checkpoint) every final transaction of
//     it is confirmed and persisted; a new generation's header is recorded
//     durably before SQLite can write any frame of it (newGeneration).
type Capture struct {
	spool *Spool
	opts  CaptureOptions

	mu     sync.Mutex
	failed error // sticky: see ErrLost
	closed bool

	reconciled bool

	// Current WAL generation.
	hdrValid bool
	hdr      walHeader
	genSeq   uint64 // increments at every generation change
	walName  string

	base    uint32
	baseCk  [2]uint32
	chainTo uint32
	// failedFrame (if not 0) is chainTo+1 when its checksum failed and
	// neither it nor any frame before it was written since: not retried.
	failedFrame uint32
	written     uint32 // highest frame index completely written in this generation

	// Frames storeBase.. are held in meta and store, slot = idx-storeBase.
	storeBase uint32
	meta      frameMetas
	store     *pageStore
	buf       []byte // one page, scratch
	// readBack: pages of this generation are read back from the WAL,
	// not held in store (CaptureOptions.ReadBack, until materialized).
	readBack bool
	rbuf     []byte    // read-back buffer
	pagePow  [4]uint32 // stepPower(pageSize/8): pageChecksum
	rbHdr    frameHeader
	refs     []frameRef // read-back scratch

	prov            *provisional // nil or &provBuf
	provBuf         provisional  // reused: no allocation per commit
	provSeq         uint64       // incremented each time a transaction becomes provisional
	lastFrameWriter *Conn
	lastCommit      commitFrame // the last commit frame (settled or provisional): padding detection

	// Durability bookkeeping.
	durableGen   uint64
	durableFrame uint32
	unconfirmed  []pendingConfirm // spooled records whose WAL frames are not known durable

	// Rollback-journal-mode writes of the open transaction: the byte
	// ranges written (the pages are read back from the file at its end).
	direct      []byteRange
	directOwner *Conn

	conns map[*Conn]struct{}

	// Final transactions not yet appended (CaptureOptions.Coalesce).
	pend pendingRecord

	// scratch for finalize
	keep  []uint64
	pgnos []uint32
	seen  map[uint32]struct{}
	bits  []uint64

	// wake is closed (and cleared) by wakeLocked: CheckpointStart calls
	// waiting for a commit in progress re-check (events.go).
	wake chan struct{}

	stats Stats
}

type provisional struct {
	first, commit, end uint32 // frames; end > commit when padding follows
	writer             *Conn
	dbPages            uint32
	ck                 [2]uint32
}

type commitFrame struct {
	valid  bool
	pgno   uint32
	commit uint32
	page   []byte
}

type byteRange struct{ off, end int64 }

type pendingConfirm struct {
	txid  uint64
	gen   uint64
	frame uint32
}

// NewCapture creates the capture of one database over its spool. The
// first AttachWAL (or an explicit Reconcile) reconciles the spool with the
// WAL on disk before anything else is captured.
func NewCapture(sp *Spool, opts CaptureOptions) (*Capture, error) {
	if opts.MemoryBytes <= 0 {
		opts.MemoryBytes = 8 << 20
	}
	if testReadBack {
		opts.ReadBack = true
	}
	c := &Capture{
		spool: sp, opts: opts, conns: map[*Conn]struct{}{}, readBack: opts.ReadBack,
		store: newPageStore(sp.fs, filepath.Join(sp.dir, "capture.spill"), opts.MemoryBytes),
		seen:  map[uint32]struct{}{},
	}
	return c, nil
}

func (c *Capture) logf(format string, args ...any) {
	if c.opts.Logf != nil {
		c.opts.Logf(format, args...)
	}
}

// Spool returns the capture's spool.
func (c *Capture) Spool() *Spool { return c.spool }

// Stats returns the event counters.
func (c *Capture) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// Err returns the error that stopped capture, if any.
func (c *Capture) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failed
}

func (c *Capture) usableLocked() error {
	if c.closed {
		return ErrClosed
	}
	if c.failed != nil {
		return fmt.Errorf("wal: capture stopped: %w", c.failed)
	}
	return nil
}

// failLocked stops capture for good (until the database is reopened and
// reconciled). Used when continuing could spool something wrong.
func (c *Capture) failLocked(err error) error {
	if c.failed == nil {
		c.failed = err
		c.logf("capture stopped: %v", err)
		c.wakeLocked()
	}
	return err
}

// Close appends what coalescing holds (without syncing it) and releases
// the capture's scratch files. Provisional transactions are not spooled:
// the WAL still holds them, and reconciliation at the next open captures
// those SQLite kept.
func (c *Capture) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	var err error
	if c.failed == nil {
		err = c.flushPendingLocked()
	}
	c.closed = true
	c.wakeLocked()
	c.store.close()
	return err
}

// Conn is one SQLite connection's view of the capture: one per main
// database file handle. WAL events carry the connection because SQLite's
// signals are per connection: a commit sync or COMMIT_PHASETWO says
// something about the transaction that connection wrote, not about one
// another connection may have written since.
type Conn struct {
	c       *Capture
	main    MainFile
	wal     WALFile
	syncing bool // inside its WAL sync (Sync): a commit sync has not updated the wal-index yet
	inCkpt  bool // between CheckpointStart and CheckpointDone
	// walUse is held shared by whoever syncs wal without c.mu (a
	// checkpoint or the publisher borrowing this connection's handle,
	// borrowWALLocked); DetachWAL and Close take it exclusively after
	// clearing wal, so the VFS never closes the file under a sync.
	walUse sync.RWMutex
	// waitCtx returns the context a write waiting for spool space gives up
	// with (the running statement's); nil: none (SetWaitContext).
	waitCtx func() context.Context
}

// SetWaitContext sets how a write of this connection that waits for spool
// space learns the running statement's context (the VFS: the SQLite
// connection's interrupt), so that the wait ends with it. Call it before
// the connection writes.
func (cn *Conn) SetWaitContext(f func() context.Context) { cn.waitCtx = f }

// waitForSpace is Spool.WaitForSpace with the connection's context, which
// is looked up only when the spool is short of space.
func (cn *Conn) waitForSpace() error {
	if cn.c.spool.hasSpace() {
		return nil
	}
	return cn.c.spool.WaitForSpace(cn.waitContext())
}

func (cn *Conn) waitContext() context.Context {
	if cn.waitCtx == nil {
		return context.Background()
	}
	if ctx := cn.waitCtx(); ctx != nil {
		return ctx
	}
	return context.Background()
}

// NewConn registers a connection (at the open of its main database file).
func (c *Capture) NewConn(main MainFile) *Conn {
	cn := &Conn{c: c, main: main}
	c.mu.Lock()
	c.conns[cn] = struct{}{}
	c.mu.Unlock()
	return cn
}

// Close unregisters the connection (its main database file closed).
func (cn *Conn) Close() {
	c := cn.c
	defer cn.waitWALUsers() // after c.mu is released
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.conns, cn)
	cn.wal = nil
	if c.lastFrameWriter == cn {
		c.lastFrameWriter = nil
	}
	c.wakeLocked() // a checkpoint waiting for cn's commit stops waiting
	if c.directOwner == cn {
		// A rollback-mode writer that closed mid-transaction: SQLite
		// rolls back by playing the journal on next open, through a
		// connection whose writes we capture then.
		c.directOwner = nil
	}
}

// AttachWAL is called at each open of the -wal file by this connection.
// The first attach after NewCapture reconciles the spool with the WAL.
func (cn *Conn) AttachWAL(f WALFile) error {
	c := cn.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.usableLocked(); err != nil {
		return err
	}
	c.walName = f.Name()
	if !c.reconciled {
		// The handle counts as attached only once reconciled: the VFS
		// closes it when this fails, and a closed handle must not be
		// read back from, nor counted as open (DetachWAL).
		if err := c.reconcileLocked(f); err != nil {
			return err
		}
	}
	cn.wal = f
	return nil
}

// DetachWAL is called when this connection closes its WAL file, before
// the file is closed: it returns once no one syncs through the handle.
//
// With ReadBack, the last handle's detach first appends the coalesced
// group and copies the frames capture holds into memory
// (materializeLocked): the WAL may be deleted once it is closed. A
// failure there stops capture (reported by the next event).
func (cn *Conn) DetachWAL() {
	c := cn.c
	c.mu.Lock()
	if c.readBack && c.hdrValid && cn.wal != nil && c.usableLocked() == nil && c.onlyHandleLocked(cn) {
		if err := c.materializeLocked(); err != nil {
			c.failLocked(err)
		}
	}
	cn.wal = nil
	c.mu.Unlock()
	cn.waitWALUsers()
}

// onlyHandleLocked reports whether cn holds the only attached WAL handle.
func (c *Capture) onlyHandleLocked(cn *Conn) bool {
	for o := range c.conns {
		if o != cn && o.wal != nil {
			return false
		}
	}
	return true
}

// waitWALUsers waits for syncs that borrowed the handle before it was
// cleared (new ones cannot start: borrowing needs cn.wal under c.mu).
func (cn *Conn) waitWALUsers() {
	cn.walUse.Lock()
	cn.walUse.Unlock() //nolint:staticcheck // an empty critical section is the point: a barrier
}

// borrowWALLocked picks an open WAL handle for syncing without c.mu,
// preferring cn's, and holds it open until release is called.
func (c *Capture) borrowWALLocked(cn *Conn) (h WALFile, release func()) {
	owner := cn
	if owner == nil || owner.wal == nil {
		owner = nil
		for o := range c.conns {
			if o.wal != nil {
				owner = o
				break
			}
		}
	}
	if owner == nil {
		return nil, func() {}
	}
	owner.walUse.RLock()
	return owner.wal, owner.walUse.RUnlock
}

// testReadBack, set by the package's tests (BOP_TEST_READBACK=1), makes
// every capture read back: the whole suite then runs in both modes.
var testReadBack bool
