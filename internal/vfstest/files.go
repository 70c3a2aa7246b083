package vfstest

import (
	"encoding/binary"

	"github.com/ncruces/go-sqlite3/util/vfsutil"
	"github.com/ncruces/go-sqlite3/vfs"

	"github.com/bopstore/bop/internal/fdsync"
	"github.com/bopstore/bop/wal"
)

// mainFile wraps a main database file: one per SQLite connection.
type mainFile struct {
	vfs.File
	v    *VFS
	db   *DB
	path string
	id   uint64
	conn *wal.Conn // nil: no capture

	ckptErr error // CheckpointStart failed: fail this checkpoint's writes
	inCkpt  bool
}

func (f *mainFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.v.crashCheck(); err != nil {
		return 0, err
	}
	if f.inCkpt && f.ckptErr != nil {
		// Capture could not make the spool durable before this
		// checkpoint: refuse to copy the WAL into the database.
		return 0, f.ckptErr
	}
	n, err := f.File.WriteAt(p, off)
	if err != nil {
		return n, err
	}
	if f.v.Crash != nil {
		f.v.Crash.Write(f.path, p[:n], off)
	}
	var cerr error
	if f.conn != nil {
		cerr = f.db.noteErr(f.conn.MainWrite(p, off))
	}
	if f.v.Trace != nil {
		f.v.trace(Event{Kind: MainWrite, DB: f.db.Path, Conn: f.id, Off: off, Len: len(p), Err: cerr})
	}
	if cerr != nil {
		return n, cerr
	}
	return n, nil
}

func (f *mainFile) Truncate(size int64) error {
	if err := f.v.crashCheck(); err != nil {
		return err
	}
	err := f.File.Truncate(size)
	if err == nil && f.v.Crash != nil {
		f.v.Crash.Truncate(f.path, size)
	}
	return err
}

func (f *mainFile) Sync(flags vfs.SyncFlag) error {
	if err := f.v.crashCheck(); err != nil {
		return err
	}
	err := f.File.Sync(flags)
	if err == nil && f.v.Crash != nil {
		f.v.Crash.Sync(f.path)
	}
	f.v.trace(Event{Kind: MainSync, DB: f.db.Path, Conn: f.id, Err: err})
	return err
}

// Unlock: capture reads back a rollback-mode transaction's pages while
// this connection still holds its lock, so it runs first.
func (f *mainFile) Unlock(lock vfs.LockLevel) error {
	var cerr error
	if f.conn != nil && lock <= vfs.LOCK_SHARED {
		cerr = f.conn.MainUnlock()
	}
	err := f.File.Unlock(lock)
	f.v.trace(Event{Kind: MainUnlock, DB: f.db.Path, Conn: f.id, Off: int64(lock), Err: cerr})
	if err == nil {
		err = cerr
	}
	return err
}

func (f *mainFile) Close() error {
	if f.conn != nil {
		f.conn.Close()
	}
	f.v.trace(Event{Kind: CloseMain, DB: f.db.Path, Conn: f.id})
	return f.File.Close()
}

// CheckpointStart and CheckpointDone: SQLite brackets its WAL-to-database
// copy with FCNTL_CKPT_START/DONE on the main file.
func (f *mainFile) CheckpointStart() {
	f.inCkpt = true
	f.ckptErr = nil
	if f.conn != nil {
		f.ckptErr = f.conn.CheckpointStart()
	}
	f.v.trace(Event{Kind: CkptStart, DB: f.db.Path, Conn: f.id, Err: f.ckptErr})
	vfsutil.WrapCheckpointStart(f.File)
}

func (f *mainFile) CheckpointDone() {
	f.inCkpt = false
	f.ckptErr = nil
	if f.conn != nil {
		f.conn.CheckpointDone()
	}
	f.v.trace(Event{Kind: CkptDone, DB: f.db.Path, Conn: f.id})
	vfsutil.WrapCheckpointDone(f.File)
}

// CommitPhaseTwo: SQLITE_FCNTL_COMMIT_PHASETWO, from pager_end_transaction
// after a successful commit.
func (f *mainFile) CommitPhaseTwo() error {
	var err error
	if f.conn != nil {
		err = f.conn.CommitPhaseTwo()
	}
	f.v.trace(Event{Kind: PhaseTwo, DB: f.db.Path, Conn: f.id, Err: err})
	if err != nil {
		return err
	}
	return vfsutil.WrapCommitPhaseTwo(f.File)
}

// Forward every other optional interface so the os VFS keeps working.
func (f *mainFile) Unwrap() vfs.File                   { return f.File }
func (f *mainFile) SharedMemory() vfs.SharedMemory     { return vfsutil.WrapSharedMemory(f.File) }
func (f *mainFile) MemoryMapper() vfs.MemoryMapper     { return vfsutil.WrapMemoryMapper(f.File) }
func (f *mainFile) LockState() vfs.LockLevel           { return vfsutil.WrapLockState(f.File) }
func (f *mainFile) PersistWAL() bool                   { return vfsutil.WrapPersistWAL(f.File) }
func (f *mainFile) SetPersistWAL(b bool)               { vfsutil.WrapSetPersistWAL(f.File, b) }
func (f *mainFile) PowersafeOverwrite() bool           { return vfsutil.WrapPowersafeOverwrite(f.File) }
func (f *mainFile) SetPowersafeOverwrite(b bool)       { vfsutil.WrapSetPowersafeOverwrite(f.File, b) }
func (f *mainFile) ChunkSize(n int)                    { vfsutil.WrapChunkSize(f.File, n) }
func (f *mainFile) SizeHint(n int64) error             { return vfsutil.WrapSizeHint(f.File, n) }
func (f *mainFile) HasMoved() (bool, error)            { return vfsutil.WrapHasMoved(f.File) }
func (f *mainFile) Overwrite() error                   { return vfsutil.WrapOverwrite(f.File) }
func (f *mainFile) SyncSuper(s string) error           { return vfsutil.WrapSyncSuper(f.File, s) }
func (f *mainFile) BeginAtomicWrite() error            { return vfsutil.WrapBeginAtomicWrite(f.File) }
func (f *mainFile) CommitAtomicWrite() error           { return vfsutil.WrapCommitAtomicWrite(f.File) }
func (f *mainFile) RollbackAtomicWrite() error         { return vfsutil.WrapRollbackAtomicWrite(f.File) }
func (f *mainFile) BusyHandler(h func() bool)          { vfsutil.WrapBusyHandler(f.File, h) }
func (f *mainFile) Pragma(n, v string) (string, error) { return vfsutil.WrapPragma(f.File, n, v) }

var (
	_ vfs.FileUnwrap             = &mainFile{}
	_ vfs.FileSharedMemory       = &mainFile{}
	_ vfs.FileMemoryMapper       = &mainFile{}
	_ vfs.FileLockState          = &mainFile{}
	_ vfs.FilePersistWAL         = &mainFile{}
	_ vfs.FilePowersafeOverwrite = &mainFile{}
	_ vfs.FileChunkSize          = &mainFile{}
	_ vfs.FileSizeHint           = &mainFile{}
	_ vfs.FileHasMoved           = &mainFile{}
	_ vfs.FileOverwrite          = &mainFile{}
	_ vfs.FileSync               = &mainFile{}
	_ vfs.FileCommitPhaseTwo     = &mainFile{}
	_ vfs.FileBatchAtomicWrite   = &mainFile{}
	_ vfs.FileCheckpoint         = &mainFile{}
	_ vfs.FilePragma             = &mainFile{}
	_ vfs.FileBusyHandler        = &mainFile{}
	_ vfs.VFSFilename            = &VFS{}
)

// walFile wraps a connection's WAL file. It is also the wal.WALFile
// capture reads and syncs.
type walFile struct {
	vfs.File
	v    *VFS
	main *mainFile
	path string
}

func (f *walFile) Name() string { return f.path }

// Sync with no flags: capture's own fsync of the WAL (SyncForPublish,
// CheckpointStart under synchronous=OFF).
func (f *walFile) syncFull() error {
	if err := f.v.crashCheck(); err != nil {
		return err
	}
	err := f.File.Sync(vfs.SYNC_FULL)
	if err == nil && f.v.Crash != nil {
		f.v.Crash.Sync(f.path)
	}
	return err
}

// capture's view: Sync() error.
type walHandle struct{ *walFile }

// Sync is capture's, from other goroutines than the connection's: through
// the descriptor (internal/fdsync), not the file's own Sync.
func (h walHandle) Sync() error {
	if err := h.v.crashCheck(); err != nil {
		return err
	}
	ok, err := fdsync.File(h.File, h.path, nil)
	if !ok {
		err = h.File.Sync(vfs.SYNC_FULL)
	}
	if err == nil && h.v.Crash != nil {
		h.v.Crash.Sync(h.path)
	}
	return err
}

func (f *walFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.v.crashCheck(); err != nil {
		return 0, err
	}
	n, err := f.File.WriteAt(p, off)
	if err != nil {
		if f.main.conn != nil {
			f.main.conn.WriteFailed(off) // as bop's VFS does
		}
		return n, err
	}
	if f.v.Crash != nil {
		f.v.Crash.Write(f.path, p[:n], off)
	}
	var cerr error
	if f.main.conn != nil {
		cerr = f.main.db.noteErr(f.main.conn.Write(p, off))
	}
	if f.v.Trace != nil {
		e := Event{Kind: WALWrite, DB: f.main.db.Path, Conn: f.main.id, Off: off, Len: len(p), Err: cerr}
		if off >= 32 && len(p) == 24 {
			e.FrameHeader = true
			e.Pgno = binary.BigEndian.Uint32(p)
			e.Commit = binary.BigEndian.Uint32(p[4:])
		}
		f.v.trace(e)
	}
	if cerr != nil {
		return n, cerr
	}
	return n, nil
}

func (f *walFile) Truncate(size int64) error {
	if err := f.v.crashCheck(); err != nil {
		return err
	}
	// As the bop VFS: capture first keeps what the cut would take
	// (wal.CaptureOptions.ReadBack).
	if f.main.conn != nil {
		if err := f.main.conn.BeforeTruncate(size); err != nil {
			return err
		}
	}
	err := f.File.Truncate(size)
	if err != nil {
		return err
	}
	if f.v.Crash != nil {
		f.v.Crash.Truncate(f.path, size)
	}
	var cerr error
	if f.main.conn != nil {
		cerr = f.main.conn.Truncate(size)
	}
	f.v.trace(Event{Kind: WALTruncate, DB: f.main.db.Path, Conn: f.main.id, Off: size, Err: cerr})
	return cerr
}

func (f *walFile) Sync(flags vfs.SyncFlag) error {
	do := func() error {
		if f.v.BeforeWALSync != nil {
			f.v.BeforeWALSync()
		}
		if err := f.v.crashCheck(); err != nil {
			return err
		}
		if n := f.main.db.failSyncs.Load(); n > 0 && f.main.db.failSyncs.CompareAndSwap(n, n-1) {
			return *f.main.db.syncErr.Load()
		}
		err := f.File.Sync(flags)
		if err == nil && f.v.Crash != nil {
			f.v.Crash.Sync(f.path)
		}
		return err
	}
	var err error
	if f.main.conn != nil {
		err = f.main.conn.Sync(do)
	} else {
		err = do()
	}
	f.v.trace(Event{Kind: WALSync, DB: f.main.db.Path, Conn: f.main.id, Err: err})
	return err
}

func (f *walFile) Close() error {
	if f.main.conn != nil {
		f.main.conn.DetachWAL()
	}
	return f.File.Close()
}

func (f *walFile) Unwrap() vfs.File             { return f.File }
func (f *walFile) LockState() vfs.LockLevel     { return vfsutil.WrapLockState(f.File) }
func (f *walFile) PersistWAL() bool             { return vfsutil.WrapPersistWAL(f.File) }
func (f *walFile) SetPersistWAL(b bool)         { vfsutil.WrapSetPersistWAL(f.File, b) }
func (f *walFile) PowersafeOverwrite() bool     { return vfsutil.WrapPowersafeOverwrite(f.File) }
func (f *walFile) SetPowersafeOverwrite(b bool) { vfsutil.WrapSetPowersafeOverwrite(f.File, b) }
func (f *walFile) ChunkSize(n int)              { vfsutil.WrapChunkSize(f.File, n) }
func (f *walFile) SizeHint(n int64) error       { return vfsutil.WrapSizeHint(f.File, n) }
func (f *walFile) HasMoved() (bool, error)      { return vfsutil.WrapHasMoved(f.File) }
