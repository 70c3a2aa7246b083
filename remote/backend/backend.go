package backend

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fsstore"
	"github.com/bopstore/bop/remote/s3store"
)

// Options carry what does not belong in a URL: S3 credentials and tuning.
// They are ignored for file:// URLs.
type Options struct {
	// AccessKey, SecretKey and SessionToken are static S3 credentials.
	// With AccessKey empty, the AWS default credential chain is used.
	AccessKey    string
	SecretKey    string
	SessionToken string
	// DisableIMDS keeps the EC2 instance metadata service out of the
	// credential chain (see s3store.Config.DisableIMDS).
	DisableIMDS bool

	// ReadOnly opens a file:// store for reading only: its directory must
	// exist, nothing is created in it, and writes fail with
	// remote.ErrReadOnly (fsstore.OpenReadOnly), so inspecting a store
	// works on a read-only mount. An s3:// store is opened the same way
	// either way: opening creates nothing there, and the credentials
	// decide what may be written.
	ReadOnly bool

	// S3 tuning; zero values take s3store's defaults.
	MaxAttempts        int
	PartSize           int64
	MultipartThreshold int64
	Concurrency        int
	HTTPClient         *http.Client
}

// Location is a parsed store URL.
type Location struct {
	Scheme string // "file" or "s3"
	// Dir is the absolute directory of a file:// store.
	Dir string
	// S3 holds Bucket, Prefix, Endpoint, Region and PathStyle of an s3://
	// store; the rest comes from Options at Open.
	S3 s3store.Config
}

// Open parses rawURL and opens the store it names. A file:// directory is
// created if missing (unless opts.ReadOnly). The returned store may also implement io.Closer
// (fsstore does: it holds a lock file); close it when done.
func Open(ctx context.Context, rawURL string, opts Options) (remote.Store, error) {
	loc, err := Parse(rawURL)
	if err != nil {
		return nil, err
	}
	switch loc.Scheme {
	case "file":
		if opts.ReadOnly {
			s, err := fsstore.OpenReadOnly(loc.Dir)
			if err != nil {
				return nil, fmt.Errorf("backend: open %s: %w", redact(rawURL), err)
			}
			return s, nil
		}
		if err := os.MkdirAll(loc.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("backend: create store directory: %w", err)
		}
		s, err := fsstore.New(loc.Dir)
		if err != nil {
			return nil, fmt.Errorf("backend: open %s: %w", redact(rawURL), err)
		}
		return s, nil
	case "s3":
		cfg := loc.S3
		cfg.AccessKey, cfg.SecretKey, cfg.SessionToken = opts.AccessKey, opts.SecretKey, opts.SessionToken
		cfg.DisableIMDS = opts.DisableIMDS
		cfg.MaxAttempts = opts.MaxAttempts
		cfg.PartSize, cfg.MultipartThreshold, cfg.Concurrency = opts.PartSize, opts.MultipartThreshold, opts.Concurrency
		cfg.HTTPClient = opts.HTTPClient
		s, err := s3store.New(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("backend: open %s: %w", redact(rawURL), err)
		}
		return s, nil
	}
	return nil, fmt.Errorf("backend: scheme %q has no opener", loc.Scheme)
}

// Parse checks a store URL without opening anything.
func Parse(rawURL string) (Location, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Error repeats the URL, which may hold a password.
		if ue, ok := err.(*url.Error); ok {
			err = ue.Err
		}
		return Location{}, fmt.Errorf("backend: malformed store URL %q: %w", redact(rawURL), err)
	}
	switch u.Scheme {
	case "file":
		return parseFile(u, rawURL)
	case "s3":
		return parseS3(u, rawURL)
	case "":
		return Location{}, fmt.Errorf("backend: store URL %q has no scheme: want file:///absolute/path or s3://bucket/prefix", redact(rawURL))
	default:
		return Location{}, fmt.Errorf("backend: store URL %q: unsupported scheme %q (supported: file, s3)", redact(rawURL), u.Scheme)
	}
}

func parseFile(u *url.URL, raw string) (Location, error) {
	bad := func(format string, args ...any) (Location, error) {
		return Location{}, fmt.Errorf("backend: file URL %q: %s", redact(raw), fmt.Sprintf(format, args...))
	}
	switch {
	case u.Opaque != "":
		return bad("relative path; want file:///absolute/path")
	case u.User != nil:
		return bad("user info is not allowed")
	case u.Host != "" && !strings.EqualFold(u.Host, "localhost"): // RFC 8089: "localhost" is the local machine too
		return bad("host %q: only local directories, file:///absolute/path (empty host or localhost)", u.Host)
	case u.RawQuery != "" || u.ForceQuery:
		return bad("file URLs take no query parameters")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return bad("fragment is not allowed")
	case u.Path == "" || !strings.HasPrefix(u.Path, "/"):
		return bad("no absolute path; want file:///absolute/path")
	}
	p := strings.TrimSuffix(u.Path, "/")
	if p == "" {
		return bad("refusing the file system root as a store")
	}
	for seg := range strings.SplitSeq(p[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return bad("path %q has an empty, '.' or '..' segment", u.Path)
		}
	}
	return Location{Scheme: "file", Dir: filepath.FromSlash(p)}, nil
}

// s3Params are the query parameters an s3:// URL may carry.
var s3Params = []string{"endpoint", "region", "path_style"}

func parseS3(u *url.URL, raw string) (Location, error) {
	bad := func(format string, args ...any) (Location, error) {
		return Location{}, fmt.Errorf("backend: s3 URL %q: %s", redact(raw), fmt.Sprintf(format, args...))
	}
	switch {
	case u.Opaque != "":
		return bad("want s3://bucket/prefix")
	case u.User != nil:
		return bad("credentials never go in the URL: pass them in Options (or use the AWS credential chain)")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return bad("fragment is not allowed")
	case u.Host == "":
		return bad("no bucket; want s3://bucket/prefix")
	case u.Port() != "" || strings.HasSuffix(u.Host, ":"):
		return bad("bucket %q has a port: the server goes in ?endpoint=", u.Host)
	}
	cfg := s3store.Config{Bucket: u.Host}
	if err := s3store.ValidateBucket(cfg.Bucket); err != nil {
		return bad("%v", err)
	}
	cfg.Prefix = strings.TrimPrefix(u.Path, "/")
	if err := remote.ValidatePrefix(cfg.Prefix); err != nil {
		return Location{}, fmt.Errorf("backend: s3 URL %q: prefix %q: %w", redact(raw), cfg.Prefix, err)
	}
	cfg.Prefix = strings.TrimSuffix(cfg.Prefix, "/")

	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return bad("malformed query: %v", err)
	}
	if u.ForceQuery && u.RawQuery == "" {
		return bad("empty query")
	}
	for name, vals := range q {
		if !slices.Contains(s3Params, name) {
			return bad("unknown parameter %q (known: %s)", name, strings.Join(s3Params, ", "))
		}
		if len(vals) != 1 {
			return bad("parameter %q given %d times", name, len(vals))
		}
		v := vals[0]
		if v == "" {
			return bad("parameter %q is empty", name)
		}
		switch name {
		case "endpoint":
			if err := s3store.ValidateEndpoint(v); err != nil {
				return bad("%v", err)
			}
			cfg.Endpoint = v
		case "region":
			if !validRegion(v) {
				return bad("region %q: want lowercase letters, digits and '-'", v)
			}
			cfg.Region = v
		case "path_style":
			switch v {
			case "true":
				cfg.PathStyle = true
			case "false":
				cfg.PathStyle = false
			default:
				return bad("path_style %q: want true or false", v)
			}
		}
	}
	return Location{Scheme: "s3", S3: cfg}, nil
}

func validRegion(r string) bool {
	if len(r) > 32 {
		return false
	}
	for _, c := range []byte(r) {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// userInfo matches the user info of a URL, also one nested in a query
// parameter (encoded or not).
var userInfo = regexp.MustCompile(`(?i)(//|%2F%2F)[^/?#&=]*(@|%40)`)

// redact hides user info (a password) in a URL before it goes into an
// error message.
func redact(raw string) string {
	return userInfo.ReplaceAllString(raw, "${1}REDACTED@")
}
