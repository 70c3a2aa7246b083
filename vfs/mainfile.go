package vfs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/bopstore/bop/wal"
	"github.com/ncruces/go-sqlite3"
	"github.com/ncruces/go-sqlite3/util/vfsutil"
	"github.com/ncruces/go-sqlite3/vfs"
)

// mainFile is one connection's main database file: the page image.
// Reads pass through (or, for pages a sparse image never held, go to the
// remote at T_seed); writes pass through and feed the capture (writes
// outside a checkpoint are rollback-mode transactions, before WAL mode is
// on); every write is accounted by the seal.
type mainFile struct {
	fileForward
	d  *database
	cn *wal.Conn
	// mmap is decided at open, once: SQLite requires one mapper for the
	// life of the file, and a sparse image must not be mapped.
	mmap vfs.MemoryMapper
	// shm is the base file's wal-index, which it makes at open and keeps
	// for its life: SQLite asks for it at every wal-index lock (six per
	// autocommit transaction), so it is looked up once.
	shm vfs.SharedMemory
	// ckptErr: capture could not make the spool durable at CKPT_START;
	// the checkpoint's writes fail (SQLite then keeps the WAL) until
	// CKPT_DONE.
	ckptErr error

	// The connection's commit bookkeeping (hook.go); a main file belongs
	// to one connection, whose statements run one at a time.
	// autoCheckpoint is the connection's WAL auto-checkpoint threshold
	// for this database (PRAGMA wal_autocheckpoint); committed the txid
	// its last commit was spooled at; hookErr the error its WAL hook is
	// handing to SQLite.
	autoCheckpoint atomic.Int64
	committed      uint64
	hookErr        error
	// conn is the connection whose main database this file is (set by the
	// auto-extension; nil for an attached file): its interrupt context is
	// the running statement's, which pragmas that wait honour.
	conn *sqlite3.Conn
}

func newMainFile(d *database, base vfs.File) *mainFile {
	f := &mainFile{fileForward: fileForward{base}, d: d, shm: vfsutil.WrapSharedMemory(base)}
	f.autoCheckpoint.Store(int64(d.cfg.AutoCheckpoint))
	if d.img == nil {
		f.mmap = vfsutil.WrapMemoryMapper(base)
	}
	f.cn = d.capture.NewConn(f)
	// A write waiting for spool space gives up with the statement.
	f.cn.SetWaitContext(f.interrupt)
	return f
}

// interrupt is the running statement's context: the connection's
// interrupt (nil before the auto-extension saw the connection, and for
// an attached file).
func (f *mainFile) interrupt() context.Context {
	if f.conn == nil {
		return nil
	}
	return f.conn.GetInterrupt()
}

var (
	_ vfs.FileMemoryMapper = (*mainFile)(nil)
	_ vfs.FileSharedMemory = (*mainFile)(nil)
	_ wal.MainFile         = (*mainFile)(nil)
)

// MemoryMapper is the base file's, except on a sparse image.
func (f *mainFile) MemoryMapper() vfs.MemoryMapper { return f.mmap }

// SharedMemory is the base file's (fileForward's, looked up once).
func (f *mainFile) SharedMemory() vfs.SharedMemory { return f.shm }

func (f *mainFile) sparse() *image {
	if img := f.d.img; img != nil && !img.complete.Load() {
		return img
	}
	return nil
}

func (f *mainFile) ReadAt(p []byte, off int64) (int, error) {
	if img := f.sparse(); img != nil {
		return img.readAt(f.d.ctx, f, p, off)
	}
	return f.File.ReadAt(p, off)
}

// readBase and writeBase are how a sparse image reaches the file.
func (f *mainFile) readBase(p []byte, off int64) (int, error) { return f.File.ReadAt(p, off) }
func (f *mainFile) writeBase(p []byte, off int64) error       { return f.d.writeImage(p, off) }

func (f *mainFile) WriteAt(p []byte, off int64) (int, error) {
	if f.ckptErr != nil {
		return 0, f.ckptErr
	}
	write := func() error {
		if err := f.d.seal.beginWrite(); err != nil {
			return err
		}
		_, err := f.File.WriteAt(p, off)
		f.d.seal.endWrite()
		return err
	}
	var err error
	if img := f.sparse(); img != nil {
		err = img.writeAt(f.d.ctx, f, p, off, write)
	} else {
		err = write()
	}
	if err != nil {
		return 0, err
	}
	if err := f.cn.MainWrite(p, off); err != nil {
		return 0, writeErr(err)
	}
	if f.d.directWriter.Load() != f {
		f.d.directWriter.Store(f)
	}
	return len(p), nil
}

func (f *mainFile) Truncate(size int64) error {
	if err := f.d.seal.beginWrite(); err != nil {
		return err
	}
	err := f.File.Truncate(size)
	f.d.seal.endWrite()
	if err == nil && f.d.img != nil {
		f.d.img.truncated(size)
	}
	return err
}

// SizeHint is SQLite's FCNTL_SIZE_HINT at the start of a checkpoint's
// copy: the base file extends itself (fallocate), which changes its size
// and mtime, so the seal counts it as a write (busy first: a crash or
// power loss right after it must not find the file changed outside bop;
// TestPowerLossAfterSizeHint). When the copy's writes are refused, so is
// the hint (SQLite ignores a hint's error).
func (f *mainFile) SizeHint(size int64) error {
	if f.ckptErr != nil {
		return f.ckptErr
	}
	if err := f.d.seal.beginWrite(); err != nil {
		return err
	}
	err := vfsutil.WrapSizeHint(f.File, size)
	f.d.seal.endWrite()
	return err
}

// Sync is SQLite's fsync of the main file (the end of a complete
// checkpoint, unless PRAGMA synchronous=OFF): see syncMain. A busy seal
// is settled later.
func (f *mainFile) Sync(flags vfs.SyncFlag) error {
	busy, err := f.d.syncMain(func() error { return f.File.Sync(flags) })
	if err != nil {
		return err
	}
	if busy {
		f.d.settleLater()
	}
	return nil
}

// Unlock emits a rollback-mode transaction's direct writes before the
// lock drops (another connection may write as soon as it does).
// statementContext is the running statement's context (the connection's
// interrupt, for a main file whose connection the auto-extension saw),
// ended too when the database closes.
func (f *mainFile) statementContext() (context.Context, context.CancelFunc) {
	stmt := f.interrupt()
	if stmt == nil {
		return context.WithCancel(f.d.ctx)
	}
	ctx, cancel := context.WithCancel(stmt)
	stop := context.AfterFunc(f.d.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// Lock: in WAL mode SQLite takes the main file's EXCLUSIVE lock only when
// its last connection closes (bop refuses journal_mode changes; with
// locking_mode=EXCLUSIVE, once at the first write): it then checkpoints
// the WAL into the main file and deletes it. With at least kickBytes in
// the spool the final publish is started at once (Publisher.Kick):
// staging the unpublished pages overlaps that checkpoint, and Close waits
// for the cycle. Below that, Close's own final cycle is cheaper: it leaves
// head to the release record (one head write fewer).
func (f *mainFile) Lock(lock vfs.LockLevel) error {
	err := f.File.Lock(lock)
	if err == nil && lock == vfs.LOCK_EXCLUSIVE {
		if pub := f.d.pub.Load(); pub != nil && f.d.spool.Status().Bytes >= kickBytes {
			pub.Kick()
		}
	}
	return err
}

// kickBytes is the spool size from which the final publish starts when
// SQLite starts closing (mainFile.Lock).
const kickBytes = 4 << 20

func (f *mainFile) Unlock(lock vfs.LockLevel) error {
	var cerr error
	if lock <= vfs.LOCK_SHARED {
		cerr = f.cn.MainUnlock()
	}
	err := f.File.Unlock(lock)
	if cerr != nil {
		return cerr
	}
	return err
}

func (f *mainFile) Close() error {
	f.d.directWriter.CompareAndSwap(f, nil)
	f.cn.Close()
	err := f.File.Close()
	if rerr := f.d.release(); err == nil {
		err = rerr
	}
	return err
}

// CommitPhaseTwo: SQLite ended a write transaction successfully (a hint;
// its error is ignored by SQLite, capture keeps its own).
func (f *mainFile) CommitPhaseTwo() error {
	err := vfsutil.WrapCommitPhaseTwo(f.File)
	if errors.Is(err, sqlite3.NOTFOUND) {
		err = nil
	}
	if cerr := f.cn.CommitPhaseTwo(); cerr != nil {
		return cerr
	}
	// The transaction is final: its txid is the newest (or older, if
	// another connection committed meanwhile), spooled or in the group
	// capture coalesces.
	if txid := f.d.capture.LastFinal(); txid > 0 {
		f.committed = txid
		if pub := f.d.pub.Load(); pub != nil {
			pub.Notify(txid)
		} else {
			f.d.noteCommit()
			f.d.startPublisherLate()
		}
	}
	return err
}

func (f *mainFile) CheckpointStart() {
	f.ckptErr = nil
	if err := f.cn.CheckpointStart(); err != nil {
		if errors.Is(err, wal.ErrCommitPending) {
			f.ckptErr = fmt.Errorf("bop: checkpoint refused for now (nothing copied; retry later): %w", err)
		} else {
			f.ckptErr = fmt.Errorf("bop: checkpoint refused, the spool could not be made durable: %w", err)
		}
	}
	vfsutil.WrapCheckpointStart(f.File)
}

// CheckpointDone: SQLite's copy of WAL frames into the file ended. Nothing
// is made durable here (SQLite ignores this file control's result, so a
// failure could only be logged): a complete checkpoint is followed by
// SQLite's own Sync (synchronous NORMAL or FULL), and the main file is
// made durable, whatever PRAGMA synchronous says, before the WAL can be
// restarted (beforeWALReuse).
func (f *mainFile) CheckpointDone() {
	f.cn.CheckpointDone()
	vfsutil.WrapCheckpointDone(f.File)
	f.ckptErr = nil
}

// Pragma answers bop's pragmas and vetoes journal modes other than WAL;
// everything else goes to the base file (then SQLite). Every
// PRAGMA synchronous level is accepted: whatever SQLite syncs, the main
// file is fsynced before a WAL generation ends (beforeWALReuse), and the
// WAL and spool before a checkpoint copies frames or a publish.
func (f *mainFile) Pragma(name, value string) (string, error) {
	switch name {
	case "journal_mode":
		if v := strings.Trim(value, `'"`); v != "" && !strings.EqualFold(v, "wal") {
			return "", fmt.Errorf("%w: journal_mode=%s refused for %s: bop captures every transaction from the WAL, so the database stays in WAL mode", ErrJournalMode, v, f.d.path)
		}
	case "bop_status":
		return f.d.statusJSON()
	case "bop_txid":
		return f.d.txidString(), nil
	case "bop_checkpoint":
		ctx, cancel := f.statementContext()
		defer cancel()
		txid, err := f.d.publishNow(ctx)
		if err != nil {
			return "", fmt.Errorf("bop_checkpoint: %w", err)
		}
		return strconv.FormatUint(txid, 10), nil
	case "wal_autocheckpoint":
		// Answered here: SQLite would replace bop's WAL hook (hook.go).
		return f.autoCheckpointPragma(value)
	case hookErrorPragma:
		if err := f.hookErr; err != nil {
			f.hookErr = nil
			return "", vfs.SystemError(err, sqlite3.IOERR)
		}
		return "", nil
	default:
		if strings.HasPrefix(name, "bop_") {
			return "", fmt.Errorf("bop: unknown pragma %s (known: bop_status, bop_txid, bop_checkpoint)", name)
		}
	}
	return vfsutil.WrapPragma(f.File, name, value)
}

// Size implements wal.MainFile (and vfs.File, by embedding).
func (f *mainFile) Size() (int64, error) { return f.File.Size() }

// Main-file durability when a WAL generation ends.
//
// Capture (package wal) takes the end of a WAL generation (SQLite writes a
// new WAL header at offset 0, truncates the WAL below its header, or
// deletes it) as the point from which the main file holds every page of
// that generation: the WAL frames are gone, and the spool forgets those
// transactions once they are published. SQLite fsyncs the main file at
// the end of a complete checkpoint only with PRAGMA synchronous NORMAL or
// FULL; with OFF it never does. So bop makes it so itself.
//
// Invariant: no WAL generation ends unless every write to the main file
// made before that moment was covered by a successful fsync, and a sparse
// image's presence marks were saved after it. walFile.WriteAt (offset 0),
// walFile.Truncate (below the header) and VFS.Delete (of the -wal) call
// beforeWALReuse first, and do nothing to the WAL if it fails. It fsyncs
// the main file only if a write happened since the last successful fsync
// (the seal's write counter): with NORMAL or FULL, SQLite's checkpoint
// sync normally did it already; with OFF it costs one fsync per restart.
//
// A failed fsync of the main file (SQLite's, or bop's own) is sticky for
// the life of the database state, until its last connection closes:
// after a failed fsync the kernel may have dropped the dirty pages, and a
// later fsync reports success for data that never reached the disk
// (Linux), so no later fsync can vouch for what was written before it.
// From then on every generation end fails with SQLITE_IOERR_FSYNC and the
// error below: the WAL keeps every frame, so nothing committed is lost; a
// write that needs a WAL restart fails (SQLite rolls that transaction
// back); reads keep working; the error is in Status.MainSyncError and
// logged once. Reopening recovers: the first connection rebuilds the
// wal-index from the kept WAL, and its next checkpoint copies all of it
// into the main file again. A failed save of the bitmap is not sticky
// (the next generation end writes a new bitmap file).

// mainDurability is a database's record of main-file fsyncs.
type mainDurability struct {
	// barrier serialises beforeWALReuse; mu guards the fields below.
	barrier sync.Mutex
	mu      sync.Mutex
	synced  bool   // a successful fsync covered every write counted by gen
	gen     uint64 // the seal's write counter when that fsync began
	failed  error  // the first failed fsync (sticky)
	// fsync replaces bop's own fsync of the main file (tests inject
	// faults); nil is mainFD.Sync.
	fsync func() error
}

// mainSyncErr returns the sticky fsync failure, if any.
func (d *database) mainSyncErr() error {
	d.durable.mu.Lock()
	defer d.durable.mu.Unlock()
	return d.durable.failed
}

// fsyncMainFD is bop's own fsync of the main file, through its handle.
func (d *database) fsyncMainFD() error {
	d.durable.mu.Lock()
	fsync := d.durable.fsync
	d.durable.mu.Unlock()
	if fsync != nil {
		return fsync()
	}
	return d.mainFD.Sync()
}

// syncMain runs do, an fsync of the main file, and records its outcome.
// The seal's write counter and a sparse image's marks are read before it
// starts: on success those writes are durable and those marks are saved;
// on failure the sticky error is set. busy is the seal's state before
// the fsync.
func (d *database) syncMain(do func() error) (busy bool, err error) {
	busy, gen := d.seal.busyGen()
	var marks imageMarks
	if d.img != nil {
		marks = d.img.marksBefore()
	}
	if err := do(); err != nil {
		d.mainSyncFailed(err)
		return busy, err
	}
	if d.img != nil {
		if err := d.img.save(marks); err != nil {
			return busy, fmt.Errorf("bop: %s: save the image bitmap: %w", d.path, err)
		}
	}
	m := &d.durable
	m.mu.Lock()
	if !m.synced || gen > m.gen {
		m.synced, m.gen = true, gen
	}
	m.mu.Unlock()
	return busy, nil
}

// mainSyncFailed records a failed fsync of the main file (sticky).
func (d *database) mainSyncFailed(err error) {
	m := &d.durable
	m.mu.Lock()
	first := m.failed == nil
	if first {
		m.failed = fmt.Errorf("an fsync of %s failed (%w), so pages written to it before may not be on disk", d.path, err)
	}
	m.mu.Unlock()
	if first && d.cfg.Logf != nil {
		d.cfg.Logf("bop: %s: fsync of the main database file failed: %v; the WAL is kept (WAL restarts fail) until every connection is closed and the database reopened", d.path, err)
	}
}

// beforeWALReuse runs before SQLite ends a WAL generation (what says how):
// it returns nil once every write to the main file is durable, else an
// error for SQLite (the WAL is then left as it is).
func (d *database) beforeWALReuse(what string) error {
	m := &d.durable
	m.barrier.Lock()
	defer m.barrier.Unlock()
	if err := d.mainSyncErr(); err != nil {
		return d.reuseRefused(what, err)
	}
	_, gen := d.seal.busyGen()
	m.mu.Lock()
	clean := m.synced && m.gen == gen
	m.mu.Unlock()
	if clean && (d.img == nil || !d.img.unsaved()) {
		return nil
	}
	if _, err := d.syncMain(d.fsyncMainFD); err != nil {
		if ferr := d.mainSyncErr(); ferr != nil {
			return d.reuseRefused(what, ferr)
		}
		// The bitmap: retried at the next generation end.
		return vfs.SystemError(fmt.Errorf("bop: %s refused, the WAL keeps every frame: %w", what, err), sqlite3.IOERR_FSYNC)
	}
	return nil
}

// reuseRefused is the error of a generation end after a failed fsync.
func (d *database) reuseRefused(what string, err error) error {
	return vfs.SystemError(fmt.Errorf("bop: %s refused, the WAL keeps every frame: %w; close every connection of the database and reopen it (SQLite then copies the WAL into the file again)", what, err), sqlite3.IOERR_FSYNC)
}
