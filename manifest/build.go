package manifest

import (
	"fmt"
	"slices"
	"sort"

	"github.com/bopstore/bop/delta"
	"github.com/ncruces/go-sqlite3"
)

// Page-map construction.
//
// The state of chunk c at record seq S is an ordered stack of layers: the
// object references (object, c) live at S, ordered by age (max txid, then
// created seq, then position in the record), newest on top. Page p reads
// from the newest layer that holds p and for which p is visible. A base
// holds every page of its chunk, so nothing below the newest base is
// visible. Visibility: a layer L shows page p only if p <= min db size of
// every non-void record r <= S with r.txid >= L.maxTxid (or r created L):
// if the database shrank below p after L's versions were written, p was
// truncated and later layers are the only source (else it reads as zero).
//
// Two ways to build the same answer (the property test checks both
// against a naive model):
//   - from the catalog rows (Open, SnapshotAt, and a chunk whose layer
//     order changed: a compaction adds an object older than the tip, or
//     a retirement removes a layer that is still visible);
//   - incrementally (Apply): a layer newer than every existing layer is
//     merged on top copy-on-write, and the record's db size masks every
//     chunk.

type dirEntry struct {
	pgno  uint32
	frame uint32
}

// layerRow is one live (object, chunk) reference read from the catalog.
type layerRow struct {
	chunk uint32
	ref   *ObjectRef
}

// builder reads catalog rows for one build. It caches decoded
// directories and visibility limits for its lifetime (one Apply or one
// full build), so a delta spanning many chunks is decoded once.
type builder struct {
	c      *Catalog
	seq    uint64 // build the state at this non-void record seq
	dirs   map[uint64][]dirEntry
	limits map[uint64]uint32 // by layer max txid
	refs   map[uint64]*ObjectRef
}

func (c *Catalog) newBuilder(seq uint64) *builder {
	return &builder{c: c, seq: seq, dirs: map[uint64][]dirEntry{}, limits: map[uint64]uint32{}, refs: map[uint64]*ObjectRef{}}
}

// emptySnapshot is the page map before any record: an empty database.
func (c *Catalog) emptySnapshot(tipSeq uint64) *Snapshot {
	m := &c.meta
	return &Snapshot{seq: tipSeq, pageSize: m.pageSize, chunkPages: m.chunkPages, frameSize: delta.FrameSize(m.pageSize)}
}

// buildFull builds the page map at non-void record lastSeq from the
// catalog rows, labelled as of tipSeq. Only live references are read, so
// the cost is the state at that boundary, not the history.
func (c *Catalog) buildFull(lastSeq, tipSeq uint64) (*Snapshot, error) {
	s := c.emptySnapshot(tipSeq)
	if lastSeq == 0 {
		return s, nil
	}
	found, err := c.queryOne("SELECT txid, db_pages FROM publishes WHERE seq = ? AND void = 0", []any{lastSeq}, func(st *sqlite3.Stmt) error {
		s.txid, s.dbPages = colU64(st, 0), colU32(st, 1)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, corruptf(c.path, "no non-void publish row for seq %d", lastSeq)
	}
	s.lastSeq, s.requested = lastSeq, s.txid
	b := c.newBuilder(lastSeq)
	var rows []layerRow
	err = c.query(`SELECT oc.chunk, o.id, o.kind, o.key, o.size, o.hash, o.first_pgno, o.page_count, o.max_txid, o.created_seq
		FROM object_chunks oc JOIN objects o ON o.id = oc.object_id
		WHERE oc.created_seq <= ?1 AND (oc.retired_seq IS NULL OR oc.retired_seq > ?1)
		ORDER BY oc.chunk, o.max_txid DESC, o.created_seq DESC, o.rec_pos DESC`, []any{lastSeq}, func(st *sqlite3.Stmt) error {
		rows = append(rows, layerRow{chunk: colU32(st, 0), ref: b.scanRef(st, 1)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	nChunks := (uint64(s.dbPages) + uint64(s.chunkPages) - 1) / uint64(s.chunkPages)
	s.chunks = make([]*chunkMap, nChunks)
	for i := 0; i < len(rows); {
		j := i
		for j < len(rows) && rows[j].chunk == rows[i].chunk {
			j++
		}
		ch := rows[i].chunk
		if uint64(ch) < nChunks {
			cm, err := b.chunk(ch, rows[i:j])
			if err != nil {
				return nil, err
			}
			s.chunks[ch] = cm
		}
		i = j
	}
	return s, nil
}

// chunkFromRows rebuilds one chunk at b.seq from the catalog rows.
func (b *builder) chunkFromRows(ch uint32) (*chunkMap, error) {
	var rows []layerRow
	err := b.c.query(`SELECT o.id, o.kind, o.key, o.size, o.hash, o.first_pgno, o.page_count, o.max_txid, o.created_seq
		FROM object_chunks oc JOIN objects o ON o.id = oc.object_id
		WHERE oc.chunk = ?2 AND oc.created_seq <= ?1 AND (oc.retired_seq IS NULL OR oc.retired_seq > ?1)
		ORDER BY o.max_txid DESC, o.created_seq DESC, o.rec_pos DESC`, []any{b.seq, ch}, func(st *sqlite3.Stmt) error {
		rows = append(rows, layerRow{chunk: ch, ref: b.scanRef(st, 0)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return b.chunk(ch, rows)
}

func (b *builder) scanRef(st *sqlite3.Stmt, i int) *ObjectRef {
	id := colU64(st, i)
	if r, ok := b.refs[id]; ok {
		return r
	}
	r := &ObjectRef{ID: id, Kind: st.ColumnText(i + 1), Key: st.ColumnText(i + 2), Size: st.ColumnInt64(i + 3),
		Hash: colU64(st, i+4), FirstPgno: colU32(st, i+5), PageCount: colU32(st, i+6), MaxTxid: colU64(st, i+7),
		CreatedSeq: colU64(st, i+8)}
	b.refs[id] = r
	return r
}

// chunk builds chunk ch from its live layers, newest first.
func (b *builder) chunk(ch uint32, layers []layerRow) (*chunkMap, error) {
	cp := b.c.meta.chunkPages
	first := chunkFirst(ch, cp)
	last := chunkLast(ch, cp)
	cm := &chunkMap{}
	var pages []deltaPage
	for _, l := range layers {
		lim, err := b.limit(l.ref.MaxTxid)
		if err != nil {
			return nil, err
		}
		if l.ref.Kind == ObjectBase {
			if l.ref.FirstPgno != first {
				return nil, corruptf(b.c.path, "base object %d starts at page %d, chunk %d at %d", l.ref.ID, l.ref.FirstPgno, ch, first)
			}
			cm.base = l.ref
			cm.baseFrames = visibleFrames(first, l.ref.PageCount, lim)
			break // nothing below the newest base is visible
		}
		ents, err := b.dir(l.ref)
		if err != nil {
			return nil, err
		}
		idx := uint32(len(cm.objs))
		n := len(pages)
		for _, e := range entriesIn(ents, first, min(last, lim)) {
			pages = append(pages, deltaPage{pgno: e.pgno, obj: idx, frame: e.frame})
		}
		if len(pages) > n {
			cm.objs = append(cm.objs, l.ref)
		}
	}
	// Newest layer first, so a stable sort keeps the newest version of a
	// page first among equals.
	sort.SliceStable(pages, func(i, j int) bool { return pages[i].pgno < pages[j].pgno })
	pages = slices.CompactFunc(pages, func(a, b deltaPage) bool { return a.pgno == b.pgno })
	cm.pages = exact(pages)
	cm.compactObjs()
	cm.buildIndex(first, cp)
	if cm.base == nil && len(cm.pages) == 0 {
		return nil, nil
	}
	return cm, nil
}

// exact returns pages in an array of exactly its length: page arrays are
// the map's memory, and append's growth would leave up to half unused.
func exact(pages []deltaPage) []deltaPage {
	if cap(pages)-len(pages) <= len(pages)/16 {
		return pages[:len(pages):len(pages)]
	}
	return append(make([]deltaPage, 0, len(pages)), pages...)
}

// visibleFrames is how many of a base's count frames from first are at or
// below limit.
func visibleFrames(first, count, limit uint32) uint32 {
	if limit < first {
		return 0
	}
	return min(count, limit-first+1)
}

// entriesIn returns the entries with lo <= pgno <= hi (ents ascend).
func entriesIn(ents []dirEntry, lo, hi uint32) []dirEntry {
	if hi < lo {
		return nil
	}
	i := sort.Search(len(ents), func(i int) bool { return ents[i].pgno >= lo })
	j := sort.Search(len(ents), func(i int) bool { return ents[i].pgno > hi })
	if i >= j {
		return nil
	}
	return ents[i:j]
}

// limit is the visibility limit of a layer with this max txid at b.seq:
// the smallest db size of any non-void record r <= b.seq with
// r.txid >= maxTxid. Txids never decrease along non-void records, so
// those records are the suffix starting at a, and the minimum is either
// a's size or the size at a later shrink.
func (b *builder) limit(maxTxid uint64) (uint32, error) {
	if l, ok := b.limits[maxTxid]; ok {
		return l, nil
	}
	var a uint64
	var ok bool
	_, err := b.c.queryOne("SELECT min(seq) FROM publishes WHERE void = 0 AND txid >= ?1 AND seq <= ?2",
		[]any{maxTxid, b.seq}, func(st *sqlite3.Stmt) error {
			if st.ColumnType(0) != sqlite3.NULL {
				a, ok = colU64(st, 0), true
			}
			return nil
		})
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, corruptf(b.c.path, "no publish at or above txid %d up to seq %d", maxTxid, b.seq)
	}
	var lim uint32
	if _, err := b.c.queryOne("SELECT db_pages FROM publishes WHERE seq = ?", []any{a}, func(st *sqlite3.Stmt) error {
		lim = colU32(st, 0)
		return nil
	}); err != nil {
		return 0, err
	}
	if _, err := b.c.queryOne("SELECT min(db_pages) FROM publishes WHERE void = 0 AND shrink = 1 AND seq > ?1 AND seq <= ?2",
		[]any{a, b.seq}, func(st *sqlite3.Stmt) error {
			if st.ColumnType(0) != sqlite3.NULL {
				lim = min(lim, colU32(st, 0))
			}
			return nil
		}); err != nil {
		return 0, err
	}
	b.limits[maxTxid] = lim
	return lim, nil
}

// dir returns the decoded directory of a delta object, from the catalog.
func (b *builder) dir(ref *ObjectRef) ([]dirEntry, error) {
	if d, ok := b.dirs[ref.ID]; ok {
		return d, nil
	}
	var blob []byte
	found, err := b.c.queryOne("SELECT entries FROM directories WHERE object_id = ?", []any{ref.ID}, func(st *sqlite3.Stmt) error {
		blob = st.ColumnBlob(0, nil)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, corruptf(b.c.path, "no stored directory for delta object %d (%s)", ref.ID, ref.Key)
	}
	ents, err := decodeDir(fmt.Sprintf("%s: directory of object %d", b.c.path, ref.ID), blob, ref, b.c.meta.pageSize)
	if err != nil {
		return nil, err
	}
	b.dirs[ref.ID] = ents
	return ents, nil
}

// decodeDir decodes and checks a stored directory against its object.
func decodeDir(where string, blob []byte, ref *ObjectRef, pageSize uint32) ([]dirEntry, error) {
	sum, err := delta.DecodeDirectory(blob)
	if err != nil {
		return nil, corruptf(where, "%v", err)
	}
	h := sum.Header
	if h.ObjectID != ref.ID || h.Kind.String() != ref.Kind || h.PageSize != pageSize || h.FirstPgno != ref.FirstPgno ||
		h.PageCount != ref.PageCount || sum.Size != ref.Size || sum.Hash != ref.Hash || h.MaxTxid != ref.MaxTxid {
		return nil, corruptf(where, "directory describes object %d (%s, page size %d, pages %d+%d, %d bytes, hash %016x, max txid %d), catalog says %d (%s, %d, %d+%d, %d, %016x, %d)",
			h.ObjectID, h.Kind, h.PageSize, h.FirstPgno, h.PageCount, sum.Size, sum.Hash, h.MaxTxid,
			ref.ID, ref.Kind, pageSize, ref.FirstPgno, ref.PageCount, ref.Size, ref.Hash, ref.MaxTxid)
	}
	ents := make([]dirEntry, len(sum.Entries))
	for i, e := range sum.Entries {
		ents[i] = dirEntry{pgno: e.Pgno, frame: e.Index}
	}
	return ents, nil
}

// references reports whether the chunk reads anything from object id.
func (cm *chunkMap) references(id uint64) bool {
	if cm == nil {
		return false
	}
	if cm.base != nil && cm.base.ID == id {
		return true
	}
	for _, o := range cm.objs {
		if o.ID == id {
			return true
		}
	}
	return false
}

// compactObjs drops objects no page refers to any more and renumbers.
func (cm *chunkMap) compactObjs() {
	used := make([]bool, len(cm.objs))
	n := 0
	for _, d := range cm.pages {
		if !used[d.obj] {
			used[d.obj] = true
			n++
		}
	}
	if n == len(cm.objs) {
		return
	}
	remap := make([]uint32, len(cm.objs))
	objs := make([]*ObjectRef, 0, n)
	for i, o := range cm.objs {
		if used[i] {
			remap[i] = uint32(len(objs))
			objs = append(objs, o)
		}
	}
	for i := range cm.pages {
		cm.pages[i].obj = remap[cm.pages[i].obj]
	}
	cm.objs = objs
}

// mergeDelta returns a new chunk: old with ents of ref laid on top (ref is
// newer than every layer of old). old is not modified.
func mergeDelta(old *chunkMap, ref *ObjectRef, ents []dirEntry, first, chunkPages uint32) *chunkMap {
	if len(ents) == 0 {
		return old
	}
	cm := &chunkMap{}
	var oldPages []deltaPage
	if old != nil {
		cm.base, cm.baseFrames = old.base, old.baseFrames
		cm.objs = slices.Clone(old.objs)
		oldPages = old.pages
	}
	idx := uint32(len(cm.objs))
	cm.objs = append(cm.objs, ref)
	pages := make([]deltaPage, 0, len(oldPages)+len(ents))
	i, j := 0, 0
	for i < len(oldPages) || j < len(ents) {
		switch {
		case j == len(ents) || (i < len(oldPages) && oldPages[i].pgno < ents[j].pgno):
			pages = append(pages, oldPages[i])
			i++
		default:
			if i < len(oldPages) && oldPages[i].pgno == ents[j].pgno {
				i++ // the new version wins
			}
			pages = append(pages, deltaPage{pgno: ents[j].pgno, obj: idx, frame: ents[j].frame})
			j++
		}
	}
	cm.pages = exact(pages)
	cm.compactObjs()
	cm.buildIndex(first, chunkPages)
	return cm
}

// maskChunks hides every page above dbPages: the database was truncated
// there, so no layer existing now may show those pages again. Chunks are
// replaced, never modified.
func maskChunks(chunks []*chunkMap, dbPages, chunkPages uint32) []*chunkMap {
	n := int((uint64(dbPages) + uint64(chunkPages) - 1) / uint64(chunkPages))
	if len(chunks) > n {
		chunks = chunks[:n:n]
	}
	if n == 0 || len(chunks) < n {
		return chunks
	}
	last := n - 1
	cm := chunks[last]
	if cm == nil {
		return chunks
	}
	first := chunkFirst(uint32(last), chunkPages)
	frames := cm.baseFrames
	if cm.base != nil {
		frames = visibleFrames(first, cm.baseFrames, dbPages)
	}
	k := sort.Search(len(cm.pages), func(i int) bool { return cm.pages[i].pgno > dbPages })
	if frames == cm.baseFrames && k == len(cm.pages) {
		return chunks
	}
	masked := &chunkMap{base: cm.base, baseFrames: frames, objs: cm.objs, pages: cm.pages[:k:k], shift: cm.shift, starts: cm.starts}
	if frames == 0 {
		masked.base = nil
	}
	if masked.base == nil && len(masked.pages) == 0 {
		masked = nil
	}
	out := slices.Clone(chunks)
	out[last] = masked
	return out
}
