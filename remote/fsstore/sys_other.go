//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package fsstore

import (
	"errors"
	"io/fs"
	"os"
)

// fsstore needs flock and hard links with POSIX semantics; New refuses to
// open a store elsewhere rather than run without cross-process safety.
const supported = false

func tryFlock(*os.File) (bool, error)    { return false, errors.ErrUnsupported }
func flock(*os.File) error               { return errors.ErrUnsupported }
func funlock(*os.File) error             { return errors.ErrUnsupported }
func inode(fs.FileInfo) (uint64, uint64) { return 0, 1 }
func unlink(path string) error           { return os.Remove(path) }
func isDirErr(error) bool                { return false }
func isNotDir(error) bool                { return false }
func rmdir(path string) error            { return errors.ErrUnsupported }

const syscallNoFollow = 0
