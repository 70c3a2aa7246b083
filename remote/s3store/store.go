package s3store

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/bopstore/bop/remote"
)

// Store is a remote.Store on one bucket and key prefix. It is safe for
// concurrent use.
type Store struct {
	client *s3.Client
	cfg    Config // with defaults filled in

	// parts recycles part buffers (cap PartSize) across Puts. sync.Pool
	// lets the GC take idle buffers back, so a quiet store holds none.
	parts sync.Pool
}

var _ remote.Store = (*Store)(nil)

// New checks cfg, builds the S3 client and resolves credentials once, so
// that a store without usable credentials fails here rather than at its
// first request. It sends no request to the bucket.
func New(ctx context.Context, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	awsCfg, err := loadAWSConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	cfg.Region = awsCfg.Region
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		o.UsePathStyle = cfg.PathStyle
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		// Flexible checksums only when an operation requires them. The
		// SDK's default ("when supported") adds a CRC32 to every upload,
		// sent as an aws-chunked trailer; S3-compatible servers differ in
		// how much of that they accept, and it hashes every byte a second
		// time. Integrity is ours anyway: Put returns the xxhash64 of what
		// it sent, page objects carry their own hashes, and plain-HTTP
		// endpoints are signed with the payload's SHA-256.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	s := &Store{client: client, cfg: cfg}
	s.parts.New = func() any {
		b := make([]byte, 0, cfg.PartSize)
		return &b
	}
	return s, nil
}

// loadAWSConfig builds the SDK configuration: region, credentials (static
// or the default chain, with or without IMDS), retries and HTTP client.
func loadAWSConfig(ctx context.Context, cfg Config) (aws.Config, error) {
	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = cfg.MaxAttempts
				// The standard retryer also rations retries with a
				// client-wide token bucket, which turns a burst of
				// errors under load into "retry quota exceeded" at
				// once. Attempts and backoff already bound the retries.
				o.RateLimiter = ratelimit.None
				// versitygw's posix backend answers 409
				// ExistingObjectIsDirectory when a Put creates a folder
				// that a concurrent Delete of the folder's last key is
				// removing (mkdir, then link: ENOENT). The data was not
				// written, so an unconditional Put is safe to send again;
				// AWS never uses this code. With --sidecar metadata the
				// key's ETag attribute was written, though, and stays:
				// a conditional create of that key is then refused (412)
				// for good while reads find nothing, with or without the
				// retry. bop keeps its own deletes from emptying a folder
				// that a conditional create may target
				// (manifest.ProbeStore); docs/ARCHITECTURE.md, session 10.
				o.Retryables = append(o.Retryables, retry.RetryableErrorCode{
					Codes: map[string]struct{}{"ExistingObjectIsDirectory": {}},
				})
			})
		}),
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.HTTPClient != nil {
		opts = append(opts, config.WithHTTPClient(cfg.HTTPClient))
	} else {
		opts = append(opts, config.WithHTTPClient(awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
			// The SDK keeps 10 idle connections per host; several Puts
			// with Concurrency parts each would open and drop
			// connections all the time.
			tr.MaxIdleConnsPerHost = 4 * maxConcurrency
		})))
	}
	if cfg.DisableIMDS {
		opts = append(opts, config.WithEC2IMDSClientEnableState(imds.ClientDisabled))
	}
	static := cfg.AccessKey != ""
	if static {
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken)))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("s3store: load AWS config: %w", err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = DefaultRegion
	}
	if !static {
		// Resolve the chain now: without credentials every request would
		// fail later, less clearly. The provider caches the result.
		if awsCfg.Credentials == nil {
			return aws.Config{}, fmt.Errorf("s3store: no AWS credentials configured")
		}
		if _, err := awsCfg.Credentials.Retrieve(ctx); err != nil {
			return aws.Config{}, fmt.Errorf("s3store: no usable AWS credentials (static keys, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, shared config%s): %w",
				imdsNote(cfg.DisableIMDS), err)
		}
	}
	return awsCfg, nil
}

func imdsNote(disabled bool) string {
	if disabled {
		return "; EC2 instance metadata disabled"
	}
	return ", EC2 instance metadata"
}

// fullKey validates key and places it under the store's prefix.
func (s *Store) fullKey(key string) (string, error) {
	if err := remote.ValidateKey(key); err != nil {
		return "", err
	}
	full := key
	if s.cfg.Prefix != "" {
		full = s.cfg.Prefix + "/" + key
	}
	if len(full) > maxS3KeyLen {
		return "", fmt.Errorf("%w: %q: %d bytes with the store prefix, S3 allows %d", remote.ErrInvalidKey, key, len(full), maxS3KeyLen)
	}
	return full, nil
}

// Config returns the store's configuration with defaults filled in and
// the secret key and session token blanked.
func (s *Store) Config() Config {
	c := s.cfg
	if c.SecretKey != "" {
		c.SecretKey = "REDACTED"
	}
	if c.SessionToken != "" {
		c.SessionToken = "REDACTED"
	}
	c.HTTPClient = nil
	return c
}

// Bucket returns the bucket name.
func (s *Store) Bucket() string { return s.cfg.Bucket }

// Prefix returns the key prefix inside the bucket, without a trailing '/'.
func (s *Store) Prefix() string { return s.cfg.Prefix }
