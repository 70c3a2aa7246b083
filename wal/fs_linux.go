package wal

import (
	"errors"
	"os"
	"syscall"
)

// Sync makes the file's data durable with fdatasync, as SQLite does on
// Linux: it writes the data and the metadata needed to read it back (the
// size, the block map) and skips the journal commit fsync would add for
// the modification time alone. The state file is overwritten in place at
// a fixed size, so its saves cost a data write and a cache flush. A file's
// directory entry is made durable separately (FS.SyncDir).
func (f osFile) Sync() error {
	return f.control("fdatasync", func(fd int) error {
		for {
			err := syscall.Fdatasync(fd)
			if !errors.Is(err, syscall.EINTR) {
				return err
			}
		}
	})
}

// syncFileRangeWrite is SYNC_FILE_RANGE_WRITE: start write-out of the
// range's dirty pages, do not wait for it.
const syncFileRangeWrite = 2

// WriteBack starts writing off..off+n to the disk without waiting
// (writeBacker). It makes nothing durable: an fsync is still needed.
func (f osFile) WriteBack(off, n int64) error {
	return f.control("sync_file_range", func(fd int) error {
		return syscall.SyncFileRange(fd, off, n, syncFileRangeWrite)
	})
}

func (f osFile) control(op string, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	if ferr != nil {
		return &os.PathError{Op: op, Path: f.Name(), Err: ferr}
	}
	return nil
}

// fallocKeepSize is FALLOC_FL_KEEP_SIZE: reserve blocks, keep the size.
const fallocKeepSize = 1

// Preallocate reserves disk space for off..off+n without changing the
// file's size (preallocator).
func (f osFile) Preallocate(off, n int64) error {
	return f.control("fallocate", func(fd int) error {
		for {
			err := syscall.Fallocate(fd, fallocKeepSize, off, n)
			if !errors.Is(err, syscall.EINTR) {
				return err
			}
		}
	})
}
