package vfs

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/backend"
)

// Durability says when a commit returns.
type Durability int

const (
	// Async (the default): a commit returns once the transaction is in the
	// local spool; publishing follows within the checkpoint interval. The
	// lag is visible in PRAGMA bop_status.
	Async Durability = iota
	// Sync: a commit returns only after the publish that contains it.
	// It needs the publisher (package checkpoint); this build refuses it
	// with ErrNotAvailable.
	Sync
)

func (d Durability) String() string {
	switch d {
	case Async:
		return "async"
	case Sync:
		return "sync"
	}
	return fmt.Sprintf("durability(%d)", int(d))
}

// Config configures a bop VFS. The zero value works: every database opened
// through the VFS keeps its remote store in a local folder next to it.
type Config struct {
	// Remote is the store URL: file:///absolute/dir or
	// s3://bucket/prefix?endpoint=...&region=...&path_style=true.
	// Empty: the embedded default, a local directory store in the
	// database's -bop folder (app.db -> app.db-bop/store).
	Remote string
	// Tenant is the first level of the remote key layout. Default "default".
	Tenant string
	// Name is the database's name in the store. Default: the file name
	// (app.db -> "app.db"); a file name that is not a valid store name
	// (lowercase [a-z0-9._-], at most 64 bytes) is an error asking for
	// Name. A DSN may set it per database: file:app.db?vfs=bop&bop_name=x.
	// A Name set here fits one database: two different files opened
	// through one VFS with the same Name are refused.
	Name string
	// CacheDir holds cached byte ranges of remote objects. Default: the
	// database's -bop/cache folder. CacheBytes bounds it (default 256 MiB).
	CacheDir   string
	CacheBytes int64
	// Durability: Async (default) or Sync.
	Durability Durability
	// CheckpointInterval is how often the publisher publishes (default 1s).
	CheckpointInterval time.Duration
	// SpoolLimit bounds the local spool in bytes; beyond it commits wait
	// for the publisher (backpressure). 0: 4 GiB; negative: no limit.
	SpoolLimit int64
	// MaxLag bounds how far publishing may fall behind commits (default
	// 1 minute); enforced by the publisher.
	MaxLag time.Duration
	// LeaseTTL: a writer that published or renewed within this long owns
	// the remote database (default 30s).
	LeaseTTL time.Duration
	// S3 static credentials. Without them the AWS default credential chain
	// is used for s3:// stores.
	S3AccessKey, S3SecretKey, S3SessionToken string
	// DisableIMDS keeps the EC2 instance metadata service out of the AWS
	// credential chain.
	DisableIMDS bool
	// ChunkPages is the number of pages per base object (default 16384).
	ChunkPages uint32
	// Logf receives a line for unusual events (reconciliation, withdrawn
	// transactions, remote errors). Nil: silent.
	Logf func(format string, args ...any)
}

// Defaults.
const (
	DefaultTenant             = "default"
	DefaultCacheBytes         = 256 << 20
	DefaultCheckpointInterval = time.Second
	DefaultSpoolLimit         = 4 << 30
	DefaultMaxLag             = time.Minute
	DefaultLeaseTTL           = 30 * time.Second
)

// withDefaults validates c and fills in defaults.
func (c Config) withDefaults() (Config, error) {
	if c.Remote != "" {
		if _, err := backend.Parse(c.Remote); err != nil {
			return c, fmt.Errorf("bop: Config.Remote: %w", err)
		}
	}
	if c.Tenant == "" {
		c.Tenant = DefaultTenant
	}
	if err := remote.ValidateName("tenant", c.Tenant); err != nil {
		return c, fmt.Errorf("bop: Config.Tenant: %w", err)
	}
	if c.Name != "" {
		if err := remote.ValidateName("database", c.Name); err != nil {
			return c, fmt.Errorf("bop: Config.Name: %w", err)
		}
	}
	if c.CacheDir != "" && !filepath.IsAbs(c.CacheDir) {
		abs, err := filepath.Abs(c.CacheDir)
		if err != nil {
			return c, fmt.Errorf("bop: Config.CacheDir: %w", err)
		}
		c.CacheDir = abs
	}
	switch {
	case c.CacheBytes < 0:
		return c, fmt.Errorf("bop: Config.CacheBytes %d is negative", c.CacheBytes)
	case c.CacheBytes == 0:
		c.CacheBytes = DefaultCacheBytes
	}
	switch c.Durability {
	case Async:
	case Sync:
		if !publisherAvailable() {
			return c, fmt.Errorf("bop: Config.Durability sync: a commit would wait for a publish that cannot happen: %w", ErrNotAvailable)
		}
	default:
		return c, fmt.Errorf("bop: Config.Durability %d: want Async or Sync", int(c.Durability))
	}
	switch {
	case c.CheckpointInterval < 0:
		return c, fmt.Errorf("bop: Config.CheckpointInterval %v is negative", c.CheckpointInterval)
	case c.CheckpointInterval == 0:
		c.CheckpointInterval = DefaultCheckpointInterval
	}
	if c.SpoolLimit == 0 {
		c.SpoolLimit = DefaultSpoolLimit
	}
	switch {
	case c.MaxLag < 0:
		return c, fmt.Errorf("bop: Config.MaxLag %v is negative", c.MaxLag)
	case c.MaxLag == 0:
		c.MaxLag = DefaultMaxLag
	}
	switch {
	case c.LeaseTTL < 0:
		return c, fmt.Errorf("bop: Config.LeaseTTL %v is negative", c.LeaseTTL)
	case c.LeaseTTL == 0:
		c.LeaseTTL = DefaultLeaseTTL
	}
	if (c.S3AccessKey == "") != (c.S3SecretKey == "") {
		return c, fmt.Errorf("bop: Config.S3AccessKey and S3SecretKey must be set together")
	}
	if c.S3SessionToken != "" && c.S3AccessKey == "" {
		return c, fmt.Errorf("bop: Config.S3SessionToken needs S3AccessKey and S3SecretKey")
	}
	if c.ChunkPages == 0 {
		c.ChunkPages = manifest.DefaultChunkPages
	}
	return c, nil
}

// spoolMax is the spool byte limit for wal.SpoolOptions (0: none).
func (c *Config) spoolMax() int64 {
	if c.SpoolLimit < 0 {
		return 0
	}
	return c.SpoolLimit
}

// backendOptions are the store options for backend.Open.
func (c *Config) backendOptions() backend.Options {
	return backend.Options{AccessKey: c.S3AccessKey, SecretKey: c.S3SecretKey, SessionToken: c.S3SessionToken, DisableIMDS: c.DisableIMDS}
}

// remoteURL is the store URL for the database at path (its -bop folder is
// dir): the configured one, or the embedded default inside dir.
func (c *Config) remoteURL(dir string) string {
	if c.Remote != "" {
		return c.Remote
	}
	return "file://" + filepath.ToSlash(filepath.Join(dir, "store"))
}

// dbName picks the database's store name: the DSN's bop_name, Config.Name,
// or the file name.
func (c *Config) dbName(path, uriName string) (string, error) {
	if uriName != "" {
		if err := remote.ValidateName("database", uriName); err != nil {
			return "", fmt.Errorf("bop: bop_name in the URI of %s: %w", path, err)
		}
		return uriName, nil
	}
	if c.Name != "" {
		return c.Name, nil
	}
	base := filepath.Base(path)
	if err := remote.ValidateName("database", base); err != nil {
		return "", fmt.Errorf("bop: the file name %q cannot be used as the database's name in the store (%v): set Config.Name or add bop_name=<name> to the URI (lowercase letters, digits, '.', '_', '-')", base, err)
	}
	return base, nil
}
