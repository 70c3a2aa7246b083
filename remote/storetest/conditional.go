package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/bopstore/bop/remote"
)

// testIfNoneMatch: create-if-absent succeeds once; a second create fails
// with ErrPrecondition and leaves the content alone; after a Delete the key
// can be created again.
func testIfNoneMatch(t *testing.T, s remote.Store, opts Options) {
	a, b := []byte("first"), []byte("second")
	r1 := mustPut(t, s, "cond/new", a, remote.PutOptions{IfNoneMatch: true, Size: -1})
	mustContent(t, s, "cond/new", a, r1.ETag)
	for _, size := range []int64{-1, int64(len(b))} {
		_, err := s.Put(ctxT(t), "cond/new", bytes.NewReader(b), remote.PutOptions{IfNoneMatch: true, Size: size})
		if !errors.Is(err, remote.ErrPrecondition) {
			t.Fatalf("second IfNoneMatch Put: %v; want ErrPrecondition", err)
		}
	}
	mustContent(t, s, "cond/new", a, r1.ETag)
	// An empty object exists too.
	mustPut(t, s, "cond/empty", nil, remote.PutOptions{IfNoneMatch: true, Size: 0})
	if _, err := s.Put(ctxT(t), "cond/empty", nil, remote.PutOptions{IfNoneMatch: true, Size: 0}); !errors.Is(err, remote.ErrPrecondition) {
		t.Fatalf("IfNoneMatch over an empty object: %v; want ErrPrecondition", err)
	}
	if err := s.Delete(ctxT(t), "cond/new"); err != nil {
		t.Fatal(err)
	}
	r2 := mustPut(t, s, "cond/new", b, remote.PutOptions{IfNoneMatch: true, Size: -1})
	mustContent(t, s, "cond/new", b, r2.ETag)
}

// testIfMatch: replace-if-match succeeds with the current ETag, and fails
// with ErrPrecondition with a stale ETag, a made-up one, or on a missing key.
func testIfMatch(t *testing.T, s remote.Store, opts Options) {
	v1, v2, v3 := []byte("version one"), []byte("version two"), []byte("version three")
	r1 := mustPut(t, s, "cond/m", v1, remote.PutOptions{Size: -1})
	r2 := mustPut(t, s, "cond/m", v2, remote.PutOptions{IfMatch: r1.ETag, Size: int64(len(v2))})
	if r2.ETag == r1.ETag {
		t.Fatalf("IfMatch replacement kept the ETag %q", r1.ETag)
	}
	mustContent(t, s, "cond/m", v2, r2.ETag)
	for _, etag := range []string{r1.ETag, "nonsense", `"0123456789abcdef0123456789abcdef"`, "*"} {
		_, err := s.Put(ctxT(t), "cond/m", bytes.NewReader(v3), remote.PutOptions{IfMatch: etag, Size: -1})
		if !errors.Is(err, remote.ErrPrecondition) {
			t.Errorf("IfMatch %q (stale): %v; want ErrPrecondition", etag, err)
		}
	}
	mustContent(t, s, "cond/m", v2, r2.ETag)
	// Chained replacements, each from the previous ETag.
	prev := r2
	for i := range 3 {
		body := fmt.Appendf(nil, "chain %d", i)
		prev = mustPut(t, s, "cond/m", body, remote.PutOptions{IfMatch: prev.ETag, Size: -1})
		mustContent(t, s, "cond/m", body, prev.ETag)
	}
	// A missing key never matches, not even an ETag it once had.
	for _, etag := range []string{r1.ETag, prev.ETag} {
		_, err := s.Put(ctxT(t), "cond/missing", bytes.NewReader(v3), remote.PutOptions{IfMatch: etag, Size: -1})
		if !errors.Is(err, remote.ErrPrecondition) {
			t.Errorf("IfMatch on a missing key: %v; want ErrPrecondition", err)
		}
	}
	mustAbsent(t, s, "cond/missing")
	if err := s.Delete(ctxT(t), "cond/m"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctxT(t), "cond/m", bytes.NewReader(v3), remote.PutOptions{IfMatch: prev.ETag, Size: -1}); !errors.Is(err, remote.ErrPrecondition) {
		t.Errorf("IfMatch on a deleted key: %v; want ErrPrecondition", err)
	}
	mustAbsent(t, s, "cond/m")
}

// testBothConditions: IfNoneMatch together with IfMatch is a caller error
// and stores nothing.
func testBothConditions(t *testing.T, s remote.Store, opts Options) {
	r := mustPut(t, s, "cond/both", []byte("a"), remote.PutOptions{Size: 1})
	_, err := s.Put(ctxT(t), "cond/both", bytes.NewReader([]byte("b")), remote.PutOptions{IfNoneMatch: true, IfMatch: r.ETag, Size: 1})
	if err == nil {
		t.Fatal("Put with IfNoneMatch and IfMatch succeeded")
	}
	mustContent(t, s, "cond/both", []byte("a"), r.ETag)
	_, err = s.Put(ctxT(t), "cond/both-new", bytes.NewReader([]byte("b")), remote.PutOptions{IfNoneMatch: true, IfMatch: r.ETag, Size: 1})
	if err == nil {
		t.Fatal("Put with IfNoneMatch and IfMatch succeeded on a new key")
	}
	mustAbsent(t, s, "cond/both-new")
}

const racers = 16

// race runs fn in racers goroutines released at once and returns each
// one's result and error.
func race(fn func(i int) (remote.PutResult, error)) ([]remote.PutResult, []error) {
	results := make([]remote.PutResult, racers)
	errs := make([]error, racers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() {
			<-start
			results[i], errs[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return results, errs
}

// oneWinner checks that exactly one racer succeeded, that every other one
// lost with ErrPrecondition, and that the stored object is the winner's.
func oneWinner(t *testing.T, s remote.Store, key string, results []remote.PutResult, errs []error, bodies [][]byte) {
	t.Helper()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("%q: racers %d and %d both won", key, winner, i)
			}
			winner = i
		case !errors.Is(err, remote.ErrPrecondition):
			t.Errorf("%q: racer %d failed with %v; want ErrPrecondition", key, i, err)
		}
	}
	if winner < 0 {
		t.Fatalf("%q: no racer won", key)
	}
	mustContent(t, s, key, bodies[winner], results[winner].ETag)
}

func racerBodies(round int) [][]byte {
	bodies := make([][]byte, racers)
	for i := range bodies {
		// Different sizes and contents, so a mixed-up result cannot
		// pass for the winner's.
		bodies[i] = patternBytes(uint64(round*racers+i+1)<<8, int64(1000+97*i))
	}
	return bodies
}

// testRaceIfNoneMatch: 16 goroutines create one key at once; exactly one
// wins and the stored content is the winner's.
func testRaceIfNoneMatch(t *testing.T, s remote.Store, opts Options) {
	for round := range 4 {
		key := fmt.Sprintf("race/create-%d", round)
		bodies := racerBodies(round)
		results, errs := race(func(i int) (remote.PutResult, error) {
			return s.Put(ctxT(t), key, bytes.NewReader(bodies[i]), remote.PutOptions{IfNoneMatch: true, Size: int64(len(bodies[i]))})
		})
		oneWinner(t, s, key, results, errs, bodies)
	}
}

// testRaceIfMatch: 16 goroutines replace one key from the same ETag at
// once; exactly one wins and the stored content is the winner's.
func testRaceIfMatch(t *testing.T, s remote.Store, opts Options) {
	key := "race/replace"
	prev := mustPut(t, s, key, []byte("initial"), remote.PutOptions{Size: -1})
	for round := range 4 {
		bodies := racerBodies(round + 10)
		etag := prev.ETag
		results, errs := race(func(i int) (remote.PutResult, error) {
			return s.Put(ctxT(t), key, bytes.NewReader(bodies[i]), remote.PutOptions{IfMatch: etag, Size: -1})
		})
		oneWinner(t, s, key, results, errs, bodies)
		for i, err := range errs {
			if err == nil {
				prev = results[i]
			}
		}
	}
}

// testConcurrentKeys: goroutines put, read and delete their own keys in
// shared folders at once, so folder creation in one races folder removal
// in another (on a file system, Delete removes emptied folders).
func testConcurrentKeys(t *testing.T, s remote.Store, opts Options) {
	const workers, rounds = 8, 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				keys := []string{
					fmt.Sprintf("cc/shared/w%d-r%d", w, r),
					fmt.Sprintf("cc/deep/x/y/w%d", w),
					fmt.Sprintf("cc/deep/x/w%d/z", w),
				}
				for i, key := range keys {
					body := patternBytes(uint64(w*1000+r*10+i), int64(100+w))
					if _, err := s.Put(ctxT(t), key, bytes.NewReader(body), remote.PutOptions{Size: -1}); err != nil {
						errs <- fmt.Errorf("Put(%q): %w", key, err)
						return
					}
					got, _, err := getAll(t, s, key, 0, -1)
					if err != nil || !bytes.Equal(got, body) {
						errs <- fmt.Errorf("Get(%q) = %d bytes, %v; want %d bytes", key, len(got), err, len(body))
						return
					}
					if err := s.Delete(ctxT(t), key); err != nil {
						errs <- fmt.Errorf("Delete(%q): %w", key, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if keys := listKeys(t, s, ""); len(keys) != 0 {
		t.Errorf("keys left after every delete: %q", keys)
	}
}
