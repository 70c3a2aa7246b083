package wal

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
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

// WriteBack starts writing off..off+n to the disk (writeBacker). It makes
// nothing durable: an fsync is still needed.
//
// The hint runs on a background goroutine, not the caller's: despite its
// name, sync_file_range submits the write-out in the caller's context
// (and ext4 allocates the delayed blocks for it there), and when the
// device is busy it waits for request slots. On the spool's writer, which
// is SQLite's committing thread, that measured 0.29 s of bench/vfs W1's
// 5 s (bench/RESULTS-vfs.md, session 4). The queue is bounded; a hint that
// does not fit is dropped (the disk is behind anyway, and the next fsync
// writes the range). A hint for a file closed meanwhile fails in
// os.File's descriptor guard, never on a reused descriptor.
func (f osFile) WriteBack(off, n int64) error {
	writeBackOnce.Do(func() {
		writeBackQueue = make(chan writeBackReq, writeBackQueueLen)
		go runWriteBacks(writeBackQueue)
	})
	writeBackCalls.Add(1)
	select {
	case writeBackQueue <- writeBackReq{f, off, n}:
	default:
		writeBackDropped.Add(1)
	}
	return nil
}

type writeBackReq struct {
	f      osFile
	off, n int64
}

const writeBackQueueLen = 64

var (
	writeBackOnce    sync.Once
	writeBackQueue   chan writeBackReq
	writeBackCalls   atomic.Uint64 // WriteBack calls (tests)
	writeBackDone    atomic.Uint64 // hints issued (tests)
	writeBackDropped atomic.Uint64 // hints dropped on a full queue (tests)
)

// runWriteBacks issues the hints, one at a time, for the life of the
// process (one goroutine, idle when nothing is written).
func runWriteBacks(q <-chan writeBackReq) {
	for r := range q {
		_ = r.f.control("sync_file_range", func(fd int) error {
			if h := syncFileRangeHook.Load(); h != nil {
				return (*h)(fd, r.off, r.n, syncFileRangeWrite)
			}
			return syscall.SyncFileRange(fd, r.off, r.n, syncFileRangeWrite)
		})
		writeBackDone.Add(1)
	}
}

// syncFileRangeHook, if set, replaces the system call (tests make it block).
var syncFileRangeHook atomic.Pointer[func(fd int, off, n int64, flags int) error]

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
