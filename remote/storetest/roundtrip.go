package storetest

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"testing/iotest"

	"github.com/bopstore/bop/remote"
	"github.com/cespare/xxhash/v2"
)

// Sizes around the buffer sizes implementations commonly use (4 KiB pages,
// io.Copy's 32 KiB, 64 KiB, 256 KiB and 1 MiB chunks): off-by-one errors in a
// copy loop show up at exactly these lengths.
var roundTripSizes = []int64{
	0, 1, 2, 7, 8, 9, 4095, 4096, 4097,
	32<<10 - 1, 32 << 10, 32<<10 + 1,
	64<<10 - 1, 64<<10 + 1,
	256<<10 - 1, 256<<10 + 1,
	1<<20 - 1, 1<<20 + 1,
}

// testRoundTrip: Put then Get returns the same bytes, with an unknown and
// with the exact size; the PutResult reports the size and the xxhash64.
func testRoundTrip(t *testing.T, s remote.Store, opts Options) {
	for _, size := range roundTripSizes {
		if opts.SkipSlow && size > 256<<10+1 {
			continue
		}
		for _, known := range []bool{false, true} {
			key := fmt.Sprintf("rt/%d-%t", size, known)
			seed := uint64(size)*2 + map[bool]uint64{false: 0, true: 1}[known]
			body := patternBytes(seed, size)
			po := remote.PutOptions{Size: -1}
			if known {
				po.Size = size
			}
			res := mustPut(t, s, key, body, po)
			mustContent(t, s, key, body, res.ETag)
		}
	}
	// A nil body is an empty one.
	for _, size := range []int64{0, -1} {
		key := fmt.Sprintf("rt/nil%d", size)
		res, err := s.Put(ctxT(t), key, nil, remote.PutOptions{Size: size})
		if err != nil {
			t.Fatalf("Put(%q, nil body, size %d): %v", key, size, err)
		}
		checkResult(t, key, res, 0, xxhash.Sum64(nil))
		mustContent(t, s, key, []byte{}, res.ETag)
	}
}

// testReaderShapes: bodies that deliver data one byte at a time, or return
// their last bytes together with io.EOF (legal for an io.Reader; a copy
// loop that drops data on err != nil loses the tail), or return 0, nil.
func testReaderShapes(t *testing.T, s remote.Store, opts Options) {
	body := patternBytes(7, 10_000)
	shapes := []struct {
		name string
		r    func() io.Reader
	}{
		{"OneByte", func() io.Reader { return iotest.OneByteReader(bytes.NewReader(body)) }},
		{"DataEOF", func() io.Reader { return iotest.DataErrReader(bytes.NewReader(body)) }},
		{"HalfReads", func() io.Reader { return iotest.HalfReader(bytes.NewReader(body)) }},
		{"ZeroReads", func() io.Reader { return &zeroThenData{r: bytes.NewReader(body)} }},
	}
	for _, sh := range shapes {
		for _, size := range []int64{-1, int64(len(body))} {
			key := fmt.Sprintf("shape/%s-%d", sh.name, size)
			res, err := s.Put(ctxT(t), key, sh.r(), remote.PutOptions{Size: size})
			if err != nil {
				t.Fatalf("Put(%q): %v", key, err)
			}
			checkResult(t, key, res, int64(len(body)), xxhash.Sum64(body))
			mustContent(t, s, key, body, res.ETag)
		}
	}
}

// zeroThenData returns (0, nil) before every real read, which io.Reader
// permits; a copy loop must not mistake it for the end.
type zeroThenData struct {
	r    io.Reader
	flip bool
}

func (z *zeroThenData) Read(b []byte) (int, error) {
	z.flip = !z.flip
	if z.flip {
		return 0, nil
	}
	return z.r.Read(b)
}

// testLarge streams an object larger than any sane buffer, with an unknown
// and the exact size, and verifies it without holding it in memory.
func testLarge(t *testing.T, s remote.Store, opts Options) {
	if opts.SkipSlow {
		t.Skip("SkipSlow")
	}
	size := int64(8<<20 + 3)
	if opts.MultipartThreshold > 0 {
		size = 3*opts.MultipartThreshold - 1
	}
	for _, known := range []bool{false, true} {
		key := fmt.Sprintf("large/%t", known)
		seed := uint64(1000)
		if known {
			seed++
		}
		po := remote.PutOptions{Size: -1}
		if known {
			po.Size = size
		}
		res, err := s.Put(ctxT(t), key, newPattern(seed, size), po)
		if err != nil {
			t.Fatalf("Put(%q, %d bytes): %v", key, size, err)
		}
		checkResult(t, key, res, size, patternHash(seed, size))
		checkPatternObject(t, s, key, seed, size, res.ETag)
	}
}

// checkPatternObject verifies a whole pattern object, plus ranges that cross
// 1 MiB boundaries and its last bytes.
func checkPatternObject(t *testing.T, s remote.Store, key string, seed uint64, size int64, etag string) {
	t.Helper()
	rc, info, err := s.Get(ctxT(t), key, 0, -1)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	err = verifyPattern(rc, seed, 0, size)
	rc.Close()
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	if info.Size != size || info.ETag != etag {
		t.Errorf("Get(%q): size %d etag %q, want %d %q", key, info.Size, info.ETag, size, etag)
	}
	for _, r := range [][2]int64{{1<<20 - 5, 10}, {size - 3, -1}, {size / 2, 100_000}} {
		if r[0] < 0 || r[0] > size {
			continue
		}
		want := size - r[0]
		if r[1] >= 0 && r[1] < want {
			want = r[1]
		}
		rc, _, err := s.Get(ctxT(t), key, r[0], r[1])
		if err != nil {
			t.Fatalf("Get(%q, %d, %d): %v", key, r[0], r[1], err)
		}
		err = verifyPattern(rc, seed, r[0], want)
		rc.Close()
		if err != nil {
			t.Fatalf("Get(%q, %d, %d): %v", key, r[0], r[1], err)
		}
	}
}

// testMultipart puts objects around the backend's multipart threshold: just
// below, at, just above, and spanning several parts.
func testMultipart(t *testing.T, s remote.Store, opts Options) {
	if opts.MultipartThreshold <= 0 {
		t.Skip("no MultipartThreshold")
	}
	if opts.SkipSlow {
		t.Skip("SkipSlow")
	}
	th := opts.MultipartThreshold
	for i, size := range []int64{th - 1, th, th + 1, 2*th + 1, 3*th - 1} {
		for _, known := range []bool{false, true} {
			key := fmt.Sprintf("mp/%d-%t", size, known)
			seed := uint64(2000 + 2*i)
			po := remote.PutOptions{Size: -1}
			if known {
				seed++
				po.Size = size
			}
			res, err := s.Put(ctxT(t), key, newPattern(seed, size), po)
			if err != nil {
				t.Fatalf("Put(%q, %d bytes): %v", key, size, err)
			}
			checkResult(t, key, res, size, patternHash(seed, size))
			checkPatternObject(t, s, key, seed, size, res.ETag)
			// A range across the first part boundary.
			if size > th {
				rc, _, err := s.Get(ctxT(t), key, th-7, 14)
				if err != nil {
					t.Fatalf("Get(%q, %d, 14): %v", key, th-7, err)
				}
				err = verifyPattern(rc, seed, th-7, min(14, size-(th-7)))
				rc.Close()
				if err != nil {
					t.Fatalf("Get(%q) across the part boundary: %v", key, err)
				}
			}
		}
	}
}

// testSizeMismatch: a body shorter or longer than the declared size fails
// the Put and stores nothing, neither on a fresh key (which must stay
// creatable) nor over an existing object (which must stay unchanged).
func testSizeMismatch(t *testing.T, s remote.Store, opts Options) {
	type mismatch struct{ declared, actual int64 }
	cases := []mismatch{{0, 1}, {100, 99}, {100, 101}, {1, 0}, {300_000, 299_999}, {300_000, 300_001}}
	if th := opts.MultipartThreshold; th > 0 && !opts.SkipSlow {
		cases = append(cases, mismatch{th + 10, th + 9}, mismatch{th + 10, th + 11}, mismatch{th, th + 1})
	}
	old := patternBytes(3, 1234)
	for i, c := range cases {
		fresh := fmt.Sprintf("size/fresh-%d", i)
		existing := fmt.Sprintf("size/existing-%d", i)
		prev := mustPut(t, s, existing, old, remote.PutOptions{Size: int64(len(old))})
		for _, key := range []string{fresh, existing} {
			for _, cond := range []remote.PutOptions{{}, {IfNoneMatch: true}} {
				if key == existing && cond.IfNoneMatch {
					cond = remote.PutOptions{IfMatch: prev.ETag}
				}
				cond.Size = c.declared
				res, err := s.Put(ctxT(t), key, newPattern(uint64(i), c.actual), cond)
				if err == nil {
					t.Fatalf("Put(%q) of %d bytes declared as %d (%+v) succeeded: %+v", key, c.actual, c.declared, cond, res)
				}
			}
		}
		mustAbsent(t, s, fresh)
		mustContent(t, s, existing, old, prev.ETag)
		// The failed puts left nothing behind that blocks a create.
		body := patternBytes(uint64(i), c.actual)
		mustPut(t, s, fresh, body, remote.PutOptions{IfNoneMatch: true, Size: c.actual})
	}
}
