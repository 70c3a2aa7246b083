package cache

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cespare/xxhash/v2"
)

// A new Cache on the same directory serves what the old one cached with
// no request (data and metadata), and accounts it exactly.
func TestRestartServesCachedRanges(t *testing.T) {
	const B = 4 << 10
	m, _ := newMetered(t)
	a, b := objKey(t, 40), objKey(t, 41)
	putPattern(t, m, a, 40, 20*B+5)
	putPattern(t, m, b, 41, 3*B)
	dir := t.TempDir()
	cfg := Config{Dir: dir, BlockSize: B, ReadAhead: -1}
	c1, err := New(m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	mustRead(t, c1, a, 40, 2*B+7, 5*B)
	mustRead(t, c1, a, 40, 19*B, B+5)
	mustRead(t, c1, b, 41, 0, 3*B)
	st1 := c1.Stats()
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}

	c2 := newCache(t, m, cfg)
	st2 := c2.Stats()
	if st2.UsedBytes != st1.UsedBytes || st2.Entries != st1.Entries || st2.Discarded != 0 {
		t.Errorf("after restart: used %d in %d entries (%d discarded); before: %d in %d", st2.UsedBytes, st2.Entries, st2.Discarded, st1.UsedBytes, st1.Entries)
	}
	checkAccounting(t, c2)
	m.Reset()
	mustRead(t, c2, a, 40, 2*B+7, 5*B)
	mustRead(t, c2, a, 40, 19*B, B+5)
	mustRead(t, c2, b, 41, 0, 3*B)
	if info, err := c2.Head(t.Context(), a); err != nil || info.Size != 20*B+5 {
		t.Errorf("Head after restart: %+v, %v", info, err)
	}
	if st := m.Stats(); st.Total().Requests != 0 {
		t.Errorf("after restart: %+v requests; want none", st)
	}
	// Past-the-end reads are answered from the remembered size too.
	if n, err := c2.ReadAt(t.Context(), a, make([]byte, 10), 20*B+5); n != 0 || err == nil {
		t.Errorf("read at the end: %d, %v", n, err)
	}
	if st := m.Stats(); st.Total().Requests != 0 {
		t.Errorf("read at the end after restart: %d requests", st.Total().Requests)
	}
	// Block numbers keep increasing across restarts: a name never names
	// two files.
	mustRead(t, c2, a, 40, 10*B, B)
	c2.mu.Lock()
	newSeq := c2.objects[a].blocks[10].seq
	c2.mu.Unlock()
	if newSeq <= uint64(st1.Entries) {
		t.Errorf("new block file number %d does not continue after the %d of the last run", newSeq, st1.Entries)
	}

	// The directory is locked while in use.
	if _, err := New(m, cfg); !errors.Is(err, ErrLocked) {
		t.Errorf("second New on a directory in use: %v; want ErrLocked", err)
	}
}

// writeFile plants a block file crafted from h and data in c's directory.
func writeFile(t *testing.T, c *Cache, h blockHeader, data []byte, seq uint64) string {
	t.Helper()
	img := appendBlock(nil, &h, data)
	khash := xxhash.Sum64String(h.key)
	if err := os.MkdirAll(c.blockDir(khash), 0o755); err != nil {
		t.Fatal(err)
	}
	p := c.blockPath(khash, h.offset>>c.shift, seq)
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Damaged, foreign and conflicting files are discarded at New and never
// counted; a block whose data is damaged (which New does not read) fails
// its check on read and is refetched. The rest is served as before.
func TestRestartDiscardsDamage(t *testing.T) {
	const B = 4 << 10
	m, fs := newMetered(t)
	key, other := objKey(t, 42), objKey(t, 43)
	putPattern(t, m, key, 42, 16*B)
	putPattern(t, m, other, 43, 4*B)
	dir := t.TempDir()
	cfg := Config{Dir: dir, BlockSize: B, ReadAhead: -1}
	c1, err := New(m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	mustRead(t, c1, key, 42, 0, 16*B)
	mustRead(t, c1, other, 43, 0, 4*B)
	files := map[int64]string{}
	for i := int64(0); i < 16; i++ {
		files[i] = fileOf(c1, key, i)
	}
	c1.Close()

	// Truncated (a torn write), header damaged, data damaged, emptied.
	if err := os.Truncate(files[1], B/2); err != nil {
		t.Fatal(err)
	}
	flipByte(t, files[2], headerFixed+3) // in the key: header hash fails
	flipByte(t, files[3], headerLenOf(t, files[3])+checkLen+5)
	if err := os.Truncate(files[4], 0); err != nil {
		t.Fatal(err)
	}
	// A file of block 5 under a newer number, as a crash between a
	// re-add's rename and its unlink leaves: the newer one wins.
	img, err := os.ReadFile(files[5])
	if err != nil {
		t.Fatal(err)
	}
	dup := filepath.Join(filepath.Dir(files[5]), fmt.Sprintf("%016x-5-%x.blk", xxhash.Sum64String(key), 1<<40))
	if err := os.WriteFile(dup, img, 0o644); err != nil {
		t.Fatal(err)
	}
	// A file whose name says another block than its header.
	renamed := filepath.Join(filepath.Dir(files[6]), fmt.Sprintf("%016x-9-%x.blk", xxhash.Sum64String(key), 1<<41))
	if err := os.Rename(files[6], renamed); err != nil {
		t.Fatal(err)
	}
	// Junk: a bad name, garbage under a good name, a stray folder, a temp
	// file of a writer that died.
	sub := filepath.Dir(files[0])
	for name, body := range map[string]string{
		"notes.txt": "hello",
		fmt.Sprintf("%016x-0-%x.blk", xxhash.Sum64String(key)^1, 7): "garbage that is no block",
	} {
		if err := os.WriteFile(filepath.Join(sub, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "blocks", "zz", "deeper"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tmp", "blk-123"), []byte("half a block"), 0o644); err != nil {
		t.Fatal(err)
	}

	c2 := newCache(t, m, cfg)
	st := c2.Stats()
	// files 1, 2, 4; the old copy of 5; the renamed 6; notes.txt; the
	// garbage; the stray folder.
	if st.Discarded != 8 {
		t.Errorf("%d files discarded; want 8", st.Discarded)
	}
	if st.Entries != 16+4-4 {
		t.Errorf("%d entries; want %d", st.Entries, 16)
	}
	checkAccounting(t, c2)

	m.Reset()
	mustRead(t, c2, key, 42, 0, 16*B)
	mustRead(t, c2, other, 43, 0, 4*B)
	st = c2.Stats()
	// Missing: 1, 2 (one run, up to the cached 3), 4 and 6; 3 fails its
	// check when read and joins 4's run: three GETs.
	if r, b := gets(m); r != 3 || b != 5*B || st.Corrupt != 1 {
		t.Errorf("after restart: %d GETs of %d bytes, %d corrupt; want 3 GETs of blocks 1, 2, 3, 4, 6 and 1 corrupt", r, b, st.Corrupt)
	}
	checkAccounting(t, c2)
	c2.Close()

	// Keys that must all agree do not: every block of the key goes.
	c3, err := New(m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := fs.Head(t.Context(), other)
	c3.Close()
	writeFile(t, c3, blockHeader{key: other, etag: info.ETag + "x", offset: 8 * B, n: B, objSize: 16 * B, blockSize: B}, make([]byte, B), 1<<42)
	c4 := newCache(t, m, cfg)
	if st := c4.Stats(); st.Discarded != 5 {
		t.Errorf("conflicting versions of a key: %d discarded; want its 5 files", st.Discarded)
	}
	c4.mu.Lock()
	known := c4.objects[other] != nil
	c4.mu.Unlock()
	if known {
		t.Error("the conflicting key is still known")
	}
	checkAccounting(t, c4)
	c4.Close()

	// Another block size, a smaller quota, a key no longer cacheable.
	c5 := newCache(t, m, Config{Dir: dir, BlockSize: B, ReadAhead: -1, MaxBytes: 3 * B})
	if st := c5.Stats(); st.UsedBytes > 3*B || st.Entries != 2 || st.Evictions != 14 {
		t.Errorf("smaller quota: used %d in %d entries, %d evicted", st.UsedBytes, st.Entries, st.Evictions)
	}
	checkAccounting(t, c5)
	c5.Close()
	c6 := newCache(t, m, Config{Dir: dir, BlockSize: 2 * B, Cacheable: cacheAll})
	if st := c6.Stats(); st.Entries != 0 || st.UsedBytes != 0 || st.Discarded != 2 {
		t.Errorf("another block size: %d entries, %d bytes, %d discarded; want none kept, 2 discarded", st.Entries, st.UsedBytes, st.Discarded)
	}
	checkAccounting(t, c6)
}
