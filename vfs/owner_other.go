//go:build !unix

package vfs

import (
	"errors"
	"os"
)

func tryLockFile(f *os.File) (bool, error) { return false, errors.ErrUnsupported }

func fileID(fi os.FileInfo) uint64 { return 0 }
