package manifest

import (
	"fmt"
	"slices"
	"time"
)

// RecordFormat is the version of the log record body this code writes and
// the newest it reads.
const RecordFormat = 1

// Record kinds.
const (
	KindPublish  = "publish"  // new objects and/or retirements at a boundary
	KindTakeover = "takeover" // a writer took the database over (new epoch)
	KindRelease  = "release"  // the writer handed the database off (Close)
)

// Object kinds.
const (
	ObjectBase  = "base"  // every page of one chunk at a boundary
	ObjectDelta = "delta" // newest versions of changed pages, any chunks
)

// MaxPgno is SQLite's largest page number.
const MaxPgno uint32 = 4294967294

// Parent names the record a record builds on: the newest non-void record
// before it.
type Parent struct {
	Seq  uint64 `json:"seq"`
	Txid uint64 `json:"txid"`
}

// Record is one entry of the remote log, log/<seq>, and the unit the
// catalog applies. The log is the truth; the catalog is derived from it.
//
// Invariants (checked by Catalog.Apply; a record breaking one is refused):
//   - Seq is the catalog tip + 1; Parent is the newest non-void record.
//   - Txid >= Parent.Txid. Txid == Parent.Txid with added objects only
//     when Compaction is set (reorganisation, no new data). Takeover and
//     release records repeat the parent's Txid and DBPages.
//   - Every added object is new (id and key), its key is the layout's key
//     for (kind, id, hash), its txid range ends at or below Txid, and a
//     base holds the pages of exactly one chunk starting at the chunk's
//     first page.
//   - Every retired (object, chunk) reference is live.
type Record struct {
	Format     int             `json:"format"`
	Seq        uint64          `json:"seq"`
	Kind       string          `json:"kind"`
	Epoch      uint64          `json:"epoch"`
	Writer     string          `json:"writer"`
	Job        string          `json:"job,omitempty"`
	Parent     Parent          `json:"parent"`
	Txid       uint64          `json:"txid"`
	DBPages    uint32          `json:"db_pages"`
	PageSize   uint32          `json:"page_size"`
	ChunkPages uint32          `json:"chunk_pages"`
	CreatedMs  int64           `json:"created_ms"`
	Compaction bool            `json:"compaction,omitempty"`
	Added      []ObjectAdded   `json:"added,omitempty"`
	Retired    []ObjectRetired `json:"retired,omitempty"`
}

// ObjectAdded describes a page object a record adds.
type ObjectAdded struct {
	ID        uint64   `json:"id"`
	Kind      string   `json:"kind"`
	Key       string   `json:"key"`
	Size      int64    `json:"size"`
	Hash      Hash     `json:"hash"` // xxhash64 of the whole object
	FirstPgno uint32   `json:"first_pgno"`
	PageCount uint32   `json:"page_count"`
	MinTxid   uint64   `json:"min_txid"`
	MaxTxid   uint64   `json:"max_txid"`
	Chunks    []uint32 `json:"chunks"`

	// Directory is the object's page directory in delta's directory
	// encoding, when the publisher has it at hand (it just built the
	// object). It is not part of the record: followers fetch it from the
	// object itself.
	Directory []byte `json:"-"`
}

// ObjectRetired drops the references of an object for some chunks. A base
// rewrite retires a delta that spans several chunks only for the chunks it
// folded.
type ObjectRetired struct {
	ID     uint64   `json:"id"`
	Chunks []uint32 `json:"chunks"`
}

// Created is the record's creation time.
func (r *Record) Created() time.Time { return time.UnixMilli(r.CreatedMs) }

// checkShape validates what a record says about itself, without the
// catalog: kinds, ranges, chunk arithmetic.
func (r *Record) checkShape() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: seq %d: %s", ErrBadRecord, r.Seq, fmt.Sprintf(format, args...))
	}
	if r.Format != RecordFormat {
		return bad("format %d, want %d", r.Format, RecordFormat)
	}
	if r.Seq == 0 {
		return bad("seq 0")
	}
	if r.Epoch == 0 {
		return bad("epoch 0")
	}
	if r.Writer == "" {
		return bad("no writer id")
	}
	if err := checkPageSize(r.PageSize); err != nil {
		return bad("%v", err)
	}
	if r.ChunkPages == 0 {
		return bad("chunk_pages 0")
	}
	if r.Parent.Seq >= r.Seq {
		return bad("parent seq %d not below seq", r.Parent.Seq)
	}
	if r.Txid < r.Parent.Txid {
		return bad("txid %d goes backwards from parent txid %d", r.Txid, r.Parent.Txid)
	}
	switch r.Kind {
	case KindPublish:
		if r.Txid == r.Parent.Txid && len(r.Added) > 0 && !r.Compaction {
			return bad("txid %d equals the parent's but the record adds objects (not marked compaction)", r.Txid)
		}
	case KindTakeover, KindRelease:
		if len(r.Added) > 0 || len(r.Retired) > 0 || r.Compaction {
			return bad("%s record with objects", r.Kind)
		}
		if r.Txid != r.Parent.Txid {
			return bad("%s record txid %d differs from parent txid %d", r.Kind, r.Txid, r.Parent.Txid)
		}
	default:
		return bad("unknown kind %q", r.Kind)
	}
	ids := map[uint64]bool{}
	for i := range r.Added {
		o := &r.Added[i]
		if ids[o.ID] {
			return bad("object %d added twice", o.ID)
		}
		ids[o.ID] = true
		if err := o.checkShape(r.ChunkPages, r.Txid); err != nil {
			return bad("%v", err)
		}
	}
	seen := map[uint64]bool{}
	for _, o := range r.Retired {
		if seen[o.ID] {
			return bad("object %d retired twice", o.ID)
		}
		seen[o.ID] = true
		if ids[o.ID] {
			return bad("object %d added and retired by one record", o.ID)
		}
		if len(o.Chunks) == 0 || !strictlyAscending(o.Chunks) {
			return bad("object %d: retired chunks %v not strictly ascending", o.ID, o.Chunks)
		}
	}
	return nil
}

func (o *ObjectAdded) checkShape(chunkPages uint32, txid uint64) error {
	if o.ID == 0 {
		return fmt.Errorf("object id 0")
	}
	if o.Size <= 0 {
		return fmt.Errorf("object %d: size %d", o.ID, o.Size)
	}
	if o.PageCount == 0 || o.FirstPgno == 0 {
		return fmt.Errorf("object %d: first page %d, %d pages", o.ID, o.FirstPgno, o.PageCount)
	}
	last := uint64(o.FirstPgno) + uint64(o.PageCount) - 1
	if last > uint64(MaxPgno) {
		return fmt.Errorf("object %d: last page %d beyond %d", o.ID, last, MaxPgno)
	}
	if o.MinTxid > o.MaxTxid || o.MaxTxid > txid {
		return fmt.Errorf("object %d: txid range %d..%d not within ..%d", o.ID, o.MinTxid, o.MaxTxid, txid)
	}
	if len(o.Chunks) == 0 || !strictlyAscending(o.Chunks) {
		return fmt.Errorf("object %d: chunks %v not strictly ascending", o.ID, o.Chunks)
	}
	firstChunk := chunkOf(o.FirstPgno, chunkPages)
	switch o.Kind {
	case ObjectBase:
		// A base holds every page of one chunk from the chunk's first
		// page: frame i is page chunkFirst+i, never computed from the
		// page number alone.
		if o.FirstPgno != chunkFirst(firstChunk, chunkPages) {
			return fmt.Errorf("base %d: first page %d is not the first page %d of chunk %d", o.ID, o.FirstPgno, chunkFirst(firstChunk, chunkPages), firstChunk)
		}
		if firstChunk != chunkOf(uint32(last), chunkPages) || len(o.Chunks) != 1 || o.Chunks[0] != firstChunk {
			return fmt.Errorf("base %d: pages %d..%d, chunks %v: a base covers exactly one chunk", o.ID, o.FirstPgno, last, o.Chunks)
		}
	case ObjectDelta:
		// Pages ascend but need not be consecutive: the directory check
		// (checkDirChunks) matches the chunk list exactly.
		if o.Chunks[0] != firstChunk || uint32(len(o.Chunks)) > o.PageCount {
			return fmt.Errorf("delta %d: chunks %v do not fit %d pages from page %d", o.ID, o.Chunks, o.PageCount, o.FirstPgno)
		}
	default:
		return fmt.Errorf("object %d: unknown kind %q", o.ID, o.Kind)
	}
	return nil
}

func strictlyAscending(xs []uint32) bool {
	for i := 1; i < len(xs); i++ {
		if xs[i] <= xs[i-1] {
			return false
		}
	}
	return true
}

// chunkOf is the chunk of page p (1-based): (p-1)/chunkPages.
func chunkOf(p, chunkPages uint32) uint32 { return (p - 1) / chunkPages }

// chunkLast is the last page of chunk c (clamped to MaxPgno).
func chunkLast(c, chunkPages uint32) uint32 {
	return uint32(min(uint64(c)*uint64(chunkPages)+uint64(chunkPages), uint64(MaxPgno)))
}

// chunkFirst is the first page of chunk c.
func chunkFirst(c, chunkPages uint32) uint32 { return c*chunkPages + 1 }

func checkPageSize(n uint32) error {
	if n < 512 || n > 65536 || n&(n-1) != 0 {
		return fmt.Errorf("page size %d is not a power of two in 512..65536", n)
	}
	return nil
}

// EncodeRecord returns the envelope bytes of r.
func EncodeRecord(r *Record) ([]byte, error) { return sealEnvelope("log", r) }

// DecodeRecord parses and verifies a log record read from key.
func DecodeRecord(key string, data []byte) (*Record, error) {
	var r Record
	if err := openEnvelope(key, "log", data, RecordFormat, &r); err != nil {
		return nil, err
	}
	if err := r.checkShape(); err != nil {
		return nil, corruptf(key, "%v", err)
	}
	return &r, nil
}

// sortedCopy returns the record's added objects ordered by layer age:
// (MaxTxid, position in the record). Later entries are newer layers.
func (r *Record) addedByAge() []int {
	idx := make([]int, len(r.Added))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		x, y := r.Added[a].MaxTxid, r.Added[b].MaxTxid
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return a - b
	})
	return idx
}
