package delta

import (
	"encoding/binary"
	"fmt"

	"github.com/cespare/xxhash/v2"
)

// Layout constants. All integers in the format are little-endian.
const (
	// CurrentVersion is the format version this package writes. Readers
	// accept exactly the versions they know (1); a larger version is
	// ErrVersion.
	CurrentVersion uint16 = 1

	HeaderSize      = 64 // fixed header at offset 0
	FrameHeaderSize = 16 // pgno u32, length u32, xxhash64 u64
	DirEntrySize    = 24 // pgno u32, length u32, offset u64, hash u64
	DirHashSize     = 8  // xxhash64 closing the directory section
	TrailerSize     = 40 // dir offset, dir length, content hash, trailer hash, magic

	MinPageSize = 512
	MaxPageSize = 65536
)

var (
	headerMagic  = [8]byte{'B', 'O', 'P', 'P', 'A', 'G', 'E', 'S'}
	trailerMagic = [8]byte{'B', 'O', 'P', 'P', 'G', 'E', 'N', 'D'}
)

// Header field offsets (see docs/FORMAT-delta.md).
const (
	hMagic     = 0  // [8]byte
	hVersion   = 8  // uint16
	hKind      = 10 // uint8
	hReserved1 = 11 // uint8, zero
	hPageSize  = 12 // uint32
	hObjectID  = 16 // uint64
	hMinTxid   = 24 // uint64
	hMaxTxid   = 32 // uint64
	hFirstPgno = 40 // uint32
	hPageCount = 44 // uint32
	hReserved2 = 48 // uint64, zero
	hHash      = 56 // uint64: xxhash64 of bytes [0, 56)
)

// Trailer field offsets, relative to the trailer's start (size-TrailerSize).
const (
	tDirOffset   = 0  // uint64
	tDirLength   = 8  // uint64
	tContentHash = 16 // uint64: xxhash64 of object bytes [0, size-TrailerSize)
	tHash        = 24 // uint64: xxhash64 of trailer bytes [0, 24)
	tMagic       = 32 // [8]byte
)

// Kind says what an object holds.
type Kind uint8

const (
	// KindBase: every page of one chunk, consecutive from FirstPgno:
	// page FirstPgno+i is frame i.
	KindBase Kind = 1
	// KindDelta: any ascending set of pages, FirstPgno the lowest.
	KindDelta Kind = 2
)

// String returns the name used in remote keys ("base", "delta").
func (k Kind) String() string {
	switch k {
	case KindBase:
		return "base"
	case KindDelta:
		return "delta"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Header describes an object. It is written first and is fixed-size.
type Header struct {
	// Version is the format version. The Encoder writes CurrentVersion
	// (a zero Version in NewEncoder's argument means that too).
	Version   uint16
	Kind      Kind
	PageSize  uint32 // a power of two in [MinPageSize, MaxPageSize]
	ObjectID  uint64
	MinTxid   uint64 // txid range of the versions held; MinTxid <= MaxTxid
	MaxTxid   uint64
	FirstPgno uint32 // the lowest page number in the object, >= 1
	PageCount uint32 // number of frames, >= 1
}

// ValidPageSize reports whether ps is a page size the format allows: a
// power of two from 512 to 65536, SQLite's own rule.
func ValidPageSize(ps uint32) bool {
	return ps >= MinPageSize && ps <= MaxPageSize && ps&(ps-1) == 0
}

// FrameSize is the size of every frame in an object of this page size:
// frame header plus page.
func FrameSize(pageSize uint32) int64 {
	return FrameHeaderSize + int64(pageSize)
}

// FrameOffset is the byte offset of frame index in an object of this page
// size. Frames have one size, so no lookup is needed; for a base object,
// page p is frame p - FirstPgno (never p alone: chunk k starts at
// 1 + k*chunkPages).
func FrameOffset(pageSize uint32, index uint32) int64 {
	return HeaderSize + int64(index)*FrameSize(pageSize)
}

// DirOffset is where the directory section starts in an object.
func DirOffset(pageSize uint32, pageCount uint32) int64 {
	return FrameOffset(pageSize, 0) + int64(pageCount)*FrameSize(pageSize)
}

// DirLength is the size of the directory section: entries plus its hash.
func DirLength(pageCount uint32) int64 {
	return int64(pageCount)*DirEntrySize + DirHashSize
}

// ObjectSize is the exact size of an object with this page size and page
// count. With uint32 inputs it cannot overflow int64 (< 2^49).
func ObjectSize(pageSize uint32, pageCount uint32) int64 {
	return DirOffset(pageSize, pageCount) + DirLength(pageCount) + TrailerSize
}

// check reports the first rule h breaks, or "" if it is valid. It is used
// by both the Encoder (ErrMisuse) and the decoder (ErrCorrupt).
func (h Header) check() string {
	switch {
	case h.Version != CurrentVersion:
		return fmt.Sprintf("version %d", h.Version)
	case h.Kind != KindBase && h.Kind != KindDelta:
		return fmt.Sprintf("unknown kind %d", uint8(h.Kind))
	case !ValidPageSize(h.PageSize):
		return fmt.Sprintf("page size %d is not a power of two in [%d, %d]", h.PageSize, MinPageSize, MaxPageSize)
	case h.MinTxid > h.MaxTxid:
		return fmt.Sprintf("txid range [%d, %d] is reversed", h.MinTxid, h.MaxTxid)
	case h.FirstPgno == 0:
		return "first pgno 0"
	case h.PageCount == 0:
		return "page count 0"
	case h.Kind == KindBase && uint64(h.FirstPgno)+uint64(h.PageCount)-1 > 0xFFFFFFFF:
		return fmt.Sprintf("base pages %d+%d run past the last pgno", h.FirstPgno, h.PageCount)
	case h.Kind == KindDelta && uint64(h.FirstPgno)+uint64(h.PageCount)-1 > 0xFFFFFFFF:
		// PageCount ascending pgnos starting at FirstPgno need at least
		// this much room.
		return fmt.Sprintf("delta of %d pages cannot start at pgno %d", h.PageCount, h.FirstPgno)
	}
	return ""
}

// appendHeader encodes a valid h.
func appendHeader(b []byte, h Header) []byte {
	var hb [HeaderSize]byte
	copy(hb[hMagic:], headerMagic[:])
	binary.LittleEndian.PutUint16(hb[hVersion:], h.Version)
	hb[hKind] = byte(h.Kind)
	binary.LittleEndian.PutUint32(hb[hPageSize:], h.PageSize)
	binary.LittleEndian.PutUint64(hb[hObjectID:], h.ObjectID)
	binary.LittleEndian.PutUint64(hb[hMinTxid:], h.MinTxid)
	binary.LittleEndian.PutUint64(hb[hMaxTxid:], h.MaxTxid)
	binary.LittleEndian.PutUint32(hb[hFirstPgno:], h.FirstPgno)
	binary.LittleEndian.PutUint32(hb[hPageCount:], h.PageCount)
	binary.LittleEndian.PutUint64(hb[hHash:], xxhash.Sum64(hb[:hHash]))
	return append(b, hb[:]...)
}

// DecodeHeader parses and checks the fixed header at the start of b (at
// least HeaderSize bytes). Checks run in this order, so that a future
// version may change everything after the version field: magic
// (ErrCorrupt), version (ErrVersion if newer, ErrCorrupt if 0), header
// hash, then field rules (ErrCorrupt).
func DecodeHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: header: %d bytes, need %d", ErrCorrupt, len(b), HeaderSize)
	}
	b = b[:HeaderSize]
	if [8]byte(b[hMagic:hMagic+8]) != headerMagic {
		return Header{}, fmt.Errorf("%w: header: bad magic %q", ErrCorrupt, b[hMagic:hMagic+8])
	}
	v := binary.LittleEndian.Uint16(b[hVersion:])
	if v > CurrentVersion {
		return Header{}, fmt.Errorf("%w: object has version %d, this reader knows up to %d", ErrVersion, v, CurrentVersion)
	}
	if v == 0 {
		return Header{}, fmt.Errorf("%w: header: version 0", ErrCorrupt)
	}
	if got, want := xxhash.Sum64(b[:hHash]), binary.LittleEndian.Uint64(b[hHash:]); got != want {
		return Header{}, fmt.Errorf("%w: header hash %016x, stored %016x", ErrCorrupt, got, want)
	}
	if b[hReserved1] != 0 || binary.LittleEndian.Uint64(b[hReserved2:]) != 0 {
		return Header{}, fmt.Errorf("%w: header: reserved bytes not zero", ErrCorrupt)
	}
	h := Header{
		Version:   v,
		Kind:      Kind(b[hKind]),
		PageSize:  binary.LittleEndian.Uint32(b[hPageSize:]),
		ObjectID:  binary.LittleEndian.Uint64(b[hObjectID:]),
		MinTxid:   binary.LittleEndian.Uint64(b[hMinTxid:]),
		MaxTxid:   binary.LittleEndian.Uint64(b[hMaxTxid:]),
		FirstPgno: binary.LittleEndian.Uint32(b[hFirstPgno:]),
		PageCount: binary.LittleEndian.Uint32(b[hPageCount:]),
	}
	if why := h.check(); why != "" {
		return Header{}, fmt.Errorf("%w: header: %s", ErrCorrupt, why)
	}
	return h, nil
}
