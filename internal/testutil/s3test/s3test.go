// Package s3test opens the versitygw test server (scripts/test.sh) as a
// remote.Store for tests, each on a fresh key prefix that is emptied when
// the test ends.
//
// It is a package of its own, not part of testutil, because it imports
// s3store, whose own tests import testutil.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/bopstore/bop/internal/testutil"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/s3store"
)

// Prefix returns a fresh key prefix for the test t under root:
// root/<test name>-<12 random hex digits>. The name keeps ASCII letters,
// digits and '-' (anything else becomes '-') and its first 80 characters,
// so the prefix is a valid key part; the random part keeps runs and
// subtests from ever seeing each other's keys.
func Prefix(t testing.TB, root string) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := strings.Map(func(r rune) rune {
		if 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' {
			return r
		}
		return '-'
	}, t.Name())
	if len(name) > 80 {
		name = name[:80]
	}
	return root + "/" + name + "-" + hex.EncodeToString(b[:])
}

// Open opens an s3store on the test server under Prefix(t, root), with
// static credentials and the metadata service disabled; tune, if not nil,
// adjusts the config first. It returns the store and the config it was
// opened with (for building a store URL to the same place). When the test
// ends, every key under the prefix is deleted. Without a server the test
// skips, unless BOP_REQUIRE_S3=1 (testutil.S3Server).
func Open(t testing.TB, root string, tune func(*s3store.Config)) (*s3store.Store, s3store.Config) {
	t.Helper()
	srv := testutil.S3Server(t)
	cfg := s3store.Config{Bucket: srv.Bucket, Prefix: Prefix(t, root), Endpoint: srv.Endpoint, Region: srv.Region,
		PathStyle: true, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, DisableIMDS: true}
	if tune != nil {
		tune(&cfg)
	}
	s, err := s3store.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	EmptyAtCleanup(t, s)
	return s, cfg
}

// EmptyAtCleanup deletes every key of s when the test ends, best effort
// (the server's data is removed with it anyway): a store opened on a
// prefix of its own leaves nothing behind for later tests to trip on.
func EmptyAtCleanup(t testing.TB, s remote.Store) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var keys []string
		s.List(ctx, "", func(info remote.ObjectInfo) error { keys = append(keys, info.Key); return nil })
		for _, k := range keys {
			s.Delete(ctx, k)
		}
	})
}
