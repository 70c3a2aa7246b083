package checkpoint

import (
	"testing"

	"github.com/bopstore/bop/delta"
	"github.com/bopstore/bop/manifest"
)

// planPieces: a span that is (nearly) the whole object is one plain GET,
// a small part of an object one ranged GET, and a phase with fewer objects
// than workers is cut into pieces that cover each span exactly once,
// never smaller than the minimum piece.
func TestRestorePlanPieces(t *testing.T) {
	const ps = 4096
	fs := delta.FrameSize(ps)
	obj := func(id uint64, frames uint32) *manifest.ObjectRef {
		return &manifest.ObjectRef{ID: id, Kind: manifest.ObjectBase, Key: "k", PageCount: frames}
	}
	all := &objPlan{obj: obj(1, 100), first: 0, last: 99}
	half := &objPlan{obj: obj(2, 100), first: 0, last: 49}
	most := &objPlan{obj: obj(3, 100), first: 5, last: 99} // 95%: whole
	tail := &objPlan{obj: obj(4, 100), first: 50, last: 99}
	got := planPieces([]*objPlan{all, half, most, tail}, ps, 1, 1<<40)
	want := map[uint64]piece{
		1: {plan: all, first: 0, last: 99, whole: true},
		2: {plan: half, first: 0, last: 49, whole: false},
		3: {plan: most, first: 5, last: 99, whole: true},
		4: {plan: tail, first: 50, last: 99, whole: false},
	}
	if len(got) != len(want) {
		t.Fatalf("%d pieces for 4 objects with one worker: %+v", len(got), got)
	}
	for _, p := range got {
		if w := want[p.plan.obj.ID]; p != w {
			t.Fatalf("object %d: piece %+v, want %+v", p.plan.obj.ID, p, w)
		}
	}
	for i := 1; i < len(got); i++ {
		if got[i].frames() > got[i-1].frames() {
			t.Fatalf("pieces not largest first: %+v", got)
		}
	}

	// Four workers, one object: four pieces of 25 frames, none whole.
	got = planPieces([]*objPlan{all}, ps, 4, 10*fs)
	checkCover(t, got, all, 4)
	// The minimum piece wins over the workers: 100 frames, at least 40 a
	// piece: three pieces.
	got = planPieces([]*objPlan{all}, ps, 8, 40*fs)
	checkCover(t, got, all, 3)
	for _, p := range got {
		if p.frames() < 20 { // the last may be shorter, never tiny
			t.Fatalf("piece of %d frames: %+v", p.frames(), got)
		}
	}
}

func checkCover(t *testing.T, got []piece, o *objPlan, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("%d pieces, want %d: %+v", len(got), n, got)
	}
	seen := make([]int, o.last+1)
	for _, p := range got {
		if p.whole || p.plan != o || p.first > p.last {
			t.Fatalf("bad piece %+v", p)
		}
		for f := p.first; f <= p.last; f++ {
			seen[f]++
		}
	}
	for f := o.first; f <= o.last; f++ {
		if seen[f] != 1 {
			t.Fatalf("frame %d covered %d times: %+v", f, seen[f], got)
		}
	}
}
