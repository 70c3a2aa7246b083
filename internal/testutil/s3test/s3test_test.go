package s3test

import (
	"context"
	"strings"
	"testing"

	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/s3store"
)

// Prefix is a valid key prefix under root, names the test, is cut to a
// bounded length, and differs between calls.
func TestPrefix(t *testing.T) {
	t.Run("a name/with spaces, ünïcode and "+strings.Repeat("x", 200), func(t *testing.T) {
		a, b := Prefix(t, "root"), Prefix(t, "root")
		if a == b {
			t.Fatalf("two prefixes for one test are equal: %s", a)
		}
		for _, p := range []string{a, b} {
			if err := remote.ValidatePrefix(p + "/"); err != nil {
				t.Fatalf("%q: %v", p, err)
			}
			if !strings.HasPrefix(p, "root/TestPrefix-a-name-with-spaces---n-code-and-xx") {
				t.Fatalf("%q does not name the test", p)
			}
			if len(p) != len("root/")+80+1+12 {
				t.Fatalf("%q: %d bytes, want the name cut to 80", p, len(p))
			}
		}
	})
}

// Open gives a store on the test server under a fresh prefix, tuned as
// asked; at the test's end the prefix is empty again.
func TestOpen(t *testing.T) {
	var s *s3store.Store
	var cfg s3store.Config
	t.Run("open", func(t *testing.T) {
		s, cfg = Open(t, "s3test-test", func(c *s3store.Config) { c.PartSize = 5 << 20 })
		if !strings.HasPrefix(cfg.Prefix, "s3test-test/TestOpen-open-") || cfg.PartSize != 5<<20 || !cfg.DisableIMDS {
			t.Fatalf("config %+v", cfg)
		}
		if _, err := s.Put(context.Background(), "k", strings.NewReader("v"), remote.PutOptions{Size: 1}); err != nil {
			t.Fatal(err)
		}
	})
	if s == nil {
		t.Skip("no S3 test server")
	}
	n := 0
	if err := s.List(context.Background(), "", func(remote.ObjectInfo) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d keys left under %s after the test ended", n, cfg.Prefix)
	}
}
