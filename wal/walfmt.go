package wal

import (
	"encoding/binary"
	"fmt"
)

// The SQLite WAL file format (https://sqlite.org/fileformat2.html#walformat):
// a 32-byte header, then frames of a 24-byte frame header and one page.
// Every integer is big-endian. The checksum words are read big- or
// little-endian as the magic number says.
const (
	walHeaderSize = 32
	frameHeaderSz = 24
	walMagicLE    = 0x377f0682 // checksum words are little-endian
	walMagicBE    = 0x377f0683 // checksum words are big-endian
	walVersion    = 3007000
)

// walHeader is a parsed WAL header.
type walHeader struct {
	raw       [walHeaderSize]byte
	bigEndian bool
	pageSize  uint32
	ckptSeq   uint32
	salt1     uint32
	salt2     uint32
	ck        [2]uint32 // checksum of bytes 0..24: the seed of frame 1's checksum
}

// parseWALHeader validates a WAL header the way SQLite's recovery does:
// magic, version, page size and the header checksum.
func parseWALHeader(b []byte) (walHeader, error) {
	var h walHeader
	if len(b) < walHeaderSize {
		return h, fmt.Errorf("short WAL header (%d bytes)", len(b))
	}
	copy(h.raw[:], b)
	magic := binary.BigEndian.Uint32(b[0:])
	if magic != walMagicLE && magic != walMagicBE {
		return h, fmt.Errorf("bad WAL magic %#08x", magic)
	}
	h.bigEndian = magic == walMagicBE
	if v := binary.BigEndian.Uint32(b[4:]); v != walVersion {
		return h, fmt.Errorf("unsupported WAL version %d", v)
	}
	h.pageSize = binary.BigEndian.Uint32(b[8:])
	if !validPageSize(h.pageSize) {
		return h, fmt.Errorf("bad WAL page size %d", h.pageSize)
	}
	h.ckptSeq = binary.BigEndian.Uint32(b[12:])
	h.salt1 = binary.BigEndian.Uint32(b[16:])
	h.salt2 = binary.BigEndian.Uint32(b[20:])
	h.ck = walChecksum(h.bigEndian, b[:24], [2]uint32{})
	if h.ck[0] != binary.BigEndian.Uint32(b[24:]) || h.ck[1] != binary.BigEndian.Uint32(b[28:]) {
		return h, fmt.Errorf("WAL header checksum mismatch")
	}
	return h, nil
}

// isZero reports whether b is all zero bytes (a WAL header that was never
// written, e.g. a file extended by a crash before its first sector landed).
func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// validPageSize: a power of two from 512 to 65536.
func validPageSize(n uint32) bool {
	return n >= 512 && n <= 65536 && n&(n-1) == 0
}

// frameHeader accessors over a 24-byte frame header.
type frameHeader [frameHeaderSz]byte

func (h *frameHeader) pgno() uint32   { return binary.BigEndian.Uint32(h[0:]) }
func (h *frameHeader) commit() uint32 { return binary.BigEndian.Uint32(h[4:]) }
func (h *frameHeader) salt1() uint32  { return binary.BigEndian.Uint32(h[8:]) }
func (h *frameHeader) salt2() uint32  { return binary.BigEndian.Uint32(h[12:]) }
func (h *frameHeader) ck() [2]uint32 {
	return [2]uint32{binary.BigEndian.Uint32(h[16:]), binary.BigEndian.Uint32(h[20:])}
}

// frameChecksum is the cumulative checksum of one frame: the first 8 bytes
// of its header (pgno, commit size) and its page, continued from prev.
func frameChecksum(bigEndian bool, hdr *frameHeader, page []byte, prev [2]uint32) [2]uint32 {
	s := walChecksum(bigEndian, hdr[:8], prev)
	return walChecksum(bigEndian, page, s)
}
