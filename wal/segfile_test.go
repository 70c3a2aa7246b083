package wal

import (
	"bytes"
	"io"
	"testing"
)

// hintFile is an in-memory File that records the write-back and
// preallocation hints it gets, and checks that every write lands in
// reserved space and every write-back covers only written bytes.
type hintFile struct {
	t        *testing.T
	data     []byte
	reserved int64 // preallocated up to here (contiguous from the first reservation)
	wbEnd    int64
	wbCalls  int
}

func (f *hintFile) ReadAt(p []byte, off int64) (int, error) { return copy(p, f.data[off:]), nil }
func (f *hintFile) WriteAt(p []byte, off int64) (int, error) {
	if end := off + int64(len(p)); end > f.reserved {
		f.t.Fatalf("write of %d..%d beyond the reserved %d", off, end, f.reserved)
	}
	if end := off + int64(len(p)); end > int64(len(f.data)) {
		f.data = append(f.data, make([]byte, end-int64(len(f.data)))...)
	}
	copy(f.data[off:], p)
	return len(p), nil
}
func (f *hintFile) Truncate(n int64) error { f.data = f.data[:n]; return nil }
func (f *hintFile) Size() (int64, error)   { return int64(len(f.data)), nil }
func (f *hintFile) Sync() error            { return nil }
func (f *hintFile) Close() error           { return nil }
func (f *hintFile) Preallocate(off, n int64) error {
	if off > f.reserved && f.reserved != 0 {
		f.t.Fatalf("reservation at %d leaves a gap after %d", off, f.reserved)
	}
	f.reserved = max(f.reserved, off+n)
	return nil
}
func (f *hintFile) WriteBack(off, n int64) error {
	if off != f.wbEnd {
		f.t.Fatalf("write-back from %d, the previous ended at %d", off, f.wbEnd)
	}
	if off+n > int64(len(f.data)) {
		f.t.Fatalf("write-back of %d..%d beyond the written %d bytes", off, off+n, len(f.data))
	}
	f.wbEnd = off + n
	f.wbCalls++
	return nil
}

func TestSegFileHints(t *testing.T) {
	f := &hintFile{t: t}
	b := newSegFile(f, 64<<10, preallocBytes)
	var want []byte
	pos := int64(0)
	for i := 0; i < 400; i++ {
		n := 1000 + i*37%9000
		if i%50 == 49 {
			n = 200 << 10 // a big run: written straight through
		}
		p := bytes.Repeat([]byte{byte(i)}, n)
		if _, err := b.WriteAt(p, pos); err != nil {
			t.Fatal(err)
		}
		want = append(want, p...)
		pos += int64(n)
	}
	// Cut back inside the buffer (an aborted record), then go on.
	pos -= 500
	want = want[:pos]
	if err := b.Truncate(pos); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteAt([]byte("tail"), pos); err != nil {
		t.Fatal(err)
	}
	want = append(want, "tail"...)
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.data, want) {
		t.Fatalf("file holds %d bytes, want %d (or different bytes)", len(f.data), len(want))
	}
	if f.wbCalls < int(pos/writeBackBytes)-1 {
		t.Fatalf("%d write-back hints for %d bytes", f.wbCalls, pos)
	}
	// Truncation far below: reservations and write-back start over there.
	if err := b.Truncate(1000); err != nil {
		t.Fatal(err)
	}
	f.wbEnd = 1000
	for i := 0; i < 40; i++ {
		if _, err := b.WriteAt(bytes.Repeat([]byte{1}, 60<<10), 1000+int64(i)*(60<<10)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if len(f.data) != 1000+40*(60<<10) {
		t.Fatalf("file is %d bytes", len(f.data))
	}
}

// countFile is an in-memory File that counts reads.
type countFile struct {
	hintFile
	reads int
}

func (f *countFile) ReadAt(p []byte, off int64) (int, error) {
	f.reads++
	if off >= int64(len(f.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Small reads come from a read-ahead block: right bytes, few reads of
// the file, nothing stale after a truncation or past the end.
func TestSegFileReadAhead(t *testing.T) {
	f := &countFile{hintFile: hintFile{t: t, reserved: 1 << 40}}
	b := newSegFile(f, 8<<10, preallocBytes)
	want := make([]byte, 300<<10)
	for i := range want {
		want[i] = byte(i * 7 / 13)
	}
	if _, err := b.WriteAt(want, 0); err != nil {
		t.Fatal(err)
	}
	// A scan: 64-byte headers and 16-byte directory entries, in order.
	got := make([]byte, 64)
	for off := int64(0); off+64 <= int64(len(want)); off += 1000 {
		if _, err := b.ReadAt(got, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want[off:off+64]) {
			t.Fatalf("read at %d: wrong bytes", off)
		}
	}
	if f.reads > len(want)/readAheadBytes+2 {
		t.Fatalf("%d reads of the file for a scan of %d bytes", f.reads, len(want))
	}
	// Near the end: short reads say so.
	if n, err := b.ReadAt(got, int64(len(want))-10); n != 10 || err == nil {
		t.Fatalf("read across the end: %d, %v", n, err)
	}
	// Cut, then append other bytes: reads see the new ones.
	if err := b.Truncate(100 << 10); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ReadAt(got, 150<<10); err == nil {
		t.Fatal("read past a truncation succeeded")
	}
	if _, err := b.ReadAt(got, (100<<10)-64); err != nil || !bytes.Equal(got, want[(100<<10)-64:100<<10]) {
		t.Fatalf("read before the cut: %v", err)
	}
	tail := bytes.Repeat([]byte{0xee}, 4096)
	if _, err := b.WriteAt(tail, 100<<10); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ReadAt(got, 100<<10); err != nil || !bytes.Equal(got, tail[:64]) {
		t.Fatalf("read of appended bytes: %x, %v", got[:8], err)
	}
}

// A forward scan grows the read-ahead block up to readAheadMax (few reads
// of the file for many small records); a jump elsewhere starts again at
// readAheadBytes; every read returns the file's bytes, also from a pooled
// block that held another file's bytes before.
func TestSegFileReadAheadGrows(t *testing.T) {
	want := make([]byte, 4<<20)
	for i := range want {
		want[i] = byte(i*31/7 + i>>12)
	}
	for round := 0; round < 2; round++ { // the second round reuses pooled blocks
		f := &countFile{hintFile: hintFile{t: t, reserved: 1 << 40}}
		b := newSegFile(f, 64<<10, preallocBytes)
		if _, err := b.WriteAt(want, 0); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 4096)
		check := func(off int64, n int) {
			t.Helper()
			if _, err := b.ReadAt(got[:n], off); err != nil {
				t.Fatalf("read %d at %d: %v", n, off, err)
			}
			if !bytes.Equal(got[:n], want[off:off+int64(n)]) {
				t.Fatalf("read %d at %d: wrong bytes", n, off)
			}
		}
		// A scan of one-page records: header, page, directory entry.
		for off := int64(0); off+4200 <= int64(len(want)); off += 4200 {
			check(off, 64)
			check(off+64, 4096)
			check(off+4160, 16)
		}
		// 16 KiB, 32, 64, 128, then 256 KiB blocks: about 4 MiB / 256 KiB.
		if max := len(want)/readAheadMax + 6; f.reads > max {
			t.Fatalf("%d reads of the file for a forward scan of %d bytes, want <= %d", f.reads, len(want), max)
		}
		// Random reads: back to small blocks, still the right bytes.
		for _, off := range []int64{100, 3 << 20, 1 << 20, 2<<20 + 5, 77777} {
			check(off, 64)
			if b.rstep != readAheadBytes {
				t.Fatalf("after a jump to %d the next block is %d bytes, want %d", off, b.rstep, readAheadBytes)
			}
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// Reads scattered forward (a page set's pages, 40 KiB apart) do not grow
// the block: each costs one block of readAheadBytes, as before growth
// existed, instead of reading everything in between.
func TestSegFileReadAheadScattered(t *testing.T) {
	want := make([]byte, 4<<20)
	for i := range want {
		want[i] = byte(i * 13)
	}
	f := &countFile{hintFile: hintFile{t: t, reserved: 1 << 40}}
	b := newSegFile(f, 64<<10, preallocBytes)
	if _, err := b.WriteAt(want, 0); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4096)
	reads := 0
	for off := int64(0); off+4096 <= int64(len(want)); off += 40 << 10 {
		if _, err := b.ReadAt(got, off); err != nil || !bytes.Equal(got, want[off:off+4096]) {
			t.Fatalf("read at %d: %v", off, err)
		}
		reads++
		if b.rstep != readAheadBytes {
			t.Fatalf("block grew to %d bytes for reads 40 KiB apart", b.rstep)
		}
	}
	if f.reads != reads {
		t.Fatalf("%d reads of the file for %d scattered reads", f.reads, reads)
	}
}

// The append-buffer list keeps at most segBuffersKept buffers, hands out
// only one big enough, and hands each out once.
func TestBufferList(t *testing.T) {
	var l bufferList
	if b := l.get(10); b != nil {
		t.Fatalf("empty list gave a buffer of %d", cap(b))
	}
	small, big := make([]byte, 5, 16), make([]byte, 0, 64)
	l.put(small)
	l.put(big)
	l.put(make([]byte, 0, 128)) // beyond segBuffersKept: dropped
	if len(l.bufs) != segBuffersKept {
		t.Fatalf("kept %d buffers, want %d", len(l.bufs), segBuffersKept)
	}
	b := l.get(32)
	if cap(b) != 64 || len(b) != 0 {
		t.Fatalf("get(32) gave len %d cap %d, want the 64-byte buffer, empty", len(b), cap(b))
	}
	if b := l.get(32); b != nil {
		t.Fatalf("the 64-byte buffer was handed out twice (cap %d)", cap(b))
	}
	if b := l.get(16); cap(b) != 16 || len(b) != 0 {
		t.Fatalf("get(16) gave len %d cap %d", len(b), cap(b))
	}
	l.put(make([]byte, 0, segBufferKeptMax+1)) // too big to keep
	if len(l.bufs) != 0 {
		t.Fatalf("kept a buffer of more than %d bytes", segBufferKeptMax)
	}
}
