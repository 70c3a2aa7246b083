package checkpoint

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"testing"

	"github.com/bopstore/bop/manifest"
)

func tipAt(txid uint64, dbPages, chunkPages uint32) manifest.Tip {
	return manifest.Tip{Seq: 3, LastSeq: 3, Txid: txid, DBPages: dbPages, PageSize: 4096, ChunkPages: chunkPages}
}

// The planner is a pure function: the same input gives the same plan, and
// with ids assigned from one first id, the same bytes (so a retried plan
// produces the same keys). Every action has its own object id.
func TestPlanDeterministic(t *testing.T) {
	var pgnos []uint32
	for p := uint32(1); p <= 200; p += 3 {
		pgnos = append(pgnos, p)
	}
	r := Range{From: 11, To: 19, PageSize: 4096, DBPages: 205, MinDBPages: 180, Pgnos: pgnos}
	tip := tipAt(10, 190, 16)
	pol := Policy{MaxObjectPages: 10}
	a, err := MakePlan(r, tip, pol)
	must(t, err)
	b, err := MakePlan(r, tip, pol)
	must(t, err)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("two plans of one input differ:\n%+v\n%+v", a, b)
	}
	a.AssignIDs("job-x", 100)
	b.AssignIDs("job-x", 100)
	ab, _ := a.Encode()
	bb, _ := b.Encode()
	if !bytes.Equal(ab, bb) {
		t.Fatal("encodings differ")
	}
	must(t, a.check())
	back, err := DecodePlan(ab)
	must(t, err)
	if !reflect.DeepEqual(back, a) {
		t.Fatalf("decode(encode(plan)) differs")
	}
	// 67 set pages + zero fill of 181..190 minus set pages there.
	if len(a.Actions) < 7 {
		t.Fatalf("%d actions for %d pages at 10 per object", len(a.Actions), len(pgnos))
	}
	ids := map[uint64]bool{}
	var total uint32
	for i, act := range a.Actions {
		if act.Kind != manifest.ObjectDelta || act.Pages > 10 || act.Pages == 0 {
			t.Fatalf("action %d: %+v", i, act)
		}
		if ids[act.ObjectID] {
			t.Fatalf("object id %d used twice", act.ObjectID)
		}
		ids[act.ObjectID] = true
		if i > 0 && act.First <= a.Actions[i-1].Last {
			t.Fatalf("actions overlap: %+v after %+v", act, a.Actions[i-1])
		}
		total += act.Pages
	}
	if total != a.SetPages+fillCount(a.ZeroFill) {
		t.Fatalf("actions hold %d pages", total)
	}
}

func fillCount(z []PgnoRange) uint32 {
	var n uint32
	for _, r := range z {
		n += r.Last - r.First + 1
	}
	return n
}

// A delta may span chunks: its chunk list is exactly the chunks of its
// pages.
func TestPlanDeltaSpansChunks(t *testing.T) {
	r := Range{From: 1, To: 5, PageSize: 4096, DBPages: 40, MinDBPages: 40, Pgnos: []uint32{1, 2, 9, 10, 33, 40}}
	pl, err := MakePlan(r, tipAt(0, 0, 4), Policy{})
	must(t, err)
	if len(pl.Actions) != 1 {
		t.Fatalf("%d actions", len(pl.Actions))
	}
	a := pl.Actions[0]
	if a.First != 1 || a.Last != 40 || a.Pages != 6 || !slices.Equal(a.Chunks, []uint32{0, 2, 8, 9}) {
		t.Fatalf("action %+v", a)
	}
}

// An image record becomes one base per chunk, each holding every page of
// its chunk up to the database size, consecutive from the chunk's first
// page.
func TestPlanImageBases(t *testing.T) {
	var pgnos []uint32
	for p := uint32(1); p <= 10; p++ {
		pgnos = append(pgnos, p)
	}
	r := Range{From: 1, To: 1, PageSize: 4096, DBPages: 10, MinDBPages: 10, Image: true, Pgnos: pgnos}
	pl, err := MakePlan(r, tipAt(0, 0, 4), Policy{})
	must(t, err)
	want := []Action{
		{Index: 0, Kind: manifest.ObjectBase, First: 1, Last: 4, Pages: 4, Chunks: []uint32{0}},
		{Index: 1, Kind: manifest.ObjectBase, First: 5, Last: 8, Pages: 4, Chunks: []uint32{1}},
		{Index: 2, Kind: manifest.ObjectBase, First: 9, Last: 10, Pages: 2, Chunks: []uint32{2}},
	}
	if !reflect.DeepEqual(pl.Actions, want) {
		t.Fatalf("actions %+v", pl.Actions)
	}
	pl.AssignIDs("j", 1)
	must(t, pl.check())

	// An image missing a page is refused: a base has no gaps and nothing
	// is published as zeros that was not zeros.
	r.Pgnos = append(slices.Clone(pgnos[:4]), pgnos[5:]...)
	if _, err := MakePlan(r, tipAt(0, 0, 4), Policy{}); err == nil {
		t.Fatal("image with a missing page planned")
	}
	// An image goes alone.
	r.Pgnos, r.To = pgnos, 2
	if _, err := MakePlan(r, tipAt(0, 0, 4), Policy{}); err == nil {
		t.Fatal("image range of two txids planned")
	}
}

func TestPlanRefuses(t *testing.T) {
	ok := Range{From: 6, To: 8, PageSize: 4096, DBPages: 10, MinDBPages: 10, Pgnos: []uint32{1, 5}}
	for name, c := range map[string]struct {
		r   Range
		tip manifest.Tip
	}{
		"gap after tip":     {ok, tipAt(4, 10, 4)},
		"overlaps tip":      {ok, tipAt(6, 10, 4)},
		"page size":         {Range{From: 6, To: 8, PageSize: 1024, DBPages: 10, MinDBPages: 10, Pgnos: []uint32{1}}, tipAt(5, 10, 4)},
		"page above size":   {Range{From: 6, To: 8, PageSize: 4096, DBPages: 4, MinDBPages: 4, Pgnos: []uint32{1, 5}}, tipAt(5, 10, 4)},
		"not ascending":     {Range{From: 6, To: 8, PageSize: 4096, DBPages: 10, MinDBPages: 10, Pgnos: []uint32{5, 1}}, tipAt(5, 10, 4)},
		"duplicate":         {Range{From: 6, To: 8, PageSize: 4096, DBPages: 10, MinDBPages: 10, Pgnos: []uint32{5, 5}}, tipAt(5, 10, 4)},
		"page zero":         {Range{From: 6, To: 8, PageSize: 4096, DBPages: 10, MinDBPages: 10, Pgnos: []uint32{0, 5}}, tipAt(5, 10, 4)},
		"reversed":          {Range{From: 8, To: 6, PageSize: 4096, DBPages: 10, MinDBPages: 10}, tipAt(7, 10, 4)},
		"min above db size": {Range{From: 6, To: 8, PageSize: 4096, DBPages: 10, MinDBPages: 11}, tipAt(5, 10, 4)},
	} {
		if _, err := MakePlan(c.r, c.tip, Policy{}); err == nil {
			t.Errorf("%s: planned", name)
		}
	}
	if _, err := MakePlan(ok, tipAt(5, 10, 4), Policy{}); err != nil {
		t.Fatal(err)
	}
}

// A range that shrank the database below pages the catalog still holds
// and grew it again without writing them: those pages are zeros at the
// end of the range and the plan writes them as zero pages (else the
// versions published before the shrink would show through).
func TestPlanZeroFill(t *testing.T) {
	r := Range{From: 6, To: 9, PageSize: 4096, DBPages: 30, MinDBPages: 12, Pgnos: []uint32{1, 3, 14, 15, 20, 28}}
	pl, err := MakePlan(r, tipAt(5, 25, 8), Policy{})
	must(t, err)
	want := []PgnoRange{{13, 13}, {16, 19}, {21, 25}}
	if !reflect.DeepEqual(pl.ZeroFill, want) {
		t.Fatalf("zero fill %v, want %v", pl.ZeroFill, want)
	}
	var got []uint32
	var zeros []uint32
	mergePages(r.Pgnos, pl.ZeroFill, 0, ^uint32(0), func(p uint32, zero bool) bool {
		got = append(got, p)
		if zero {
			zeros = append(zeros, p)
		}
		return true
	})
	if !slices.IsSorted(got) || len(got) != 6+10 || len(zeros) != 10 {
		t.Fatalf("merged %v (zeros %v)", got, zeros)
	}
	// Above the catalog's size nothing is filled: the catalog masks it.
	r2 := Range{From: 6, To: 9, PageSize: 4096, DBPages: 30, MinDBPages: 12, Pgnos: []uint32{1}}
	pl2, err := MakePlan(r2, tipAt(5, 12, 8), Policy{})
	must(t, err)
	if len(pl2.ZeroFill) != 0 {
		t.Fatalf("zero fill %v above the catalog's size", pl2.ZeroFill)
	}
	// mergePages with a window.
	got = got[:0]
	mergePages(r.Pgnos, pl.ZeroFill, 14, 17, func(p uint32, zero bool) bool { got = append(got, p); return true })
	if !slices.Equal(got, []uint32{14, 15, 16, 17}) {
		t.Fatalf("window: %v", got)
	}
}

// Stored plans are bytes from disk: anything malformed is ErrBadPlan,
// never a panic or a plan that breaks its own rules.
func TestDecodePlanRefuses(t *testing.T) {
	r := Range{From: 1, To: 3, PageSize: 4096, DBPages: 10, MinDBPages: 10, Pgnos: []uint32{1, 2, 7}}
	pl, err := MakePlan(r, tipAt(0, 0, 4), Policy{})
	must(t, err)
	pl.AssignIDs("job", 5)
	good, _ := pl.Encode()
	if _, err := DecodePlan(good); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(p *Plan){
		"format":       func(p *Plan) { p.Format = 2 },
		"no job":       func(p *Plan) { p.Job = "" },
		"from":         func(p *Plan) { p.From = 2 },
		"page size":    func(p *Plan) { p.PageSize = 1000 },
		"id zero":      func(p *Plan) { p.Actions[0].ObjectID = 0 },
		"beyond db":    func(p *Plan) { p.Actions[0].Last = 11 },
		"pages":        func(p *Plan) { p.Actions[0].Pages = 9 },
		"chunks":       func(p *Plan) { p.Actions[0].Chunks = []uint32{0} },
		"kind":         func(p *Plan) { p.Actions[0].Kind = "blob" },
		"base":         func(p *Plan) { p.Actions[0].Kind = manifest.ObjectBase },
		"set pages":    func(p *Plan) { p.SetPages = 2 },
		"zero fill":    func(p *Plan) { p.ZeroFill = []PgnoRange{{5, 4}} },
		"index":        func(p *Plan) { p.Actions[0].Index = 1 },
		"chunk pages":  func(p *Plan) { p.ChunkPages = 0 },
		"image delta":  func(p *Plan) { p.Image = true; p.To = p.From },
		"to before":    func(p *Plan) { p.To = 0 },
		"zero fill hi": func(p *Plan) { p.ZeroFill = []PgnoRange{{11, 11}} },
	} {
		cp, _ := DecodePlan(good)
		mut(cp)
		b, _ := cp.Encode()
		if _, err := DecodePlan(b); !errors.Is(err, ErrBadPlan) {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, junk := range [][]byte{nil, []byte("{"), []byte("[]"), []byte(`{"format":1}`), good[:len(good)/2]} {
		if _, err := DecodePlan(junk); !errors.Is(err, ErrBadPlan) {
			t.Errorf("%q: %v", junk, err)
		}
	}
}
