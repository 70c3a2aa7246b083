package storetest

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/bopstore/bop/remote"
)

// listKeysSet are keys whose byte order differs from a naive directory walk:
// '-' and '.' sort before '/', which sorts before digits and letters, and
// upper case sorts before lower case. No two differ only in case, so the
// set also fits a case-insensitive file system.
var listKeysSet = []string{
	"l/a-b", "l/a.c", "l/a/b", "l/a/c/d", "l/a0", "l/ab", "l/b", "l/C",
	"l/a/c-e", "l/a/c0", "lx/y", "m/x", "k", "l-", "l.z/q",
}

// testList: List returns exactly the keys with the prefix, in byte order,
// with their size and ETag.
func testList(t *testing.T, s remote.Store, opts Options) {
	etags := map[string]string{}
	sizes := map[string]int64{}
	for i, k := range listKeysSet {
		body := patternBytes(uint64(100+i), int64(i*10))
		etags[k] = mustPut(t, s, k, body, remote.PutOptions{Size: int64(len(body))}).ETag
		sizes[k] = int64(len(body))
	}
	for _, prefix := range []string{"", "l", "l/", "l/a", "l/a/", "l/a/c", "l/a/c/", "l/b", "l/C", "lx", "lx/y", "m/", "n", "n/", "l/a/c/d"} {
		var want []string
		for _, k := range listKeysSet {
			if strings.HasPrefix(k, prefix) {
				want = append(want, k)
			}
		}
		slices.Sort(want)
		var got []string
		err := s.List(ctxT(t), prefix, func(info remote.ObjectInfo) error {
			got = append(got, info.Key)
			if info.Size != sizes[info.Key] || info.ETag != etags[info.Key] {
				t.Errorf("List(%q): %q has size %d etag %q, want %d %q", prefix, info.Key, info.Size, info.ETag, sizes[info.Key], etags[info.Key])
			}
			return nil
		})
		if err != nil {
			t.Fatalf("List(%q): %v", prefix, err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("List(%q) = %q\n want %q", prefix, got, want)
		}
	}
	// Deleted keys disappear from listings.
	for _, k := range []string{"l/a/c/d", "l/b"} {
		if err := s.Delete(ctxT(t), k); err != nil {
			t.Fatal(err)
		}
	}
	got := listKeys(t, s, "l/")
	want := []string{"l/C", "l/a-b", "l/a.c", "l/a/b", "l/a/c-e", "l/a/c0", "l/a0", "l/ab"}
	if !slices.Equal(got, want) {
		t.Errorf("List after deletes = %q\n want %q", got, want)
	}
}

// testListStops: an error from fn stops the listing and is returned.
func testListStops(t *testing.T, s remote.Store, opts Options) {
	for _, k := range []string{"s/1", "s/2", "s/3", "s/4"} {
		mustPut(t, s, k, []byte(k), remote.PutOptions{Size: int64(len(k))})
	}
	stop := errors.New("stop here")
	var seen []string
	err := s.List(ctxT(t), "s/", func(info remote.ObjectInfo) error {
		seen = append(seen, info.Key)
		if len(seen) == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Errorf("List returned %v; want the callback's error", err)
	}
	if !slices.Equal(seen, []string{"s/1", "s/2"}) {
		t.Errorf("List called fn for %q after the error; want [s/1 s/2]", seen)
	}
	// An empty store lists nothing, with any prefix.
	if keys := listKeys(t, s, "nothing/"); len(keys) != 0 {
		t.Errorf("List(nothing/) = %q", keys)
	}
}
