package checkpoint

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/bopstore/bop/delta"
	"github.com/bopstore/bop/manifest"
)

// PlanFormat versions the plan bytes stored in a job row
// (docs/FORMAT-checkpoint.md). A plan with a larger format is refused.
const PlanFormat = 1

// DefaultMaxObjectPages bounds the pages of one delta object when the
// policy does not say: 16384 pages (64 MiB at 4 KiB pages). It bounds the
// staging space and the directory held in memory per object.
const DefaultMaxObjectPages = 16384

// DefaultMaxJobPages bounds the page images of the spool records one
// publish job takes (unless a single record is larger): 65536 pages, 256
// MiB at 4 KiB pages. The job's page set index grows with it.
const DefaultMaxJobPages = 65536

// Policy is what the planner and the publisher may choose.
type Policy struct {
	// MaxObjectPages is the most pages one delta object holds; a publish
	// with more changed pages gets several delta objects (disjoint page
	// sets, each with its own id). 0 means DefaultMaxObjectPages.
	MaxObjectPages uint32
	// MaxJobPages bounds the page images (summed over records) of one
	// job's txid range; a longer backlog is published as several jobs,
	// one record each. A single larger record is still one job. 0 means
	// DefaultMaxJobPages.
	MaxJobPages uint32
}

func (p Policy) maxObjectPages() uint32 {
	if p.MaxObjectPages == 0 {
		return DefaultMaxObjectPages
	}
	return p.MaxObjectPages
}

func (p Policy) maxJobPages() uint32 {
	if p.MaxJobPages == 0 {
		return DefaultMaxJobPages
	}
	return p.MaxJobPages
}

// Range is the planner's view of a spool txid range: what changed, not
// the bytes.
type Range struct {
	From, To uint64
	PageSize uint32
	// DBPages is the database size after To; MinDBPages the smallest
	// database size of any record in the range (a shrink inside it).
	DBPages    uint32
	MinDBPages uint32
	// Image: the range is exactly one image record (an adopted database's
	// starting state), published as base objects.
	Image bool
	// Pgnos are the pages whose newest version in the range is in the
	// spool (wal.PageSet.Pgnos): ascending, distinct, each <= DBPages.
	Pgnos []uint32
}

// PgnoRange is an inclusive range of page numbers.
type PgnoRange struct {
	First uint32 `json:"first"`
	Last  uint32 `json:"last"`
}

// Action is one object a plan creates. Every action has its own object
// id, so two objects of one plan (or of two plans) never share a store key,
// even when they hold pages of the same chunk.
type Action struct {
	Index    int    `json:"index"`
	Kind     string `json:"kind"` // manifest.ObjectBase or manifest.ObjectDelta
	ObjectID uint64 `json:"object_id"`
	// The object holds every page of the plan's page set (and zero fill)
	// with First <= pgno <= Last, Pages of them; a base holds exactly
	// First..Last.
	First  uint32   `json:"first_pgno"`
	Last   uint32   `json:"last_pgno"`
	Pages  uint32   `json:"pages"`
	Chunks []uint32 `json:"chunks"`
}

// Size is the exact size of the action's object.
func (a *Action) Size(pageSize uint32) int64 { return delta.ObjectSize(pageSize, a.Pages) }

// Plan is one publish: the objects to create from a spool range and the
// record that will reference them. It is stored in the job row when the
// job is created and never changes afterwards, so a resumed job stages the
// same bytes under the same ids and therefore the same keys.
type Plan struct {
	Format int    `json:"format"`
	Job    string `json:"job"`
	From   uint64 `json:"from_txid"`
	To     uint64 `json:"to_txid"`
	// The catalog state the plan builds on: the record's parent boundary
	// must still be (PrevTxid, PrevDBPages) when it is published.
	PrevSeq     uint64 `json:"prev_seq"`
	PrevTxid    uint64 `json:"prev_txid"`
	PrevDBPages uint32 `json:"prev_db_pages"`
	DBPages     uint32 `json:"db_pages"`
	PageSize    uint32 `json:"page_size"`
	ChunkPages  uint32 `json:"chunk_pages"`
	Image       bool   `json:"image,omitempty"`
	SetPages    uint32 `json:"set_pages"` // pages of the spool's page set in the plan
	// ZeroFill lists pages the range truncated (a shrink) and then
	// regrew without writing: their content at To is zeros, and older
	// versions in the store must not show through. Each becomes a zero
	// page in a delta.
	ZeroFill []PgnoRange `json:"zero_fill,omitempty"`
	Actions  []Action    `json:"actions"`
}

// MakePlan is the planner: a pure function of a spool range, the catalog's
// tip and the policy. It allocates nothing and reads nothing; object ids
// are given by AssignIDs afterwards. The same input always gives the same
// plan.
//
//   - An image range (adoption) becomes one base object per chunk, each
//     holding every page of its chunk up to the database size, consecutive.
//   - Any other range becomes delta objects holding the newest version of
//     every page changed in the range (pages above the size at To are not
//     in the set: the database shrank), split into objects of at most
//     MaxObjectPages pages, each of which may span chunks.
func MakePlan(r Range, tip manifest.Tip, pol Policy) (*Plan, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("checkpoint: plan txids %d..%d: %s", r.From, r.To, fmt.Sprintf(format, args...))
	}
	switch {
	case r.From == 0 || r.From > r.To:
		return nil, bad("empty or reversed range")
	case r.From != tip.Txid+1:
		return nil, bad("the catalog ends at txid %d: a publish must start right after it", tip.Txid)
	case r.PageSize != tip.PageSize:
		return nil, bad("page size %d, the database's is %d", r.PageSize, tip.PageSize)
	case tip.ChunkPages == 0:
		return nil, bad("chunk pages 0")
	case r.Image && r.From != r.To:
		return nil, bad("an image record is published alone")
	case r.MinDBPages > r.DBPages:
		return nil, bad("smallest size %d above the final size %d", r.MinDBPages, r.DBPages)
	}
	for i, p := range r.Pgnos {
		if p == 0 || p > r.DBPages || i > 0 && p <= r.Pgnos[i-1] {
			return nil, bad("page list not ascending within 1..%d at index %d (page %d)", r.DBPages, i, p)
		}
	}
	pl := &Plan{Format: PlanFormat, From: r.From, To: r.To, PrevSeq: tip.LastSeq, PrevTxid: tip.Txid,
		PrevDBPages: tip.DBPages, DBPages: r.DBPages, PageSize: r.PageSize, ChunkPages: tip.ChunkPages,
		Image: r.Image, SetPages: uint32(len(r.Pgnos))}
	cp := tip.ChunkPages
	if r.Image {
		// Every page of the image must be there: a base has no gaps, and
		// nothing is ever published as zeros that was not zeros.
		if uint32(len(r.Pgnos)) != r.DBPages {
			return nil, bad("image record holds %d pages of a %d-page database", len(r.Pgnos), r.DBPages)
		}
		for first := uint64(1); first <= uint64(r.DBPages); first += uint64(cp) {
			last := min(first+uint64(cp)-1, uint64(r.DBPages))
			pl.Actions = append(pl.Actions, Action{Index: len(pl.Actions), Kind: manifest.ObjectBase,
				First: uint32(first), Last: uint32(last), Pages: uint32(last - first + 1),
				Chunks: []uint32{uint32((first - 1) / uint64(cp))}})
		}
		return pl, nil
	}
	pl.ZeroFill = zeroFill(r, tip.DBPages)
	maxPages := pol.maxObjectPages()
	// Walk the merged, ascending list of set pages and zero-fill pages,
	// cutting an object every maxPages pages.
	var cur *Action
	add := func(p uint32) {
		if cur == nil || cur.Pages == maxPages {
			pl.Actions = append(pl.Actions, Action{Index: len(pl.Actions), Kind: manifest.ObjectDelta, First: p})
			cur = &pl.Actions[len(pl.Actions)-1]
		}
		cur.Last = p
		cur.Pages++
		if ch := (p - 1) / cp; len(cur.Chunks) == 0 || cur.Chunks[len(cur.Chunks)-1] != ch {
			cur.Chunks = append(cur.Chunks, ch)
		}
	}
	mergePages(r.Pgnos, pl.ZeroFill, 0, ^uint32(0), func(p uint32, zero bool) bool { add(p); return true })
	return pl, nil
}

// zeroFill returns the pages in (MinDBPages, min(prevDBPages, DBPages)]
// that are not in the set: the range truncated them and grew the
// database again without writing them, so they are zeros at To, while the
// catalog (which sees only the record's final size) would still show the
// versions published before the truncation. Above prevDBPages the catalog
// already reads zeros (its own size masks older layers).
func zeroFill(r Range, prevDBPages uint32) []PgnoRange {
	hi := min(prevDBPages, r.DBPages)
	if r.MinDBPages >= hi {
		return nil
	}
	var out []PgnoRange
	i, _ := slices.BinarySearch(r.Pgnos, r.MinDBPages+1)
	for p := r.MinDBPages + 1; p <= hi; {
		for i < len(r.Pgnos) && r.Pgnos[i] < p {
			i++
		}
		if i < len(r.Pgnos) && r.Pgnos[i] == p {
			p++
			continue
		}
		end := hi
		if i < len(r.Pgnos) && r.Pgnos[i]-1 < end {
			end = r.Pgnos[i] - 1
		}
		out = append(out, PgnoRange{First: p, Last: end})
		if end == hi {
			break
		}
		p = end + 1
	}
	return out
}

// mergePages calls fn for every page of the set (zero false) and of the
// zero fill (zero true) with lo <= pgno <= hi, ascending. The two never
// share a page. fn returning false stops the walk.
func mergePages(set []uint32, fill []PgnoRange, lo, hi uint32, fn func(pgno uint32, zero bool) bool) {
	i, _ := slices.BinarySearch(set, lo)
	j := 0
	for j < len(fill) && fill[j].Last < lo {
		j++
	}
	var z uint32 // next zero page candidate within fill[j]
	if j < len(fill) {
		z = max(fill[j].First, lo)
	}
	for {
		haveSet := i < len(set) && set[i] <= hi
		haveZero := j < len(fill) && z <= hi
		switch {
		case !haveSet && !haveZero:
			return
		case haveSet && (!haveZero || set[i] < z):
			if !fn(set[i], false) {
				return
			}
			i++
		default:
			if !fn(z, true) {
				return
			}
			if z == fill[j].Last {
				j++
				if j < len(fill) {
					z = fill[j].First
				}
			} else {
				z++
			}
		}
	}
}

// AssignIDs numbers the plan's objects first, first+1, ... (ids the
// orchestrator allocated durably from the catalog, so an id is never given
// to two contents) and names the job.
func (pl *Plan) AssignIDs(job string, first uint64) {
	pl.Job = job
	for i := range pl.Actions {
		pl.Actions[i].ObjectID = first + uint64(i)
	}
}

// Encode returns the plan's bytes for the job row.
func (pl *Plan) Encode() ([]byte, error) { return json.Marshal(pl) }

// DecodePlan parses and checks a plan read from a job row.
func DecodePlan(b []byte) (*Plan, error) {
	var pl Plan
	if err := json.Unmarshal(b, &pl); err != nil {
		return nil, fmt.Errorf("%w: plan: %v", ErrBadPlan, err)
	}
	if err := pl.check(); err != nil {
		return nil, err
	}
	return &pl, nil
}

// check validates what a plan says about itself.
func (pl *Plan) check() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: job %s: %s", ErrBadPlan, pl.Job, fmt.Sprintf(format, args...))
	}
	switch {
	case pl.Format > PlanFormat:
		return bad("plan format %d, this bop reads up to %d", pl.Format, PlanFormat)
	case pl.Format < 1:
		return bad("plan format %d", pl.Format)
	case pl.Job == "":
		return bad("no job id")
	case pl.From == 0 || pl.From > pl.To || pl.From != pl.PrevTxid+1:
		return bad("txids %d..%d after %d", pl.From, pl.To, pl.PrevTxid)
	case !delta.ValidPageSize(pl.PageSize) || pl.ChunkPages == 0:
		return bad("page size %d, chunk pages %d", pl.PageSize, pl.ChunkPages)
	case pl.Image && pl.From != pl.To:
		return bad("image plan over several txids")
	}
	ids := map[uint64]bool{}
	var prevLast uint32
	var total uint64
	for i := range pl.Actions {
		a := &pl.Actions[i]
		if a.Index != i || a.ObjectID == 0 || ids[a.ObjectID] {
			return bad("action %d: index %d, object id %d", i, a.Index, a.ObjectID)
		}
		ids[a.ObjectID] = true
		if a.First == 0 || a.First > a.Last || a.Last > pl.DBPages || a.Pages == 0 ||
			uint64(a.Pages) > uint64(a.Last-a.First)+1 || i > 0 && a.First <= prevLast {
			return bad("action %d: pages %d..%d (%d) in a %d-page database", i, a.First, a.Last, a.Pages, pl.DBPages)
		}
		prevLast = a.Last
		total += uint64(a.Pages)
		firstChunk, lastChunk := (a.First-1)/pl.ChunkPages, (a.Last-1)/pl.ChunkPages
		if len(a.Chunks) == 0 || a.Chunks[0] != firstChunk || a.Chunks[len(a.Chunks)-1] != lastChunk {
			return bad("action %d: chunks %v for pages %d..%d", i, a.Chunks, a.First, a.Last)
		}
		switch a.Kind {
		case manifest.ObjectBase:
			if !pl.Image || a.First != firstChunk*pl.ChunkPages+1 || firstChunk != lastChunk ||
				a.Pages != a.Last-a.First+1 {
				return bad("base action %d: pages %d..%d", i, a.First, a.Last)
			}
		case manifest.ObjectDelta:
			if pl.Image {
				return bad("delta action %d in an image plan", i)
			}
		default:
			return bad("action %d: kind %q", i, a.Kind)
		}
	}
	var fill uint64
	for i, z := range pl.ZeroFill {
		if z.First == 0 || z.First > z.Last || z.Last > pl.DBPages || i > 0 && z.First <= pl.ZeroFill[i-1].Last {
			return bad("zero fill %d..%d", z.First, z.Last)
		}
		fill += uint64(z.Last-z.First) + 1
	}
	if total != uint64(pl.SetPages)+fill {
		return bad("actions hold %d pages, the set has %d and the zero fill %d", total, pl.SetPages, fill)
	}
	return nil
}
