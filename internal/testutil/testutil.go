// Package testutil holds helpers shared by bop's tests: the S3 test server's
// settings and the split between the race pass and the heavy pass.
package testutil

import (
	"os"
	"testing"
)

// Heavy marks a test that takes long under the race detector (big
// databases, thousands of SQLite transactions, crash loops). Heavy tests
// are named TestHeavy*; under -race they skip, and scripts/test.sh runs them
// in its second, non-race pass (go test -run '^TestHeavy').
func Heavy(t testing.TB) {
	t.Helper()
	if RaceEnabled {
		t.Skip("heavy test: runs in the non-race pass of scripts/test.sh")
	}
}

// S3 describes the S3-compatible server that scripts/test.sh starts
// (versitygw on 127.0.0.1). Credentials are always explicit: tests never
// use the AWS default chain or the cloud metadata address.
type S3 struct {
	Endpoint  string // http://127.0.0.1:PORT
	Region    string
	Bucket    string
	AccessKey string
	SecretKey string
}

// S3Server returns the test server's settings from the environment that
// scripts/test.sh exports. Without them the test skips, unless
// BOP_REQUIRE_S3=1 (set by the script), in which case it fails: a run of
// the full suite must never skip the S3 tests silently.
func S3Server(t testing.TB) S3 {
	t.Helper()
	s := S3{
		Endpoint:  os.Getenv("BOP_S3_ENDPOINT"),
		Region:    os.Getenv("BOP_S3_REGION"),
		Bucket:    os.Getenv("BOP_S3_BUCKET"),
		AccessKey: os.Getenv("BOP_S3_ACCESS_KEY"),
		SecretKey: os.Getenv("BOP_S3_SECRET_KEY"),
	}
	if s.Endpoint == "" || s.Bucket == "" || s.AccessKey == "" || s.SecretKey == "" {
		if os.Getenv("BOP_REQUIRE_S3") == "1" {
			t.Fatal("BOP_REQUIRE_S3=1 but BOP_S3_ENDPOINT/BUCKET/ACCESS_KEY/SECRET_KEY are not all set")
		}
		t.Skip("no S3 test server: run ./scripts/test.sh, which starts versitygw")
	}
	if s.Region == "" {
		s.Region = "us-east-1"
	}
	// The AWS SDK must never reach for 169.254.169.254 in tests.
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	return s
}
