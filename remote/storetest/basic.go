package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/bopstore/bop/remote"
)

// testRanges: ranged reads at every edge of a 1000-byte object.
func testRanges(t *testing.T, s remote.Store, opts Options) {
	const size = 1000
	body := patternBytes(11, size)
	res := mustPut(t, s, "range/obj", body, remote.PutOptions{Size: size})
	cases := []struct {
		off, length int64
		want        []byte // nil with wantErr
		wantErr     error
	}{
		{0, -1, body, nil},
		{0, size, body, nil},
		{0, 1, body[:1], nil},
		{1, 1, body[1:2], nil},
		{size - 1, 1, body[size-1:], nil},
		{size - 1, -1, body[size-1:], nil},
		{size - 1, 100, body[size-1:], nil},
		{500, 100, body[500:600], nil},
		{990, 100, body[990:], nil}, // shortened to the end
		{0, 5000, body, nil},
		{0, size + 1, body, nil},
		{10, 0, []byte{}, nil},
		{0, 0, []byte{}, nil},
		{size, -1, []byte{}, nil}, // off == size: empty, see remote.Store.Get
		{size, 10, []byte{}, nil},
		{size, 0, []byte{}, nil},
		{size + 1, -1, nil, remote.ErrInvalidRange},
		{size + 1, 1, nil, remote.ErrInvalidRange},
		{5000, 10, nil, remote.ErrInvalidRange},
		{-1, 10, nil, remote.ErrInvalidRange},
		{-1, -1, nil, remote.ErrInvalidRange},
		{-size, size, nil, remote.ErrInvalidRange},
	}
	for _, c := range cases {
		got, info, err := getAll(t, s, "range/obj", c.off, c.length)
		if c.wantErr != nil {
			if !errors.Is(err, c.wantErr) {
				t.Errorf("Get(off %d, length %d) = %d bytes, %v; want %v", c.off, c.length, len(got), err, c.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("Get(off %d, length %d): %v", c.off, c.length, err)
			continue
		}
		if !bytes.Equal(got, c.want) {
			t.Errorf("Get(off %d, length %d) = %d bytes, want %d bytes %s", c.off, c.length, len(got), len(c.want), diffNote(got, c.want))
		}
		if info.Size != size || info.ETag != res.ETag || info.Key != "range/obj" {
			t.Errorf("Get(off %d, length %d): ObjectInfo %+v, want the whole object's (size %d, etag %q)", c.off, c.length, info, size, res.ETag)
		}
	}
}

func diffNote(got, want []byte) string {
	if i := firstDiff(got, want); i >= 0 && i < len(got) && i < len(want) {
		return fmt.Sprintf("(first difference at %d)", i)
	}
	return ""
}

// testRangesEmpty: an empty object reads as empty at offset 0 (even with a
// length), and anything past it is ErrInvalidRange.
func testRangesEmpty(t *testing.T, s remote.Store, opts Options) {
	res := mustPut(t, s, "range/empty", nil, remote.PutOptions{Size: 0})
	for _, r := range [][2]int64{{0, -1}, {0, 0}, {0, 10}} {
		got, info, err := getAll(t, s, "range/empty", r[0], r[1])
		if err != nil || len(got) != 0 {
			t.Errorf("Get(empty, %d, %d) = %d bytes, %v; want empty", r[0], r[1], len(got), err)
		}
		if err == nil && (info.Size != 0 || info.ETag != res.ETag) {
			t.Errorf("Get(empty, %d, %d): ObjectInfo %+v", r[0], r[1], info)
		}
	}
	for _, r := range [][2]int64{{1, -1}, {1, 0}, {-1, -1}} {
		if _, _, err := getAll(t, s, "range/empty", r[0], r[1]); !errors.Is(err, remote.ErrInvalidRange) {
			t.Errorf("Get(empty, %d, %d): %v; want ErrInvalidRange", r[0], r[1], err)
		}
	}
}

// testMissing: Get and Head of a missing key are ErrNotFound (for any
// non-negative range); Delete of a missing key is not an error.
func testMissing(t *testing.T, s remote.Store, opts Options) {
	for _, key := range []string{"missing", "missing/deep/key", "x"} {
		for _, r := range [][2]int64{{0, -1}, {0, 10}, {5000, 10}, {0, 0}} {
			rc, _, err := s.Get(ctxT(t), key, r[0], r[1])
			if err == nil {
				rc.Close()
			}
			if !errors.Is(err, remote.ErrNotFound) {
				t.Errorf("Get(%q, %d, %d): %v; want ErrNotFound", key, r[0], r[1], err)
			}
		}
		if _, err := s.Head(ctxT(t), key); !errors.Is(err, remote.ErrNotFound) {
			t.Errorf("Head(%q): %v; want ErrNotFound", key, err)
		}
		if err := s.Delete(ctxT(t), key); err != nil {
			t.Errorf("Delete(%q) of a missing key: %v", key, err)
		}
	}
	// Delete removes; a second Delete is still fine.
	mustPut(t, s, "del/a", []byte("x"), remote.PutOptions{Size: 1})
	for i := range 2 {
		if err := s.Delete(ctxT(t), "del/a"); err != nil {
			t.Fatalf("Delete #%d: %v", i+1, err)
		}
	}
	mustAbsent(t, s, "del/a")
	// A key that is only a folder of other keys is not an object.
	mustPut(t, s, "folder/child", []byte("y"), remote.PutOptions{Size: 1})
	if _, err := s.Head(ctxT(t), "folder"); !errors.Is(err, remote.ErrNotFound) {
		t.Errorf("Head of a folder: %v; want ErrNotFound", err)
	}
	if rc, _, err := s.Get(ctxT(t), "folder", 0, -1); !errors.Is(err, remote.ErrNotFound) {
		if err == nil {
			rc.Close()
		}
		t.Errorf("Get of a folder: %v; want ErrNotFound", err)
	}
	if err := s.Delete(ctxT(t), "folder"); err != nil {
		t.Errorf("Delete of a folder: %v; want nil (nothing to delete)", err)
	}
	mustContent(t, s, "folder/child", []byte("y"), "")
}

var invalidKeys = []string{
	"", "/", "/a", "a/", "a//b", "a/../b", "../a", "a/..", "..", ".", "a/./b",
	"a b", "a\x00b", "a\\b", "a:b", "é", "a/b\n",
	strings.Repeat("a", remote.MaxKeyLen+1),
	strings.Repeat("a", remote.MaxSegmentLen+1),
}

// testInvalidKeys: every method rejects a bad key with ErrInvalidKey and
// stores nothing.
func testInvalidKeys(t *testing.T, s remote.Store, opts Options) {
	for _, key := range invalidKeys {
		_, err := s.Put(ctxT(t), key, strings.NewReader("x"), remote.PutOptions{Size: 1})
		if !errors.Is(err, remote.ErrInvalidKey) {
			t.Errorf("Put(%q): %v; want ErrInvalidKey", key, err)
		}
		_, err = s.Put(ctxT(t), key, strings.NewReader("x"), remote.PutOptions{Size: 1, IfNoneMatch: true})
		if !errors.Is(err, remote.ErrInvalidKey) {
			t.Errorf("Put(%q, IfNoneMatch): %v; want ErrInvalidKey", key, err)
		}
		rc, _, err := s.Get(ctxT(t), key, 0, -1)
		if err == nil {
			rc.Close()
		}
		if !errors.Is(err, remote.ErrInvalidKey) {
			t.Errorf("Get(%q): %v; want ErrInvalidKey", key, err)
		}
		if _, err := s.Head(ctxT(t), key); !errors.Is(err, remote.ErrInvalidKey) {
			t.Errorf("Head(%q): %v; want ErrInvalidKey", key, err)
		}
		if err := s.Delete(ctxT(t), key); !errors.Is(err, remote.ErrInvalidKey) {
			t.Errorf("Delete(%q): %v; want ErrInvalidKey", key, err)
		}
	}
	for _, prefix := range []string{"/", "/a", "a//b", "a/../b", "a//", "..", "a b"} {
		called := false
		err := s.List(ctxT(t), prefix, func(remote.ObjectInfo) error { called = true; return nil })
		if !errors.Is(err, remote.ErrInvalidKey) || called {
			t.Errorf("List(%q): %v (fn called: %t); want ErrInvalidKey", prefix, err, called)
		}
	}
	if keys := listKeys(t, s, ""); len(keys) != 0 {
		t.Errorf("invalid keys stored objects: %q", keys)
	}
}

// testLongKey: long keys with long segments work. The key stays under
// MaxKeyLen by 128 bytes so that a backend adding its own prefix (S3 with a
// URL prefix) still fits S3's 1024-byte limit.
func testLongKey(t *testing.T, s remote.Store, opts Options) {
	seg := strings.Repeat("k", remote.MaxSegmentLen)
	key := seg + "/" + seg + "/" + seg + "/" + strings.Repeat("z", remote.MaxKeyLen-128-3*(remote.MaxSegmentLen+1))
	if err := remote.ValidateKey(key); err != nil {
		t.Fatal(err)
	}
	res := mustPut(t, s, key, []byte("long"), remote.PutOptions{Size: 4})
	mustContent(t, s, key, []byte("long"), res.ETag)
	if keys := listKeys(t, s, seg+"/"); len(keys) != 1 || keys[0] != key {
		t.Errorf("List: %d keys, want the long key", len(keys))
	}
	if err := s.Delete(ctxT(t), key); err != nil {
		t.Fatal(err)
	}
	mustAbsent(t, s, key)
}

// testReplace: an unconditional Put replaces the object, and the ETag
// changes with every replacement by different content.
func testReplace(t *testing.T, s remote.Store, opts Options) {
	a, b := patternBytes(21, 5000), patternBytes(22, 7000)
	r1 := mustPut(t, s, "rep/k", a, remote.PutOptions{Size: -1})
	r2 := mustPut(t, s, "rep/k", b, remote.PutOptions{Size: -1})
	if r2.ETag == r1.ETag {
		t.Errorf("ETag %q did not change when the content changed", r1.ETag)
	}
	mustContent(t, s, "rep/k", b, r2.ETag)
	// Same size, different content: the ETag must still change.
	c := patternBytes(23, 7000)
	r3 := mustPut(t, s, "rep/k", c, remote.PutOptions{Size: 7000})
	if r3.ETag == r2.ETag {
		t.Errorf("ETag %q did not change for new content of the same size", r2.ETag)
	}
	mustContent(t, s, "rep/k", c, r3.ETag)
	// Replacing with an empty object, then with data again.
	r4 := mustPut(t, s, "rep/k", nil, remote.PutOptions{Size: 0})
	mustContent(t, s, "rep/k", nil, r4.ETag)
	r5 := mustPut(t, s, "rep/k", a, remote.PutOptions{Size: int64(len(a))})
	if r5.ETag == r4.ETag {
		t.Errorf("ETag did not change from the empty object")
	}
	mustContent(t, s, "rep/k", a, r5.ETag)
}

// testHead: Head reports the key, size, the Put's ETag and a plausible
// modification time.
func testHead(t *testing.T, s remote.Store, opts Options) {
	before := time.Now().Add(-time.Hour)
	body := patternBytes(31, 4321)
	res := mustPut(t, s, "head/obj", body, remote.PutOptions{Size: -1})
	info, err := s.Head(ctxT(t), "head/obj")
	if err != nil {
		t.Fatal(err)
	}
	if info.Key != "head/obj" || info.Size != 4321 || info.ETag != res.ETag {
		t.Errorf("Head = %+v; want key head/obj, size 4321, etag %q", info, res.ETag)
	}
	if info.ModTime.Before(before) || info.ModTime.After(time.Now().Add(time.Hour)) {
		t.Errorf("Head: ModTime %v is not within an hour of now", info.ModTime)
	}
	// Head of an empty object.
	res = mustPut(t, s, "head/empty", nil, remote.PutOptions{Size: 0})
	info, err = s.Head(ctxT(t), "head/empty")
	if err != nil || info.Size != 0 || info.ETag != res.ETag {
		t.Errorf("Head(empty) = %+v, %v; want size 0, etag %q", info, err, res.ETag)
	}
}

// testFolderReuse: a name that was a folder of deleted keys can become a
// key, and a deleted key's name can become a folder. (A key and keys below
// it cannot exist at once on a file system; after a delete they must not
// block each other.)
func testFolderReuse(t *testing.T, s remote.Store, opts Options) {
	mustPut(t, s, "fr/a/b/c", []byte("1"), remote.PutOptions{Size: 1})
	if err := s.Delete(ctxT(t), "fr/a/b/c"); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "fr/a/b", []byte("2"), remote.PutOptions{Size: 1})
	mustContent(t, s, "fr/a/b", []byte("2"), "")
	if err := s.Delete(ctxT(t), "fr/a/b"); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "fr/a", []byte("3"), remote.PutOptions{IfNoneMatch: true, Size: 1})
	mustContent(t, s, "fr/a", []byte("3"), "")
	if err := s.Delete(ctxT(t), "fr/a"); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "fr/a/x/y", []byte("4"), remote.PutOptions{IfNoneMatch: true, Size: 1})
	mustContent(t, s, "fr/a/x/y", []byte("4"), "")
	if keys := listKeys(t, s, ""); len(keys) != 1 || keys[0] != "fr/a/x/y" {
		t.Errorf("List = %q; want [fr/a/x/y]", keys)
	}
}

// drain reads r to the end and returns the error that ended it (nil for
// io.EOF).
func drain(r io.Reader) (int64, error) { return io.Copy(io.Discard, r) }
