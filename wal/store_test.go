package wal

import (
	"bytes"
	"testing"
)

// TestPageStoreTake: take hands over the arena's first slots without
// copying them, the store keeps the slots after them where they were, and
// a recycled arena is reused (no new allocation) within the memory bound.
func TestPageStoreTake(t *testing.T) {
	const ps = 512
	st := newPageStore(OSFS{}, t.TempDir()+"/spill", 64*ps)
	st.setPageSize(ps)
	page := func(b byte) []byte { return bytes.Repeat([]byte{b}, ps) }
	for i := 0; i < 10; i++ {
		if err := st.write(i, 0, page(byte(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	arena := &st.mem[0]
	got := st.take(6, 10)
	if len(got) != 6*ps || &got[0] != arena {
		t.Fatalf("take returned %d bytes (same memory as the arena: %v)", len(got), &got[0] == arena)
	}
	for i := 0; i < 6; i++ {
		if !bytes.Equal(got[i*ps:(i+1)*ps], page(byte(i+1))) {
			t.Fatalf("taken slot %d changed", i)
		}
	}
	buf := make([]byte, ps)
	for i := 6; i < 10; i++ {
		p, err := st.page(i, buf)
		if err != nil || !bytes.Equal(p, page(byte(i+1))) {
			t.Fatalf("slot %d after take: %v", i, err)
		}
	}
	// Writing the store's slots does not touch the taken pages.
	if err := st.write(0, 0, page(99)); err != nil {
		t.Fatal(err)
	}
	if got[0] != 1 {
		t.Fatal("the store wrote into a taken arena")
	}
	// Recycled, it becomes the next arena.
	st.recycle(got)
	st.mem = nil
	st.growMem(ps)
	if &st.mem[0] != arena {
		t.Fatal("the recycled arena was not reused")
	}
	// Never more than memBytes in spares.
	for i := 0; i < 10; i++ {
		st.recycle(make([]byte, 32*ps))
	}
	total := 0
	for _, b := range st.spare {
		total += len(b)
	}
	if total > st.memBytes {
		t.Fatalf("%d bytes of spare arenas, bound %d", total, st.memBytes)
	}
	st.close()
}
