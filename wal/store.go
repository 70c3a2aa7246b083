package wal

import (
	"fmt"
	"os"
)

// pageStore holds the page bytes of frames capture has not settled yet,
// by slot. Slots below memSlots live in a memory arena laid out back to
// back (so a run of consecutive frames is one contiguous slice, written to
// the spool with one call); later slots spill to a scratch file at
// (slot-memSlots)*pageSize. The spill file is never fsynced: after a
// crash the WAL itself is the source of truth.
//
// Memory is bounded by the arena (memBytes) whatever the transaction
// size; frame metadata (frameMeta) costs 40 bytes per frame on top. With
// CaptureOptions.ReadBack the store holds nothing unless a generation is
// materialized (readback.go).
type pageStore struct {
	fs       FS
	path     string
	memBytes int
	ps       int
	mem      []byte // grows up to memSlots*ps
	spill    File
	spillLen int64 // high-water mark of spill file use since the last shrink
}

const spillShrinkBytes = 64 << 20

func newPageStore(fsys FS, path string, memBytes int) *pageStore {
	return &pageStore{fs: fsys, path: path, memBytes: memBytes}
}

// setPageSize forgets the contents and sets a new page size.
func (st *pageStore) setPageSize(ps int) {
	if ps != st.ps {
		st.mem = nil
	}
	st.ps = ps
	st.reset()
}

func (st *pageStore) memSlots() int {
	if st.ps == 0 {
		return 0
	}
	return max(st.memBytes/st.ps, 1)
}

// reset forgets the contents. A spill file that grew large is truncated
// so a one-off huge transaction does not keep its disk space.
func (st *pageStore) reset() {
	if st.spill != nil && st.spillLen > spillShrinkBytes {
		st.spill.Truncate(0)
		st.spillLen = 0
	}
}

// write stores p at byte offset in of slot's page.
func (st *pageStore) write(slot, in int, p []byte) error {
	if in+len(p) > st.ps || in < 0 {
		return fmt.Errorf("wal: page store write of %d bytes at %d in a %d-byte page", len(p), in, st.ps)
	}
	if slot < st.memSlots() {
		end := (slot + 1) * st.ps
		if end > len(st.mem) {
			st.growMem(end)
		}
		copy(st.mem[slot*st.ps+in:], p)
		return nil
	}
	if err := st.openSpill(); err != nil {
		return err
	}
	off := int64(slot-st.memSlots())*int64(st.ps) + int64(in)
	if _, err := st.spill.WriteAt(p, off); err != nil {
		return fmt.Errorf("wal: write spill file %s: %w", st.path, err)
	}
	st.spillLen = max(st.spillLen, off+int64(len(p)))
	return nil
}

func (st *pageStore) growMem(end int) {
	n := max(len(st.mem)*2, 64<<10, end)
	n = min(n, st.memSlots()*st.ps)
	n = max(n, end)
	m := make([]byte, n)
	copy(m, st.mem)
	st.mem = m
}

func (st *pageStore) openSpill() error {
	if st.spill != nil {
		return nil
	}
	f, err := st.fs.OpenFile(st.path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("wal: create spill file %s: %w", st.path, err)
	}
	st.spill = f
	return nil
}

// page returns slot's page: a slice of the arena, or read into buf.
func (st *pageStore) page(slot int, buf []byte) ([]byte, error) {
	if slot < st.memSlots() {
		end := (slot + 1) * st.ps
		if end > len(st.mem) {
			st.growMem(end) // never written: zeros
		}
		return st.mem[slot*st.ps : end], nil
	}
	if st.spill == nil {
		clear(buf[:st.ps])
		return buf[:st.ps], nil
	}
	off := int64(slot-st.memSlots()) * int64(st.ps)
	if off >= st.spillLen {
		clear(buf[:st.ps])
		return buf[:st.ps], nil
	}
	n, err := st.spill.ReadAt(buf[:st.ps], off)
	if err != nil && n != st.ps {
		if off+int64(st.ps) > st.spillLen && n > 0 {
			clear(buf[n:st.ps]) // the tail was never written
			return buf[:st.ps], nil
		}
		return nil, fmt.Errorf("wal: read spill file %s: %w", st.path, err)
	}
	return buf[:st.ps], nil
}

// run returns slots [slot, slot+n) as one arena slice, or nil if they are
// not all in memory.
func (st *pageStore) run(slot, n int) []byte {
	if slot+n > st.memSlots() {
		return nil
	}
	end := (slot + n) * st.ps
	if end > len(st.mem) {
		st.growMem(end)
	}
	return st.mem[slot*st.ps : end]
}

// move copies n slots from src to dst (dst < src), for compaction after a
// transaction is settled. n is small (the frames of the next transaction
// written before the previous one was finalized).
func (st *pageStore) move(dst, src, n int, buf []byte) error {
	for i := 0; i < n; i++ {
		p, err := st.page(src+i, buf)
		if err != nil {
			return err
		}
		if err := st.write(dst+i, 0, p); err != nil {
			return err
		}
	}
	return nil
}

func (st *pageStore) close() {
	if st.spill != nil {
		st.spill.Close()
		st.fs.Remove(st.path)
		st.spill = nil
	}
	st.mem = nil
}
