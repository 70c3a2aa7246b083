package vfs

import (
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/bopstore/bop/wal"
)

// spoolBufferBytes is the spool's append buffer
// (wal.SpoolOptions.BufferBytes): committed records collect in memory and
// reach the segment file in writes of this size, at the latest when the
// spool syncs (every WAL sync, checkpoint start, WAL restart, truncation
// and deletion) or reads. With one write(2) per commit, small autocommit
// transactions cost bop as much kernel time again as SQLite's own WAL
// write (bench/vfs W2). Why a record only in the buffer is safe (lost by a
// process crash as an unsynced one is by a power loss; its frames are
// still in the WAL): wal/segfile.go. 256 KiB stays in the CPU's cache
// between the copy into it and the kernel's copy out of it.
const spoolBufferBytes = 256 << 10

// testSpoolFS, if set (tests only: vfs/powerloss_test.go), is the file
// system every database's spool writes through (wal.SpoolOptions.FS); nil
// is the operating system's.
var testSpoolFS wal.FS

// testStateFS, if set (tests only: vfs/powerloss_test.go), is the file
// system the seal file and the files written by writeFileAtomic (meta.json)
// go through: their opens, writes, fsyncs, the rename and the folder's
// fsync. nil is the operating system's, through the same calls as before
// the seam existed (openStateFile, renameState and syncStateDir).
var testStateFS interface {
	wal.FS
	Rename(oldpath, newpath string) error
}

// stateFile is an open seal file or temporary file of writeFileAtomic: an
// *os.File, or a file of testStateFS.
type stateFile interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Close() error
}

func openStateFile(name string, flag int, perm fs.FileMode) (stateFile, error) {
	if testStateFS != nil {
		return testStateFS.OpenFile(name, flag, perm)
	}
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return f, nil
}

func removeStateFile(name string) error {
	if testStateFS != nil {
		return testStateFS.Remove(name)
	}
	return os.Remove(name)
}

func renameState(oldpath, newpath string) error {
	if testStateFS != nil {
		return testStateFS.Rename(oldpath, newpath)
	}
	return os.Rename(oldpath, newpath)
}

// syncStateDir is syncDir, or testStateFS's.
func syncStateDir(dir string) error {
	if testStateFS != nil {
		if err := testStateFS.SyncDir(dir); err != nil {
			return fmt.Errorf("bop: fsync folder %s: %w", dir, err)
		}
		return nil
	}
	return syncDir(dir)
}
