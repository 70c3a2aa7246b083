//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package fsstore

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
)

const supported = true

// tryFlock takes an exclusive flock on f without blocking; false means
// another open file description holds it.
func tryFlock(f *os.File) (bool, error) {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EWOULDBLOCK):
			return false, nil
		default:
			return false, err
		}
	}
}

// flock takes an exclusive flock on f, waiting for it.
func flock(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

func funlock(f *os.File) error { return syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }

// inode returns the file's inode number and link count.
func inode(fi fs.FileInfo) (ino uint64, nlink uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino), uint64(st.Nlink)
	}
	return 0, 1
}

// unlink removes a file name, never a directory (os.Remove would rmdir an
// empty folder that a Delete of a non-object happened to name).
func unlink(path string) error {
	err := syscall.Unlink(path)
	if err != nil {
		return &os.PathError{Op: "unlink", Path: path, Err: err}
	}
	return nil
}

// isDirErr reports whether err says that path names a directory (unlink of
// a directory gives EISDIR on Linux, EPERM on BSDs and macOS).
func isDirErr(err error) bool {
	return errors.Is(err, syscall.EISDIR) || errors.Is(err, syscall.EPERM)
}

// isNotDir reports ENOTDIR: a path component is a file, not a folder.
func isNotDir(err error) bool { return errors.Is(err, syscall.ENOTDIR) }

// rmdir removes an empty folder.
func rmdir(path string) error { return syscall.Rmdir(path) }

// syscallNoFollow keeps Sweep from following a symlink planted in the
// temp folder.
const syscallNoFollow = syscall.O_NOFOLLOW
