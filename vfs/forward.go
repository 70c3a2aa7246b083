package vfs

import (
	"github.com/ncruces/go-sqlite3/util/vfsutil"
	"github.com/ncruces/go-sqlite3/vfs"
)

// fileForward forwards every optional file interface to the base (os)
// file, so that wrapping changes nothing SQLite relies on. SharedMemory
// above all: a main file without it silently loses WAL mode
// (research/vfsproto q1). mainFile and walFile embed it and override what
// bop observes.
type fileForward struct {
	vfs.File
}

func (f *fileForward) Unwrap() vfs.File               { return f.File }
func (f *fileForward) SharedMemory() vfs.SharedMemory { return vfsutil.WrapSharedMemory(f.File) }
func (f *fileForward) LockState() vfs.LockLevel       { return vfsutil.WrapLockState(f.File) }
func (f *fileForward) PersistWAL() bool               { return vfsutil.WrapPersistWAL(f.File) }
func (f *fileForward) SetPersistWAL(b bool)           { vfsutil.WrapSetPersistWAL(f.File, b) }
func (f *fileForward) PowersafeOverwrite() bool       { return vfsutil.WrapPowersafeOverwrite(f.File) }
func (f *fileForward) SetPowersafeOverwrite(b bool)   { vfsutil.WrapSetPowersafeOverwrite(f.File, b) }
func (f *fileForward) ChunkSize(n int)                { vfsutil.WrapChunkSize(f.File, n) }
func (f *fileForward) SizeHint(n int64) error         { return vfsutil.WrapSizeHint(f.File, n) }
func (f *fileForward) HasMoved() (bool, error)        { return vfsutil.WrapHasMoved(f.File) }
func (f *fileForward) Overwrite() error               { return vfsutil.WrapOverwrite(f.File) }
func (f *fileForward) SyncSuper(s string) error       { return vfsutil.WrapSyncSuper(f.File, s) }
func (f *fileForward) CommitPhaseTwo() error          { return vfsutil.WrapCommitPhaseTwo(f.File) }
func (f *fileForward) BeginAtomicWrite() error        { return vfsutil.WrapBeginAtomicWrite(f.File) }
func (f *fileForward) CommitAtomicWrite() error       { return vfsutil.WrapCommitAtomicWrite(f.File) }
func (f *fileForward) RollbackAtomicWrite() error     { return vfsutil.WrapRollbackAtomicWrite(f.File) }
func (f *fileForward) BusyHandler(h func() bool)      { vfsutil.WrapBusyHandler(f.File, h) }
func (f *fileForward) CheckpointStart()               { vfsutil.WrapCheckpointStart(f.File) }
func (f *fileForward) CheckpointDone()                { vfsutil.WrapCheckpointDone(f.File) }
func (f *fileForward) Pragma(name, value string) (string, error) {
	return vfsutil.WrapPragma(f.File, name, value)
}

// DeviceCharacteristics hides batch-atomic writes (F2FS): SQLite would
// write a rollback-mode transaction into the file with no journal and
// discard it on failure inside the file system, behind capture's back.
func (f *fileForward) DeviceCharacteristics() vfs.DeviceCharacteristic {
	return f.File.DeviceCharacteristics() &^ vfs.IOCAP_BATCH_ATOMIC
}

var (
	_ vfs.FileUnwrap             = (*fileForward)(nil)
	_ vfs.FileSharedMemory       = (*fileForward)(nil)
	_ vfs.FileLockState          = (*fileForward)(nil)
	_ vfs.FilePersistWAL         = (*fileForward)(nil)
	_ vfs.FilePowersafeOverwrite = (*fileForward)(nil)
	_ vfs.FileChunkSize          = (*fileForward)(nil)
	_ vfs.FileSizeHint           = (*fileForward)(nil)
	_ vfs.FileHasMoved           = (*fileForward)(nil)
	_ vfs.FileOverwrite          = (*fileForward)(nil)
	_ vfs.FileSync               = (*fileForward)(nil)
	_ vfs.FileCommitPhaseTwo     = (*fileForward)(nil)
	_ vfs.FileBatchAtomicWrite   = (*fileForward)(nil)
	_ vfs.FileBusyHandler        = (*fileForward)(nil)
	_ vfs.FileCheckpoint         = (*fileForward)(nil)
	_ vfs.FilePragma             = (*fileForward)(nil)
)
