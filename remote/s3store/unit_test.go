package s3store

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/bopstore/bop/remote"
)

func TestValidateBucket(t *testing.T) {
	good := []string{"abc", "bop-test", "my.bucket.1", "0ab", strings.Repeat("a", 63)}
	for _, b := range good {
		if err := ValidateBucket(b); err != nil {
			t.Errorf("ValidateBucket(%q): %v", b, err)
		}
	}
	bad := []string{"", "ab", strings.Repeat("a", 64), "Abc", "a_b", "-ab", "ab-", ".ab", "ab.",
		"a..b", "192.168.1.1", "xn--abc", "sthree-abc", "abc-s3alias", "abc--ol-s3", "a b", "a/b", "ab\x00"}
	for _, b := range bad {
		if err := ValidateBucket(b); err == nil {
			t.Errorf("ValidateBucket(%q) accepted a bad name", b)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	base := Config{Bucket: "bop-test", AccessKey: "a", SecretKey: "s"}
	cases := []struct {
		name string
		mod  func(*Config)
		want string // substring of the error; "" = valid
	}{
		{"defaults", func(c *Config) {}, ""},
		{"prefix with slash", func(c *Config) { c.Prefix = "a/b/" }, ""},
		{"bad bucket", func(c *Config) { c.Bucket = "Bad_Bucket" }, "bucket name"},
		{"bad prefix", func(c *Config) { c.Prefix = "a//b" }, "prefix"},
		{"dotdot prefix", func(c *Config) { c.Prefix = "a/../b" }, "prefix"},
		{"leading slash prefix", func(c *Config) { c.Prefix = "/a" }, "prefix"},
		{"endpoint scheme", func(c *Config) { c.Endpoint = "ftp://127.0.0.1:9000" }, "http or https"},
		{"endpoint path", func(c *Config) { c.Endpoint = "http://127.0.0.1:9000/x" }, "scheme://host"},
		{"endpoint user", func(c *Config) { c.Endpoint = "http://k:s@127.0.0.1:9000" }, "credentials"},
		{"endpoint no host", func(c *Config) { c.Endpoint = "http://" }, "no host"},
		{"endpoint port", func(c *Config) { c.Endpoint = "http://127.0.0.1:99999" }, "port"},
		{"half creds", func(c *Config) { c.SecretKey = "" }, "both"},
		{"token alone", func(c *Config) { c.AccessKey, c.SecretKey, c.SessionToken = "", "", "t" }, "session token"},
		{"part too small", func(c *Config) { c.PartSize = MinPartSize - 1 }, "PartSize"},
		{"part too big", func(c *Config) { c.PartSize = MaxPartSize + 1 }, "PartSize"},
		{"threshold above part", func(c *Config) { c.PartSize = MinPartSize; c.MultipartThreshold = MinPartSize + 1 }, "MultipartThreshold"},
		{"threshold negative", func(c *Config) { c.MultipartThreshold = -1 }, "MultipartThreshold"},
		{"concurrency", func(c *Config) { c.Concurrency = 65 }, "Concurrency"},
		{"attempts", func(c *Config) { c.MaxAttempts = -1 }, "MaxAttempts"},
	}
	for _, c := range cases {
		cfg := base
		c.mod(&cfg)
		got, err := cfg.withDefaults()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: error %v, want one mentioning %q", c.name, err, c.want)
		case c.want == "" && (got.PartSize != DefaultPartSize || got.MultipartThreshold != DefaultPartSize ||
			got.Concurrency != DefaultConcurrency || got.MaxAttempts != DefaultMaxAttempts || strings.HasSuffix(got.Prefix, "/")):
			t.Errorf("%s: defaults not filled in: %+v", c.name, got)
		}
	}
}

// apiErr builds the error shape the SDK returns for an HTTP error response.
func apiErr(status int, code string) error {
	return &smithy.OperationError{ServiceID: "S3", OperationName: "X", Err: &awshttp.ResponseError{
		ResponseError: &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}},
			Err:      &smithy.GenericAPIError{Code: code, Message: "test"},
		},
	}}
}

// TestMapErr: every status and code of the mapping, per kind of call. The
// 409 rows are here because versitygw serialises conditional writes and
// answers 412; AWS answers 409 ConditionalRequestConflict to a write that
// races another.
func TestMapErr(t *testing.T) {
	cases := []struct {
		o      op
		status int
		code   string
		want   error // nil: no sentinel
	}{
		{opPutIfNone, 412, "PreconditionFailed", remote.ErrPrecondition},
		{opPutIfMatch, 412, "PreconditionFailed", remote.ErrPrecondition},
		{opPutIfNone, 409, "ConditionalRequestConflict", remote.ErrPrecondition},
		{opPutIfMatch, 409, "", remote.ErrPrecondition},
		{opPut, 409, "ConditionalRequestConflict", remote.ErrPrecondition},
		{opPut, 409, "OperationAborted", nil},
		{opPutIfNone, 409, "ExistingObjectIsDirectory", nil},
		{opPutIfMatch, 409, "ObjectParentIsFile", nil},
		{opPutIfMatch, 404, "NoSuchKey", remote.ErrPrecondition},
		{opPutIfMatch, 404, "NoSuchUpload", nil},
		{opPutIfNone, 404, "NoSuchUpload", nil},
		{opPut, 404, "NoSuchKey", nil},
		{opPut, 404, "NoSuchBucket", ErrNoBucket},
		{opRead, 404, "NoSuchKey", remote.ErrNotFound},
		{opRead, 404, "NotFound", remote.ErrNotFound},
		{opRead, 404, "", remote.ErrNotFound},
		{opRead, 404, "NoSuchBucket", ErrNoBucket},
		{opList, 404, "NoSuchKey", nil},
		{opList, 404, "NoSuchBucket", ErrNoBucket},
		{opRead, 416, "InvalidRange", remote.ErrInvalidRange},
		{opRead, 416, "", remote.ErrInvalidRange},
		{opRead, 403, "AccessDenied", nil},
		{opRead, 500, "InternalError", nil},
		{opPutIfNone, 503, "SlowDown", nil},
	}
	sentinels := []error{remote.ErrPrecondition, remote.ErrNotFound, remote.ErrInvalidRange, ErrNoBucket}
	for _, c := range cases {
		src := apiErr(c.status, c.code)
		err := mapErr(c.o, "op key", src)
		for _, s := range sentinels {
			if got := errors.Is(err, s); got != (s == c.want) {
				t.Errorf("mapErr(op %d, %d %s) = %v: errors.Is(%v) = %t", c.o, c.status, c.code, err, s, got)
			}
		}
		var ae smithy.APIError
		if !errors.As(err, &ae) || ae.ErrorCode() != c.code {
			t.Errorf("mapErr(op %d, %d %s) lost the SDK error: %v", c.o, c.status, c.code, err)
		}
		if !strings.Contains(err.Error(), "op key") {
			t.Errorf("mapErr lost the context: %v", err)
		}
	}
	// Cancellation stays visible through the wrapping.
	err := mapErr(opRead, "get k", fmt.Errorf("op: %w", context.Canceled))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("mapErr hid context.Canceled: %v", err)
	}
}

func TestParseContentRange(t *testing.T) {
	good := []struct {
		in                string
		start, end, total int64
	}{
		{"bytes 0-0/1", 0, 0, 1},
		{"bytes 0-99/1000", 0, 99, 1000},
		{"bytes 990-999/1000", 990, 999, 1000},
		{"bytes 5-5/6", 5, 5, 6},
	}
	for _, c := range good {
		s, e, tot, ok := parseContentRange(c.in)
		if !ok || s != c.start || e != c.end || tot != c.total {
			t.Errorf("parseContentRange(%q) = %d %d %d %t", c.in, s, e, tot, ok)
		}
	}
	for _, in := range []string{"", "bytes", "bytes */1000", "bytes 0-99/*", "bytes 5-4/10", "bytes 0-10/10",
		"bytes -1-5/10", "bytes +1-5/10", "bytes 1-5/+10", "items 0-1/2", "bytes 0-1/2 ", "bytes 0-1/2/3",
		"bytes 0-1-2/3", "bytes 0-9999999999999999999/99999999999999999999"} {
		if s, e, tot, ok := parseContentRange(in); ok {
			t.Errorf("parseContentRange(%q) accepted: %d %d %d", in, s, e, tot)
		}
	}
}

// FuzzParseContentRange: any header value parses to a consistent range or
// is refused; it never panics.
func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-99/1000", "bytes */10", "bytes 5-4/10", "bytes 0-0/1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		start, end, total, ok := parseContentRange(v)
		if !ok {
			return
		}
		if start < 0 || end < start || total <= end {
			t.Fatalf("parseContentRange(%q) = %d %d %d", v, start, end, total)
		}
		// The canonical form parses to the same numbers.
		s2, e2, t2, ok2 := parseContentRange(fmt.Sprintf("bytes %d-%d/%d", start, end, total))
		if !ok2 || s2 != start || e2 != end || t2 != total {
			t.Fatalf("canonical form of %q does not round-trip", v)
		}
	})
}
