package manifest

import (
	"fmt"
	"unsafe"

	"github.com/bopstore/bop/delta"
)

// ObjectRef identifies a page object in a page map. It is immutable and
// shared between snapshots.
type ObjectRef struct {
	ID         uint64
	Kind       string // ObjectBase or ObjectDelta
	Key        string // store key
	Size       int64
	Hash       uint64 // xxhash64 of the whole object (as in its key)
	FirstPgno  uint32
	PageCount  uint32
	MaxTxid    uint64
	CreatedSeq uint64
}

// LocationKind says where a page's version lives.
type LocationKind uint8

const (
	// InObject: the page is frame Frame of Object; read Length bytes at
	// Offset (one ranged read) and check them with delta.DecodeFrame.
	InObject LocationKind = iota + 1
	// Zero: the page is inside the database but was never written at this
	// boundary (e.g. SQLite's lock-byte page, or pages of a grown file):
	// it reads as zeros.
	Zero
	// Beyond: the page number is past the database size at this boundary.
	Beyond
)

func (k LocationKind) String() string {
	switch k {
	case InObject:
		return "object"
	case Zero:
		return "zero"
	case Beyond:
		return "beyond"
	}
	return fmt.Sprintf("LocationKind(%d)", uint8(k))
}

// Location is the answer of Resolve.
type Location struct {
	Kind   LocationKind
	Object *ObjectRef // InObject only
	Frame  uint32     // frame index inside the object
	Offset int64      // byte offset of the frame: delta.FrameOffset(pageSize, Frame)
	Length int64      // frame length: delta.FrameSize(pageSize)
}

// Snapshot is the immutable page map of one boundary. Resolve needs no
// SQL and allocates nothing; snapshots share unchanged chunks, so holding
// an old one costs only what changed since.
//
// Memory: a chunk's base pages cost nothing (page p of chunk c is frame
// p - firstPgno(c) of the chunk's base object); a page whose newest version
// is in a delta costs one 12-byte deltaPage.
type Snapshot struct {
	seq        uint64 // newest record applied (void or not)
	lastSeq    uint64 // newest non-void record: the boundary's record
	txid       uint64 // the boundary
	requested  uint64 // txid asked for (SnapshotAt); == txid otherwise
	dbPages    uint32
	pageSize   uint32
	chunkPages uint32
	frameSize  int64
	chunks     []*chunkMap // index: chunk number; nil: nothing stored
}

// chunkMap is one chunk's state. Immutable once published in a Snapshot.
type chunkMap struct {
	base       *ObjectRef // newest visible base, or nil
	baseFrames uint32     // pages of base visible from the chunk's first page
	objs       []*ObjectRef
	pages      []deltaPage // ascending pgno; the newest version of each page held by a delta newer than base

	// A bucket index over pages, so a lookup searches about four entries
	// instead of the whole chunk: the pages at chunk offset o with
	// o>>shift == b are pages[starts[b]:starts[b+1]] (ends clamped to
	// len(pages): a masked chunk shares its parent's index). About one
	// byte per delta page; nil for small chunks.
	shift  uint8
	starts []uint32
}

// buildIndex fills the bucket index of cm for a chunk starting at first.
func (cm *chunkMap) buildIndex(first, chunkPages uint32) {
	cm.starts, cm.shift = nil, 0
	if len(cm.pages) <= 8 {
		return
	}
	want := uint32(len(cm.pages) / 4)
	var shift uint8
	for shift < 31 && (chunkPages-1)>>shift >= want {
		shift++
	}
	nb := int((chunkPages-1)>>shift) + 1
	starts := make([]uint32, nb+1)
	i := 0
	for b := range nb {
		starts[b] = uint32(i)
		for i < len(cm.pages) && int((cm.pages[i].pgno-first)>>shift) == b {
			i++
		}
	}
	starts[nb] = uint32(i)
	cm.starts, cm.shift = starts, shift
}

// deltaPage places one page in a delta object: 12 bytes.
type deltaPage struct {
	pgno  uint32
	obj   uint32 // index into chunkMap.objs
	frame uint32
}

// Seq is the newest record applied when the snapshot was made.
func (s *Snapshot) Seq() uint64 { return s.seq }

// BoundarySeq is the seq of the record whose boundary this is.
func (s *Snapshot) BoundarySeq() uint64 { return s.lastSeq }

// Txid is the snapshot's boundary.
func (s *Snapshot) Txid() uint64 { return s.txid }

// Requested is the txid SnapshotAt was asked for.
func (s *Snapshot) Requested() uint64 { return s.requested }

// Rounded reports whether the requested txid fell between boundaries and
// was rounded down to Txid.
func (s *Snapshot) Rounded() bool { return s.requested != s.txid }

// DBPages is the database size in pages at the boundary.
func (s *Snapshot) DBPages() uint32 { return s.dbPages }

// PageSize is the database page size.
func (s *Snapshot) PageSize() uint32 { return s.pageSize }

// ChunkPages is the number of pages per chunk.
func (s *Snapshot) ChunkPages() uint32 { return s.chunkPages }

// Resolve returns where page pgno's version at this boundary lives.
// pgno 0 or above MaxPgno is ErrBadPage.
func (s *Snapshot) Resolve(pgno uint32) (Location, error) {
	if pgno == 0 || pgno > MaxPgno {
		return Location{}, badPage(pgno)
	}
	if pgno > s.dbPages {
		return Location{Kind: Beyond}, nil
	}
	c := (pgno - 1) / s.chunkPages
	if int(c) >= len(s.chunks) {
		return Location{Kind: Zero}, nil
	}
	ch := s.chunks[c]
	if ch == nil {
		return Location{Kind: Zero}, nil
	}
	pages := ch.pages
	lo, hi := 0, len(pages)
	if ch.starts != nil {
		b := (pgno - 1 - c*s.chunkPages) >> ch.shift
		lo, hi = int(ch.starts[b]), min(int(ch.starts[b+1]), len(pages))
		lo = min(lo, hi)
	}
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if pages[m].pgno < pgno {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(pages) && pages[lo].pgno == pgno {
		d := pages[lo]
		return s.at(ch.objs[d.obj], d.frame), nil
	}
	// The base's frame index counts from the chunk's first page (the
	// base's FirstPgno, checked when it was added), never from pgno alone.
	if b := ch.base; b != nil {
		if i := pgno - b.FirstPgno; i < ch.baseFrames {
			return s.at(b, i), nil
		}
	}
	return Location{Kind: Zero}, nil
}

func (s *Snapshot) at(o *ObjectRef, frame uint32) Location {
	return Location{Kind: InObject, Object: o, Frame: frame,
		Offset: delta.HeaderSize + int64(frame)*s.frameSize, Length: s.frameSize}
}

func badPage(pgno uint32) error {
	return fmt.Errorf("%w: %d (pages are 1..%d)", ErrBadPage, pgno, MaxPgno)
}

// DeltaPages is the number of pages whose version at this boundary lives
// in a delta object: what the snapshot's memory grows with.
func (s *Snapshot) DeltaPages() int {
	n := 0
	for _, ch := range s.chunks {
		if ch != nil {
			n += len(ch.pages)
		}
	}
	return n
}

// Objects returns the objects the snapshot reads from, each once.
func (s *Snapshot) Objects() []*ObjectRef {
	seen := map[uint64]bool{}
	var out []*ObjectRef
	add := func(o *ObjectRef) {
		if o != nil && !seen[o.ID] {
			seen[o.ID] = true
			out = append(out, o)
		}
	}
	for _, ch := range s.chunks {
		if ch == nil {
			continue
		}
		add(ch.base)
		for _, d := range ch.pages {
			add(ch.objs[d.obj])
		}
	}
	return out
}

// MemoryBytes is the memory the snapshot retains: its chunk table, the
// delta page arrays, and the object references (shared arrays counted in
// full). Base pages cost nothing.
func (s *Snapshot) MemoryBytes() int64 {
	n := int64(unsafe.Sizeof(*s)) + int64(cap(s.chunks))*int64(unsafe.Sizeof((*chunkMap)(nil)))
	refs := map[*ObjectRef]bool{}
	for _, ch := range s.chunks {
		if ch == nil {
			continue
		}
		n += int64(unsafe.Sizeof(*ch)) + int64(cap(ch.pages))*int64(unsafe.Sizeof(deltaPage{})) + int64(cap(ch.starts))*4 +
			int64(cap(ch.objs))*int64(unsafe.Sizeof((*ObjectRef)(nil)))
		if ch.base != nil {
			refs[ch.base] = true
		}
		for _, o := range ch.objs {
			refs[o] = true
		}
	}
	for o := range refs {
		n += int64(unsafe.Sizeof(*o)) + int64(len(o.Key)+len(o.Kind))
	}
	return n
}
