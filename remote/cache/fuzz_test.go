package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/bopstore/bop/remote"
)

// seedBlocks are block files the fuzz targets start from: valid ones of
// several shapes, and the damage a crash or a disk does to them.
func seedBlocks() map[string][]byte {
	key := "t/db/obj/base-0000000000000001-00000000feed0001"
	mk := func(h blockHeader, n int) []byte {
		h.n = n
		data := patternBytes(uint64(n), h.offset, int64(n))
		return appendBlock(nil, &h, data)
	}
	whole := mk(blockHeader{key: key, etag: "1799a1b2c3d4e000-2800-3e8a21", offset: 1024, objSize: 10240, modTime: 1_700_000_000_000_000_000, blockSize: 1024}, 1024)
	short := mk(blockHeader{key: key, etag: "", offset: 8192, objSize: 8192 + 300, blockSize: 4096}, 300)
	multi := mk(blockHeader{key: "a/manifest/00000000000000000007.db", etag: `"d41d8cd98f00b204e9800998ecf8427e"`, offset: 0, objSize: 4096, blockSize: 4096}, 4096)
	torn := bytes.Clone(whole[:len(whole)-10])
	badHeader := bytes.Clone(whole)
	badHeader[headerFixed+2] ^= 1
	badUnit := bytes.Clone(multi)
	badUnit[len(badUnit)-1] ^= 0x80
	return map[string][]byte{
		"seed-whole-1k": whole, "seed-short-last": short, "seed-manifest-4k": multi,
		"seed-torn": torn, "seed-bad-header": badHeader, "seed-bad-unit": badUnit,
		"seed-empty": {}, "seed-magic-only": []byte(blockMagic),
	}
}

// FuzzDecodeBlock: the block file decoder never panics; a file it accepts
// decodes to data that re-encodes to exactly the same file; every range of
// an accepted file reads back the same bytes or fails its check.
func FuzzDecodeBlock(f *testing.F) {
	for _, b := range seedBlocks() {
		f.Add(b, uint16(0), uint16(100))
	}
	f.Fuzz(func(t *testing.T, b []byte, off, length uint16) {
		h, err := decodeHeader(b[:min(len(b), maxHeaderLen)], int64(len(b)))
		if err != nil {
			return
		}
		hl := h.headerLen()
		data := make([]byte, h.n)
		if err := checkUnits(b[hl:], h.hash, 0, data); err != nil {
			return // a damaged unit: caught, as on a read
		}
		h2 := h
		if again := appendBlock(nil, &h2, data); !bytes.Equal(again, b) || h2.hash != h.hash {
			t.Fatalf("accepted file does not re-encode to itself")
		}
		o := int(off) % h.n
		n := 1 + int(length)%(h.n-o)
		fileOff, span := unitSpan(hl, h.n, o, n)
		dst := make([]byte, n)
		if err := checkUnits(b[fileOff:fileOff+int64(span)], h.hash, o, dst); err != nil {
			t.Fatalf("range [%d, %d) of a verified block fails: %v", o, o+n, err)
		}
		if !bytes.Equal(dst, data[o:o+n]) {
			t.Fatalf("range [%d, %d) reads other bytes", o, o+n)
		}
	})
}

// FuzzLoadBlock: whatever file New finds in its directory (under the name
// its header asks for, so the loader looks at it closely), New neither
// fails nor panics, counts exactly the file it kept, and a read of a kept
// block returns its data or refetches, never wrong bytes.
func FuzzLoadBlock(f *testing.F) {
	for _, b := range seedBlocks() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		cfg := Config{Dir: dir, Cacheable: cacheAll, ReadAhead: -1}
		name := filepath.Join(dir, "blocks", "00", "0000000000000000-0-1.blk")
		h, herr := decodeHeader(b[:min(len(b), maxHeaderLen)], int64(len(b)))
		if herr == nil {
			cfg.BlockSize = h.blockSize
			khash := xxhash.Sum64String(h.key)
			name = filepath.Join(dir, "blocks", fmt.Sprintf("%02x", khash>>56), fmt.Sprintf("%016x-%x-1.blk", khash, h.offset/h.blockSize))
		}
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, b, 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := New(emptyStore{}, cfg) // a refetch finds nothing
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		defer c.Close()
		st := c.Stats()
		if st.Entries+st.Discarded != 1 || (herr != nil && st.Entries != 0) {
			t.Fatalf("%d entries, %d discarded, header error %v", st.Entries, st.Discarded, herr)
		}
		checkAccounting(t, c)
		if st.Entries == 0 {
			return
		}
		want := make([]byte, h.n)
		verr := checkUnits(b[h.headerLen():], h.hash, 0, want)
		got := make([]byte, h.n)
		n, err := c.ReadAt(t.Context(), h.key, got, h.offset)
		switch {
		case verr == nil && (err != nil || n != h.n || !bytes.Equal(got, want)):
			t.Fatalf("a valid block reads as %d bytes, %v", n, err)
		case verr != nil && err == nil:
			t.Fatalf("a block failing its check was returned")
		}
	})
}

// emptyStore holds nothing.
type emptyStore struct{}

func (emptyStore) Put(context.Context, string, io.Reader, remote.PutOptions) (remote.PutResult, error) {
	return remote.PutResult{}, errors.ErrUnsupported
}
func (emptyStore) Get(_ context.Context, key string, _, _ int64) (io.ReadCloser, remote.ObjectInfo, error) {
	return nil, remote.ObjectInfo{}, fmt.Errorf("%q: %w", key, remote.ErrNotFound)
}
func (emptyStore) Head(_ context.Context, key string) (remote.ObjectInfo, error) {
	return remote.ObjectInfo{}, fmt.Errorf("%q: %w", key, remote.ErrNotFound)
}
func (emptyStore) Delete(context.Context, string) error { return nil }
func (emptyStore) List(context.Context, string, func(remote.ObjectInfo) error) error {
	return nil
}

// TestWriteFuzzCorpus regenerates testdata/fuzz from seedBlocks when
// BOP_WRITE_CORPUS=1 (after a format change).
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("BOP_WRITE_CORPUS") != "1" {
		t.Skip("set BOP_WRITE_CORPUS=1 to rewrite testdata/fuzz")
	}
	for name, b := range seedBlocks() {
		for target, extra := range map[string]string{"FuzzDecodeBlock": "uint16(0)\nuint16(100)\n", "FuzzLoadBlock": ""} {
			dir := filepath.Join("testdata", "fuzz", target)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n%s", b, extra)
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
