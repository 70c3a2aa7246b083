package wal

import (
	"encoding/binary"
	"fmt"

	"github.com/cespare/xxhash/v2"
)

// Spool segment and record format (docs/FORMAT-wal.md). Integers are
// little-endian. A segment file is a 32-byte header and records back to
// back. A record is a 64-byte header, the page images (the body), a
// directory of one 16-byte entry per page (pgno and the page's xxhash64, in
// body order) and a 16-byte trailer whose xxhash64 covers the header, the
// directory and the rest of the trailer. Page bytes are covered through
// their directory hashes, so one page can be read and verified alone.
const (
	segMagic      = "bopspool"
	segVersion    = 1
	segHeaderSize = 32

	recMagic      = 0x43455242 // "BREC"
	recEndMagic   = 0x444e4542 // "BEND"
	recHeaderSize = 64
	dirEntrySize  = 16
	trailerSize   = 16
)

// Kind says where a record's pages came from.
type Kind uint8

const (
	// KindWAL: a transaction committed in the WAL.
	KindWAL Kind = 1
	// KindDirect: a transaction written straight into the main database in
	// rollback-journal mode (before WAL mode is on).
	KindDirect Kind = 2
	// KindImage: the starting image of an adopted database.
	KindImage Kind = 3
)

func (k Kind) String() string {
	switch k {
	case KindWAL:
		return "wal"
	case KindDirect:
		return "direct"
	case KindImage:
		return "image"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// WALIdentity names the WAL frame that committed a transaction: the WAL
// generation (its salts), the commit frame's index and the cumulative
// checksum stored in that frame. Reconciliation compares it with the WAL
// on disk to prove the frame there is the one that was spooled. Zero for
// direct records. An image record carries the identity of the last WAL
// commit frame its pages include (AppendImage), or zero if they include
// none: capture then resumes after that frame.
type WALIdentity struct {
	Salt1, Salt2 uint32
	Frame        uint32    // 1-based index of the commit frame
	Cksum        [2]uint32 // the commit frame's checksum pair
}

// sameGeneration reports whether id belongs to the WAL generation with
// these salts.
func (id WALIdentity) sameGeneration(salt1, salt2 uint32) bool {
	return id.Frame != 0 && id.Salt1 == salt1 && id.Salt2 == salt2
}

// RecordHeader describes one spooled transaction.
type RecordHeader struct {
	Txid     uint64
	Kind     Kind
	PageSize uint32
	DBPages  uint32 // database size in pages after the transaction
	NPages   uint32 // page images in the record (distinct pgnos, each <= DBPages)
	WAL      WALIdentity
}

// size is the record's length in bytes.
func (h *RecordHeader) size() int64 {
	n := int64(h.NPages)
	return recHeaderSize + n*int64(h.PageSize) + n*dirEntrySize + trailerSize
}

func (h *RecordHeader) encode(b []byte) {
	_ = b[recHeaderSize-1]
	clear(b[:recHeaderSize])
	le := binary.LittleEndian
	le.PutUint32(b[0:], recMagic)
	b[4] = byte(h.Kind)
	le.PutUint64(b[8:], h.Txid)
	le.PutUint32(b[16:], h.PageSize)
	le.PutUint32(b[20:], h.DBPages)
	le.PutUint32(b[24:], h.NPages)
	le.PutUint32(b[28:], h.WAL.Salt1)
	le.PutUint32(b[32:], h.WAL.Salt2)
	le.PutUint32(b[36:], h.WAL.Frame)
	le.PutUint32(b[40:], h.WAL.Cksum[0])
	le.PutUint32(b[44:], h.WAL.Cksum[1])
	le.PutUint64(b[56:], xxhash.Sum64(b[:56]))
}

// decodeRecordHeader parses and checks a record header. It checks only
// what the header itself can prove; the caller checks the txid sequence.
func decodeRecordHeader(b []byte) (RecordHeader, error) {
	var h RecordHeader
	if len(b) < recHeaderSize {
		return h, fmt.Errorf("short record header")
	}
	le := binary.LittleEndian
	if le.Uint32(b[0:]) != recMagic {
		return h, fmt.Errorf("bad record magic %#08x", le.Uint32(b[0:]))
	}
	if got, want := le.Uint64(b[56:]), xxhash.Sum64(b[:56]); got != want {
		return h, fmt.Errorf("record header checksum mismatch")
	}
	h.Kind = Kind(b[4])
	h.Txid = le.Uint64(b[8:])
	h.PageSize = le.Uint32(b[16:])
	h.DBPages = le.Uint32(b[20:])
	h.NPages = le.Uint32(b[24:])
	h.WAL = WALIdentity{
		Salt1: le.Uint32(b[28:]), Salt2: le.Uint32(b[32:]), Frame: le.Uint32(b[36:]),
		Cksum: [2]uint32{le.Uint32(b[40:]), le.Uint32(b[44:])},
	}
	if err := h.check(); err != nil {
		return h, err
	}
	return h, nil
}

// check validates field ranges (also used before writing).
func (h *RecordHeader) check() error {
	switch h.Kind {
	case KindWAL, KindDirect, KindImage:
	default:
		return fmt.Errorf("unknown record kind %d", uint8(h.Kind))
	}
	if !validPageSize(h.PageSize) {
		return fmt.Errorf("bad page size %d", h.PageSize)
	}
	if h.Txid == 0 {
		return fmt.Errorf("txid 0")
	}
	if h.NPages > h.DBPages {
		return fmt.Errorf("%d pages in a database of %d pages", h.NPages, h.DBPages)
	}
	// A WAL record names its commit frame; a direct record has none; an
	// image record may name the last commit frame it includes (older
	// spools hold images without one).
	if (h.Kind == KindWAL && h.WAL.Frame == 0) || (h.Kind == KindDirect && h.WAL.Frame != 0) {
		return fmt.Errorf("%s record with WAL frame %d", h.Kind, h.WAL.Frame)
	}
	return nil
}

// hasWAL reports whether the record names a WAL commit frame: every
// frame of that generation up to it is in the spool.
func (h *RecordHeader) hasWAL() bool { return h.WAL.Frame != 0 }

func encodeTrailer(b []byte, dirHash *xxhash.Digest, npages uint32) {
	le := binary.LittleEndian
	le.PutUint32(b[8:], recEndMagic)
	le.PutUint32(b[12:], npages)
	dirHash.Write(b[8:16])
	le.PutUint64(b[0:], dirHash.Sum64())
}

func checkTrailer(b []byte, dirHash *xxhash.Digest, npages uint32) error {
	le := binary.LittleEndian
	if le.Uint32(b[8:]) != recEndMagic || le.Uint32(b[12:]) != npages {
		return fmt.Errorf("bad record trailer")
	}
	dirHash.Write(b[8:16])
	if le.Uint64(b[0:]) != dirHash.Sum64() {
		return fmt.Errorf("record checksum mismatch")
	}
	return nil
}

func encodeSegmentHeader(b []byte, first uint64) {
	clear(b[:segHeaderSize])
	le := binary.LittleEndian
	copy(b, segMagic)
	le.PutUint32(b[8:], segVersion)
	le.PutUint32(b[12:], segHeaderSize)
	le.PutUint64(b[16:], first)
	le.PutUint64(b[24:], xxhash.Sum64(b[:24]))
}

// decodeSegmentHeader returns the first txid of a segment. A newer version
// is ErrVersion, checked before the checksum so that a future format with
// a different header still gets the clear message.
func decodeSegmentHeader(b []byte) (uint64, error) {
	if len(b) < segHeaderSize {
		return 0, fmt.Errorf("short segment header: %w", ErrCorrupt)
	}
	le := binary.LittleEndian
	if string(b[:8]) != segMagic {
		return 0, fmt.Errorf("not a spool segment (bad magic): %w", ErrCorrupt)
	}
	if v := le.Uint32(b[8:]); v > segVersion {
		return 0, fmt.Errorf("segment format version %d, this bop reads up to %d: %w", v, segVersion, ErrVersion)
	} else if v == 0 {
		return 0, fmt.Errorf("segment format version 0: %w", ErrCorrupt)
	}
	if le.Uint64(b[24:]) != xxhash.Sum64(b[:24]) || le.Uint32(b[12:]) != segHeaderSize {
		return 0, fmt.Errorf("segment header checksum mismatch: %w", ErrCorrupt)
	}
	return le.Uint64(b[16:]), nil
}

func segmentName(first uint64) string { return fmt.Sprintf("%020d.seg", first) }

// parseSegmentName returns the first txid a segment file name encodes.
func parseSegmentName(name string) (uint64, bool) {
	if len(name) != 24 || name[20:] != ".seg" {
		return 0, false
	}
	var v uint64
	for _, c := range name[:20] {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (1<<64-1-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, true
}
