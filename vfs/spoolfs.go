package vfs

import (
	"io/fs"
	"strings"
	"sync"

	"github.com/bopstore/bop/wal"
)

// spoolFS is the file system the spool writes through: the OS's, except
// that appends to a segment file collect in memory and reach the OS in
// large writes, when the spool syncs, reads, or the buffer fills.
//
// Why: with one write(2) per commit, small autocommit transactions cost
// bop as much kernel time again as SQLite's own WAL write (bench/vfs W2).
//
// Why it is safe: a record that exists only in this buffer is lost by a
// process crash, exactly as an unsynced one is lost by a power loss, which
// the spool is built for. Its frames are still in SQLite's WAL: SQLite
// discards a WAL generation only after a checkpoint, and capture syncs the
// spool (flushing this buffer) at every checkpoint start, WAL restart,
// truncation and deletion; reconciliation at the next open captures the
// frames after the last spooled record again. Records that are not in the
// WAL (rollback-mode transactions, an adopted image) are synced as soon as
// they are appended. Every read of a segment flushes first, so the spool
// never reads around its own buffer.
type spoolFS struct{ wal.OSFS }

// spoolBufferBytes bounds the memory of one segment's buffer.
const spoolBufferBytes = 1 << 20

// buffers recycles segment buffers: a buffer is taken at a segment's first
// buffered write and returned when the segment syncs, so idle segments
// hold none and a busy spool does not allocate one per checkpoint.
var buffers = sync.Pool{New: func() any { b := make([]byte, 0, spoolBufferBytes); return &b }}

func (s spoolFS) OpenFile(name string, flag int, perm fs.FileMode) (wal.File, error) {
	f, err := s.OSFS.OpenFile(name, flag, perm)
	if err != nil || !strings.HasSuffix(name, ".seg") {
		return f, err
	}
	return &bufferedFile{f: f}, nil
}

// bufferedFile holds one run of contiguous appends (buf, starting at file
// offset off). Any other operation flushes it first.
type bufferedFile struct {
	mu  sync.Mutex
	f   wal.File
	off int64
	buf []byte
}

func (b *bufferedFile) flushLocked() error {
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.f.WriteAt(b.buf, b.off)
	b.buf = b.buf[:0]
	return err
}

// release returns an empty buffer to the pool.
func (b *bufferedFile) release() {
	if b.buf != nil && len(b.buf) == 0 {
		buf := b.buf
		buffers.Put(&buf)
		b.buf = nil
	}
}

func (b *bufferedFile) WriteAt(p []byte, off int64) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf) > 0 && off != b.off+int64(len(b.buf)) {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
	}
	if len(b.buf)+len(p) > spoolBufferBytes {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) >= spoolBufferBytes/2 {
			return b.f.WriteAt(p, off)
		}
	}
	if len(b.buf) == 0 {
		b.off = off
		if b.buf == nil {
			b.buf = (*buffers.Get().(*[]byte))[:0]
		}
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *bufferedFile) ReadAt(p []byte, off int64) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.flushLocked(); err != nil {
		return 0, err
	}
	return b.f.ReadAt(p, off)
}

func (b *bufferedFile) Size() (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.flushLocked(); err != nil {
		return 0, err
	}
	return b.f.Size()
}

func (b *bufferedFile) Truncate(size int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.flushLocked(); err != nil {
		return err
	}
	return b.f.Truncate(size)
}

// Sync flushes and fsyncs; the buffer's memory is released (a segment
// that is synced is usually done: the spool syncs the previous segment when
// it starts a new one).
func (b *bufferedFile) Sync() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.flushLocked(); err != nil {
		return err
	}
	b.release()
	return b.f.Sync()
}

func (b *bufferedFile) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	err := b.flushLocked()
	b.release()
	if cerr := b.f.Close(); err == nil {
		err = cerr
	}
	return err
}
