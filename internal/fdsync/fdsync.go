// Package fdsync fsyncs a file opened by SQLite's VFS from another
// goroutine than the connection that owns it.
//
// Why not the file's own Sync: ncruces' vfsFile.Sync clears a flag in the
// file on its first call (the directory fsync of a new file), so two
// goroutines syncing one vfs.File race. Capture's publisher and
// checkpoint syncs borrow a connection's WAL handle while that connection
// may be syncing it itself. An fsync through the descriptor touches no
// shared Go state; the descriptor stays valid because capture holds the
// handle open while it syncs (wal.Conn.DetachWAL waits).
package fdsync

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
)

// rawFile is what *os.File (and vfs files that embed one) provide.
type rawFile interface {
	SyscallConn() (syscall.RawConn, error)
}

// File fsyncs f through its descriptor, and the first time (per
// dirDone) the directory holding name, so that a WAL file created since
// is found after a power loss. ok is false when f has no descriptor (a
// wrapper in tests): the caller falls back to f's own Sync.
func File(f any, name string, dirDone *atomic.Bool) (ok bool, err error) {
	rf, isRaw := f.(rawFile)
	if !isRaw {
		return false, nil
	}
	rc, err := rf.SyscallConn()
	if err != nil {
		return true, err
	}
	if cerr := rc.Control(func(fd uintptr) { err = fsync(int(fd)) }); cerr != nil {
		return true, cerr
	}
	if err != nil {
		return true, &os.PathError{Op: "fsync", Path: name, Err: err}
	}
	if dirDone != nil && !dirDone.Load() {
		d, err := os.Open(filepath.Dir(name))
		if err != nil {
			return true, err
		}
		err = d.Sync()
		d.Close()
		if err != nil {
			return true, err
		}
		dirDone.Store(true)
	}
	return true, nil
}

// fsync retries on EINTR.
func fsync(fd int) error {
	for {
		err := syscall.Fsync(fd)
		if err != syscall.EINTR {
			return err
		}
	}
}
