package checkpoint

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/bopstore/bop/manifest"
)

// seedPlans are valid plans of each shape, encoded.
func seedPlans(t testing.TB) [][]byte {
	var out [][]byte
	add := func(r Range, tip manifest.Tip, pol Policy) {
		pl, err := MakePlan(r, tip, pol)
		if err != nil {
			t.Fatal(err)
		}
		pl.AssignIDs("publish-1-2-abcd", 7)
		b, err := pl.Encode()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	add(Range{From: 1, To: 4, PageSize: 4096, DBPages: 12, MinDBPages: 12, Pgnos: []uint32{1, 2, 5, 9, 12}}, tipAt(0, 0, 4), Policy{MaxObjectPages: 2})
	add(Range{From: 1, To: 1, PageSize: 4096, DBPages: 6, MinDBPages: 6, Image: true, Pgnos: []uint32{1, 2, 3, 4, 5, 6}}, tipAt(0, 0, 4), Policy{})
	add(Range{From: 6, To: 9, PageSize: 4096, DBPages: 30, MinDBPages: 12, Pgnos: []uint32{1, 3, 14, 15, 20, 28}}, tipAt(5, 25, 8), Policy{})
	return out
}

// FuzzDecodePlan: plans and progress are bytes read back from the catalog
// file. No input panics; an accepted plan passes its own checks, encodes
// and decodes to the same plan; progress accepted for it fits it.
func FuzzDecodePlan(f *testing.F) {
	for _, b := range seedPlans(f) {
		f.Add(b, []byte(`{"uploaded":[{"size":32952,"hash":"00000000000000ff"}]}`))
	}
	f.Add([]byte(`{"format":1}`), []byte(`{}`))
	f.Fuzz(func(t *testing.T, plan, prog []byte) {
		pl, err := DecodePlan(plan)
		if err != nil {
			return
		}
		if err := pl.check(); err != nil {
			t.Fatalf("accepted plan fails its check: %v", err)
		}
		b, err := pl.Encode()
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodePlan(b)
		if err != nil {
			t.Fatalf("re-encoded plan refused: %v", err)
		}
		if !reflect.DeepEqual(again, pl) {
			t.Fatal("plan changed through encode/decode")
		}
		pr, err := decodeProgress(prog, pl)
		if err != nil {
			return
		}
		if len(pr.Uploaded) > len(pl.Actions) {
			t.Fatalf("%d uploaded of %d actions", len(pr.Uploaded), len(pl.Actions))
		}
		for i, u := range pr.Uploaded {
			if _, err := u.hash(); err != nil || u.Size != pl.Actions[i].Size(pl.PageSize) {
				t.Fatalf("accepted progress entry %d: %+v", i, u)
			}
		}
		if _, err := json.Marshal(pr); err != nil {
			t.Fatal(err)
		}
	})
}
