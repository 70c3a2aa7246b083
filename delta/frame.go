package delta

import (
	"encoding/binary"
	"fmt"

	"github.com/cespare/xxhash/v2"
)

// A frame is a 16-byte frame header followed by the page:
//
//	0  4  pgno            uint32, >= 1
//	4  4  length          uint32, == the object's page size
//	8  8  xxhash64(page)  uint64
//	16 .. the page bytes
//
// The hash covers the page bytes only, so it is the page's content hash
// everywhere (directory, catalog, cache, eviction checks); pgno and length
// are checked against what the reader expects instead of being hashed.

// putFrame fills frame (FrameSize(len(page)) bytes) and returns the page hash.
func putFrame(frame []byte, pgno uint32, page []byte) uint64 {
	return putFrameHashed(frame, pgno, page, xxhash.Sum64(page))
}

// putFrameHashed is putFrame with the page hash (xxhash64 of page) known.
func putFrameHashed(frame []byte, pgno uint32, page []byte, sum uint64) uint64 {
	binary.LittleEndian.PutUint32(frame[0:], pgno)
	binary.LittleEndian.PutUint32(frame[4:], uint32(len(page)))
	binary.LittleEndian.PutUint64(frame[8:], sum)
	copy(frame[FrameHeaderSize:], page)
	return sum
}

// FramePgno is the page number a frame's header names (0 if frame is
// shorter than a header), unchecked: DecodeFrame checks it against the
// page the caller expects.
func FramePgno(frame []byte) uint32 {
	if len(frame) < FrameHeaderSize {
		return 0
	}
	return binary.LittleEndian.Uint32(frame[0:])
}

// DecodeFrame checks one frame fetched on its own (by the cache tier, or
// from a location the catalog computed with FrameOffset) and returns its
// page, a subslice of frame, and the page's hash. The caller compares the
// hash with the directory's when it has one. A frame of the wrong size, for
// another page, with another length or a hash mismatch is ErrCorrupt; an
// invalid pageSize argument is ErrMisuse.
func DecodeFrame(frame []byte, wantPgno uint32, pageSize uint32) (page []byte, hash uint64, err error) {
	if !ValidPageSize(pageSize) {
		return nil, 0, fmt.Errorf("%w: decode frame: page size %d", ErrMisuse, pageSize)
	}
	if int64(len(frame)) != FrameSize(pageSize) {
		return nil, 0, fmt.Errorf("%w: frame for page %d: %d bytes, want %d", ErrCorrupt, wantPgno, len(frame), FrameSize(pageSize))
	}
	pgno := binary.LittleEndian.Uint32(frame[0:])
	length := binary.LittleEndian.Uint32(frame[4:])
	stored := binary.LittleEndian.Uint64(frame[8:])
	if pgno != wantPgno {
		return nil, 0, fmt.Errorf("%w: frame holds page %d, want %d", ErrCorrupt, pgno, wantPgno)
	}
	if length != pageSize {
		return nil, 0, fmt.Errorf("%w: frame for page %d: length %d, want %d", ErrCorrupt, pgno, length, pageSize)
	}
	page = frame[FrameHeaderSize:]
	if sum := xxhash.Sum64(page); sum != stored {
		return nil, 0, fmt.Errorf("%w: page %d: hash %016x, frame says %016x", ErrCorrupt, pgno, sum, stored)
	}
	return page, stored, nil
}
