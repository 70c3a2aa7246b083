package s3store

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/bopstore/bop/remote"
)

// Defaults for the zero values of Config.
const (
	DefaultPartSize    = 16 << 20
	DefaultConcurrency = 4
	DefaultMaxAttempts = 5
	DefaultRegion      = "us-east-1"

	// S3's multipart limits: every part but the last has at least
	// MinPartSize bytes, no part more than MaxPartSize, at most MaxParts
	// parts. PartSize is validated against them so that an upload never
	// fails at CompleteMultipartUpload for a size reason.
	MinPartSize = 5 << 20
	MaxPartSize = 5 << 30
	MaxParts    = 10000

	maxConcurrency = 64
	maxS3KeyLen    = 1024 // S3's limit on a full key, prefix included
)

// Config selects a bucket, a key prefix inside it, the server, the
// credentials and the upload tuning. Only Bucket is required.
type Config struct {
	// Bucket is the bucket name (S3 naming rules, see ValidateBucket).
	Bucket string
	// Prefix is the key prefix inside the bucket (remote.ValidatePrefix;
	// a trailing '/' is optional). Every key is stored as Prefix + "/" +
	// key; an empty Prefix stores keys as they are.
	Prefix string

	// Endpoint is the base URL of an S3-compatible server
	// ("http://127.0.0.1:9000"); empty means AWS S3 itself.
	Endpoint string
	// Region signs the requests. Empty: from the environment or shared
	// config (AWS_REGION, ~/.aws/config), else DefaultRegion.
	Region string
	// PathStyle addresses the bucket in the path (endpoint/bucket/key)
	// instead of the host name (bucket.endpoint/key). Most S3-compatible
	// servers need it.
	PathStyle bool

	// AccessKey, SecretKey and SessionToken are explicit static
	// credentials. When AccessKey is empty the standard AWS chain is used
	// instead: environment variables, the shared config and credentials
	// files, web identity, container credentials, and last the EC2
	// instance metadata service (IMDS) unless it is disabled.
	AccessKey    string
	SecretKey    string
	SessionToken string
	// DisableIMDS takes the EC2 instance metadata service
	// (169.254.169.254) out of the credential chain, so that a host
	// without credentials fails at once instead of probing the network.
	// AWS_EC2_METADATA_DISABLED=true does the same.
	DisableIMDS bool

	// MaxAttempts is how many times one request is tried (first try
	// included) on throttling, 5xx and connection errors, with the SDK's
	// exponential backoff and jitter between tries. Default
	// DefaultMaxAttempts.
	MaxAttempts int

	// PartSize is the size of every multipart part but the last. Default
	// DefaultPartSize; at least MinPartSize, at most MaxPartSize. The
	// largest object Put accepts is PartSize * MaxParts.
	PartSize int64
	// MultipartThreshold: a body of at most this many bytes goes up in
	// one PutObject; a longer one as a multipart upload. Default (and
	// maximum) PartSize.
	MultipartThreshold int64
	// Concurrency is the number of part buffers one Put may hold, and so
	// of parts in flight: one Put holds at most Concurrency * PartSize
	// bytes of body, whatever the object's size. Default
	// DefaultConcurrency.
	Concurrency int

	// HTTPClient replaces the SDK's HTTP client (for a custom transport
	// or in tests). It is also used by the credential chain, IMDS
	// included. The SDK cannot apply AWS_CA_BUNDLE to a client it did not
	// build: with that variable set, New fails; put the CA in the
	// client's transport instead.
	HTTPClient *http.Client
}

// withDefaults returns cfg with defaults filled in, or an error naming
// the first setting that is out of range.
func (cfg Config) withDefaults() (Config, error) {
	if err := ValidateBucket(cfg.Bucket); err != nil {
		return cfg, err
	}
	if err := remote.ValidatePrefix(cfg.Prefix); err != nil {
		return cfg, fmt.Errorf("s3store: prefix: %w", err)
	}
	cfg.Prefix = strings.TrimSuffix(cfg.Prefix, "/")
	if cfg.Endpoint != "" {
		if err := ValidateEndpoint(cfg.Endpoint); err != nil {
			return cfg, err
		}
	}
	if (cfg.AccessKey == "") != (cfg.SecretKey == "") {
		return cfg, fmt.Errorf("s3store: static credentials need both an access key and a secret key")
	}
	if cfg.SessionToken != "" && cfg.AccessKey == "" {
		return cfg, fmt.Errorf("s3store: a session token needs an access key and a secret key")
	}
	if v, ok := os.LookupEnv("AWS_EC2_METADATA_DISABLED"); ok {
		if b, err := strconv.ParseBool(v); err == nil && b {
			cfg.DisableIMDS = true
		}
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.MaxAttempts < 1 || cfg.MaxAttempts > 100 {
		return cfg, fmt.Errorf("s3store: MaxAttempts %d outside 1..100", cfg.MaxAttempts)
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.PartSize < MinPartSize || cfg.PartSize > MaxPartSize {
		return cfg, fmt.Errorf("s3store: PartSize %d outside %d..%d", cfg.PartSize, MinPartSize, MaxPartSize)
	}
	if cfg.MultipartThreshold == 0 {
		cfg.MultipartThreshold = cfg.PartSize
	}
	// The body read to decide between one PutObject and a multipart
	// upload lands in the first part buffer, so the threshold cannot
	// exceed a part.
	if cfg.MultipartThreshold < 1 || cfg.MultipartThreshold > cfg.PartSize {
		return cfg, fmt.Errorf("s3store: MultipartThreshold %d outside 1..PartSize (%d)", cfg.MultipartThreshold, cfg.PartSize)
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Concurrency < 1 || cfg.Concurrency > maxConcurrency {
		return cfg, fmt.Errorf("s3store: Concurrency %d outside 1..%d", cfg.Concurrency, maxConcurrency)
	}
	return cfg, nil
}

// ValidateBucket checks a bucket name against S3's naming rules for
// general purpose buckets: 3 to 63 bytes of lowercase letters, digits,
// '.' and '-', beginning and ending with a letter or digit, no "..", not
// shaped like an IP address, and none of the prefixes and suffixes S3
// reserves.
func ValidateBucket(name string) error {
	if len(name) < 3 || len(name) > 63 {
		return fmt.Errorf("s3store: bucket name %q: want 3 to 63 bytes", name)
	}
	for i, c := range []byte(name) {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '-') {
			return fmt.Errorf("s3store: bucket name %q: byte %q at %d not allowed (lowercase letters, digits, '.', '-')", name, c, i)
		}
	}
	if !alnum(name[0]) || !alnum(name[len(name)-1]) {
		return fmt.Errorf("s3store: bucket name %q must begin and end with a letter or digit", name)
	}
	if strings.Contains(name, "..") {
		return fmt.Errorf("s3store: bucket name %q contains \"..\"", name)
	}
	if net.ParseIP(name) != nil {
		return fmt.Errorf("s3store: bucket name %q is an IP address", name)
	}
	for _, p := range []string{"xn--", "sthree-", "amzn-s3-demo-"} {
		if strings.HasPrefix(name, p) {
			return fmt.Errorf("s3store: bucket name %q: prefix %q is reserved", name, p)
		}
	}
	for _, s := range []string{"-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"} {
		if strings.HasSuffix(name, s) {
			return fmt.Errorf("s3store: bucket name %q: suffix %q is reserved", name, s)
		}
	}
	return nil
}

func alnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

// ValidateEndpoint checks an S3 server URL: http or https, a host, and
// nothing else (no credentials, path, query or fragment). Its errors never
// show a password.
func ValidateEndpoint(endpoint string) error {
	u, err := url.Parse(endpoint)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, which may hold a password
		}
		return fmt.Errorf("s3store: malformed endpoint: %w", err)
	}
	if u.User != nil {
		return fmt.Errorf("s3store: endpoint %q: credentials do not belong in the endpoint", u.Redacted())
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("s3store: endpoint %q: scheme must be http or https", endpoint)
	}
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("s3store: endpoint %q: no host", endpoint)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != "" {
		return fmt.Errorf("s3store: endpoint %q: want scheme://host[:port] only", endpoint)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("s3store: endpoint %q: bad port", endpoint)
		}
	}
	return nil
}
