package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"math/bits"

	"github.com/cespare/xxhash/v2"

	"github.com/bopstore/bop/remote"
)

// Block file layout (docs/FORMAT-cache.md), all integers little endian:
//
//	0   8  magic "bopcache"
//	8   2  version (1)
//	10  1  unit shift (10: 1 KiB units)
//	11  1  flags (0)
//	12  4  data length n (1 .. block size)
//	16  8  offset of the block in the object (a multiple of the block size)
//	24  8  object size
//	32  8  object mtime, ns since 1970 (informational)
//	40  4  block size of the cache that wrote the file (a power of two)
//	44  2  key length k (1 .. remote.MaxKeyLen)
//	46  2  ETag length e (0 .. maxETagLen)
//	48  k  key
//	    e  ETag
//	    8  xxhash64 of every header byte before it (the header hash)
//	then ceil(n / 1024) units: a 4-byte check, then up to 1024 data bytes
//	(only the last unit is shorter). The check of unit u is
//	CRC-32C(data) XOR the low 32 bits of mix(header hash + u), so a unit
//	verifies only at its own place in its own block of its own object
//	version.
//
// The file is exactly header + units long: anything else is a torn or
// foreign file.
const (
	blockMagic   = "bopcache"
	blockVersion = 1
	headerFixed  = 48
	hashLen      = 8
	unitShift    = 10
	unitSize     = 1 << unitShift
	checkLen     = 4
	unitStride   = checkLen + unitSize
	maxETagLen   = 255
	// maxHeaderLen bounds what the loader reads of a file before it knows
	// the header's real length.
	maxHeaderLen = headerFixed + remote.MaxKeyLen + maxETagLen + hashLen

	minBlockSize = unitSize
	maxBlockSize = 64 << 20
)

// errCorrupt marks a block file (or a part of one) that fails its checks.
// It never leaves the package: a corrupt block is dropped and refetched.
var errCorrupt = errors.New("cache: corrupt block file")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// blockHeader is the decoded header of a block file.
type blockHeader struct {
	key       string
	etag      string
	offset    int64 // of the block in the object
	n         int   // data bytes
	objSize   int64
	modTime   int64 // ns since 1970
	blockSize int64
	hash      uint64 // xxhash64 of the header: salts the unit checks
}

// headerLen is the length of the encoded header, hash included.
func (h *blockHeader) headerLen() int { return headerFixed + len(h.key) + len(h.etag) + hashLen }

// unitsLen is the on-disk length of n data bytes: the data plus one check
// per unit.
func unitsLen(n int) int64 {
	units := (int64(n) + unitSize - 1) >> unitShift
	return int64(n) + units*checkLen
}

// fileLen is the exact size of the block file.
func (h *blockHeader) fileLen() int64 { return int64(h.headerLen()) + unitsLen(h.n) }

// mix is splitmix64's finaliser: it spreads the header hash and a unit
// index into an unrelated salt.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func unitCheck(hdrHash uint64, u int, data []byte) uint32 {
	return crc32.Checksum(data, castagnoli) ^ uint32(mix(hdrHash+uint64(u)))
}

// appendBlock appends the whole file image of a block to dst and sets
// h.hash. h.n must equal len(data).
func appendBlock(dst []byte, h *blockHeader, data []byte) []byte {
	start := len(dst)
	dst = append(dst, blockMagic...)
	dst = binary.LittleEndian.AppendUint16(dst, blockVersion)
	dst = append(dst, unitShift, 0)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(h.n))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(h.offset))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(h.objSize))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(h.modTime))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(h.blockSize))
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(h.key)))
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(h.etag)))
	dst = append(dst, h.key...)
	dst = append(dst, h.etag...)
	h.hash = xxhash.Sum64(dst[start:])
	dst = binary.LittleEndian.AppendUint64(dst, h.hash)
	for u := 0; len(data) > 0; u++ {
		d := data[:min(len(data), unitSize)]
		dst = binary.LittleEndian.AppendUint32(dst, unitCheck(h.hash, u, d))
		dst = append(dst, d...)
		data = data[len(d):]
	}
	return dst
}

// decodeHeader parses and checks a block file's header. b holds the
// file's first bytes (at least the whole header, or the whole file if it
// is shorter); size is the file's size. It checks everything but the unit
// checks: magic, version, the header hash, the key rules, that the block
// is a whole block of the object at its place (or the object's last one),
// and that the file is exactly as long as the header says. It never panics
// and allocates only the key and ETag of a header that passes.
func decodeHeader(b []byte, size int64) (blockHeader, error) {
	var h blockHeader
	if len(b) < headerFixed {
		return h, fmt.Errorf("%w: %d bytes, shorter than a header", errCorrupt, len(b))
	}
	if string(b[:8]) != blockMagic {
		return h, fmt.Errorf("%w: bad magic", errCorrupt)
	}
	if v := binary.LittleEndian.Uint16(b[8:]); v != blockVersion {
		return h, fmt.Errorf("%w: version %d, want %d", errCorrupt, v, blockVersion)
	}
	if b[10] != unitShift || b[11] != 0 {
		return h, fmt.Errorf("%w: unit shift %d, flags %#x", errCorrupt, b[10], b[11])
	}
	n := binary.LittleEndian.Uint32(b[12:])
	offset := binary.LittleEndian.Uint64(b[16:])
	objSize := binary.LittleEndian.Uint64(b[24:])
	modTime := binary.LittleEndian.Uint64(b[32:])
	blockSize := binary.LittleEndian.Uint32(b[40:])
	k := int(binary.LittleEndian.Uint16(b[44:]))
	e := int(binary.LittleEndian.Uint16(b[46:]))
	if k < 1 || k > remote.MaxKeyLen || e > maxETagLen {
		return h, fmt.Errorf("%w: key length %d, ETag length %d", errCorrupt, k, e)
	}
	hl := headerFixed + k + e + hashLen
	if len(b) < hl {
		return h, fmt.Errorf("%w: %d bytes, header needs %d", errCorrupt, len(b), hl)
	}
	sum := binary.LittleEndian.Uint64(b[hl-hashLen:])
	if xxhash.Sum64(b[:hl-hashLen]) != sum {
		return h, fmt.Errorf("%w: header hash mismatch", errCorrupt)
	}
	if blockSize < minBlockSize || blockSize > maxBlockSize || bits.OnesCount32(blockSize) != 1 {
		return h, fmt.Errorf("%w: block size %d", errCorrupt, blockSize)
	}
	if n < 1 || n > blockSize {
		return h, fmt.Errorf("%w: data length %d of block size %d", errCorrupt, n, blockSize)
	}
	if objSize > math.MaxInt64/2 || offset > objSize || offset%uint64(blockSize) != 0 {
		return h, fmt.Errorf("%w: offset %d of object size %d", errCorrupt, offset, objSize)
	}
	// A block is whole, or the object's last: it ends at the object's end.
	if end := offset + uint64(n); end > objSize || n != blockSize && end != objSize {
		return h, fmt.Errorf("%w: block [%d, %d) of object size %d", errCorrupt, offset, end, objSize)
	}
	key := b[headerFixed : headerFixed+k]
	if err := remote.ValidateKey(string(key)); err != nil {
		return h, fmt.Errorf("%w: %v", errCorrupt, err)
	}
	h = blockHeader{
		key:       string(key),
		etag:      string(b[headerFixed+k : headerFixed+k+e]),
		offset:    int64(offset),
		n:         int(n),
		objSize:   int64(objSize),
		modTime:   int64(modTime),
		blockSize: int64(blockSize),
		hash:      sum,
	}
	if want := h.fileLen(); size != want {
		return blockHeader{}, fmt.Errorf("%w: file of %d bytes, want %d", errCorrupt, size, want)
	}
	return h, nil
}

// unitSpan returns where in a block file the units holding data bytes
// [off, off+length) of the block start, and how many file bytes they take.
// 0 <= off, 0 < length, off+length <= n.
func unitSpan(hdrLen int, n int, off int, length int) (fileOff int64, span int) {
	u0 := off >> unitShift
	u1 := (off + length - 1) >> unitShift
	last := min(unitSize, n-u1<<unitShift)
	return int64(hdrLen) + int64(u0)*unitStride, (u1-u0)*unitStride + checkLen + last
}

// checkUnits verifies the units in buf (as read at unitSpan(.., off,
// length)) and copies data bytes [off, off+length) of the block into dst.
func checkUnits(buf []byte, hdrHash uint64, off int, dst []byte) error {
	u := off >> unitShift
	skip := off - u<<unitShift // bytes of the first unit before off
	for len(dst) > 0 {
		if len(buf) < checkLen+1 {
			return fmt.Errorf("%w: short unit %d", errCorrupt, u)
		}
		data := buf[checkLen:min(len(buf), unitStride)]
		if unitCheck(hdrHash, u, data) != binary.LittleEndian.Uint32(buf) {
			return fmt.Errorf("%w: unit %d check mismatch", errCorrupt, u)
		}
		if skip >= len(data) {
			return fmt.Errorf("%w: unit %d shorter than expected", errCorrupt, u)
		}
		c := copy(dst, data[skip:])
		dst = dst[c:]
		skip = 0
		buf = buf[len(data)+checkLen:]
		u++
	}
	return nil
}

// readFull is io.ReaderAt.ReadAt that treats a short read as the file being
// shorter than its header says: corrupt.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		return fmt.Errorf("%w: file ends %d bytes early", errCorrupt, len(p)-n)
	}
	return err
}
