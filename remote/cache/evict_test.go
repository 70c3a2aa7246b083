package cache

import (
	"math/rand/v2"
	"os"
	"sync"
	"testing"

	"github.com/bopstore/bop/remote"
)

// blockFileLen is the file size of a whole block of key in a cache of
// block size B.
func blockFileLen(t *testing.T, s remote.Store, key string, B int64) int64 {
	t.Helper()
	info, err := s.Head(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	h := blockHeader{key: key, etag: info.ETag, n: int(B)}
	return h.fileLen()
}

func checkQuota(t *testing.T, c *Cache) {
	t.Helper()
	if st := c.Stats(); st.UsedBytes > c.cfg.MaxBytes {
		t.Fatalf("used %d > MaxBytes %d", st.UsedBytes, c.cfg.MaxBytes)
	}
}

// Eviction drops the least recently used block, keeps used <= MaxBytes,
// and a touched block counts as recent.
func TestEvictionLRU(t *testing.T) {
	const B = 4 << 10
	m, fs := newMetered(t)
	key := objKey(t, 20)
	putPattern(t, m, key, 20, 64*B)
	F := blockFileLen(t, fs, key, B)
	c := newCache(t, m, Config{BlockSize: B, ReadAhead: -1, MaxBytes: 4*F + F/2})

	for _, i := range []int64{0, 1, 2, 3} {
		mustRead(t, c, key, 20, i*B+5, 10)
		checkQuota(t, c)
	}
	if st := c.Stats(); st.UsedBytes != 4*F || st.Evictions != 0 {
		t.Fatalf("4 blocks: used %d, %d evictions; want %d, 0", st.UsedBytes, st.Evictions, 4*F)
	}
	mustRead(t, c, key, 20, 0*B+5, 10) // touch block 0
	mustRead(t, c, key, 20, 4*B+5, 10) // block 4 evicts block 1, the LRU
	checkQuota(t, c)
	if fileOf(c, key, 1) != "" || fileOf(c, key, 0) == "" {
		t.Errorf("after touching 0 and adding 4: block 1 cached %t, block 0 cached %t; want 1 evicted, 0 kept",
			fileOf(c, key, 1) != "", fileOf(c, key, 0) != "")
	}
	m.Reset()
	for _, i := range []int64{0, 2, 3, 4} {
		mustRead(t, c, key, 20, i*B+5, 10)
	}
	if r, _ := gets(m); r != 0 {
		t.Errorf("reading the 4 cached blocks: %d GETs", r)
	}
	if st := c.Stats(); st.Evictions != 1 {
		t.Errorf("%d evictions; want 1", st.Evictions)
	}
	checkAccounting(t, c)

	// A long scan keeps used <= MaxBytes throughout.
	for i := int64(0); i < 64; i++ {
		mustRead(t, c, key, 20, i*B, B)
		checkQuota(t, c)
	}
	checkAccounting(t, c)
}

// Pinned blocks are never evicted, whatever streams past them; Unpin makes
// them evictable again; with the quota full of pinned blocks, other reads
// are served but not cached, and used never passes MaxBytes.
func TestPinning(t *testing.T) {
	const B = 4 << 10
	m, fs := newMetered(t)
	a, b := objKey(t, 21), objKey(t, 22)
	putPattern(t, m, a, 21, 16*B)
	putPattern(t, m, b, 22, 64*B)
	F := blockFileLen(t, fs, a, B)
	c := newCache(t, m, Config{BlockSize: B, ReadAhead: -1, MaxBytes: 8*F + F/2})

	c.Pin(a)
	c.Pin(a)
	mustRead(t, c, a, 21, 0, 4*B) // blocks 0-3 of a, pinned
	for i := int64(0); i < 64; i++ {
		mustRead(t, c, b, 22, i*B, B)
		checkQuota(t, c)
	}
	c.Unpin(a) // still pinned once
	for i := int64(0); i < 64; i++ {
		mustRead(t, c, b, 22, i*B, B)
	}
	m.Reset()
	mustRead(t, c, a, 21, 0, 4*B)
	if r, _ := gets(m); r != 0 {
		t.Errorf("pinned blocks: %d GETs after streaming past them; want 0", r)
	}
	checkAccounting(t, c)

	// The quota full of pinned blocks: b is served, uncached.
	mustRead(t, c, a, 21, 4*B, 4*B) // 8 pinned blocks: all the room there is
	for i := int64(0); i < 8; i++ {
		mustRead(t, c, b, 22, i*B, B)
		checkQuota(t, c)
	}
	m.Reset()
	mustRead(t, c, b, 22, 0, B)
	if r, _ := gets(m); r != 1 {
		t.Errorf("with the quota pinned, a read of another key: %d GETs; want 1 (served, not cached)", r)
	}
	if st := c.Stats(); st.Entries != 8 {
		t.Errorf("%d entries; want the 8 pinned ones", st.Entries)
	}
	checkAccounting(t, c)

	c.Unpin(a)
	for i := int64(0); i < 64; i++ {
		mustRead(t, c, b, 22, i*B, B)
	}
	m.Reset()
	mustRead(t, c, a, 21, 0, B)
	if r, _ := gets(m); r != 1 {
		t.Errorf("unpinned and streamed past: %d GETs; want 1 (evicted)", r)
	}
	c.Unpin(a) // unbalanced: ignored
	checkAccounting(t, c)
}

// Seed review finding 10: a re-added entry was counted twice and its old
// file leaked. Re-adding a cached block (directly, many times at once, and
// by the refetch after a failed check) replaces the entry: used bytes stay
// exact and the only file left is the new one.
func TestReAddKeepsAccountingExact(t *testing.T) {
	const B = 4 << 10
	m, _ := newMetered(t)
	key := objKey(t, 23)
	putPattern(t, m, key, 23, 16*B+100)
	c := newCache(t, m, Config{BlockSize: B, ReadAhead: -1})
	mustRead(t, c, key, 23, 0, 16*B+100) // fill: 17 blocks, the last short
	before := c.Stats()
	if before.Entries != 17 {
		t.Fatalf("%d entries; want 17", before.Entries)
	}
	checkAccounting(t, c)

	c.mu.Lock()
	o := c.objects[key]
	gen, info := o.gen, o.info()
	c.mu.Unlock()
	for _, idx := range []int64{3, 16} { // a whole block and the short last
		old := fileOf(c, key, idx)
		data := patternBytes(23, idx*B, min(B, info.Size-idx*B))
		c.install(o, gen, idx, info, data)
		if now := fileOf(c, key, idx); now == old || now == "" {
			t.Errorf("block %d: re-add kept file %s (now %s)", idx, old, now)
		}
		if _, err := os.Stat(old); !os.IsNotExist(err) {
			t.Errorf("block %d: the replaced file %s is still on disk (%v)", idx, old, err)
		}
		if st := c.Stats(); st.UsedBytes != before.UsedBytes || st.Entries != before.Entries {
			t.Errorf("block %d re-added: used %d in %d entries; want %d in %d", idx, st.UsedBytes, st.Entries, before.UsedBytes, before.Entries)
		}
		checkAccounting(t, c)
	}

	// Many re-adds of one block at once.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			c.install(o, gen, 5, info, patternBytes(23, 5*B, B))
		})
	}
	wg.Wait()
	if st := c.Stats(); st.UsedBytes != before.UsedBytes || st.Entries != before.Entries {
		t.Errorf("after 8 racing re-adds: used %d in %d entries; want %d in %d", st.UsedBytes, st.Entries, before.UsedBytes, before.Entries)
	}
	checkAccounting(t, c)
	mustRead(t, c, key, 23, 0, 16*B+100)

	// A block whose data fails its check is refetched and replaced.
	path := fileOf(c, key, 7)
	flipByte(t, path, headerLenOf(t, path)+checkLen+100)
	m.Reset()
	mustRead(t, c, key, 23, 7*B, B)
	if r, _ := gets(m); r != 1 {
		t.Errorf("corrupt block: %d GETs; want 1 refetch", r)
	}
	if st := c.Stats(); st.Corrupt != 1 || st.UsedBytes != before.UsedBytes || st.Entries != before.Entries {
		t.Errorf("after the refetch: %d corrupt, used %d in %d entries; want 1, %d in %d", st.Corrupt, st.UsedBytes, st.Entries, before.UsedBytes, before.Entries)
	}
	checkAccounting(t, c)
}

// Random reads over several objects with a small quota: used stays under
// MaxBytes after every read and the accounting matches the disk at the end.
func TestQuotaUnderChurn(t *testing.T) {
	const B = 4 << 10
	m, _ := newMetered(t)
	keys := []string{objKey(t, 30), objKey(t, 31), objKey(t, 32)}
	for i, k := range keys {
		putPattern(t, m, k, uint64(30+i), int64(40+i*7)*B+int64(i*333))
	}
	c := newCache(t, m, Config{BlockSize: B, ReadAhead: 4 * B, MaxBytes: 10*B + 777})
	rng := rand.New(rand.NewPCG(3, 4))
	for range 400 {
		i := rng.IntN(len(keys))
		size := int64(40+i*7)*B + int64(i*333)
		off := rng.Int64N(size)
		n := min(rng.Int64N(3*B)+1, size-off)
		mustRead(t, c, keys[i], uint64(30+i), off, n)
		checkQuota(t, c)
	}
	if st := c.Stats(); st.Evictions == 0 {
		t.Error("no evictions: the test did not fill the quota")
	}
	checkAccounting(t, c)
}
