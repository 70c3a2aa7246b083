package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/bopstore/bop/remote"
)

// fakeS3 answers every GET with handler; for responses no real server
// gives (a Range header ignored, a body cut short).
func fakeS3(t *testing.T, handler http.HandlerFunc) *Store {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	s, err := New(t.Context(), Config{Bucket: "fake", Endpoint: srv.URL, PathStyle: true,
		AccessKey: "a", SecretKey: "s", MaxAttempts: 1, DisableIMDS: true,
		HTTPClient: withTransport(t, http.DefaultTransport.(*http.Transport).Clone())})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRangeIgnored: a server that answers a ranged GET with the whole
// object (200, no Content-Range) is an error, never the object's first
// bytes taken for the range, nor a whole-object download.
func TestRangeIgnored(t *testing.T) {
	body := strings.Repeat("0123456789", 1000)
	s := fakeS3(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.Header().Set("ETag", `"e"`)
		io.WriteString(w, body)
	})
	if _, _, err := s.Get(t.Context(), "k", 5, 10); err == nil || !strings.Contains(err.Error(), "ignored Range") {
		t.Fatalf("Get of a range from a server that ignores ranges: %v", err)
	}
	// An unranged Get of the same server is fine.
	rc, info, err := s.Get(t.Context(), "k", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(b) != body || info.Size != int64(len(body)) {
		t.Fatalf("whole Get: %d bytes, %v, %+v", len(b), err, info)
	}
}

// TestRangeWrongAnswer: a Content-Range other than the one asked for is an
// error.
func TestRangeWrongAnswer(t *testing.T) {
	s := fakeS3(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Range", "bytes 0-9/100")
		w.Header().Set("Content-Length", "10")
		w.WriteHeader(http.StatusPartialContent)
		io.WriteString(w, "0123456789")
	})
	if _, _, err := s.Get(t.Context(), "k", 50, 10); err == nil || !strings.Contains(err.Error(), "server sent") {
		t.Fatalf("Get answered with another range: %v", err)
	}
}

// TestTruncatedBody: a body that ends before its announced length reads as
// an error, not as a short object.
func TestTruncatedBody(t *testing.T) {
	s := fakeS3(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Range", "bytes 10-109/1000")
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(http.StatusPartialContent)
		io.WriteString(w, strings.Repeat("x", 40))
		// The handler returns: the connection closes 60 bytes short.
	})
	rc, _, err := s.Get(t.Context(), "k", 10, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("read %d bytes of a truncated body, err %v; want io.ErrUnexpectedEOF", len(b), err)
	}
}

// TestExactBody: the body wrapper stops at the announced length, reports
// an early end, and stops at once when ctx is cancelled even though the
// underlying body still has bytes to give.
func TestExactBody(t *testing.T) {
	b := &exactBody{ctx: t.Context(), key: "k", rc: io.NopCloser(strings.NewReader("0123456789")), left: 4}
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "0123" {
		t.Errorf("exactBody(4 of 10) = %q, %v", got, err)
	}
	b = &exactBody{ctx: t.Context(), key: "k", rc: io.NopCloser(strings.NewReader("01")), left: 4}
	if got, err := io.ReadAll(b); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("exactBody(4 of 2) = %q, %v; want io.ErrUnexpectedEOF", got, err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	b = &exactBody{ctx: ctx, key: "k", rc: io.NopCloser(strings.NewReader("0123456789")), left: 10}
	head := make([]byte, 3)
	if n, err := b.Read(head); n != 3 || err != nil {
		t.Fatalf("first read = %d, %v", n, err)
	}
	cancel()
	if rest, err := io.ReadAll(b); !errors.Is(err, context.Canceled) || len(rest) != 0 {
		t.Errorf("read after cancel = %q, %v; want nothing and context.Canceled", rest, err)
	}
}

// TestKeyLimits: keys follow remote.ValidateKey, and the full key (prefix
// included) stays within S3's 1024 bytes.
func TestKeyLimits(t *testing.T) {
	s, err := New(t.Context(), Config{Bucket: "fake", Prefix: strings.Repeat("p", 200), Endpoint: "http://127.0.0.1:1",
		AccessKey: "a", SecretKey: "s", DisableIMDS: true})
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("k", 200) + "/" + strings.Repeat("k", 200) + "/" + strings.Repeat("k", 200) + "/" + strings.Repeat("k", 250)
	if err := remote.ValidateKey(long); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(t.Context(), long, strings.NewReader("x"), remote.PutOptions{Size: 1}); !errors.Is(err, remote.ErrInvalidKey) {
		t.Errorf("Put of a key too long with the prefix: %v; want ErrInvalidKey", err)
	}
	if _, err := s.Put(t.Context(), "a/../b", strings.NewReader("x"), remote.PutOptions{Size: 1}); !errors.Is(err, remote.ErrInvalidKey) {
		t.Errorf("Put(a/../b): %v; want ErrInvalidKey", err)
	}
	if _, err := s.Put(t.Context(), "k", strings.NewReader("x"), remote.PutOptions{Size: 1, IfNoneMatch: true, IfMatch: `"e"`}); err == nil {
		t.Error("Put with both conditions succeeded")
	}
}
