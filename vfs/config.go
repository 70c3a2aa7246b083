package vfs

import (
	"fmt"
	"net/url"
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
	// The wait happens after SQLite has ended the write transaction, so
	// concurrent commits share one publish. If that publish fails, the
	// statement returns an error wrapping ErrOutcomeUnknown: the
	// transaction is committed locally and will still be published.
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
	// The embedded default store (Remote "") is not cached: its objects
	// are on local disk already.
	CacheDir   string
	CacheBytes int64
	// Durability: Async (default) or Sync.
	Durability Durability
	// CheckpointInterval is how often the publisher publishes what was
	// committed (default 1s). PublishBytes makes it publish early once the
	// spool holds that many unpublished bytes (default 64 MiB; negative:
	// never early).
	CheckpointInterval time.Duration
	PublishBytes       int64
	// SpoolLimit bounds the local spool in bytes; beyond it commits wait
	// for the publisher (backpressure), at most a minute each or until
	// the statement's context ends (then SQLite's interrupt), then fail
	// with ErrSpoolFull. 0: 4 GiB; negative: no limit.
	SpoolLimit int64
	// MaxLag bounds how far publishing may fall behind commits (default
	// 1 minute): with async durability, a commit made while the oldest
	// unpublished transaction is older than MaxLag waits, after it
	// committed, until publishing catches up (backpressure; the statement's
	// context ends the wait).
	MaxLag time.Duration
	// SyncTimeout bounds how long a commit waits for its publish with Sync
	// durability before it returns ErrOutcomeUnknown (default 1 minute).
	SyncTimeout time.Duration
	// LeaseTTL: a writer that published or renewed within this long owns
	// the remote database (default 30s, at least MinLeaseTTL): another
	// node's open fails with ErrOwnedElsewhere unless it forces a takeover.
	LeaseTTL time.Duration
	// ForceTakeover takes the writer role at open even while another
	// writer holds the lease; that writer is fenced (its commits fail with
	// ErrFenced). Per database: the DSN parameter bop_force_takeover=1.
	// Either acts when the database is opened in the process (its first
	// connection); a connection asking for it while the database is
	// already open and fenced is refused with ErrFenced (close every
	// connection, then reopen with it); one open without the role (its
	// takeover still retried in the background) does not apply it either.
	ForceTakeover bool
	// StagingBytes bounds the disk space all databases of this VFS may use
	// for staging page objects before upload (a quota pool; 0: no limit).
	// A publish that does not fit waits, commits go on locally.
	StagingBytes int64
	// CloseTimeout bounds the final publish and release record when the
	// last connection of a database closes (default 30s). What does not
	// make it stays in the spool for the next open.
	CloseTimeout time.Duration
	// AutoCheckpoint is the WAL size in pages at which a commit runs a
	// passive checkpoint, like SQLite's wal_autocheckpoint (default 1000;
	// negative: never). PRAGMA wal_autocheckpoint changes it per
	// connection. (bop replaces SQLite's auto-checkpoint hook with its own
	// WAL hook, which also runs the durability waits.)
	AutoCheckpoint int
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

	// wrapStore, if set (tests), wraps the store between the cache and the
	// backend (fault injection).
	wrapStore func(remote.Store) remote.Store
}

// Defaults.
const (
	DefaultTenant             = "default"
	DefaultCacheBytes         = 256 << 20
	DefaultCheckpointInterval = time.Second
	DefaultSpoolLimit         = 4 << 30
	DefaultMaxLag             = time.Minute
	DefaultLeaseTTL           = 30 * time.Second
	MinLeaseTTL               = time.Second
	DefaultPublishBytes       = 64 << 20
	DefaultSyncTimeout        = time.Minute
	DefaultCloseTimeout       = 30 * time.Second
	DefaultAutoCheckpoint     = 1000
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
	case Async, Sync:
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
	case c.LeaseTTL < MinLeaseTTL:
		// The writer renews every LeaseTTL/3: shorter than this, the lease
		// lapses between renewals (and a store round trip), and another
		// node could take the database over without forcing it.
		return c, fmt.Errorf("bop: Config.LeaseTTL %v is below the minimum %v", c.LeaseTTL, MinLeaseTTL)
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{{"SyncTimeout", &c.SyncTimeout, DefaultSyncTimeout}, {"CloseTimeout", &c.CloseTimeout, DefaultCloseTimeout}} {
		switch {
		case *d.v < 0:
			return c, fmt.Errorf("bop: Config.%s %v is negative", d.name, *d.v)
		case *d.v == 0:
			*d.v = d.def
		}
	}
	if c.PublishBytes == 0 {
		c.PublishBytes = DefaultPublishBytes
	}
	if c.StagingBytes < 0 {
		return c, fmt.Errorf("bop: Config.StagingBytes %d is negative", c.StagingBytes)
	}
	switch {
	case c.AutoCheckpoint == 0:
		c.AutoCheckpoint = DefaultAutoCheckpoint
	case c.AutoCheckpoint < 0:
		c.AutoCheckpoint = 0
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
	// Escaped: a folder named with '#', '?', '%' or a space is a path, not
	// a fragment or a query.
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(filepath.Join(dir, "store"))}
	return u.String()
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
