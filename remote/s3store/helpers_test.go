package s3store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/bopstore/bop/internal/testutil"
	"github.com/bopstore/bop/remote"
)

// testPrefix is a fresh key prefix for one test: the test's name plus
// random bytes, so runs and subtests never see each other's keys.
func testPrefix(t *testing.T) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := strings.Map(func(r rune) rune {
		if 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, t.Name())
	if len(name) > 100 {
		name = name[:100]
	}
	return "s3store-test/" + name + "-" + hex.EncodeToString(b[:])
}

// withTransport returns an HTTP client on rt. The SDK refuses a custom
// client while AWS_CA_BUNDLE is set (it cannot add the CA to it); the test
// server is plain HTTP, so the variable is cleared for the test.
func withTransport(t *testing.T, rt http.RoundTripper) *http.Client {
	t.Setenv("AWS_CA_BUNDLE", "")
	return &http.Client{Transport: rt}
}

// testConfig is the versitygw test server's config with a fresh prefix.
func testConfig(t *testing.T) Config {
	srv := testutil.S3Server(t)
	return Config{
		Bucket:    srv.Bucket,
		Prefix:    testPrefix(t),
		Endpoint:  srv.Endpoint,
		Region:    srv.Region,
		PathStyle: true,
		AccessKey: srv.AccessKey,
		SecretKey: srv.SecretKey,
		// Tests never touch the metadata service.
		DisableIMDS: true,
	}
}

// newTestStore opens a store on a fresh prefix. At cleanup it checks that
// no multipart upload was left behind under the prefix (every failed or
// cancelled Put must abort its upload), then deletes the prefix's keys.
func newTestStore(t *testing.T, tune func(*Config)) *Store {
	t.Helper()
	cfg := testConfig(t)
	if tune != nil {
		tune(&cfg)
	}
	s, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if ups := pendingUploads(t, ctx, s); len(ups) > 0 {
			t.Errorf("multipart uploads left behind under %s: %q", s.cfg.Prefix, ups)
			for key, id := range ups {
				s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
					Bucket: aws.String(s.cfg.Bucket), Key: aws.String(key), UploadId: aws.String(id)})
			}
		}
		var keys []string
		err := s.List(ctx, "", func(info remote.ObjectInfo) error {
			keys = append(keys, info.Key)
			return nil
		})
		if err != nil {
			t.Errorf("cleanup list: %v", err)
		}
		for _, k := range keys {
			if err := s.Delete(ctx, k); err != nil {
				t.Errorf("cleanup delete %s: %v", k, err)
			}
		}
	})
	return s
}

// pendingUploads lists the multipart uploads in progress under the
// store's prefix, key -> upload id.
func pendingUploads(t *testing.T, ctx context.Context, s *Store) map[string]string {
	t.Helper()
	ups := map[string]string{}
	in := &s3.ListMultipartUploadsInput{Bucket: aws.String(s.cfg.Bucket), Prefix: aws.String(s.cfg.Prefix + "/")}
	for {
		out, err := s.client.ListMultipartUploads(ctx, in)
		if err != nil {
			t.Fatalf("ListMultipartUploads: %v", err)
		}
		for _, u := range out.Uploads {
			ups[aws.ToString(u.Key)] = aws.ToString(u.UploadId)
		}
		if !aws.ToBool(out.IsTruncated) {
			return ups
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}
