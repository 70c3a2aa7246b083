package storetest

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/bopstore/bop/remote"
	"github.com/cespare/xxhash/v2"
)

// testCancelBefore: with a cancelled ctx every method fails with an error
// wrapping context.Canceled, and nothing changes.
func testCancelBefore(t *testing.T, s remote.Store, opts Options) {
	body := patternBytes(41, 3000)
	res := mustPut(t, s, "cancel/existing", body, remote.PutOptions{Size: -1})
	ctx, cancel := context.WithCancel(ctxT(t))
	cancel()

	for _, po := range []remote.PutOptions{{Size: -1}, {Size: 3}, {IfNoneMatch: true, Size: 3}} {
		if _, err := s.Put(ctx, "cancel/new", bytes.NewReader([]byte("abc")), po); !errors.Is(err, context.Canceled) {
			t.Errorf("Put(%+v) with a cancelled ctx: %v; want context.Canceled", po, err)
		}
	}
	if _, err := s.Put(ctx, "cancel/existing", bytes.NewReader([]byte("abc")), remote.PutOptions{IfMatch: res.ETag, Size: 3}); !errors.Is(err, context.Canceled) {
		t.Errorf("Put(IfMatch) with a cancelled ctx: %v; want context.Canceled", err)
	}
	rc, _, err := s.Get(ctx, "cancel/existing", 0, -1)
	if err == nil {
		// A lazy Get may fail on the first Read instead; it must not
		// deliver the object.
		_, err = drain(rc)
		rc.Close()
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Get with a cancelled ctx: %v; want context.Canceled", err)
	}
	if _, err := s.Head(ctx, "cancel/existing"); !errors.Is(err, context.Canceled) {
		t.Errorf("Head with a cancelled ctx: %v; want context.Canceled", err)
	}
	called := false
	if err := s.List(ctx, "", func(remote.ObjectInfo) error { called = true; return nil }); !errors.Is(err, context.Canceled) || called {
		t.Errorf("List with a cancelled ctx: %v (fn called: %t); want context.Canceled", err, called)
	}
	if err := s.Delete(ctx, "cancel/existing"); !errors.Is(err, context.Canceled) {
		t.Errorf("Delete with a cancelled ctx: %v; want context.Canceled", err)
	}
	mustAbsent(t, s, "cancel/new")
	mustContent(t, s, "cancel/existing", body, res.ETag)
}

// cancelAfter delivers a pattern stream and cancels ctx once it has
// delivered n bytes, then keeps delivering: a store that does not watch
// ctx would store the whole object.
type cancelAfter struct {
	p      *pattern
	n      int64
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(b []byte) (int, error) {
	if c.p.off >= c.n {
		c.cancel()
	}
	return c.p.Read(b)
}

// testCancelPutMidStream: cancelling ctx while the body streams fails the
// Put with the ctx error and stores nothing: a fresh key stays creatable,
// an existing object stays unchanged.
func testCancelPutMidStream(t *testing.T, s remote.Store, opts Options) {
	size := int64(4 << 20)
	if opts.SkipSlow {
		size = 1 << 20
	}
	old := patternBytes(51, 2000)
	prev := mustPut(t, s, "cancel/mid-existing", old, remote.PutOptions{Size: -1})
	cases := []struct {
		key string
		po  remote.PutOptions
	}{
		{"cancel/mid-new", remote.PutOptions{Size: -1}},
		{"cancel/mid-new", remote.PutOptions{Size: size}},
		{"cancel/mid-new", remote.PutOptions{IfNoneMatch: true, Size: size}},
		{"cancel/mid-existing", remote.PutOptions{Size: size}},
		{"cancel/mid-existing", remote.PutOptions{IfMatch: prev.ETag, Size: -1}},
	}
	for _, c := range cases {
		ctx, cancel := context.WithCancel(ctxT(t))
		body := &cancelAfter{p: newPattern(52, size), n: 64 << 10, cancel: cancel}
		_, err := s.Put(ctx, c.key, body, c.po)
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Put(%q, %+v) cancelled mid-stream: %v; want context.Canceled", c.key, c.po, err)
		}
	}
	mustAbsent(t, s, "cancel/mid-new")
	mustContent(t, s, "cancel/mid-existing", old, prev.ETag)
	mustPut(t, s, "cancel/mid-new", []byte("after"), remote.PutOptions{IfNoneMatch: true, Size: 5})
}

// testCancelGetMidStream: cancelling ctx while a body is being read makes
// the rest of the read fail instead of delivering the object.
func testCancelGetMidStream(t *testing.T, s remote.Store, opts Options) {
	size := int64(4 << 20)
	if opts.SkipSlow {
		size = 1 << 20
	}
	if _, err := s.Put(ctxT(t), "cancel/get", newPattern(61, size), remote.PutOptions{Size: size}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	rc, _, err := s.Get(ctx, "cancel/get", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	head := make([]byte, 4096)
	if _, err := readFull(rc, head); err != nil {
		t.Fatalf("read before cancel: %v", err)
	}
	cancel()
	n, err := drain(rc)
	if err == nil {
		t.Fatalf("read %d more bytes to a clean end after ctx was cancelled; want an error", n)
	}
	if int64(len(head))+n >= size {
		t.Errorf("the whole object was delivered after cancel (then %v)", err)
	}
}

func readFull(r interface{ Read([]byte) (int, error) }, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// testBodyError: a body that fails mid-stream fails the Put and stores
// nothing; the failure at the first byte and together with the last bytes
// count too.
func testBodyError(t *testing.T, s remote.Store, opts Options) {
	boom := errors.New("storetest: body failed")
	old := patternBytes(71, 999)
	prev := mustPut(t, s, "berr/existing", old, remote.PutOptions{Size: -1})
	for _, n := range []int{0, 1, 100 << 10} {
		for _, withLast := range []bool{false, true} {
			data := patternBytes(72, int64(n))
			cases := []struct {
				key string
				po  remote.PutOptions
			}{
				{"berr/new", remote.PutOptions{Size: -1}},
				{"berr/new", remote.PutOptions{Size: int64(n) + 10}},
				{"berr/new", remote.PutOptions{IfNoneMatch: true, Size: -1}},
				{"berr/existing", remote.PutOptions{Size: -1}},
				{"berr/existing", remote.PutOptions{IfMatch: prev.ETag, Size: -1}},
			}
			for _, c := range cases {
				r := &errReader{data: data, err: boom, withLast: withLast}
				res, err := s.Put(ctxT(t), c.key, r, c.po)
				if err == nil {
					t.Errorf("Put(%q, %+v) with a body failing after %d bytes (with the last: %t) succeeded: %+v",
						c.key, c.po, n, withLast, res)
				}
			}
		}
	}
	mustAbsent(t, s, "berr/new")
	mustContent(t, s, "berr/existing", old, prev.ETag)
	// Nothing partial blocks a create.
	body := patternBytes(73, 5000)
	res := mustPut(t, s, "berr/new", body, remote.PutOptions{IfNoneMatch: true, Size: -1})
	if res.XXH64 != xxhash.Sum64(body) {
		t.Errorf("XXH64 mismatch")
	}
	mustContent(t, s, "berr/new", body, res.ETag)
}
