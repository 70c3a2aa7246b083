// Package walgen writes SQLite WAL files the way SQLite does, for tests
// that drive capture without SQLite: a header, frames with chained
// checksums, and the unusual patterns SQLite produces (frames written
// with zeroed salts and rewritten later, sector padding, frame slots
// reused after a rollback). It is an independent, deliberately plain
// implementation of the format, so tests also cross-check wal's parser.
package walgen

import (
	"encoding/binary"
	"errors"
	"io"
	"sync"
)

// Magic numbers of the WAL header.
const (
	MagicLE = 0x377f0682
	MagicBE = 0x377f0683
)

// Checksum continues SQLite's WAL checksum over b (len multiple of 8).
func Checksum(bigEndian bool, b []byte, s [2]uint32) [2]uint32 {
	var order binary.ByteOrder = binary.LittleEndian
	if bigEndian {
		order = binary.BigEndian
	}
	for i := 0; i+8 <= len(b); i += 8 {
		s[0] += order.Uint32(b[i:]) + s[1]
		s[1] += order.Uint32(b[i+4:]) + s[0]
	}
	return s
}

// Sink receives writes, like a VFS file's WriteAt.
type Sink func(p []byte, off int64) error

// Writer generates a WAL's write stream.
type Writer struct {
	PageSize  int
	BigEndian bool
	Salt1     uint32
	Salt2     uint32
	CkptSeq   uint32

	out Sink
	hck [2]uint32   // header checksum
	cks [][2]uint32 // cks[i] = checksum after frame i+1
	// Frames is the number of frames written in this generation (the
	// next frame is Frames+1).
	Frames uint32
}

// New returns a writer of pageSize pages that sends writes to out.
func New(pageSize int, salt1, salt2 uint32, out Sink) *Writer {
	return &Writer{PageSize: pageSize, Salt1: salt1, Salt2: salt2, out: out}
}

// HeaderBytes returns the 32-byte WAL header.
func (w *Writer) HeaderBytes() []byte {
	h := make([]byte, 32)
	magic := uint32(MagicLE)
	if w.BigEndian {
		magic = MagicBE
	}
	binary.BigEndian.PutUint32(h[0:], magic)
	binary.BigEndian.PutUint32(h[4:], 3007000)
	binary.BigEndian.PutUint32(h[8:], uint32(w.PageSize))
	binary.BigEndian.PutUint32(h[12:], w.CkptSeq)
	binary.BigEndian.PutUint32(h[16:], w.Salt1)
	binary.BigEndian.PutUint32(h[20:], w.Salt2)
	ck := Checksum(w.BigEndian, h[:24], [2]uint32{})
	binary.BigEndian.PutUint32(h[24:], ck[0])
	binary.BigEndian.PutUint32(h[28:], ck[1])
	return h
}

// Header writes the WAL header, starting a generation.
func (w *Writer) Header() error {
	h := w.HeaderBytes()
	w.hck = [2]uint32{binary.BigEndian.Uint32(h[24:]), binary.BigEndian.Uint32(h[28:])}
	w.cks = w.cks[:0]
	w.Frames = 0
	return w.out(h, 0)
}

// Restart starts a new generation as SQLite's walRestartHdr does:
// checkpoint sequence + 1, salt1 + 1, a new salt2.
func (w *Writer) Restart(salt2 uint32) error {
	w.CkptSeq++
	w.Salt1++
	w.Salt2 = salt2
	return w.Header()
}

// FrameOffset is the file offset of frame idx (1-based).
func (w *Writer) FrameOffset(idx uint32) int64 {
	return 32 + int64(idx-1)*int64(24+w.PageSize)
}

func (w *Writer) prevCk(idx uint32) [2]uint32 {
	if idx <= 1 {
		return w.hck
	}
	return w.cks[idx-2]
}

// FrameHeader encodes the header of frame idx for page with the given
// commit size, chained from frame idx-1. zeroSalt writes zero salts and
// checksum (as SQLite does before walRewriteChecksums).
func (w *Writer) FrameHeader(idx uint32, pgno, commit uint32, page []byte, zeroSalt bool) ([]byte, [2]uint32) {
	h := make([]byte, 24)
	binary.BigEndian.PutUint32(h[0:], pgno)
	binary.BigEndian.PutUint32(h[4:], commit)
	ck := Checksum(w.BigEndian, h[:8], w.prevCk(idx))
	ck = Checksum(w.BigEndian, page, ck)
	if !zeroSalt {
		binary.BigEndian.PutUint32(h[8:], w.Salt1)
		binary.BigEndian.PutUint32(h[12:], w.Salt2)
		binary.BigEndian.PutUint32(h[16:], ck[0])
		binary.BigEndian.PutUint32(h[20:], ck[1])
	}
	return h, ck
}

// WriteFrame writes frame idx (header, then page, as two writes like
// SQLite) and makes it the last frame: frames after idx are forgotten
// (a rollback reuses their slots).
func (w *Writer) WriteFrame(idx uint32, pgno, commit uint32, page []byte, zeroSalt bool) error {
	if idx < 1 || idx > w.Frames+1 {
		return errors.New("walgen: frame index out of sequence")
	}
	h, ck := w.FrameHeader(idx, pgno, commit, page, zeroSalt)
	w.cks = append(w.cks[:idx-1], ck)
	w.Frames = idx
	off := w.FrameOffset(idx)
	if err := w.out(h, off); err != nil {
		return err
	}
	return w.out(page, off+24)
}

// Append writes the next frame.
func (w *Writer) Append(pgno, commit uint32, page []byte) error {
	return w.WriteFrame(w.Frames+1, pgno, commit, page, false)
}

// Commit appends one frame per page; the last carries the commit size.
func (w *Writer) Commit(dbPages uint32, pgnos []uint32, pages [][]byte) error {
	for i, p := range pgnos {
		commit := uint32(0)
		if i == len(pgnos)-1 {
			commit = dbPages
		}
		if err := w.Append(p, commit, pages[i]); err != nil {
			return err
		}
	}
	return nil
}

// RewriteHeaders rewrites the headers of frames from..to with proper
// salts and checksums, as walRewriteChecksums (pages given by page(i)).
func (w *Writer) RewriteHeaders(from, to uint32, pgno func(uint32) (uint32, uint32, []byte)) error {
	for i := from; i <= to; i++ {
		p, commit, page := pgno(i)
		h, ck := w.FrameHeader(i, p, commit, page, false)
		w.cks[i-1] = ck
		if err := w.out(h, w.FrameOffset(i)); err != nil {
			return err
		}
	}
	return nil
}

// Pad repeats frame copies of (pgno, commit, page) until the file offset
// reaches a multiple of sectorSize, as SQLite does with psow off and a
// sync at commit. It returns the number of padding frames.
func (w *Writer) Pad(sectorSize int64, pgno, commit uint32, page []byte) (int, error) {
	n := 0
	for w.FrameOffset(w.Frames+1)%sectorSize != 0 {
		if err := w.Append(pgno, commit, page); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// File is an in-memory WAL file: a Sink that keeps the bytes, and the
// read side capture's reconciliation uses.
type File struct {
	mu    sync.Mutex
	Path  string
	Data  []byte
	Syncs int
}

// Write is a Sink.
func (f *File) Write(p []byte, off int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if end := off + int64(len(p)); end > int64(len(f.Data)) {
		f.Data = append(f.Data, make([]byte, end-int64(len(f.Data)))...)
	}
	copy(f.Data[off:], p)
	return nil
}

// Truncate sets the size.
func (f *File) Truncate(size int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if size < int64(len(f.Data)) {
		f.Data = f.Data[:size]
	} else {
		f.Data = append(f.Data, make([]byte, size-int64(len(f.Data)))...)
	}
}

// ReadAt implements io.ReaderAt.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if off >= int64(len(f.Data)) {
		return 0, io.EOF
	}
	n := copy(p, f.Data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Size returns the length.
func (f *File) Size() (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return int64(len(f.Data)), nil
}

// Sync counts syncs.
func (f *File) Sync() error {
	f.mu.Lock()
	f.Syncs++
	f.mu.Unlock()
	return nil
}

// Name returns Path.
func (f *File) Name() string { return f.Path }
