package manifest

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/bopstore/bop/delta"
)

// The page-map property test: random histories of delta publishes, base
// rewrites (in order and staged at an older boundary), delta compactions,
// shrinking and growing databases, retirements and void records, over many
// small chunks (chunk_pages = 4), checked after every record against a
// naive model that simulates page versions directly. Then every boundary
// is checked again through SnapshotAt (built from catalog rows), and again
// after closing and reopening the catalog. This is the test that catches
// "every page resolves to chunk 0" and "offsets from absolute page
// numbers": the model places page p of chunk c at frame p - first(c) of
// that chunk's own base object.

// layerKey orders layers as the catalog does: max txid, then record seq,
// then position in the record.
type layerKey struct {
	maxTxid uint64
	seq     uint64
	pos     int
}

func (a layerKey) less(b layerKey) bool {
	if a.maxTxid != b.maxTxid {
		return a.maxTxid < b.maxTxid
	}
	if a.seq != b.seq {
		return a.seq < b.seq
	}
	return a.pos < b.pos
}

type modelLoc struct {
	id    uint64
	frame uint32
	key   layerKey
}

type modelRef struct {
	id   uint64
	kind string
	key  layerKey
	min  uint64
}

type model struct {
	t         *testing.T
	rng       *rand.Rand
	cat       *Catalog
	cp        uint32
	maxPages  uint32
	epoch     uint64
	txid      uint64
	n         uint32
	loc       map[uint32]modelLoc
	lastEvent map[uint32]uint64
	hist      map[uint64]map[uint32]modelLoc // boundary txid -> state (newest record at that txid)
	histN     map[uint64]uint32
	refs      map[uint32][]modelRef // live (object, chunk) references per chunk
	nextID    uint64
	records   int
	perDelta  int // pages written per data publish, at most
}

func newModel(t *testing.T, seed uint64, cat *Catalog, cp, maxPages uint32) *model {
	m := &model{t: t, perDelta: max(8, int(maxPages/6)), rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), cat: cat, cp: cp, maxPages: maxPages,
		loc: map[uint32]modelLoc{}, lastEvent: map[uint32]uint64{}, hist: map[uint64]map[uint32]modelLoc{0: {}},
		histN: map[uint64]uint32{0: 0}, refs: map[uint32][]modelRef{}, nextID: 1}
	m.takeover()
	return m
}

func (m *model) takeover() {
	m.epoch++
	r := nextRecord(m.cat, KindTakeover, m.epoch, fmt.Sprintf("w%d", m.epoch))
	mustApply(m.t, m.cat, r)
}

func (m *model) object(kind string, minTx, maxTx uint64, pgnos []uint32) ObjectAdded {
	id := m.nextID
	m.nextID++
	_, o := makeObject(m.t, testLayout, kind, id, minTx, maxTx, pgnos, m.cp)
	return o
}

// truncate drops pages above n at txid t.
func (m *model) resize(n uint32, t uint64) {
	for p := n + 1; p <= m.n; p++ {
		delete(m.loc, p)
		m.lastEvent[p] = t
	}
	m.n = n
}

func (m *model) addRefs(o *ObjectAdded, key layerKey) {
	for _, ch := range o.Chunks {
		m.refs[ch] = append(m.refs[ch], modelRef{id: o.ID, kind: o.Kind, key: key, min: o.MinTxid})
	}
}

func (m *model) retire(r *Record, ch uint32, pred func(modelRef) bool) {
	var keep []modelRef
	for _, ref := range m.refs[ch] {
		if pred(ref) {
			i := slices.IndexFunc(r.Retired, func(x ObjectRetired) bool { return x.ID == ref.id })
			if i < 0 {
				r.Retired = append(r.Retired, ObjectRetired{ID: ref.id})
				i = len(r.Retired) - 1
			}
			r.Retired[i].Chunks = append(r.Retired[i].Chunks, ch)
			continue
		}
		keep = append(keep, ref)
	}
	m.refs[ch] = keep
}

func (m *model) chunkRange(ch uint32, n uint32) []uint32 {
	first := chunkFirst(ch, m.cp)
	last := min(chunkLast(ch, m.cp), n)
	var ps []uint32
	for p := first; p <= last; p++ {
		ps = append(ps, p)
	}
	return ps
}

func (m *model) step() {
	r := nextRecord(m.cat, KindPublish, m.epoch, fmt.Sprintf("w%d", m.epoch))
	seq := r.Seq
	switch x := m.rng.IntN(100); {
	case x < 55: // a data publish: new txid, resize, a delta, maybe an in-order base rewrite
		t := m.txid + 1 + uint64(m.rng.IntN(3))
		n := m.n
		switch y := m.rng.IntN(10); {
		case y < 4:
			n = min(m.maxPages, n+uint32(m.rng.IntN(7)))
		case y < 6 && n > 0:
			n -= uint32(m.rng.IntN(int(min(n, 6)) + 1))
		case y == 6:
			n = uint32(m.rng.IntN(int(m.maxPages) + 1))
		}
		m.resize(n, t)
		r.Txid, r.DBPages = t, n
		set := map[uint32]bool{}
		if n > 0 {
			for range m.rng.IntN(m.perDelta + 1) {
				set[1+uint32(m.rng.IntN(int(n)))] = true
			}
		}
		pgnos := slices.Sorted(maps.Keys(set))
		if len(pgnos) > 0 {
			o := m.object(ObjectDelta, m.txid+1, t, pgnos)
			key := layerKey{t, seq, len(r.Added)}
			for i, p := range pgnos {
				m.loc[p] = modelLoc{o.ID, uint32(i), key}
				m.lastEvent[p] = t
			}
			r.Added = append(r.Added, o)
			m.addRefs(&r.Added[len(r.Added)-1], key)
		}
		if n > 0 && m.rng.IntN(3) == 0 {
			ch := uint32(m.rng.IntN(int((n-1)/m.cp) + 1))
			ps := m.chunkRange(ch, n)
			o := m.object(ObjectBase, 1, t, ps)
			key := layerKey{t, seq, len(r.Added)}
			// The base folds every older reference of the chunk, but
			// not one added by this record (it stays, shadowed).
			m.retire(r, ch, func(ref modelRef) bool { return ref.key.seq < seq })
			for i, p := range ps {
				m.loc[p] = modelLoc{o.ID, uint32(i), key}
			}
			r.Added = append(r.Added, o)
			m.addRefs(&r.Added[len(r.Added)-1], key)
		}
		m.txid = t
	case x < 70: // an out-of-order base: staged at an older boundary
		ch, t0, ok := m.pickOldBase()
		if !ok {
			m.sizeOnly(r)
			break
		}
		ps := m.chunkRange(ch, m.histN[t0])
		o := m.object(ObjectBase, 1, t0, ps)
		key := layerKey{t0, seq, 0}
		for i, p := range ps {
			cur, has := m.loc[p]
			if m.lastEvent[p] <= t0 && (!has || cur.key.less(key)) {
				m.loc[p] = modelLoc{o.ID, uint32(i), key}
			}
		}
		m.retire(r, ch, func(ref modelRef) bool { return ref.key.maxTxid <= t0 })
		r.Compaction = true
		r.Added = append(r.Added, o)
		m.addRefs(&r.Added[0], key)
	case x < 85: // a delta compaction: merge two adjacent visible deltas of a chunk
		if !m.compact(r) {
			m.sizeOnly(r)
		}
	case x < 92:
		m.sizeOnly(r)
	case x < 96: // a void record: an older epoch after a takeover
		m.takeover()
		v := nextRecord(m.cat, KindPublish, m.epoch-1, "stale")
		v.Txid = m.txid + 5
		v.DBPages = m.maxPages
		_, o := makeObject(m.t, testLayout, ObjectDelta, 1000000+m.nextID, 1, v.Txid, []uint32{1, 2, 3}, m.cp)
		m.nextID++
		v.Added = []ObjectAdded{o}
		mustApply(m.t, m.cat, v)
		m.check(fmt.Sprintf("void record %d", v.Seq))
		return
	default:
		m.takeover()
		m.check("takeover")
		return
	}
	mustApply(m.t, m.cat, r)
	m.records++
	m.hist[m.txid] = maps.Clone(m.loc)
	m.histN[m.txid] = m.n
	m.check(fmt.Sprintf("record %d", r.Seq))
}

func (m *model) sizeOnly(r *Record) {
	t := m.txid + 1
	n := uint32(m.rng.IntN(int(m.maxPages) + 1))
	m.resize(n, t)
	r.Txid, r.DBPages, r.Compaction, r.Added, r.Retired = t, n, false, nil, nil
	m.txid = t
}

// pickOldBase picks a chunk and an older boundary t0 not older than the
// chunk's newest base, with pages at t0.
func (m *model) pickOldBase() (uint32, uint64, bool) {
	var bounds []uint64
	for t := range m.hist {
		if t > 0 && t < m.txid {
			bounds = append(bounds, t)
		}
	}
	if len(bounds) == 0 {
		return 0, 0, false
	}
	slices.Sort(bounds)
	for range 5 {
		t0 := bounds[m.rng.IntN(len(bounds))]
		n0 := m.histN[t0]
		if n0 == 0 || m.n == 0 {
			continue
		}
		ch := uint32(m.rng.IntN(int((n0-1)/m.cp) + 1))
		if chunkFirst(ch, m.cp) > m.n {
			continue
		}
		ok := true
		for _, ref := range m.refs[ch] {
			if ref.kind == ObjectBase && ref.key.maxTxid > t0 {
				ok = false
			}
		}
		if ok {
			return ch, t0, true
		}
	}
	return 0, 0, false
}

func (m *model) compact(r *Record) bool {
	chunks := slices.Sorted(maps.Keys(m.refs))
	m.rng.Shuffle(len(chunks), func(i, j int) { chunks[i], chunks[j] = chunks[j], chunks[i] })
	for _, ch := range chunks {
		refs := slices.Clone(m.refs[ch])
		slices.SortFunc(refs, func(a, b modelRef) int {
			if a.key.less(b.key) {
				return -1
			}
			return 1
		})
		// Only deltas above the newest base.
		start := 0
		for i, ref := range refs {
			if ref.kind == ObjectBase {
				start = i + 1
			}
		}
		refs = refs[start:]
		if len(refs) < 2 {
			continue
		}
		i := m.rng.IntN(len(refs) - 1)
		d1, d2 := refs[i], refs[i+1]
		var ps []uint32
		for _, p := range m.chunkRange(ch, m.n) {
			if l, ok := m.loc[p]; ok && (l.id == d1.id || l.id == d2.id) {
				ps = append(ps, p)
			}
		}
		m.retire(r, ch, func(ref modelRef) bool { return ref.id == d1.id || ref.id == d2.id })
		r.Compaction = true
		if len(ps) > 0 {
			o := m.object(ObjectDelta, min(d1.min, d2.min), d2.key.maxTxid, ps)
			key := layerKey{d2.key.maxTxid, r.Seq, 0}
			for i, p := range ps {
				m.loc[p] = modelLoc{o.ID, uint32(i), key}
			}
			r.Added = append(r.Added, o)
			m.addRefs(&r.Added[0], key)
		}
		return true
	}
	return false
}

// expect compares a snapshot with a model state, every page up to past
// the largest size.
func expect(t *testing.T, what string, s *Snapshot, n uint32, state map[uint32]modelLoc, maxPages uint32) {
	t.Helper()
	if s.DBPages() != n {
		t.Fatalf("%s: db size %d, model %d", what, s.DBPages(), n)
	}
	for p := uint32(1); p <= maxPages+5; p++ {
		loc, err := s.Resolve(p)
		if err != nil {
			t.Fatalf("%s: resolve %d: %v", what, p, err)
		}
		want, has := state[p]
		switch {
		case p > n:
			if loc.Kind != Beyond {
				t.Fatalf("%s: page %d beyond size %d resolved to %v", what, p, n, loc.Kind)
			}
		case !has:
			if loc.Kind != Zero {
				t.Fatalf("%s: page %d (never written / truncated) resolved to %v object %v frame %d", what, p, loc.Kind, loc.Object, loc.Frame)
			}
		default:
			if loc.Kind != InObject || loc.Object.ID != want.id || loc.Frame != want.frame ||
				loc.Offset != delta.FrameOffset(testPageSize, want.frame) || loc.Length != delta.FrameSize(testPageSize) {
				got := "none"
				if loc.Object != nil {
					got = fmt.Sprintf("object %d frame %d offset %d", loc.Object.ID, loc.Frame, loc.Offset)
				}
				t.Fatalf("%s: page %d: got %v %s, model object %d frame %d", what, p, loc.Kind, got, want.id, want.frame)
			}
		}
	}
}

func (m *model) check(what string) {
	m.t.Helper()
	expect(m.t, what, m.cat.Snapshot(), m.n, m.loc, m.maxPages)
}

func (m *model) checkHistory(what string) {
	m.t.Helper()
	for txid := uint64(0); txid <= m.txid+2; txid++ {
		b := txid
		for {
			if _, ok := m.hist[b]; ok {
				break
			}
			b--
		}
		s, err := m.cat.SnapshotAt(txid)
		if err != nil {
			m.t.Fatalf("%s: SnapshotAt(%d): %v", what, txid, err)
		}
		if s.Txid() != b || s.Requested() != txid || s.Rounded() != (b != txid) {
			m.t.Fatalf("%s: SnapshotAt(%d) = boundary %d (rounded %v), want %d", what, txid, s.Txid(), s.Rounded(), b)
		}
		expect(m.t, fmt.Sprintf("%s: SnapshotAt(%d)", what, txid), s, m.histN[b], m.hist[b], m.maxPages)
	}
}

func runPageMapProperty(t *testing.T, seed uint64, steps int, cp, maxPages uint32) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	cat := openTestCatalog(t, path, cp)
	m := newModel(t, seed, cat, cp, maxPages)
	for range steps {
		m.step()
	}
	if m.records < steps/2 {
		t.Fatalf("only %d of %d steps published a record", m.records, steps)
	}
	m.checkHistory("history")
	if err := cat.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopen: the page map is rebuilt from the rows and stored
	// directories and must give the same answers.
	m.cat = openTestCatalog(t, path, cp)
	defer m.cat.Close()
	m.check("after reopen")
	m.checkHistory("history after reopen")
	// And it keeps working incrementally after a reopen.
	for range steps / 4 {
		m.step()
	}
	m.checkHistory("history after more records")
}

func TestPageMapProperty(t *testing.T) {
	seeds, steps := 3, 60
	if testing.Short() {
		seeds = 1
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { runPageMapProperty(t, seed+1, steps, 4, 48) })
	}
	// Bigger chunks, so the per-chunk bucket index is in play.
	t.Run("chunk64", func(t *testing.T) { runPageMapProperty(t, 99, steps, 64, 300) })
}

func TestHeavyPageMapProperty(t *testing.T) {
	heavy(t)
	for seed := range uint64(40) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { runPageMapProperty(t, 1000+seed, 150, 4, 48) })
	}
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("chunk64-", seed), func(t *testing.T) { runPageMapProperty(t, 2000+seed, 120, 64, 400) })
	}
}
