package delta

import (
	"encoding/binary"
	"fmt"

	"github.com/cespare/xxhash/v2"
)

// Entry locates one page in an object. Index is the frame index (the
// entry's position in the directory; it is not stored) and Offset is
// always FrameOffset(pageSize, Index); both are kept so callers need not
// recompute them.
type Entry struct {
	Pgno   uint32
	Index  uint32
	Offset int64  // byte offset of the frame (its frame header)
	Length uint32 // page length; equals the page size in version 1
	Hash   uint64 // xxhash64 of the page bytes
}

// Summary is everything about an object except its page bytes: what the
// Encoder returns from Close, what Object.Summary reports, and what
// EncodeDirectory/DecodeDirectory carry to and from the catalog's local
// copy of a directory.
type Summary struct {
	Header    Header
	Size      int64  // total object size in bytes
	Hash      uint64 // content hash: xxhash64 of every byte before the trailer; the store key's hash
	FileHash  uint64 // xxhash64 of the whole object, trailer included (Encoder only: what a store reports for it)
	PageCount uint32 // == Header.PageCount == len(Entries)
	Entries   []Entry
}

// The directory section is PageCount entries of DirEntrySize bytes
//
//	0  4  pgno    uint32
//	4  4  length  uint32
//	8  8  offset  uint64
//	16 8  hash    uint64
//
// followed by an xxhash64 of the 64 header bytes and then the entry bytes,
// which binds a directory to its header (and so to its object id).

func appendEntry(b []byte, e Entry) []byte {
	b = binary.LittleEndian.AppendUint32(b, e.Pgno)
	b = binary.LittleEndian.AppendUint32(b, e.Length)
	b = binary.LittleEndian.AppendUint64(b, uint64(e.Offset))
	return binary.LittleEndian.AppendUint64(b, e.Hash)
}

// checkEntry reports the first rule entry i breaks given its predecessor's
// pgno (0 for the first), or "". Invariants: entries ascend strictly by
// pgno, the first is FirstPgno, a base object's entry i is FirstPgno+i,
// entry i's frame is frame i, and every length is the page size.
func checkEntry(h Header, i uint32, prev uint32, e Entry) string {
	switch {
	case e.Index != i:
		return fmt.Sprintf("entry %d has index %d", i, e.Index)
	case e.Pgno == 0:
		return fmt.Sprintf("entry %d: pgno 0", i)
	case i == 0 && e.Pgno != h.FirstPgno:
		return fmt.Sprintf("first entry is page %d, header says first pgno %d", e.Pgno, h.FirstPgno)
	case i > 0 && e.Pgno <= prev:
		return fmt.Sprintf("entry %d: page %d after page %d (must ascend)", i, e.Pgno, prev)
	case h.Kind == KindBase && uint64(e.Pgno) != uint64(h.FirstPgno)+uint64(i):
		return fmt.Sprintf("base entry %d is page %d, want %d (no gaps)", i, e.Pgno, uint64(h.FirstPgno)+uint64(i))
	case e.Length != h.PageSize:
		return fmt.Sprintf("entry %d (page %d): length %d, page size %d", i, e.Pgno, e.Length, h.PageSize)
	case e.Offset != FrameOffset(h.PageSize, i):
		return fmt.Sprintf("entry %d (page %d): offset %d, want %d", i, e.Pgno, e.Offset, FrameOffset(h.PageSize, i))
	}
	return ""
}

// decodeDirSection parses a directory section of exactly
// DirLength(h.PageCount) bytes, hdr being the header's raw bytes. The
// entry slice it allocates is bounded by len(b), which callers have
// matched against the real object size.
func decodeDirSection(h Header, hdr []byte, b []byte) ([]Entry, error) {
	if int64(len(b)) != DirLength(h.PageCount) {
		return nil, fmt.Errorf("%w: directory: %d bytes, want %d", ErrCorrupt, len(b), DirLength(h.PageCount))
	}
	body := b[:len(b)-DirHashSize]
	d := xxhash.New()
	d.Write(hdr[:HeaderSize])
	d.Write(body)
	if got, want := d.Sum64(), binary.LittleEndian.Uint64(b[len(body):]); got != want {
		return nil, fmt.Errorf("%w: directory hash %016x, stored %016x", ErrCorrupt, got, want)
	}
	entries := make([]Entry, h.PageCount)
	var prev uint32
	for i := range entries {
		p := body[i*DirEntrySize:]
		e := Entry{
			Pgno:   binary.LittleEndian.Uint32(p[0:]),
			Index:  uint32(i),
			Length: binary.LittleEndian.Uint32(p[4:]),
			Offset: int64(binary.LittleEndian.Uint64(p[8:])),
			Hash:   binary.LittleEndian.Uint64(p[16:]),
		}
		if why := checkEntry(h, uint32(i), prev, e); why != "" {
			return nil, fmt.Errorf("%w: directory: %s", ErrCorrupt, why)
		}
		entries[i] = e
		prev = e.Pgno
	}
	return entries, nil
}

// check reports (as ErrMisuse) the first rule s breaks: it must describe
// a valid object, as Encoder.Close, Object.Summary and DecodeDirectory
// return.
func (s Summary) check() error {
	h := s.Header
	if why := h.check(); why != "" {
		return fmt.Errorf("%w: summary header: %s", ErrMisuse, why)
	}
	if s.PageCount != h.PageCount || uint64(len(s.Entries)) != uint64(h.PageCount) {
		return fmt.Errorf("%w: header says %d pages, summary %d, %d entries",
			ErrMisuse, h.PageCount, s.PageCount, len(s.Entries))
	}
	if s.Size != ObjectSize(h.PageSize, h.PageCount) {
		return fmt.Errorf("%w: summary size %d, want %d", ErrMisuse, s.Size, ObjectSize(h.PageSize, h.PageCount))
	}
	var prev uint32
	for i, e := range s.Entries {
		if why := checkEntry(h, uint32(i), prev, e); why != "" {
			return fmt.Errorf("%w: summary directory: %s", ErrMisuse, why)
		}
		prev = e.Pgno
	}
	return nil
}

// The trailer is the last TrailerSize bytes of an object:
//
//	0  8  directory offset  uint64, == DirOffset(PageSize, PageCount)
//	8  8  directory length  uint64, == DirLength(PageCount)
//	16 8  content hash      uint64: xxhash64 of object bytes [0, size-40)
//	24 8  trailer hash      uint64: xxhash64 of trailer bytes [0, 24)
//	32 8  magic "BOPPGEND"
//
// The directory offset and length are redundant with the header; readers
// check that they agree, which catches a trailer spliced onto another
// object. The trailer hash lets Open detect a damaged content hash without
// reading the whole object.

func appendTrailer(b []byte, h Header, contentHash uint64) []byte {
	var t [TrailerSize]byte
	binary.LittleEndian.PutUint64(t[tDirOffset:], uint64(DirOffset(h.PageSize, h.PageCount)))
	binary.LittleEndian.PutUint64(t[tDirLength:], uint64(DirLength(h.PageCount)))
	binary.LittleEndian.PutUint64(t[tContentHash:], contentHash)
	binary.LittleEndian.PutUint64(t[tHash:], xxhash.Sum64(t[:tHash]))
	copy(t[tMagic:], trailerMagic[:])
	return append(b, t[:]...)
}

// decodeTrailer checks a trailer against header h and returns the content
// hash it records.
func decodeTrailer(h Header, t []byte) (uint64, error) {
	if len(t) != TrailerSize {
		return 0, fmt.Errorf("%w: trailer: %d bytes, want %d", ErrCorrupt, len(t), TrailerSize)
	}
	if [8]byte(t[tMagic:tMagic+8]) != trailerMagic {
		return 0, fmt.Errorf("%w: trailer: bad magic %q", ErrCorrupt, t[tMagic:tMagic+8])
	}
	if got, want := xxhash.Sum64(t[:tHash]), binary.LittleEndian.Uint64(t[tHash:]); got != want {
		return 0, fmt.Errorf("%w: trailer hash %016x, stored %016x", ErrCorrupt, got, want)
	}
	dirOff := binary.LittleEndian.Uint64(t[tDirOffset:])
	dirLen := binary.LittleEndian.Uint64(t[tDirLength:])
	if dirOff != uint64(DirOffset(h.PageSize, h.PageCount)) || dirLen != uint64(DirLength(h.PageCount)) {
		return 0, fmt.Errorf("%w: trailer: directory at %d+%d, header implies %d+%d", ErrCorrupt,
			dirOff, dirLen, DirOffset(h.PageSize, h.PageCount), DirLength(h.PageCount))
	}
	return binary.LittleEndian.Uint64(t[tContentHash:]), nil
}

// EncodeDirectory encodes s for the catalog's local copy of an object's
// directory: the object's header, directory section and trailer, byte for
// byte as in the object, without the frames (so HeaderSize +
// DirLength(PageCount) + TrailerSize bytes). DecodeDirectory reverses it.
// s must describe a valid object (as returned by Encoder.Close or
// Object.Summary); anything else is ErrMisuse.
func EncodeDirectory(s Summary) ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("delta: encode directory: %w", err)
	}
	h := s.Header
	b := make([]byte, 0, HeaderSize+DirLength(h.PageCount)+TrailerSize)
	b = appendHeader(b, h)
	for _, e := range s.Entries {
		b = appendEntry(b, e)
	}
	b = binary.LittleEndian.AppendUint64(b, xxhash.Sum64(b))
	return appendTrailer(b, h, s.Hash), nil
}

// DecodeDirectory parses and verifies bytes made by EncodeDirectory. Any
// damage is ErrCorrupt (ErrVersion for a newer format).
func DecodeDirectory(b []byte) (Summary, error) {
	h, err := DecodeHeader(b)
	if err != nil {
		return Summary{}, fmt.Errorf("delta: decode directory: %w", err)
	}
	if want := HeaderSize + DirLength(h.PageCount) + TrailerSize; int64(len(b)) != want {
		return Summary{}, fmt.Errorf("%w: directory copy is %d bytes, header implies %d", ErrCorrupt, len(b), want)
	}
	dirEnd := len(b) - TrailerSize
	entries, err := decodeDirSection(h, b[:HeaderSize], b[HeaderSize:dirEnd])
	if err != nil {
		return Summary{}, err
	}
	sum, err := decodeTrailer(h, b[dirEnd:])
	if err != nil {
		return Summary{}, err
	}
	return Summary{Header: h, Size: ObjectSize(h.PageSize, h.PageCount), Hash: sum, PageCount: h.PageCount, Entries: entries}, nil
}
