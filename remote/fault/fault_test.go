package fault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fsstore"
	"github.com/bopstore/bop/remote/storetest"
)

func newInner(t *testing.T) remote.Store {
	t.Helper()
	s, err := fsstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestConformance: with no faults configured the wrapper is a correct
// Store.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) remote.Store { return New(newInner(t), Config{Seed: 1}) }, storetest.Options{})
}

func put(t *testing.T, s remote.Store, key, body string, opts remote.PutOptions) (remote.PutResult, error) {
	t.Helper()
	opts.Size = int64(len(body))
	return s.Put(t.Context(), key, strings.NewReader(body), opts)
}

func get(t *testing.T, s remote.Store, key string) (string, error) {
	t.Helper()
	rc, _, err := s.Get(t.Context(), key, 0, -1)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return string(b), err
}

func TestLatency(t *testing.T) {
	s := New(newInner(t), Config{Latency: map[Op]time.Duration{OpHead: 40 * time.Millisecond}})
	start := time.Now()
	s.Head(t.Context(), "k")
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Fatalf("Head took %v with 40ms injected latency", d)
	}
	s.SetLatency(OpPut, 30*time.Millisecond)
	start = time.Now()
	if _, err := put(t, s, "k", "v", remote.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("Put took %v with 30ms injected latency", d)
	}
	// Cancelling ctx ends the wait with the ctx error, and the call does
	// not happen.
	s.SetLatency(OpDelete, time.Hour)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := s.Delete(ctx, "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Delete during a cancelled latency: %v", err)
	}
	if got, err := get(t, s.Inner(), "k"); err != nil || got != "v" {
		t.Fatalf("the delete reached the store: %q, %v", got, err)
	}
}

// outcomes runs n Heads and records which failed with ErrInjected.
func outcomes(t *testing.T, s *Store, n int) []bool {
	out := make([]bool, n)
	for i := range out {
		_, err := s.Head(t.Context(), "missing")
		switch {
		case errors.Is(err, ErrInjected):
			out[i] = true
		case !errors.Is(err, remote.ErrNotFound):
			t.Fatalf("Head: %v", err)
		}
	}
	return out
}

func TestErrorRateSeeded(t *testing.T) {
	inner := newInner(t)
	cfg := Config{Seed: 42, ErrorRate: map[Op]float64{OpHead: 0.5}}
	a, b := outcomes(t, New(inner, cfg), 200), outcomes(t, New(inner, cfg), 200)
	cfg.Seed = 43
	c := outcomes(t, New(inner, cfg), 200)
	failed := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("same seed, different outcome at call %d", i)
		}
		if a[i] {
			failed++
		}
	}
	if fmt.Sprint(a) == fmt.Sprint(c) {
		t.Fatal("different seeds, same outcomes")
	}
	if failed < 60 || failed > 140 {
		t.Fatalf("%d of 200 calls failed at rate 0.5", failed)
	}
	// Rate 1 fails everything, 0 nothing; other operations are unaffected.
	s := New(inner, Config{ErrorRate: map[Op]float64{OpGet: 1}})
	for range 20 {
		if _, _, err := s.Get(t.Context(), "x", 0, -1); !errors.Is(err, ErrInjected) {
			t.Fatalf("Get at rate 1: %v", err)
		}
	}
	if _, err := put(t, s, "x", "y", remote.PutOptions{}); err != nil {
		t.Fatalf("Put with only Get failing: %v", err)
	}
	s.SetErrorRate(OpGet, 0)
	if got, err := get(t, s, "x"); err != nil || got != "y" {
		t.Fatalf("Get at rate 0: %q, %v", got, err)
	}
}

func TestFailNth(t *testing.T) {
	for _, sticky := range []bool{false, true} {
		t.Run(fmt.Sprint("sticky=", sticky), func(t *testing.T) {
			s := New(newInner(t), Config{})
			if _, err := put(t, s, "a/1", "x", remote.PutOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := s.Inject(Fault{Kind: Fail, Op: OpGet, Prefix: "a/", Nth: 3, Sticky: sticky}); err != nil {
				t.Fatal(err)
			}
			var failed []int
			for i := 1; i <= 6; i++ {
				// Calls outside the prefix neither fail nor count.
				if _, err := get(t, s, "b/1"); !errors.Is(err, remote.ErrNotFound) {
					t.Fatalf("Get outside the prefix: %v", err)
				}
				_, err := get(t, s, "a/1")
				if errors.Is(err, ErrInjected) {
					failed = append(failed, i)
				} else if err != nil {
					t.Fatal(err)
				}
			}
			want := "[3]"
			if sticky {
				want = "[3 4 5 6]"
			}
			if fmt.Sprint(failed) != want {
				t.Fatalf("failed calls %v, want %s", failed, want)
			}
			s.ClearFaults()
			if _, err := get(t, s, "a/1"); err != nil {
				t.Fatalf("after ClearFaults: %v", err)
			}
		})
	}
}

// TestFailDoesNotReachStore: a failed put stores nothing.
func TestFailDoesNotReachStore(t *testing.T) {
	s := New(newInner(t), Config{})
	s.Inject(Fault{Kind: Fail, Op: OpPut})
	if _, err := put(t, s, "k", "v", remote.PutOptions{}); !errors.Is(err, ErrInjected) {
		t.Fatalf("Put: %v", err)
	}
	if _, err := s.Inner().Head(t.Context(), "k"); !errors.Is(err, remote.ErrNotFound) {
		t.Fatalf("failed put reached the store: %v", err)
	}
}

// TestLoseResponse: the put lands but its caller sees an error; a retry
// of the create then meets its own object (ErrPrecondition) — the case a
// log writer must resolve by reading the record back.
func TestLoseResponse(t *testing.T) {
	s := New(newInner(t), Config{})
	if err := s.Inject(Fault{Kind: LoseResponse, Op: OpPut, Prefix: "log/"}); err != nil {
		t.Fatal(err)
	}
	_, err := put(t, s, "log/1", "record", remote.PutOptions{IfNoneMatch: true})
	if !errors.Is(err, ErrInjected) {
		t.Fatalf("Put with a lost response: %v", err)
	}
	if got, err := get(t, s, "log/1"); err != nil || got != "record" {
		t.Fatalf("the put did not land: %q, %v", got, err)
	}
	if _, err := put(t, s, "log/1", "record", remote.PutOptions{IfNoneMatch: true}); !errors.Is(err, remote.ErrPrecondition) {
		t.Fatalf("retry: %v; want ErrPrecondition", err)
	}
	// Lost delete responses: deleted all the same.
	s.Inject(Fault{Kind: LoseResponse, Op: OpDelete})
	if err := s.Delete(t.Context(), "log/1"); !errors.Is(err, ErrInjected) {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Head(t.Context(), "log/1"); !errors.Is(err, remote.ErrNotFound) {
		t.Fatalf("the delete did not land: %v", err)
	}
}

func TestTruncate(t *testing.T) {
	s := New(newInner(t), Config{})
	body := strings.Repeat("0123456789", 1000)
	if _, err := put(t, s, "obj", body, remote.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	// Clean EOF: a short body that looks complete; only the size tells.
	s.Inject(Fault{Kind: TruncateEOF, Op: OpGet, Keep: 1234})
	rc, info, err := s.Get(t.Context(), "obj", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || len(b) != 1234 || string(b) != body[:1234] || info.Size != int64(len(body)) {
		t.Fatalf("TruncateEOF: %d bytes, %v, info size %d", len(b), err, info.Size)
	}
	// Error: the cut is reported.
	s.Inject(Fault{Kind: TruncateError, Op: OpGet, Keep: 100})
	rc, _, err = s.Get(t.Context(), "obj", 50, 1000)
	if err != nil {
		t.Fatal(err)
	}
	b, err = io.ReadAll(rc)
	rc.Close()
	if !errors.Is(err, ErrInjected) || !errors.Is(err, io.ErrUnexpectedEOF) || string(b) != body[50:150] {
		t.Fatalf("TruncateError: %d bytes, %v", len(b), err)
	}
	// One-shot: the next Get is whole.
	if got, err := get(t, s, "obj"); err != nil || got != body {
		t.Fatalf("Get after the one-shot truncations: %d bytes, %v", len(got), err)
	}
	// A body no longer than Keep is not cut, in either mode.
	for _, k := range []Kind{TruncateError, TruncateEOF} {
		s.Inject(Fault{Kind: k, Op: OpGet, Keep: 10})
		rc, _, err := s.Get(t.Context(), "obj", 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || string(b) != body[:10] {
			t.Fatalf("kind %d on a body of Keep bytes: %q, %v", k, b, err)
		}
	}
	if err := s.Inject(Fault{Kind: TruncateEOF, Op: OpPut}); err == nil {
		t.Fatal("truncation of a put accepted")
	}
	if err := s.Inject(Fault{Kind: 99, Op: OpGet}); err == nil {
		t.Fatal("unknown kind accepted")
	}
	if err := s.Inject(Fault{Kind: Fail, Op: 99}); err == nil {
		t.Fatal("unknown op accepted")
	}
}

// TestIgnoreConditions makes a store that does not enforce conditional
// writes: two creates of one key both succeed, a stale If-Match wins.
func TestIgnoreConditions(t *testing.T) {
	s := New(newInner(t), Config{IgnoreConditions: true})
	r1, err := put(t, s, "probe", "one", remote.PutOptions{IfNoneMatch: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := put(t, s, "probe", "two", remote.PutOptions{IfNoneMatch: true}); err != nil {
		t.Fatalf("second create with conditions ignored: %v", err)
	}
	if _, err := put(t, s, "probe", "three", remote.PutOptions{IfMatch: r1.ETag}); err != nil {
		t.Fatalf("stale If-Match with conditions ignored: %v", err)
	}
	if got, _ := get(t, s, "probe"); got != "three" {
		t.Fatalf("content %q", got)
	}
	s.SetIgnoreConditions(false)
	if _, err := put(t, s, "probe", "four", remote.PutOptions{IfNoneMatch: true}); !errors.Is(err, remote.ErrPrecondition) {
		t.Fatalf("create with conditions enforced again: %v", err)
	}
}

func TestOutage(t *testing.T) {
	s := New(newInner(t), Config{})
	big := strings.Repeat("x", 100_000)
	if _, err := put(t, s, "k", big, remote.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	rc, _, err := s.Get(t.Context(), "k", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := rc.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	s.SetOutage(true)
	if _, err := io.ReadAll(rc); !errors.Is(err, ErrInjected) {
		t.Fatalf("reading an open body during an outage: %v", err)
	}
	calls := map[string]error{}
	_, calls["put"] = put(t, s, "k2", "v", remote.PutOptions{})
	_, _, calls["get"] = s.Get(t.Context(), "k", 0, -1)
	_, calls["head"] = s.Head(t.Context(), "k")
	calls["delete"] = s.Delete(t.Context(), "k")
	calls["list"] = s.List(t.Context(), "", func(remote.ObjectInfo) error { return nil })
	for op, err := range calls {
		if !errors.Is(err, ErrInjected) {
			t.Errorf("%s during the outage: %v", op, err)
		}
	}
	// Invalid keys are still reported as such.
	if _, err := s.Head(t.Context(), "/bad"); !errors.Is(err, remote.ErrInvalidKey) {
		t.Errorf("bad key during the outage: %v", err)
	}
	s.SetOutage(false)
	if got, err := get(t, s, "k"); err != nil || got != big {
		t.Fatalf("after the outage: %d bytes, %v", len(got), err)
	}
	if _, err := s.Head(t.Context(), "k2"); !errors.Is(err, remote.ErrNotFound) {
		t.Fatalf("a put during the outage landed: %v", err)
	}
}

func TestStats(t *testing.T) {
	s := New(newInner(t), Config{})
	ctx := t.Context()
	if _, err := put(t, s, "a", strings.Repeat("z", 100), remote.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := put(t, s, "a", "x", remote.PutOptions{IfNoneMatch: true}); !errors.Is(err, remote.ErrPrecondition) {
		t.Fatal(err)
	}
	if got, err := get(t, s, "a"); err != nil || len(got) != 100 {
		t.Fatal(err)
	}
	rc, _, err := s.Get(ctx, "a", 10, 20)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(rc)
	rc.Close()
	s.Get(ctx, "missing", 0, -1)
	s.Head(ctx, "a")
	s.Delete(ctx, "a")
	s.List(ctx, "", func(remote.ObjectInfo) error { return nil })
	s.Head(ctx, "//bad")
	st := s.Stats()
	want := Stats{
		Put:    OpStats{Requests: 2, BytesIn: 101, Errors: 1},
		Get:    OpStats{Requests: 3, BytesOut: 120, Errors: 1},
		Head:   OpStats{Requests: 2, Errors: 1},
		Delete: OpStats{Requests: 1},
		List:   OpStats{Requests: 1},
	}
	// The losing create may or may not read its body before failing.
	if st.Put.BytesIn == 100 {
		want.Put.BytesIn = 100
	}
	if st != want {
		t.Fatalf("Stats = %+v\nwant %+v", st, want)
	}
	if tot := st.Total(); tot.Requests != 9 || tot.Errors != 3 || st.Op(OpGet) != st.Get {
		t.Fatalf("Total = %+v", tot)
	}
	s.Reset()
	if st := s.Stats(); st != (Stats{}) {
		t.Fatalf("after Reset: %+v", st)
	}
	// A truncated body with an error counts one error on Get.
	put(t, s, "b", strings.Repeat("y", 1000), remote.PutOptions{})
	s.Inject(Fault{Kind: TruncateError, Op: OpGet, Keep: 10})
	get(t, s, "b")
	if st := s.Stats().Get; st.Requests != 1 || st.BytesOut != 10 || st.Errors != 1 {
		t.Fatalf("truncated Get: %+v", st)
	}
}

// TestConcurrent: counters and faults under concurrent use (run with
// -race): every call is counted, and a one-shot fault fires exactly once.
func TestConcurrent(t *testing.T) {
	s := New(newInner(t), Config{Seed: 3, ErrorRate: map[Op]float64{OpHead: 0.3}})
	if err := s.Inject(Fault{Kind: Fail, Op: OpPut, Nth: 57}); err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 25
	var wg sync.WaitGroup
	var mu sync.Mutex
	injected := 0
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				key := fmt.Sprintf("c/%d/%d", w, i)
				_, err := s.Put(t.Context(), key, bytes.NewReader([]byte("abcd")), remote.PutOptions{Size: 4})
				if errors.Is(err, ErrInjected) {
					mu.Lock()
					injected++
					mu.Unlock()
				} else if err != nil {
					t.Error(err)
				}
				s.Head(t.Context(), key)
			}
		})
	}
	wg.Wait()
	st := s.Stats()
	if st.Put.Requests != workers*each || st.Head.Requests != workers*each {
		t.Fatalf("Stats = %+v; want %d puts and heads", st, workers*each)
	}
	if injected != 1 || st.Put.Errors != 1 {
		t.Fatalf("the one-shot fault fired %d times (errors counted %d)", injected, st.Put.Errors)
	}
	if st.Put.BytesIn != 4*(workers*each-1) {
		t.Fatalf("BytesIn = %d; want %d", st.Put.BytesIn, 4*(workers*each-1))
	}
}
