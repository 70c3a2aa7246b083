package cache

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/bopstore/bop/delta"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fault"
	"github.com/bopstore/bop/remote/fsstore"
)

// testLayout is the database every test's keys live in.
var testLayout = remote.Layout{Tenant: "t", DB: "db"}

// objKey is the key of a cacheable page object number i.
func objKey(t testing.TB, i uint64) string {
	t.Helper()
	k, err := testLayout.Object("base", i, 0xfeed0000+i)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newMetered returns an fsstore in a temp dir under a metering fault
// wrapper: what the tests count requests and bytes with.
func newMetered(t testing.TB) (*fault.Store, *fsstore.Store) {
	t.Helper()
	fs, err := fsstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	return fault.New(fs, fault.Config{}), fs
}

// newCache opens a cache over inner in dir (a temp dir if empty) and closes
// it when the test ends.
func newCache(t testing.TB, inner remote.Store, cfg Config) *Cache {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	c, err := New(inner, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// pattern is a deterministic byte stream: byte i of stream seed depends
// on (seed, i) alone, so objects of any size are written and checked
// without holding them.
type pattern struct {
	seed      uint64
	off, size int64
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.off >= p.size {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), p.size-p.off)]
	fillPattern(p.seed, p.off, b)
	p.off += int64(len(b))
	return len(b), nil
}

func fillPattern(seed uint64, off int64, b []byte) {
	for i := 0; i < len(b); {
		pos := uint64(off) + uint64(i)
		v := mix(seed ^ (pos>>3)*0x9e3779b97f4a7c15)
		if pos&7 == 0 && len(b)-i >= 8 {
			binary.LittleEndian.PutUint64(b[i:], v) // the 8 bytes below, at once
			i += 8
			continue
		}
		b[i] = byte(v >> (8 * (pos & 7)))
		i++
	}
}

func patternBytes(seed uint64, off, n int64) []byte {
	b := make([]byte, n)
	fillPattern(seed, off, b)
	return b
}

// putPattern stores size bytes of stream seed under key.
func putPattern(t testing.TB, s remote.Store, key string, seed uint64, size int64) {
	t.Helper()
	if _, err := s.Put(context.Background(), key, &pattern{seed: seed, size: size}, remote.PutOptions{Size: size}); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// mustRead reads [off, off+n) through the cache and checks it against
// stream seed.
func mustRead(t testing.TB, c *Cache, key string, seed uint64, off, n int64) {
	t.Helper()
	p := make([]byte, n)
	got, err := c.ReadAt(context.Background(), key, p, off)
	if err != nil || int64(got) != n {
		t.Fatalf("ReadAt(%s, %d, %d) = %d, %v", key, off, n, got, err)
	}
	if want := patternBytes(seed, off, n); !bytes.Equal(p, want) {
		t.Fatalf("ReadAt(%s, %d, %d): wrong bytes", key, off, n)
	}
}

// pageBytes is the content of page pgno in the test objects.
func pageBytes(pgno uint32, pageSize uint32) []byte {
	b := make([]byte, pageSize)
	fillPage(pgno, b)
	return b
}

// fillPage fills a page cheaply (the 64 MiB objects run under -race too):
// a word derived from pgno, doubled by copies.
func fillPage(pgno uint32, b []byte) {
	binary.LittleEndian.PutUint64(b, mix(uint64(pgno)*7919))
	for n := 8; n < len(b); n *= 2 {
		copy(b[n:], b[:n])
	}
}

// putBase streams a base object of count pages of pageSize (pages first..)
// into s under key, the way a checkpoint uploads one.
func putBase(t testing.TB, s remote.Store, key string, first, count, pageSize uint32) int64 {
	t.Helper()
	pr, pw := io.Pipe()
	go func() {
		enc, err := delta.NewEncoder(pw, delta.Header{Kind: delta.KindBase, PageSize: pageSize, ObjectID: 1, MinTxid: 1, MaxTxid: 1, FirstPgno: first, PageCount: count})
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		page := make([]byte, pageSize)
		for i := range count {
			pgno := first + i
			fillPage(pgno, page)
			if err := enc.Add(pgno, page); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		_, err = enc.Close()
		pw.CloseWithError(err)
	}()
	size := delta.ObjectSize(pageSize, count)
	if _, err := s.Put(context.Background(), key, pr, remote.PutOptions{Size: size}); err != nil {
		t.Fatalf("put base %s: %v", key, err)
	}
	return size
}

// readFrame reads frame index of a base object through the cache and
// checks its page.
func readFrame(t testing.TB, c *Cache, key string, first, index, pageSize uint32) {
	t.Helper()
	frame := make([]byte, delta.FrameSize(pageSize))
	if _, err := c.ReadAt(context.Background(), key, frame, delta.FrameOffset(pageSize, index)); err != nil {
		t.Fatalf("read frame %d: %v", index, err)
	}
	page, _, err := delta.DecodeFrame(frame, first+index, pageSize)
	if err != nil {
		t.Fatalf("frame %d: %v", index, err)
	}
	if !bytes.Equal(page, pageBytes(first+index, pageSize)) {
		t.Fatalf("frame %d: wrong page bytes", index)
	}
}

// gets returns the GET requests and bytes the inner store served since the
// last Reset.
func gets(m *fault.Store) (requests, bytes int64) {
	st := m.Stats()
	return st.Get.Requests, st.Get.BytesOut
}

// blockFiles lists the block files under the cache's dir: path -> size.
func blockFiles(t testing.TB, c *Cache) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	err := filepath.WalkDir(c.blocksDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			out[p] = fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkAccounting asserts the accounting invariant: Stats().UsedBytes and
// Entries equal both the index's own sum and the files on disk, the index
// names exactly the files on disk, no temp file is left, and used <=
// MaxBytes. Call it when no operation is in flight.
func checkAccounting(t testing.TB, c *Cache) {
	t.Helper()
	st := c.Stats()
	files := blockFiles(t, c)
	var diskSum int64
	for _, n := range files {
		diskSum += n
	}
	c.mu.Lock()
	var indexSum, indexN int64
	named := map[string]int64{}
	for _, o := range c.objects {
		for _, b := range o.blocks {
			indexSum += b.size
			indexN++
			named[c.blockPath(o.khash, b.idx, b.seq)] = b.size
		}
	}
	c.mu.Unlock()
	if st.UsedBytes != indexSum || st.Entries != indexN {
		t.Errorf("Stats says %d bytes in %d entries; the index holds %d bytes in %d", st.UsedBytes, st.Entries, indexSum, indexN)
	}
	if st.UsedBytes != diskSum || st.Entries != int64(len(files)) {
		t.Errorf("Stats says %d bytes in %d entries; disk holds %d bytes in %d files", st.UsedBytes, st.Entries, diskSum, len(files))
	}
	for p, n := range files {
		if m, ok := named[p]; !ok {
			t.Errorf("orphan file %s (%d bytes) not in the index", p, n)
		} else if m != n {
			t.Errorf("file %s has %d bytes, the index counts %d", p, n, m)
		}
	}
	for p := range named {
		if _, ok := files[p]; !ok {
			t.Errorf("index names %s, which is not on disk", p)
		}
	}
	if st.UsedBytes > c.cfg.MaxBytes {
		t.Errorf("used %d > MaxBytes %d", st.UsedBytes, c.cfg.MaxBytes)
	}
	if ents, _ := os.ReadDir(c.tmpDir); len(ents) != 0 {
		t.Errorf("%d temp files left", len(ents))
	}
}

// fileOf returns the path of the cached block idx of key ("" if none).
func fileOf(c *Cache, key string, idx int64) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	o := c.objects[key]
	if o == nil || o.blocks[idx] == nil {
		return ""
	}
	return c.blockPath(o.khash, idx, o.blocks[idx].seq)
}

// flipByte inverts one byte of a file in place.
func flipByte(t testing.TB, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}

// headerLenOf is the header length of a block file on disk.
func headerLenOf(t testing.TB, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	k := binary.LittleEndian.Uint16(b[44:])
	e := binary.LittleEndian.Uint16(b[46:])
	return int64(headerFixed) + int64(k) + int64(e) + hashLen
}

// cacheAll caches every key (the conformance runs use it, since the
// suite's keys are not Layout keys).
func cacheAll(string) bool { return true }
