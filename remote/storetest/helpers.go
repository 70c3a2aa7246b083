package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/bopstore/bop/remote"
	"github.com/cespare/xxhash/v2"
)

// pattern is a deterministic byte stream: byte i of stream seed is a
// function of (seed, i) alone, so an object of any size can be written and
// verified without holding it in memory, and two seeds never agree for long.
type pattern struct {
	seed uint64
	off  int64
	size int64
}

func newPattern(seed uint64, size int64) *pattern { return &pattern{seed: seed, size: size} }

func (p *pattern) Read(b []byte) (int, error) {
	if p.off >= p.size {
		return 0, io.EOF
	}
	if rest := p.size - p.off; int64(len(b)) > rest {
		b = b[:rest]
	}
	fillPattern(p.seed, p.off, b)
	p.off += int64(len(b))
	return len(b), nil
}

// fillPattern writes bytes [off, off+len(b)) of stream seed into b.
func fillPattern(seed uint64, off int64, b []byte) {
	pos := uint64(off)
	for i := 0; i < len(b); {
		v := splitmix(seed ^ (pos>>3)*0x9e3779b97f4a7c15)
		for sh := pos & 7; sh < 8 && i < len(b); sh++ {
			b[i] = byte(v >> (8 * sh))
			i++
			pos++
		}
	}
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// patternBytes returns the whole stream; for small objects only.
func patternBytes(seed uint64, size int64) []byte {
	b := make([]byte, size)
	fillPattern(seed, 0, b)
	return b
}

func patternHash(seed uint64, size int64) uint64 {
	h := xxhash.New()
	if _, err := io.Copy(h, newPattern(seed, size)); err != nil {
		panic(err) // pattern never fails
	}
	return h.Sum64()
}

// verifyPattern reads r to its end and reports the first byte that differs
// from bytes [off, off+size) of stream seed, or a length mismatch.
func verifyPattern(r io.Reader, seed uint64, off, size int64) error {
	buf := make([]byte, 64<<10)
	want := make([]byte, len(buf))
	var got int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if got+int64(n) > size {
				return fmt.Errorf("body longer than the expected %d bytes", size)
			}
			fillPattern(seed, off+got, want[:n])
			if i := firstDiff(buf[:n], want[:n]); i >= 0 {
				return fmt.Errorf("byte %d of the body (object offset %d) differs", got+int64(i), off+got+int64(i))
			}
			got += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read after %d bytes: %w", got, err)
		}
	}
	if got != size {
		return fmt.Errorf("body of %d bytes, want %d", got, size)
	}
	return nil
}

func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return len(a)
}

func ctxT(t *testing.T) context.Context { return t.Context() }

// mustPut stores body under key and checks the result's size and hash.
func mustPut(t *testing.T, s remote.Store, key string, body []byte, opts remote.PutOptions) remote.PutResult {
	t.Helper()
	res, err := s.Put(ctxT(t), key, bytes.NewReader(body), opts)
	if err != nil {
		t.Fatalf("Put(%q, %d bytes, %+v): %v", key, len(body), opts, err)
	}
	checkResult(t, key, res, int64(len(body)), xxhash.Sum64(body))
	return res
}

func checkResult(t *testing.T, key string, res remote.PutResult, size int64, sum uint64) {
	t.Helper()
	if res.Size != size {
		t.Errorf("Put(%q): PutResult.Size = %d, want %d", key, res.Size, size)
	}
	if res.XXH64 != sum {
		t.Errorf("Put(%q): PutResult.XXH64 = %016x, want %016x", key, res.XXH64, sum)
	}
	if res.ETag == "" {
		t.Errorf("Put(%q): empty ETag", key)
	}
}

// getAll reads a range fully.
func getAll(t *testing.T, s remote.Store, key string, off, length int64) ([]byte, remote.ObjectInfo, error) {
	t.Helper()
	rc, info, err := s.Get(ctxT(t), key, off, length)
	if err != nil {
		return nil, info, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, info, fmt.Errorf("read body: %w", err)
	}
	if err := rc.Close(); err != nil {
		return nil, info, fmt.Errorf("close body: %w", err)
	}
	return b, info, nil
}

// mustContent checks that key holds exactly want, with ETag etag (if set).
func mustContent(t *testing.T, s remote.Store, key string, want []byte, etag string) {
	t.Helper()
	got, info, err := getAll(t, s, key, 0, -1)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Get(%q): %d bytes (xxh64 %016x), want %d bytes (xxh64 %016x)",
			key, len(got), xxhash.Sum64(got), len(want), xxhash.Sum64(want))
	}
	if info.Size != int64(len(want)) {
		t.Errorf("Get(%q): ObjectInfo.Size = %d, want %d", key, info.Size, len(want))
	}
	if etag != "" && info.ETag != etag {
		t.Errorf("Get(%q): ETag %q, want %q", key, info.ETag, etag)
	}
	if etag != "" {
		h, err := s.Head(ctxT(t), key)
		if err != nil {
			t.Fatalf("Head(%q): %v", key, err)
		}
		if h.ETag != etag {
			t.Errorf("Head(%q): ETag %q, want %q", key, h.ETag, etag)
		}
	}
}

// mustAbsent checks that key does not exist, by Head, Get and List.
func mustAbsent(t *testing.T, s remote.Store, key string) {
	t.Helper()
	if info, err := s.Head(ctxT(t), key); !errors.Is(err, remote.ErrNotFound) {
		t.Errorf("Head(%q) = %+v, %v; want ErrNotFound", key, info, err)
	}
	if rc, _, err := s.Get(ctxT(t), key, 0, -1); !errors.Is(err, remote.ErrNotFound) {
		if err == nil {
			rc.Close()
		}
		t.Errorf("Get(%q): %v; want ErrNotFound", key, err)
	}
	keys := listKeys(t, s, "")
	for _, k := range keys {
		if k == key {
			t.Errorf("List shows %q, which must not exist", key)
		}
	}
}

func listKeys(t *testing.T, s remote.Store, prefix string) []string {
	t.Helper()
	var keys []string
	err := s.List(ctxT(t), prefix, func(info remote.ObjectInfo) error {
		keys = append(keys, info.Key)
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return keys
}

// errReader returns data, then err (with the last bytes when withLast).
type errReader struct {
	data     []byte
	err      error
	withLast bool
}

func (r *errReader) Read(b []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(b, r.data)
	r.data = r.data[n:]
	if len(r.data) == 0 && r.withLast {
		return n, r.err
	}
	return n, nil
}
