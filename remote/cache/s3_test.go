package cache

import (
	"crypto/rand"
	"encoding/hex"
	"testing"

	"github.com/bopstore/bop/internal/testutil"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fault"
	"github.com/bopstore/bop/remote/s3store"
	"github.com/bopstore/bop/remote/storetest"
)

// newS3 returns an s3store on the test server (versitygw, started by
// scripts/test.sh) under a fresh key prefix.
func newS3(t *testing.T) *s3store.Store {
	t.Helper()
	srv := testutil.S3Server(t)
	var b [6]byte
	rand.Read(b[:])
	s, err := s3store.New(t.Context(), s3store.Config{
		Bucket: srv.Bucket, Prefix: "cache-test/" + hex.EncodeToString(b[:]), Endpoint: srv.Endpoint,
		Region: srv.Region, PathStyle: true, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, DisableIMDS: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The contract holds through the cache over a real S3 server, every key
// cached.
func TestConformanceOverS3(t *testing.T) {
	storetest.Run(t, func(t *testing.T) remote.Store {
		return newCache(t, newS3(t), Config{Cacheable: cacheAll, BlockSize: 16 << 10})
	}, storetest.Options{SkipSlow: testutil.RaceEnabled})
}

// Over S3, a page read is one ranged GET of its block, and the ETag of a
// ranged GET matches the one remembered from the first, so reads of other
// blocks never look like a replaced object (which would refetch).
func TestPageReadOverS3(t *testing.T) {
	const B = 64 << 10
	m := fault.New(newS3(t), fault.Config{})
	key := objKey(t, 80)
	putPattern(t, m, key, 80, 4<<20+5)
	c := newCache(t, m, Config{ReadAhead: -1})
	m.Reset()
	mustRead(t, c, key, 80, 1<<20+100, 4112)
	if r, b := gets(m); r != 1 || b != B {
		t.Errorf("page read over S3: %d GETs of %d bytes; want 1 of %d", r, b, B)
	}
	for i := int64(0); i < 8; i++ {
		mustRead(t, c, key, 80, i*B*7+3, 4112)
		mustRead(t, c, key, 80, i*B*7+3, 4112)
	}
	mustRead(t, c, key, 80, 4<<20, 5)
	st := c.Stats()
	if r, _ := gets(m); r != st.Requests || st.Misses != r || st.Corrupt != 0 {
		t.Errorf("%d GETs, %d cache requests, %d misses: a refetch happened", r, st.Requests, st.Misses)
	}
	if m.Stats().Head.Requests != 0 {
		t.Errorf("%d HEADs on the read path", m.Stats().Head.Requests)
	}
}
