package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/bopstore/bop/remote"
)

// gen is a deterministic, endless-or-sized byte stream (splitmix64 of the
// position), so large bodies are produced on the fly and never held.
type gen struct {
	seed uint64
	off  int64
	size int64 // < 0: endless
}

func (g *gen) Read(p []byte) (int, error) {
	if g.size >= 0 {
		if g.off >= g.size {
			return 0, io.EOF
		}
		if rest := g.size - g.off; int64(len(p)) > rest {
			p = p[:rest]
		}
	}
	for i := range p {
		pos := uint64(g.off) + uint64(i)
		x := g.seed ^ (pos>>3)*0x9e3779b97f4a7c15 + 0x9e3779b97f4a7c15
		x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
		x = (x ^ (x >> 27)) * 0x94d049bb133111eb
		x ^= x >> 31
		p[i] = byte(x >> (8 * (pos & 7)))
	}
	g.off += int64(len(p))
	return len(p), nil
}

func genHash(seed uint64, size int64) uint64 {
	h := xxhash.New()
	io.Copy(h, &gen{seed: seed, size: size})
	return h.Sum64()
}

func smallParts(c *Config) {
	c.PartSize = MinPartSize
	c.MultipartThreshold = MinPartSize
	c.Concurrency = 2
}

// TestRaceIfNoneMatch: 16 writers create one key with If-None-Match: *;
// exactly one wins, the others get ErrPrecondition, and the object is the
// winner's. Once with small bodies (PutObject) and once with bodies over
// the threshold (the condition rides on CompleteMultipartUpload).
func TestRaceIfNoneMatch(t *testing.T) {
	s := newTestStore(t, smallParts)
	for _, tc := range []struct {
		name    string
		writers int
		size    int64
	}{{"small", 16, 1000}, {"multipart", 4, MinPartSize + 1}} {
		t.Run(tc.name, func(t *testing.T) {
			key := "race/" + tc.name
			results := make([]error, tc.writers)
			hashes := make([]uint64, tc.writers)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range tc.writers {
				wg.Go(func() {
					<-start
					res, err := s.Put(t.Context(), key, &gen{seed: uint64(i), size: tc.size}, remote.PutOptions{IfNoneMatch: true, Size: tc.size})
					results[i], hashes[i] = err, res.XXH64
				})
			}
			close(start)
			wg.Wait()
			winner := -1
			for i, err := range results {
				switch {
				case err == nil:
					if winner >= 0 {
						t.Fatalf("writers %d and %d both created %s", winner, i, key)
					}
					winner = i
				case !errors.Is(err, remote.ErrPrecondition):
					t.Errorf("writer %d: %v; want ErrPrecondition", i, err)
				}
			}
			if winner < 0 {
				t.Fatal("no writer won")
			}
			rc, _, err := s.Get(t.Context(), key, 0, -1)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			h := xxhash.New()
			if _, err := io.Copy(h, rc); err != nil {
				t.Fatal(err)
			}
			if h.Sum64() != hashes[winner] || hashes[winner] != genHash(uint64(winner), tc.size) {
				t.Errorf("stored object is not the winner's")
			}
		})
	}
}

// TestRaceIfMatch: 16 writers replace one object, all with the ETag they
// read; one wins and the ETag changes; a stale ETag then fails.
func TestRaceIfMatch(t *testing.T) {
	s := newTestStore(t, smallParts)
	first, err := s.Put(t.Context(), "head", strings.NewReader("v0"), remote.PutOptions{Size: 2})
	if err != nil {
		t.Fatal(err)
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 16 {
		wg.Go(func() {
			<-start
			body := fmt.Sprintf("v1-writer-%02d", i)
			_, err := s.Put(t.Context(), "head", strings.NewReader(body), remote.PutOptions{IfMatch: first.ETag, Size: int64(len(body))})
			switch {
			case err == nil:
				wins.Add(1)
			case !errors.Is(err, remote.ErrPrecondition):
				t.Errorf("writer %d: %v; want ErrPrecondition", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if n := wins.Load(); n != 1 {
		t.Fatalf("%d writers won the If-Match race, want 1", n)
	}
	info, err := s.Head(t.Context(), "head")
	if err != nil || info.ETag == first.ETag {
		t.Fatalf("Head after the race: %+v, %v; want a new ETag", info, err)
	}
	if _, err := s.Put(t.Context(), "head", strings.NewReader("v2"), remote.PutOptions{IfMatch: first.ETag, Size: 2}); !errors.Is(err, remote.ErrPrecondition) {
		t.Errorf("Put with a stale ETag: %v; want ErrPrecondition", err)
	}
	if _, err := s.Put(t.Context(), "missing", strings.NewReader("v2"), remote.PutOptions{IfMatch: first.ETag, Size: 2}); !errors.Is(err, remote.ErrPrecondition) {
		t.Errorf("If-Match Put of a missing key: %v; want ErrPrecondition", err)
	}
}

// cancelAfter delivers n bytes of a stream, then checks that a multipart
// upload is in progress, cancels the Put's context and keeps delivering
// (so only the cancellation can stop the Put).
type cancelAfter struct {
	gen
	n        int64
	onCancel func()
	fired    bool
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	if !c.fired && c.off >= c.n {
		c.fired = true
		c.onCancel()
	}
	return c.gen.Read(p)
}

// TestCancelMultipartAborts: cancelling a Put in the middle of a multipart
// upload returns context.Canceled, stores nothing, and leaves no upload
// behind (ListMultipartUploads is empty).
func TestCancelMultipartAborts(t *testing.T) {
	s := newTestStore(t, smallParts)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	inProgress := 0
	body := &cancelAfter{gen: gen{seed: 7, size: -1}, n: 3 * MinPartSize, onCancel: func() {
		inProgress = len(pendingUploads(t, t.Context(), s))
		cancel()
	}}
	_, err := s.Put(ctx, "obj/cancelled", body, remote.PutOptions{Size: -1})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Put: %v; want context.Canceled", err)
	}
	if strings.Contains(err.Error(), "abort") {
		t.Errorf("the abort itself failed: %v", err)
	}
	if inProgress != 1 {
		t.Fatalf("%d multipart uploads in progress at cancellation, want 1: the test did not cancel mid-upload", inProgress)
	}
	if body.off > 5*MinPartSize {
		t.Errorf("Put read %d bytes of the body after cancellation at %d", body.off, body.n)
	}
	if _, err := s.Head(t.Context(), "obj/cancelled"); !errors.Is(err, remote.ErrNotFound) {
		t.Errorf("Head after a cancelled Put: %v; want ErrNotFound", err)
	}
	if ups := pendingUploads(t, t.Context(), s); len(ups) != 0 {
		t.Errorf("uploads left after cancellation: %v", ups)
	}
}

// failPart is a transport that fails every attempt at one part number.
type failPart struct {
	base http.RoundTripper
	part string
	hits atomic.Int32
}

func (f *failPart) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPut && r.URL.Query().Get("partNumber") == f.part {
		f.hits.Add(1)
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, errors.New("injected: connection reset")
	}
	return f.base.RoundTrip(r)
}

// TestPartFailureAborts: a part that fails every attempt fails the Put,
// after the retries, and the upload is aborted; nothing is stored. A body
// that fails to read does the same.
func TestPartFailureAborts(t *testing.T) {
	fp := &failPart{base: http.DefaultTransport.(*http.Transport).Clone(), part: "2"}
	s := newTestStore(t, func(c *Config) {
		smallParts(c)
		c.MaxAttempts = 2
		c.HTTPClient = withTransport(t, fp)
	})
	_, err := s.Put(t.Context(), "obj/fails", &gen{seed: 1, size: 3*MinPartSize + 5}, remote.PutOptions{Size: -1})
	if err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("Put with a failing part: %v; want the injected error", err)
	}
	if strings.Contains(err.Error(), "abort") {
		t.Errorf("the abort itself failed: %v", err)
	}
	if n := fp.hits.Load(); n != 2 {
		t.Errorf("part 2 was tried %d times, want MaxAttempts = 2", n)
	}
	if _, err := s.Head(t.Context(), "obj/fails"); !errors.Is(err, remote.ErrNotFound) {
		t.Errorf("Head after a failed Put: %v; want ErrNotFound", err)
	}
	// A body that breaks after two parts.
	broken := io.MultiReader(&gen{seed: 2, size: 2*MinPartSize + 100}, iotestErr{})
	if _, err := s.Put(t.Context(), "obj/broken", broken, remote.PutOptions{Size: -1}); err == nil || !strings.Contains(err.Error(), "body broke") {
		t.Fatalf("Put of a broken body: %v", err)
	}
	if ups := pendingUploads(t, t.Context(), s); len(ups) != 0 {
		t.Errorf("uploads left after failures: %v", ups)
	}
}

type iotestErr struct{}

func (iotestErr) Read([]byte) (int, error) { return 0, errors.New("body broke") }

// countingTransport counts the response body bytes of GET requests.
type countingTransport struct {
	base http.RoundTripper
	got  atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(r)
	if err == nil && r.Method == http.MethodGet {
		resp.Body = &countingBody{ReadCloser: resp.Body, n: &c.got}
	}
	return resp, err
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// TestGetTransfersOnlyTheRange: reading one 4 KiB page of a 12 MiB object
// moves 4 KiB over the wire, not the object (seed review, finding 9).
func TestGetTransfersOnlyTheRange(t *testing.T) {
	ct := &countingTransport{base: http.DefaultTransport.(*http.Transport).Clone()}
	s := newTestStore(t, func(c *Config) {
		smallParts(c)
		c.HTTPClient = withTransport(t, ct)
	})
	const size = 12 << 20
	if _, err := s.Put(t.Context(), "obj/big", &gen{seed: 3, size: size}, remote.PutOptions{Size: size}); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 4096 * 1000, size - 4096} {
		ct.got.Store(0)
		rc, info, err := s.Get(t.Context(), "obj/big", off, 4096)
		if err != nil {
			t.Fatal(err)
		}
		page, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		want := make([]byte, 4096)
		(&gen{seed: 3, off: off, size: -1}).Read(want)
		if !bytes.Equal(page, want) || info.Size != size {
			t.Errorf("page at %d: wrong bytes or size %d", off, info.Size)
		}
		if n := ct.got.Load(); n != 4096 {
			t.Errorf("page at %d: %d bytes transferred, want 4096", off, n)
		}
	}
}
