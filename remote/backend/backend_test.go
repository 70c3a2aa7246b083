package backend

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bopstore/bop/internal/testutil"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fsstore"
	"github.com/bopstore/bop/remote/s3store"
)

func TestParseS3(t *testing.T) {
	cases := []struct {
		url  string
		want s3store.Config
	}{
		{"s3://bucket", s3store.Config{Bucket: "bucket"}},
		{"s3://bucket/", s3store.Config{Bucket: "bucket"}},
		{"s3://bucket/a/b", s3store.Config{Bucket: "bucket", Prefix: "a/b"}},
		{"s3://bucket/a/b/", s3store.Config{Bucket: "bucket", Prefix: "a/b"}},
		{"S3://my.bucket-1/p", s3store.Config{Bucket: "my.bucket-1", Prefix: "p"}},
		{"s3://bucket/p?endpoint=http://127.0.0.1:9000&region=us-east-1&path_style=true",
			s3store.Config{Bucket: "bucket", Prefix: "p", Endpoint: "http://127.0.0.1:9000", Region: "us-east-1", PathStyle: true}},
		{"s3://bucket/p?path_style=false&region=eu-west-3",
			s3store.Config{Bucket: "bucket", Prefix: "p", Region: "eu-west-3"}},
		{"s3://bucket/p?endpoint=" + url.QueryEscape("https://s3.example.com"),
			s3store.Config{Bucket: "bucket", Prefix: "p", Endpoint: "https://s3.example.com"}},
	}
	for _, c := range cases {
		loc, err := Parse(c.url)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.url, err)
			continue
		}
		if loc.Scheme != "s3" || loc.S3 != c.want {
			t.Errorf("Parse(%q) = %+v, want %+v", c.url, loc.S3, c.want)
		}
	}
}

func TestParseFile(t *testing.T) {
	cases := map[string]string{
		"file:///tmp/store":      "/tmp/store",
		"file:///tmp/store/":     "/tmp/store",
		"FILE:///a/b/c":          "/a/b/c",
		"file:///tmp/my%20store": "/tmp/my store",
		// RFC 8089: the host "localhost" is the local machine.
		"file://localhost/tmp/store": "/tmp/store",
		"file://LocalHost/tmp/store": "/tmp/store",
	}
	for u, want := range cases {
		loc, err := Parse(u)
		if err != nil || loc.Scheme != "file" || loc.Dir != filepath.FromSlash(want) {
			t.Errorf("Parse(%q) = %+v, %v; want dir %s", u, loc, err, want)
		}
	}
}

// TestParseErrors: every malformed URL fails with an error that says
// what is wrong; none is silently repaired or ignored.
func TestParseErrors(t *testing.T) {
	cases := []struct {
		url  string
		want string // substring of the error
	}{
		{"", "no scheme"},
		{"/abs/path", "no scheme"},
		{"bucket/prefix", "no scheme"},
		{"gs://bucket/p", `unsupported scheme "gs"`},
		{"http://127.0.0.1:9000/bucket", `unsupported scheme "http"`},
		{"s3:bucket", "want s3://bucket"},
		{"://x", "malformed"},
		{"s3://bucket/p\x00", "malformed"},
		{"s3://", "no bucket"},
		{"s3:///prefix", "no bucket"},
		{"s3://Bucket/p", "bucket name"},
		{"s3://b_c/p", "bucket name"},
		{"s3://ab/p", "bucket name"},
		{"s3://192.168.0.1/p", "IP address"},
		{"s3://bucket:9000/p", "port"},
		{"s3://key:secret@bucket/p", "credentials never go in the URL"},
		{"s3://key@bucket/p", "credentials never go in the URL"},
		{"s3://bucket/a//b", "invalid key"},
		{"s3://bucket/a/../b", "invalid key"},
		{"s3://bucket/a b", "invalid key"},
		{"s3://bucket/a:b", "invalid key"},
		{"s3://bucket//", "invalid key"},
		{"s3://bucket/p#frag", "fragment"},
		{"s3://bucket/p?", "empty query"},
		{"s3://bucket/p?foo=1", `unknown parameter "foo"`},
		{"s3://bucket/p?access_key=x", `unknown parameter "access_key"`},
		{"s3://bucket/p?Region=us-east-1", `unknown parameter "Region"`},
		{"s3://bucket/p?region=us-east-1&region=eu-west-1", "2 times"},
		{"s3://bucket/p?region=", "empty"},
		{"s3://bucket/p?region=US_EAST", "region"},
		{"s3://bucket/p?path_style=yes", "path_style"},
		{"s3://bucket/p?path_style=1", "path_style"},
		{"s3://bucket/p?path_style", "empty"},
		{"s3://bucket/p?endpoint=ftp://h", "http or https"},
		{"s3://bucket/p?endpoint=http://h/path", "scheme://host"},
		{"s3://bucket/p?endpoint=127.0.0.1:9000", "endpoint"},
		{"s3://bucket/p?endpoint=http://k:s@h", "credentials"},
		{"s3://bucket/p?a=%zz", "malformed"},
		{"file:relative/path", "relative path"},
		{"file://host/tmp/x", `host "host"`},
		{"file://localhost:80/tmp/x", `host "localhost:80"`},
		{"file://", "no absolute path"},
		{"file:///", "root"},
		{"file:///tmp/a/../b", "'..'"},
		{"file:///tmp//b", "segment"},
		{"file:///tmp/x?mode=1", "query"},
		{"file:///tmp/x#f", "fragment"},
		{"file://u:p@/tmp/x", "user info"},
	}
	for _, c := range cases {
		loc, err := Parse(c.url)
		if err == nil {
			t.Errorf("Parse(%q) = %+v; want an error mentioning %q", c.url, loc, c.want)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q): %v; want it to mention %q", c.url, err, c.want)
		}
	}
	// Prefix errors keep the key-rule sentinel.
	if _, err := Parse("s3://bucket/a//b"); !errors.Is(err, remote.ErrInvalidKey) {
		t.Errorf("bad prefix: %v; want ErrInvalidKey", err)
	}
}

// TestErrorsHidePasswords: a URL with a password never reaches an error
// message in clear.
func TestErrorsHidePasswords(t *testing.T) {
	for _, u := range []string{
		"s3://key:topsecret@bucket/p",
		"s3://bucket/p?endpoint=http://k:topsecret@127.0.0.1:9000",
		"s3://bucket/p?endpoint=" + url.QueryEscape("http://k:topsecret@127.0.0.1:9000"),
		"gs://k:topsecret@bucket",
		"s3://k:topsecret@bucket/p\x00",
	} {
		_, err := Parse(u)
		if err == nil {
			t.Errorf("Parse(%q) accepted", u)
			continue
		}
		if strings.Contains(err.Error(), "topsecret") {
			t.Errorf("Parse(%q): error shows the password: %v", u, err)
		}
	}
}

// TestOpenFile: file:// creates the directory and opens an fsstore there.
func TestOpenFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "store")
	s, err := Open(t.Context(), "file://"+dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.(io.Closer).Close()
	if _, ok := s.(*fsstore.Store); !ok {
		t.Fatalf("Open(file://) = %T, want *fsstore.Store", s)
	}
	if _, err := s.Put(t.Context(), "a/b", strings.NewReader("hello"), remote.PutOptions{Size: 5}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "a", "b"))
	if err != nil || string(got) != "hello" {
		t.Fatalf("object file: %q, %v", got, err)
	}
}

// TestOpenFileReadOnly: with ReadOnly, a file:// store must exist, opens
// without creating anything in it, reads what a writable open wrote and
// refuses writes.
func TestOpenFileReadOnly(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "store")
	if _, err := Open(ctx, "file://"+dir, Options{ReadOnly: true}); err == nil {
		t.Fatal("a read-only open of a missing store succeeded")
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the failed read-only open created %s: %v", dir, err)
	}
	// A store written by hand (as copied from S3): no "#bop" folder.
	if err := os.MkdirAll(filepath.Join(dir, "t", "db"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "t", "db", "head"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, "file://"+dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.(io.Closer).Close()
	rc, _, err := s.Get(ctx, "t/db/head", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if string(got) != "hello" {
		t.Fatalf("read %q", got)
	}
	var keys []string
	if err := s.List(ctx, "", func(o remote.ObjectInfo) error { keys = append(keys, o.Key); return nil }); err != nil || len(keys) != 1 {
		t.Fatalf("List: %v, %v", keys, err)
	}
	if _, err := s.Put(ctx, "t/db/x", strings.NewReader("x"), remote.PutOptions{Size: 1}); !errors.Is(err, remote.ErrReadOnly) {
		t.Fatalf("Put: %v, want ErrReadOnly", err)
	}
	f, err := os.Open(filepath.Join(dir, "t", "db", "head"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := s.(remote.FilePutter).PutFile(ctx, "t/db/y", f, remote.PutOptions{}); !errors.Is(err, remote.ErrReadOnly) {
		t.Fatalf("PutFile: %v, want ErrReadOnly", err)
	}
	if err := s.Delete(ctx, "t/db/head"); !errors.Is(err, remote.ErrReadOnly) {
		t.Fatalf("Delete: %v, want ErrReadOnly", err)
	}
	if _, err := s.(*fsstore.Store).Sweep(ctx); !errors.Is(err, remote.ErrReadOnly) {
		t.Fatalf("Sweep: %v, want ErrReadOnly", err)
	}
	des, err := os.ReadDir(dir)
	if err != nil || len(des) != 1 || des[0].Name() != "t" {
		t.Fatalf("the store's folder after a read-only session: %v, %v; want only t/", des, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "t", "db", "head")); err != nil {
		t.Fatal(err)
	}
}

// TestOpenS3: an s3:// URL opens an s3store on the bucket and prefix it
// names: a key put through it lands at <prefix>/<key> in the bucket.
func TestOpenS3(t *testing.T) {
	srv := testutil.S3Server(t)
	var b [6]byte
	rand.Read(b[:])
	prefix := "backend-test/" + hex.EncodeToString(b[:])
	q := url.Values{"endpoint": {srv.Endpoint}, "region": {srv.Region}, "path_style": {"true"}}
	opts := Options{AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, DisableIMDS: true}
	s, err := Open(t.Context(), "s3://"+srv.Bucket+"/"+prefix+"?"+q.Encode(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(*s3store.Store); !ok {
		t.Fatalf("Open(s3://) = %T, want *s3store.Store", s)
	}
	if _, err := s.Put(t.Context(), "k/v", bytes.NewReader([]byte("data")), remote.PutOptions{Size: 4}); err != nil {
		t.Fatal(err)
	}
	// The same bucket without a prefix sees the key under the prefix.
	root, err := Open(t.Context(), "s3://"+srv.Bucket+"?"+q.Encode(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Delete(t.Context(), prefix+"/k/v") })
	info, err := root.Head(t.Context(), prefix+"/k/v")
	if err != nil || info.Size != 4 {
		t.Fatalf("Head(%s/k/v) from the bucket root: %+v, %v", prefix, info, err)
	}
	// Without credentials and with IMDS off, Open fails (and says why).
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"} {
		t.Setenv(k, "")
	}
	t.Setenv("HOME", t.TempDir())
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	if _, err := Open(t.Context(), "s3://"+srv.Bucket+"/"+prefix+"?"+q.Encode(), Options{DisableIMDS: true}); err == nil || !strings.Contains(err.Error(), "credentials") {
		t.Errorf("Open without credentials: %v", err)
	}
}
