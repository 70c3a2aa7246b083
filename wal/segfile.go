package wal

import (
	"fmt"
	"sync"
)

// segFile is a segment file as the spool writes it: appends collect in a
// memory buffer and reach the file system in large writes. Any other
// operation (a read, Size, Truncate, Sync, Close) writes the buffer out
// first, so nothing in the spool ever reads around it.
//
// With SpoolOptions.BufferBytes == 0 the appender flushes at every
// record's Commit: the buffer only turns a record's header, pages,
// directory and trailer into one write call. With BufferBytes > 0 records
// stay in the buffer until the spool syncs, reads, rotates the segment or
// the buffer fills: one write(2) per buffer instead of one per commit,
// which for one-page autocommit transactions costs as much kernel time as
// SQLite's own WAL write (bench/RESULTS-capture.md).
//
// Why buffering records is safe: a record that exists only in this buffer
// is lost by a process crash exactly as an unsynced record is lost by a
// power loss, which the spool is built for (it is above the confirmed
// watermark, never published, and reconciliation captures it again from
// the WAL). Its frames are still in SQLite's WAL: SQLite discards a WAL
// generation only after a complete checkpoint, and capture syncs the spool
// (writing this buffer out) at every checkpoint start, WAL restart,
// truncation and deletion. Records that are not in the WAL (rollback-mode
// transactions, an adopted image) are synced as soon as they are appended.
//
// A failed write of the buffer is sticky: the bytes are gone, so every
// later operation fails with it and the spool stops at its next Sync
// rather than count a segment with a hole as synced.
type segFile struct {
	mu   sync.Mutex
	f    File
	cap  int   // buffer capacity
	off  int64 // file offset of buf[0]
	buf  []byte
	err  error // sticky write failure
	wb   writeBacker
	wbAt int64 // end of the range last handed to writeBack
	pa   preallocator
	paAt int64 // end of the space preallocated so far (0: unknown)
	paMx int64 // largest reservation step
	// Read-ahead for small reads: bytes roff..roff+len(rbuf) of the file;
	// rstep is the size of the next block (grows while reads go forward).
	rbuf  []byte
	roff  int64
	rstep int
}

// Small reads (a record's header, directory or trailer: what a scan of
// the spool reads per record, the pages aside) are served from a block
// of readAheadBytes read at once: one pread per block instead of three per
// record. Records never change once written, except that truncation cuts
// them (the block is dropped then); a write never lands inside the block
// (appends go past the end of the file; dropped too if one did).
//
// While the misses continue where the last block ended (at most
// readAheadGap past it: the publisher's scans of one-page records, the
// header of the next record after a page), the block doubles, up to
// readAheadMax: a scan of small records costs one pread per 256 KiB
// instead of one per 16 KiB, which was most of the CPU of a scan
// (BenchmarkSpoolScan). A miss anywhere else starts again at
// readAheadBytes. Because a block only grows while the reads are at most
// readAheadGap apart, a block never holds more than that many bytes per
// read it serves: reads scattered forward (page reads of a page set)
// cost what they did with fixed blocks. Memory: one block of at most
// readAheadMax per segment that is being read, pooled when the segment
// closes.
const (
	readSmallBytes = 4 << 10
	readAheadBytes = 16 << 10
	readAheadMax   = 256 << 10
	readAheadGap   = readSmallBytes + 1<<10
)

// readBlocks recycles full-size read-ahead blocks.
var readBlocks sync.Pool

// writeBacker is implemented by files that can start writing a range to
// the disk without waiting for it (Linux: sync_file_range). The spool
// uses it after each buffer write so that the fsync at the next checkpoint
// finds most of the data already written instead of waiting for all of
// it. It changes nothing about durability: it only starts early what the
// kernel may start at any time anyway.
type writeBacker interface {
	WriteBack(off, n int64) error
}

// writeBackBytes is how much written data triggers a write-back hint
// (smaller ranges cost more CPU in the kernel than they save).
const writeBackBytes = 1 << 20

// preallocator is implemented by files that can reserve disk space for
// appends ahead of them without changing the file size (Linux: fallocate
// with FALLOC_FL_KEEP_SIZE). Appending into reserved space skips the file
// system's block reservation for each page (ext4 delayed allocation):
// about a fifth of the kernel's CPU time for the spool's writes. The size
// is untouched, so the segment format and the torn-tail rules do not
// change; the reservation past the last record is freed when the segment
// is truncated or removed.
type preallocator interface {
	Preallocate(off, n int64) error
}

// preallocBytes bounds the step in which segment space is reserved. The
// step starts at the buffer's size and doubles with the segment, so a
// small spool reserves little; the spool trims a segment's reservation
// when it starts the next one and when it closes.
const preallocBytes = 4 << 20

// segBuffers recycles append buffers: a buffer is taken at a segment's
// first buffered write and returned when the segment syncs, so idle
// segments (and idle databases) hold none. It keeps at most
// segBuffersKept of them, of at most segBufferKeptMax bytes each, across
// garbage collections (a sync.Pool drops its contents at the second one,
// and a short-lived process then allocated the buffer again, which
// brought its next collection nearer): a process holds at most 2 MiB
// of idle append buffers.
var segBuffers bufferList

const (
	segBuffersKept   = 2
	segBufferKeptMax = 1 << 20
)

type bufferList struct {
	mu   sync.Mutex
	bufs [][]byte
}

// get returns a kept buffer of at least n bytes of capacity, or nil.
func (l *bufferList) get(n int) []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.bufs) - 1; i >= 0; i-- {
		if b := l.bufs[i]; cap(b) >= n {
			l.bufs = append(l.bufs[:i], l.bufs[i+1:]...)
			return b[:0]
		}
	}
	return nil
}

// put keeps b if fewer than segBuffersKept are kept and b is not bigger
// than segBufferKeptMax.
func (l *bufferList) put(b []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.bufs) < segBuffersKept && cap(b) <= segBufferKeptMax {
		l.bufs = append(l.bufs, b)
	}
}

// newSegFile wraps f with a buffer of capacity bytes; space is reserved
// in steps of at most maxReserve bytes.
func newSegFile(f File, capacity int, maxReserve int64) *segFile {
	b := &segFile{f: f, cap: capacity, paMx: max(maxReserve, int64(capacity))}
	b.wb, _ = f.(writeBacker)
	b.pa, _ = f.(preallocator)
	return b
}

// writeLocked writes p at off to the file, reserving space ahead first.
func (b *segFile) writeLocked(p []byte, off int64) (int, error) {
	if end := off + int64(len(p)); b.pa != nil && end > b.paAt {
		from := max(b.paAt, off)
		step := min(b.paMx, max(int64(b.cap), from))
		n := (end - from + step - 1) / step * step
		// Only a hint: without the space the write itself fails.
		if b.pa.Preallocate(from, n) == nil {
			b.paAt = from + n
		} else {
			b.pa = nil
		}
	}
	b.dropReadLocked(off, off+int64(len(p)))
	n, err := b.f.WriteAt(p, off)
	if err != nil {
		b.err = fmt.Errorf("write of %d bytes at %d: %w", len(p), off, err)
		return n, b.err
	}
	b.writtenLocked(off + int64(n))
	return n, nil
}

// flushLocked writes the buffer out.
func (b *segFile) flushLocked() error {
	if b.err != nil {
		return b.err
	}
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.writeLocked(b.buf, b.off)
	b.buf = b.buf[:0]
	return err
}

// writtenLocked notes that the file was written up to end and hints the
// kernel to start writing it back every writeBackBytes.
func (b *segFile) writtenLocked(end int64) {
	if b.wb == nil {
		return
	}
	if end-b.wbAt < writeBackBytes {
		return
	}
	// Only a hint: an error here is reported by the next fsync.
	_ = b.wb.WriteBack(b.wbAt, end-b.wbAt)
	b.wbAt = end
}

// release returns an empty buffer to segBuffers.
func (b *segFile) releaseLocked() {
	if b.buf != nil && len(b.buf) == 0 {
		segBuffers.put(b.buf)
		b.buf = nil
	}
}

func (b *segFile) WriteAt(p []byte, off int64) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	if len(b.buf) > 0 && (off != b.off+int64(len(b.buf)) || len(b.buf)+len(p) > b.cap) {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) >= b.cap/2 {
		// Big runs go straight from the caller's memory to the file: one
		// copy (the kernel's) instead of two.
		return b.writeLocked(p, off)
	}
	if len(b.buf) == 0 {
		b.off = off
		if b.buf == nil {
			if b.buf = segBuffers.get(b.cap); b.buf == nil {
				b.buf = make([]byte, 0, b.cap)
			}
		}
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// Flush writes the buffer out.
func (b *segFile) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

func (b *segFile) ReadAt(p []byte, off int64) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.flushLocked(); err != nil {
		return 0, err
	}
	if len(p) > readSmallBytes || off < 0 {
		return b.f.ReadAt(p, off)
	}
	end := off + int64(len(p))
	if off < b.roff || end > b.roff+int64(len(b.rbuf)) {
		// Where the last block ended, or just past it: a scan.
		if b.rstep > 0 && off >= b.roff && off <= b.roff+int64(len(b.rbuf))+readAheadGap {
			b.rstep = min(2*b.rstep, readAheadMax)
		} else {
			b.rstep = readAheadBytes
		}
		if cap(b.rbuf) < b.rstep {
			b.rbuf = b.readBlock(b.rstep)
		}
		n, _ := b.f.ReadAt(b.rbuf[:b.rstep], off) // short near the end of the file
		b.rbuf, b.roff = b.rbuf[:n], off
		if n < len(p) {
			// Past the end of the file, or an error: as the file says.
			return b.f.ReadAt(p, off)
		}
	}
	return copy(p, b.rbuf[off-b.roff:end-b.roff]), nil
}

// readBlock returns a buffer of at least n bytes for read-ahead, giving
// back the current one if it is a pooled full-size block.
func (b *segFile) readBlock(n int) []byte {
	b.releaseReadLocked()
	if n >= readAheadMax {
		if bp, ok := readBlocks.Get().(*[]byte); ok && cap(*bp) >= readAheadMax {
			return (*bp)[:readAheadMax]
		}
		return make([]byte, readAheadMax)
	}
	return make([]byte, n)
}

// releaseReadLocked drops the read-ahead block, pooling a full-size one.
func (b *segFile) releaseReadLocked() {
	if cap(b.rbuf) >= readAheadMax {
		buf := b.rbuf[:0]
		readBlocks.Put(&buf)
	}
	b.rbuf, b.roff = nil, 0
}

// dropReadLocked forgets the read-ahead block if off..end overlaps it.
func (b *segFile) dropReadLocked(off, end int64) {
	if len(b.rbuf) > 0 && off < b.roff+int64(len(b.rbuf)) && end > b.roff {
		b.rbuf = b.rbuf[:0]
	}
}

func (b *segFile) Size() (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.flushLocked(); err != nil {
		return 0, err
	}
	return b.f.Size()
}

func (b *segFile) Truncate(size int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf) > 0 && b.err == nil && size >= b.off {
		// Cutting inside (or at the end of) what is still buffered, as
		// an aborted append does: drop those bytes instead of writing
		// them first.
		b.buf = b.buf[:min(int64(len(b.buf)), size-b.off)]
	}
	if err := b.flushLocked(); err != nil {
		return err
	}
	// Truncation frees the space reserved past size; write-back hints
	// go on from there; read-ahead bytes past it are gone.
	b.paAt = min(b.paAt, size)
	b.wbAt = min(b.wbAt, size)
	b.dropReadLocked(size, 1<<62)
	return b.f.Truncate(size)
}

// Sync writes the buffer out and fsyncs; the buffer's memory goes back to
// the pool (a segment that is synced is often done: the spool syncs the
// previous segment when it starts a new one).
func (b *segFile) Sync() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.flushLocked(); err != nil {
		return err
	}
	b.releaseLocked()
	return b.f.Sync()
}

func (b *segFile) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	err := b.flushLocked()
	if b.buf != nil {
		b.buf = b.buf[:0]
		b.releaseLocked()
	}
	b.releaseReadLocked()
	b.rstep = 0
	if cerr := b.f.Close(); err == nil {
		err = cerr
	}
	return err
}
