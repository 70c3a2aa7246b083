package manifest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bopstore/bop/remote"
	"github.com/ncruces/go-sqlite3"
)

// CatalogFormat is the value of meta.format: the meaning of the catalog's
// rows (as opposed to SchemaVersion, the shape of its tables).
const CatalogFormat = 1

// DefaultChunkPages is the default chunk size: 16384 pages (64 MiB at
// 4 KiB pages).
const DefaultChunkPages = 16384

// Options configure Open.
type Options struct {
	// Layout names the database; required to create a catalog, checked
	// against the file otherwise.
	Layout remote.Layout
	// PageSize and ChunkPages are fixed when the catalog is created
	// (defaults 4096 and DefaultChunkPages); if set when opening an
	// existing catalog they must match.
	PageSize   uint32
	ChunkPages uint32
	// Directories fetches the directory of a delta object that a record
	// adds without carrying it (records from the remote log never carry
	// directories). Nil: such a record fails to apply.
	Directories DirectorySource
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
	// VFS is the SQLite VFS the catalog file is opened with; "" is
	// SQLite's default. Tests pass a VFS that simulates power loss.
	VFS string
}

// Catalog is one database's catalog: a SQLite file (ncruces/go-sqlite3,
// default VFS) holding what the remote log says, plus this node's durable
// jobs, leases and pins, and the in-memory page map of the newest
// boundary. Safe for concurrent use: catalog methods serialise on a mutex;
// Snapshot is lock-free.
type Catalog struct {
	mu     sync.Mutex
	conn   *sqlite3.Conn
	stmts  map[string]*sqlite3.Stmt
	path   string
	meta   meta
	dirs   DirectorySource
	now    func() time.Time
	snap   atomic.Pointer[Snapshot]
	closed bool
	// broken: the connection's synchronous setting could not be restored
	// after a lazy commit (txLazy); every transaction fails with it.
	broken error
	// snapDamage: OpenRemote built the catalog without head's snapshot.
	snapDamage *SnapshotDamage

	// applyHook, when set (tests), is called inside Apply's transaction
	// with "check" (a dry run) or "apply": the crash test kills the
	// process there; an error fails the transaction.
	applyHook func(stage string) error
}

// meta mirrors the single meta row.
type meta struct {
	format       int
	layout       remote.Layout
	pageSize     uint32
	chunkPages   uint32
	tipSeq       uint64
	lastSeq      uint64
	lastTxid     uint64
	dbPages      uint32
	epoch        uint64
	writer       string
	fenceEpoch   uint64
	historyFloor uint64
	createdMs    int64
	nextObjectID uint64
	snapshotSeq  uint64
}

// Open opens the catalog at path, creating it if the file does not exist.
// It migrates an older schema forward, refuses a newer one
// (ErrSchemaTooNew), takes an exclusive lock on the file (a second opener
// fails: one process owns a catalog), and builds the page map of the
// newest boundary from the stored directories of live objects.
func Open(path string, opts Options) (*Catalog, error) {
	_, statErr := os.Stat(path)
	creating := errors.Is(statErr, os.ErrNotExist)
	if creating {
		// A WAL left without its database is removed by SQLite at the
		// first read (the database has no page); such a file is created
		// the slow way, through SQLite, rather than under that WAL.
		if _, err := os.Stat(path + "-wal"); !errors.Is(err, os.ErrNotExist) {
			creating = false
		}
	}
	if creating {
		if err := writeTemplate(path); err != nil {
			return nil, err
		}
	}
	name := path
	if opts.VFS != "" {
		// A URI names the VFS; '?', '#' and '%' in the path are escaped.
		name = "file:" + strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path) + "?vfs=" + url.QueryEscape(opts.VFS)
	}
	conn, err := sqlite3.Open(name)
	if err != nil {
		return nil, fmt.Errorf("manifest: open catalog %s: %w", path, err)
	}
	c := &Catalog{conn: conn, stmts: map[string]*sqlite3.Stmt{}, path: path, dirs: opts.Directories, now: opts.Now}
	if c.now == nil {
		c.now = time.Now
	}
	if err := c.init(creating, opts); err != nil {
		c.closeConn()
		return nil, err
	}
	return c, nil
}

func (c *Catalog) init(creating bool, opts Options) error {
	// locking_mode=EXCLUSIVE: the first transaction takes the file lock
	// and keeps it until Close, so two processes never share a catalog.
	// WAL + synchronous=FULL: every commit is durable and atomic (but
	// see txLazy). A new catalog (creating) is the template (template.go),
	// already in WAL mode and durable: page 1 must be durable before any
	// WAL commit is, as SQLite discards the WAL of an empty file.
	if err := c.conn.Exec("PRAGMA busy_timeout = 0; PRAGMA locking_mode = EXCLUSIVE; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL"); err != nil {
		return c.openErr(err)
	}
	var version int
	if _, err := c.queryOne("PRAGMA user_version", nil, func(s *sqlite3.Stmt) error {
		version = s.ColumnInt(0)
		return nil
	}); err != nil {
		return c.openErr(err)
	}
	if version > SchemaVersion {
		return fmt.Errorf("%w: %s has schema version %d, this bop understands up to %d: upgrade bop (the file is left untouched)",
			ErrSchemaTooNew, c.path, version, SchemaVersion)
	}
	if version == 0 && !creating {
		// An existing file without our schema: only an empty file is
		// acceptable (e.g. made by os.Create), never someone's database.
		var n int
		c.queryOne("SELECT count(*) FROM sqlite_schema", nil, func(s *sqlite3.Stmt) error { n = s.ColumnInt(0); return nil })
		if n > 0 {
			return fmt.Errorf("manifest: %s is a SQLite database but not a bop catalog (user_version 0, %d schema objects)", c.path, n)
		}
	}
	if version < SchemaVersion {
		// A new catalog (version 0) gets its schema and its meta row in
		// one transaction, committed lazily (txLazy: no fsync). Nothing
		// is lost if a crash drops it: every prefix of the creation
		// opens as a catalog to create again (an empty file: version 0
		// and no schema objects; or nothing of it at all), and a catalog
		// holds nothing worth an fsync until its first record is applied,
		// whose durable commit fsyncs the WAL and the creation with it.
		// (The VFS even discards a catalog that never applied a record.)
		// A migration of an existing catalog is durable.
		var insertMeta func() error
		tx := c.tx
		if version == 0 {
			ins, err := c.metaInsert(opts)
			if err != nil {
				return err
			}
			insertMeta, tx = ins, c.txLazy
		}
		err := tx(func() error {
			for v := version; v < SchemaVersion; v++ {
				if err := c.conn.Exec(migrations[v]); err != nil {
					return fmt.Errorf("manifest: migrate catalog %s from schema %d to %d: %w", c.path, v, v+1, err)
				}
			}
			if err := c.conn.Exec(fmt.Sprintf("PRAGMA user_version = %d", SchemaVersion)); err != nil {
				return err
			}
			if insertMeta != nil {
				return insertMeta()
			}
			return nil
		})
		if err != nil {
			return c.openErr(err)
		}
	}
	found, err := c.loadMeta()
	if err != nil {
		return err
	}
	if !found {
		if err := c.createMeta(opts, creating); err != nil {
			return err
		}
	} else if err := c.checkOptions(opts); err != nil {
		return err
	}
	snap, err := c.buildFull(c.meta.lastSeq, c.meta.tipSeq)
	if err != nil {
		return err
	}
	c.snap.Store(snap)
	return nil
}

// openErr explains the common failure of a catalog held by another process.
func (c *Catalog) openErr(err error) error {
	var se *sqlite3.Error
	if errors.As(err, &se) && (se.Code() == sqlite3.BUSY || se.Code() == sqlite3.LOCKED) {
		return fmt.Errorf("manifest: catalog %s is in use by another process: %w", c.path, err)
	}
	return fmt.Errorf("manifest: open catalog %s: %w", c.path, err)
}

// metaInsert checks the options of a new catalog and returns the insert
// of its meta row, to run inside a transaction.
func (c *Catalog) metaInsert(opts Options) (func() error, error) {
	if opts.Layout.DB == "" {
		return nil, fmt.Errorf("manifest: create catalog %s: Options.Layout is required", c.path)
	}
	if _, err := remote.NewLayout(opts.Layout.Tenant, opts.Layout.DB); err != nil {
		return nil, fmt.Errorf("manifest: create catalog %s: %w", c.path, err)
	}
	ps, cp := opts.PageSize, opts.ChunkPages
	if ps == 0 {
		ps = 4096
	}
	if cp == 0 {
		cp = DefaultChunkPages
	}
	if err := checkPageSize(ps); err != nil {
		return nil, fmt.Errorf("manifest: create catalog %s: %w", c.path, err)
	}
	return func() error {
		return c.exec(`INSERT INTO meta (id, format, tenant, db, page_size, chunk_pages, created_ms)
			VALUES (1, ?, ?, ?, ?, ?, ?)`, CatalogFormat, opts.Layout.Tenant, opts.Layout.DB, ps, cp, c.now().UnixMilli())
	}, nil
}

// createMeta inserts the meta row of a catalog that has the schema but
// none: durably, except in a new catalog (creating: the template), where
// it commits with no sync at all (txCreate). Its loss leaves the template,
// whose next open inserts it again; the first durable commit (the first
// record applied) fsyncs the WAL and the row with it. No sync is skipped
// that a later commit relies on: the WAL is new (the template is
// checkpointed, and a leftover WAL makes Open create the slow way), so no
// older frame exists that an unsynced WAL header could let through (the
// hazard NORMAL's header sync at a WAL restart guards against).
func (c *Catalog) createMeta(opts Options, creating bool) error {
	ins, err := c.metaInsert(opts)
	if err != nil {
		return err
	}
	tx := c.tx
	if creating {
		tx = c.txCreate
	}
	if err := tx(ins); err != nil {
		return c.openErr(err)
	}
	found, err := c.loadMeta()
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("manifest: create catalog %s: meta row missing after insert", c.path)
	}
	return nil
}

func (c *Catalog) checkOptions(opts Options) error {
	m := &c.meta
	if m.format > CatalogFormat {
		return fmt.Errorf("%w: %s has catalog format %d, this bop understands up to %d", ErrSchemaTooNew, c.path, m.format, CatalogFormat)
	}
	if opts.Layout.DB != "" && opts.Layout != m.layout {
		return fmt.Errorf("manifest: catalog %s belongs to %s%s, not %s%s", c.path, m.layout.Tenant+"/", m.layout.DB, opts.Layout.Tenant+"/", opts.Layout.DB)
	}
	if opts.PageSize != 0 && opts.PageSize != m.pageSize {
		return fmt.Errorf("manifest: catalog %s has page size %d, not %d", c.path, m.pageSize, opts.PageSize)
	}
	if opts.ChunkPages != 0 && opts.ChunkPages != m.chunkPages {
		return fmt.Errorf("manifest: catalog %s has %d pages per chunk, not %d", c.path, m.chunkPages, opts.ChunkPages)
	}
	return nil
}

func (c *Catalog) loadMeta() (bool, error) {
	var m meta
	found, err := c.queryOne(`SELECT format, tenant, db, page_size, chunk_pages, tip_seq, last_seq, last_txid,
		db_pages, epoch, writer, fence_epoch, history_floor_txid, created_ms, next_object_id, snapshot_seq FROM meta WHERE id = 1`,
		nil, func(s *sqlite3.Stmt) error {
			m.format = s.ColumnInt(0)
			m.layout = remote.Layout{Tenant: s.ColumnText(1), DB: s.ColumnText(2)}
			m.pageSize, m.chunkPages = colU32(s, 3), colU32(s, 4)
			m.tipSeq, m.lastSeq, m.lastTxid = colU64(s, 5), colU64(s, 6), colU64(s, 7)
			m.dbPages, m.epoch, m.writer = colU32(s, 8), colU64(s, 9), s.ColumnText(10)
			m.fenceEpoch, m.historyFloor, m.createdMs = colU64(s, 11), colU64(s, 12), s.ColumnInt64(13)
			m.nextObjectID, m.snapshotSeq = colU64(s, 14), colU64(s, 15)
			return nil
		})
	if err != nil {
		return false, c.openErr(err)
	}
	if found {
		if err := checkPageSize(m.pageSize); err != nil || m.chunkPages == 0 {
			return false, corruptf(c.path, "meta: page size %d, chunk pages %d", m.pageSize, m.chunkPages)
		}
		c.meta = m
	}
	return found, nil
}

// Close closes the catalog file. Snapshots taken before stay usable.
func (c *Catalog) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	return c.closeConn()
}

func (c *Catalog) closeConn() error {
	for _, s := range c.stmts {
		s.Close()
	}
	c.stmts = nil
	return c.conn.Close()
}

func (c *Catalog) lock() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return fmt.Errorf("manifest: catalog %s is closed", c.path)
	}
	return nil
}

// Path is the catalog file's path.
func (c *Catalog) Path() string { return c.path }

// Layout is the database the catalog describes.
func (c *Catalog) Layout() remote.Layout {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.meta.layout
}

// Tip describes the newest state the catalog holds.
type Tip struct {
	Seq        uint64 // newest applied record (void or not); the next is Seq+1
	LastSeq    uint64 // newest non-void record: the parent of the next record
	Txid       uint64 // its boundary
	DBPages    uint32 // database size at that boundary
	PageSize   uint32
	ChunkPages uint32
	Epoch      uint64 // epoch of the newest non-void record
	Writer     string // its writer
	FenceEpoch uint64 // epoch of the nearest takeover record
}

// Tip returns the catalog's newest state.
func (c *Catalog) Tip() Tip {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tipLocked()
}

func (c *Catalog) tipLocked() Tip {
	m := &c.meta
	return Tip{Seq: m.tipSeq, LastSeq: m.lastSeq, Txid: m.lastTxid, DBPages: m.dbPages, PageSize: m.pageSize,
		ChunkPages: m.chunkPages, Epoch: m.epoch, Writer: m.writer, FenceEpoch: m.fenceEpoch}
}

// Snapshot returns the page map of the newest boundary. It never blocks
// and the result is immutable: hold it as long as needed.
func (c *Catalog) Snapshot() *Snapshot { return c.snap.Load() }

// logChange appends to the change log; called inside transactions.
func (c *Catalog) logChange(what string, detail string) error {
	return c.exec("INSERT INTO changes (at_ms, what, detail) VALUES (?, ?, ?)", c.now().UnixMilli(), what, detail)
}

// Change is one row of the local change log.
type Change struct {
	ID     int64
	At     time.Time
	What   string
	Detail string
}

// Changes returns up to limit change-log rows with id > after, oldest first.
func (c *Catalog) Changes(after int64, limit int) ([]Change, error) {
	if err := c.lock(); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	var out []Change
	err := c.query("SELECT id, at_ms, what, detail FROM changes WHERE id > ? ORDER BY id LIMIT ?", []any{after, limit},
		func(s *sqlite3.Stmt) error {
			out = append(out, Change{ID: s.ColumnInt64(0), At: time.UnixMilli(s.ColumnInt64(1)), What: s.ColumnText(2), Detail: s.ColumnText(3)})
			return nil
		})
	return out, err
}

// AllocateObjectIDs reserves n fresh object ids (durably, before any
// upload, so an id is never reused for other content) and returns the
// first. Ids continue above every id in the catalog.
func (c *Catalog) AllocateObjectIDs(n int) (uint64, error) {
	if n <= 0 {
		return 0, fmt.Errorf("manifest: allocate %d object ids", n)
	}
	if err := c.lock(); err != nil {
		return 0, err
	}
	defer c.mu.Unlock()
	var first uint64
	err := c.tx(func() error {
		var err error
		first, err = c.allocateObjectIDsLocked(n)
		return err
	})
	if err != nil {
		return 0, err
	}
	c.meta.nextObjectID = first + uint64(n) // committed
	return first, nil
}

// allocateObjectIDsLocked reserves n ids inside the caller's transaction
// and returns the first. The caller sets c.meta.nextObjectID to first+n
// once its transaction committed (a rolled-back reservation leaves it).
func (c *Catalog) allocateObjectIDsLocked(n int) (uint64, error) {
	var maxID uint64
	if _, err := c.queryOne("SELECT coalesce(max(id), 0) FROM objects", nil, func(s *sqlite3.Stmt) error {
		maxID = colU64(s, 0)
		return nil
	}); err != nil {
		return 0, err
	}
	first := max(c.meta.nextObjectID, maxID+1)
	if err := c.exec("UPDATE meta SET next_object_id = ? WHERE id = 1", first+uint64(n)); err != nil {
		return 0, err
	}
	return first, nil
}

// DirectorySource fetches an object's directory (delta.EncodeDirectory
// bytes) for the catalog. In production it reads through the cache tier.
type DirectorySource interface {
	Directory(ctx context.Context, obj ObjectAdded) ([]byte, error)
}
