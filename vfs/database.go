package vfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bopstore/bop/checkpoint"
	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/wal"
)

// database is the state of one database shared by every connection of
// the process: the ownership lock, the seal, the spool and capture, the
// image, the store and catalog. It is created by the first open of the main
// file and closed when the last connection closes it (refcounted by open
// main files, keyed by the main file's full path).
//
// Local files of database app.db (docs/arch/vfs.md):
//
//	app.db           the page image (SQLite's main database file)
//	app.db-wal       SQLite's WAL;  app.db-shm  SQLite's wal-index
//	app.db-bop/      bop's state:
//	    lock         ownership lock (flock) and owner info
//	    meta.json    identity and origin; written last by the first open
//	    seal         identity of app.db and app.db-wal as bop left them
//	    spool/       captured transactions (package wal)
//	    image        presence bitmap, only while the image is sparse
//	    catalog.db   the manifest catalog (created by the publisher)
//	    store/       the embedded default remote store
//	    cache/       remote byte-range cache (default CacheDir; none for the embedded store)
type database struct {
	v     *VFS
	cfg   Config
	path  string // full path of the main file
	dir   string // path + "-bop"
	start time.Time

	layout    remote.Layout
	remoteURL string
	force     bool // take the writer role even from a live writer
	readOnly  bool // the first connection was read-only: no writer role at open (a later read-write connection takes it: rwJoined)
	meta      *meta
	owner     *ownerLock
	seal      *sealFile
	spool     *wal.Spool
	capture   *wal.Capture
	img       *image // nil: the image is complete
	mainFD    *os.File
	inner     remote.Store // the backend
	store     remote.Store // the backend through the cache (and, in tests, a fault wrapper)
	// rwJoined: a read-write connection joined a database whose first
	// connection was read-only; ensurePublisher then takes the writer
	// role and starts the publisher (at that connection's open, through
	// the auto-extension), as it does for a new database.
	rwJoined atomic.Bool
	// enforcesConditions: the store declares it enforces conditional
	// puts by construction (remote.ConditionEnforcer): it is not probed.
	enforcesConditions bool
	catalog            *manifest.Catalog
	writer             *manifest.Writer
	pub                atomic.Pointer[checkpoint.Publisher]
	// directWriter is the main file that wrote the database last: in
	// rollback-journal mode (the switch to WAL mode) the connection whose
	// transaction the deletion of the journal commits (VFS.Delete).
	directWriter atomic.Pointer[mainFile]

	// roleMu serialises a late start of the publisher (ensurePublisher);
	// startErr is why it could not start (sticky).
	roleMu   sync.Mutex
	startErr error
	// roleClosed (under roleMu): the database is closing; no late start.
	roleClosed bool
	// lateStart: a late start from a commit (startPublisherLate) is under
	// way, or failed for good (startErr).
	lateStart atomic.Bool
	// fencedErr is set when the publisher learns another writer took
	// over: every WAL write fails from then on.
	fencedErr atomic.Pointer[error]
	// snapshotReplaced: takeRole uploaded a catalog snapshot in place of
	// a damaged one (manifest.SnapshotDamage), once.
	snapshotReplaced bool
	// probeLeftovers: probe objects manifest.ProbeStore left in a store
	// without head, handed to the writer (which deletes them after its
	// takeover).
	probeLeftovers []string
	lagWaits       atomic.Uint64 // commits that waited for MaxLag

	// durable records the main file's fsyncs (mainfile.go).
	durable mainDurability

	ctx    context.Context // cancelled at close: remote reads stop
	cancel context.CancelFunc

	mu          sync.Mutex
	remoteErr   error       // the last error talking to the remote
	lagSince    time.Time   // without a publisher: when the oldest unpublished transaction was first seen
	quarantined string      // the quarantine folder this open filled, if any
	settleTimer *time.Timer // a pending settleNow
	// settleMu is held by settleNow and by close, so that no settle runs
	// on closed files; stopped is set by close under it.
	settleMu sync.Mutex
	stopped  bool

	// Registry fields, guarded by registry.mu.
	refs    int
	ready   chan struct{} // closed when open finished (openErr says how)
	openErr error
	closing chan struct{} // non-nil while closing; closed when done
}

// registry holds the open databases of the process, across VFS instances:
// two VFS objects must never own one file at once.
var registry = struct {
	mu  sync.Mutex
	dbs map[string]*database
}{dbs: map[string]*database{}}

// acquire returns the state of the database at path, opening it if this
// is the first connection.
func (v *VFS) acquire(path string, flags openFlags) (*database, error) {
	for {
		registry.mu.Lock()
		d := registry.dbs[path]
		if d == nil {
			if v.closed {
				registry.mu.Unlock()
				return nil, fmt.Errorf("%w: cannot open %s", ErrClosed, path)
			}
			d = &database{v: v, cfg: v.cfg, path: path, dir: path + "-bop", ready: make(chan struct{}), refs: 1}
			registry.dbs[path] = d
			registry.mu.Unlock()
			err := d.open(flags)
			registry.mu.Lock()
			d.openErr = err
			if err != nil {
				delete(registry.dbs, path)
			} else {
				v.open++
			}
			close(d.ready)
			registry.mu.Unlock()
			if err != nil {
				return nil, err
			}
			return d, nil
		}
		if ch := d.closing; ch != nil {
			registry.mu.Unlock()
			<-ch
			continue
		}
		if d.v != v {
			registry.mu.Unlock()
			return nil, fmt.Errorf("bop: %s is already open in this process through VFS %q; open every connection of a database through one VFS", path, d.v.name)
		}
		d.refs++
		registry.mu.Unlock()
		if !flags.readOnly {
			d.rwJoined.Store(true)
		}
		<-d.ready
		if d.openErr != nil {
			return nil, d.openErr
		}
		if flags.name != "" && flags.name != d.layout.DB {
			// One file, one database in the store: a second name would be
			// silently ignored (the first open chose it).
			err := fmt.Errorf("bop: %s is open in this process as database %q of its store; bop_name=%s names another (every connection of a file names the same database)",
				path, d.layout.DB, flags.name)
			d.release()
			return nil, err
		}
		if flags.force && !flags.readOnly {
			if ferr := d.fenced(); ferr != nil {
				// bop_force_takeover acts when a database is opened; this
				// one is open, and fenced: saying nothing would leave the
				// connection failing every commit with ErrFenced as if the
				// parameter had not been given.
				d.release()
				return nil, fmt.Errorf("%w: bop: %s is open in this process and was fenced (%v); bop_force_takeover=1 takes the writer role when a database is opened: close every connection of it, then open it again with bop_force_takeover=1",
					ErrFenced, path, ferr)
			}
		}
		return d, nil
	}
}

// release drops one connection's reference; the last one closes the
// database's state.
func (d *database) release() error {
	registry.mu.Lock()
	d.refs--
	if d.refs > 0 {
		registry.mu.Unlock()
		return nil
	}
	d.closing = make(chan struct{})
	registry.mu.Unlock()

	err := d.close()

	registry.mu.Lock()
	delete(registry.dbs, d.path)
	close(d.closing)
	v := d.v
	v.open--
	unregister := v.closed && v.open == 0
	registry.mu.Unlock()
	if unregister {
		v.unregister()
	}
	return err
}

// lookup returns the open database at path, if any.
func lookup(path string) *database {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	d := registry.dbs[path]
	if d == nil || d.closing != nil {
		return nil
	}
	select {
	case <-d.ready:
		if d.openErr != nil {
			return nil
		}
		return d
	default:
		return nil
	}
}

// lookupRef is lookup that also takes a reference (release it), so the
// database cannot close while the caller uses it.
func lookupRef(path string, v *VFS) *database {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	d := registry.dbs[path]
	if d == nil || d.closing != nil || d.v != v {
		return nil
	}
	select {
	case <-d.ready:
		if d.openErr != nil {
			return nil
		}
		d.refs++
		return d
	default:
		return nil
	}
}

// openTestHook, if set (tests), is called at points of the open sequence
// ("meta-written": a first open's meta.json is durable); an error stops
// the open there, leaving the files as a crash at that point would.
var openTestHook func(stage string) error

// openFlags is what the open sequence needs to know of SQLite's flags and
// the URI's parameters.
type openFlags struct {
	readOnly bool
	name     string // bop_name
	force    bool   // bop_force_takeover
}

// remoteCheckTimeout bounds the first open's question to the remote.
const remoteCheckTimeout = 10 * time.Second

// open runs the open sequence of the first connection (docs/arch/vfs.md):
//
//  1. ownership: flock <db>-bop/lock or fail with ErrOwnedElsewhere; an
//     interrupted quarantine is finished;
//  2. the store (backend + disk cache);
//  3. first open only (no meta.json): ask the store whether it has the
//     database: no: a new or adopted database; yes and the local file is
//     empty or missing: rebuild from the store (writer role, sparse
//     image of its tip); yes and the local file has data:
//     ErrRemoteHasDatabase;
//  4. identity (meta.json) and outside changes (the seal);
//  5. the spool, the capture, and reconciliation of the WAL on disk (a WAL
//     of a generation bop never captured is ErrChangedOutside); adoption
//     records the file; the first open writes meta.json;
//  6. the writer role (role.go): catalog, takeover; foreign publishes
//     found: quarantine and rebuild, then 4-5 again;
//  7. the image (sparse or complete), the seal is marked open, the
//     publisher starts.
func (d *database) open(flags openFlags) (err error) {
	d.start = time.Now()
	d.ctx, d.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			d.closeFiles()
			err = fmt.Errorf("bop: open %s: %w", d.path, err)
		}
	}()
	cfg := &d.cfg
	d.readOnly = flags.readOnly
	d.force = cfg.ForceTakeover || flags.force
	name, err := cfg.dbName(d.path, flags.name)
	if err != nil {
		return err
	}
	if err := checkUnique(d, remote.Layout{Tenant: cfg.Tenant, DB: name}, cfg.remoteURL(d.dir)); err != nil {
		return err
	}
	if err := os.MkdirAll(d.dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", d.dir, err)
	}
	host, _ := os.Hostname()
	me := Owner{PID: os.Getpid(), Host: host, Started: d.start, VFS: d.v.name,
		Writer: manifest.NewWriterID(fmt.Sprintf("%s-pid%d", host, os.Getpid())), ReadOnly: flags.readOnly}
	if d.owner, err = openOwner(filepath.Join(d.dir, "lock"), me); err != nil {
		return err
	}
	if err := resumeQuarantine(d.path); err != nil {
		return err
	}
	octx, cancel := context.WithTimeout(d.ctx, remoteCheckTimeout)
	defer cancel()
	if err := d.openStore(octx); err != nil {
		return err
	}

	m, err := readMeta(d.dir)
	if err != nil {
		return err
	}
	first := m == nil
	adoptPS := uint32(0)
	if first {
		if m, adoptPS, err = d.firstOpen(octx, flags, name); err != nil {
			return err
		}
		first = m.Origin != originTakeover
	}
	d.meta = m
	if err := d.openLocal(first, adoptPS); err != nil {
		return err
	}
	if first {
		// The local state is initialized: a crash from here on reopens it
		// (nothing is taken from the store before this point).
		if err := writeMeta(d.dir, m); err != nil {
			return err
		}
		if openTestHook != nil {
			if err := openTestHook("meta-written"); err != nil {
				return err
			}
		}
	}

	if ps := d.knownPageSize(); ps != 0 && !flags.readOnly && (d.writer == nil || d.writer.Epoch() == 0) {
		rb, err := d.takeRole(ps)
		if err != nil {
			return err
		}
		if rb.reason != "" {
			if err := d.closeLocal(); err != nil {
				return err
			}
			if err := d.rebuildFromRemote(rb); err != nil {
				return err
			}
			if d.meta, err = readMeta(d.dir); err != nil {
				return err
			}
			if err := d.openLocal(false, 0); err != nil {
				return err
			}
		}
	}

	d.mainFD, err = os.OpenFile(d.path, os.O_RDWR, 0)
	hydrate := err == nil
	if err != nil {
		if d.mainFD, err = os.Open(d.path); err != nil {
			return fmt.Errorf("open %s: %w", d.path, err)
		}
	}
	if d.catalog == nil {
		if _, err := os.Stat(d.catalogPath()); err == nil {
			// Read-only, or a catalog the role did not need: the sparse
			// image still reads through it.
			if d.catalog, err = manifest.Open(d.catalogPath(), d.catalogOptions(0)); err != nil {
				return err
			}
		}
	}
	if err := d.openImage(hydrate); err != nil {
		return err
	}

	// From here bop's writes to the main file are accounted by the seal.
	mainSt, err := d.mainStat()
	if err != nil {
		return err
	}
	st := d.seal.state()
	st.busy, st.open, st.main, st.wal = false, true, mainSt, fileStat{}
	if st != d.seal.state() { // a first open saved it already (openLocal)
		if err := d.seal.save(st); err != nil {
			return err
		}
	}
	if last := d.spool.Status().LastTxid; last > 0 {
		d.lagSince = d.start
	}
	if d.writer != nil && !flags.readOnly {
		if err := d.startPublisher(); err != nil {
			return err
		}
	}
	return nil
}

// firstOpen decides what a folder without meta.json becomes (step 3 of
// open): leftovers of an interrupted first open are removed; the store is
// asked for the database. It returns the meta of a new or adopted
// database (to be written once the local state exists), or, after a
// rebuild from the store, the meta it wrote. adoptPS is the page size of
// a file to adopt.
func (d *database) firstOpen(ctx context.Context, flags openFlags, name string) (m *meta, adoptPS uint32, err error) {
	cfg := &d.cfg
	// Nothing of an earlier, interrupted first open was published (its
	// meta.json would exist), except a rebuild's takeover, which the
	// store still has. A bitmap means the main file is a sparse seed,
	// holes only: it goes too.
	// One listing of the folder finds them (usually none: a new folder
	// holds only the lock and the store).
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, 0, fmt.Errorf("list %s: %w", d.dir, err)
	}
	present := make(map[string]bool, len(ents))
	for _, e := range ents {
		present[e.Name()] = true
	}
	if present[imageFileName] {
		for _, p := range []string{d.path, d.path + "-wal", d.path + "-shm"} {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, 0, fmt.Errorf("remove leftover %s: %w", p, err)
			}
		}
	}
	for _, p := range []string{"spool", sealFileName, imageFileName, "catalog.db", "catalog.db-wal", "catalog.db-shm", "staging"} {
		if !present[p] {
			continue
		}
		if err := os.RemoveAll(filepath.Join(d.dir, p)); err != nil {
			return nil, 0, fmt.Errorf("remove leftover %s: %w", p, err)
		}
	}
	m = &meta{Format: metaFormat, Tenant: cfg.Tenant, Name: name, Origin: originNew,
		CreatedMs: d.start.UnixMilli(), Remote: cfg.Remote, RemoteChecked: true}
	mainSt, err := statFile(d.path)
	if err != nil {
		return nil, 0, err
	}
	hasData := mainSt.Present && mainSt.Size > 0
	switch err := d.checkRemoteLacks(ctx); {
	case errors.Is(err, ErrRemoteHasDatabase):
		if hasData || flags.readOnly {
			return nil, 0, err
		}
		// An empty or missing file of a database the store has: open it
		// from the store.
		for _, p := range []string{d.path + "-wal", d.path + "-shm"} {
			if st, serr := statFile(p); serr == nil && st.Present && st.Size > 0 && p == d.path+"-wal" {
				return nil, 0, fmt.Errorf("%w (and %s exists next to the empty database file: move it away)", err, p)
			}
		}
		if err := d.rebuildFromRemote(rebuild{reason: "first open of a database the store has"}); err != nil {
			return nil, 0, err
		}
		m, err := readMeta(d.dir)
		if err == nil && m == nil {
			err = fmt.Errorf("%w: rebuild from the store left no %s", ErrBadState, metaFileName)
		}
		return m, 0, err
	case err != nil:
		if cfg.Durability == Sync {
			return nil, 0, fmt.Errorf("the remote is unreachable and durability is sync: %w", err)
		}
		// Async: local writes go on; the writer role is taken later.
		m.RemoteChecked = false
		d.setRemoteErr(err)
	}
	if hasData {
		if adoptPS, err = checkAdoptable(d.path, mainSt.Size); err != nil {
			return nil, 0, err
		}
		m.Origin = originAdopted
		return m, adoptPS, nil
	}
	if !mainSt.Present {
		if flags.readOnly {
			return nil, 0, fmt.Errorf("%s does not exist", d.path)
		}
		// Create it now, so that the seal records a file that exists
		// (SQLite would create it right after, unrecorded).
		if err := createEmpty(d.path); err != nil {
			return nil, 0, err
		}
	}
	return m, 0, nil
}

// openLocal opens the local state (step 4-5 of open): the seal (created
// by a first open, checked against the files otherwise), the spool (an
// adopted file recorded as its image), the capture, reconciliation.
func (d *database) openLocal(first bool, adoptPS uint32) (err error) {
	cfg := &d.cfg
	m := d.meta
	mainSt, err := statFile(d.path)
	if err != nil {
		return err
	}
	walSt, err := statFile(d.path + "-wal")
	if err != nil {
		return err
	}
	if first {
		if d.seal, _, err = openSeal(d.dir, true); err != nil {
			return err
		}
		// The seal is valid before meta.json makes this state the
		// database's: a crash between the two must reopen, and an empty
		// seal would not (ErrBadState). It is the state step 7 of open
		// saves (open, the main file as it is now), so that save is
		// skipped when nothing changed meanwhile: one fsync, as before.
		if err := d.seal.save(sealState{open: true, main: mainSt}); err != nil {
			return err
		}
	} else {
		if m.Tenant != cfg.Tenant || m.Name != d.layout.DB {
			return fmt.Errorf("its bop state (%s) belongs to database %s/%s, but it is being opened as %s/%s: set Config.Tenant and Name (or bop_name) to match",
				d.dir, m.Tenant, m.Name, cfg.Tenant, d.layout.DB)
		}
		if m.Remote != cfg.Remote {
			return fmt.Errorf("its bop state (%s) was created with remote %q, but Config.Remote is %q (\"\" is the embedded default store)", d.dir, m.Remote, cfg.Remote)
		}
		if d.seal, _, err = openSeal(d.dir, false); err != nil {
			return err
		}
		if err := checkSeal(d.seal.state(), d.path, mainSt, walSt); err != nil {
			return err
		}
	}
	spoolOpts := wal.SpoolOptions{FS: testSpoolFS, BufferBytes: spoolBufferBytes, MaxBytes: cfg.spoolMax(), AppendTimeout: spoolFullWait}
	if d.spool, err = wal.OpenSpool(filepath.Join(d.dir, "spool"), spoolOpts); err != nil {
		return err
	}
	if adoptPS != 0 {
		h, err := recordImage(d.spool, d.path, adoptPS)
		if err != nil {
			return err
		}
		if cfg.Logf != nil {
			cfg.Logf("bop: adopted %s: image of %d pages (txid %d), including its WAL up to frame %d", d.path, h.DBPages, h.Txid, h.WAL.Frame)
		}
	}
	// No CaptureOptions.Adopt: an adopted file's WAL is in its image,
	// which names the last commit frame it includes (reconciliation
	// resumes after it); the WAL of an empty file holds nothing SQLite
	// would read (it deletes the WAL of a zero-page database), so its
	// committed frames are refused as an outside change, not replayed.
	//
	// Consecutive small transactions of a WAL generation share one spool
	// record until a WAL sync, a checkpoint or a publish needs the spool
	// current (wal/coalesce.go): a txid then names that group, whose last
	// transaction it includes. In both durability modes: reconciliation
	// regroups what a crash lost only when capture coalesces, so a
	// database reopened in the other mode must coalesce too (and sync
	// waits for the publish that holds the group, as it would for a
	// transaction).
	copts := wal.CaptureOptions{Logf: cfg.Logf, Coalesce: coalesceBytes, ReadBack: true}
	if d.capture, err = wal.NewCapture(d.spool, copts); err != nil {
		return err
	}
	return d.reconcile()
}

// coalesceBytes bounds the pages of one coalesced group of transactions
// (held in memory until appended; wal.CaptureOptions.Coalesce).
const coalesceBytes = 8 << 20

// spoolFullWait bounds how long a commit waits for space in a full spool
// before it fails with ErrSpoolFull (the status says why meanwhile).
const spoolFullWait = time.Minute

// closeLocal closes what openLocal opened, before a rebuild moves it away.
func (d *database) closeLocal() error {
	var errs []error
	if d.capture != nil {
		errs = append(errs, d.capture.Close())
		d.capture = nil
	}
	if d.spool != nil {
		errs = append(errs, d.spool.Close())
		d.spool = nil
	}
	if d.seal != nil {
		errs = append(errs, d.seal.close())
		d.seal = nil
	}
	return errors.Join(errs...)
}

// checkUnique refuses a second open database with the same store and
// name: they would publish into one history.
// It sets d's layout and store URL under the registry lock, where other
// opens read them.
func checkUnique(d *database, layout remote.Layout, url string) error {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	for _, o := range registry.dbs {
		if o != d && o.layout == layout && o.remoteURL == url && o.closing == nil {
			return fmt.Errorf("database %s/%s in %s is already open as %s: give each database its own name (Config.Name or bop_name)",
				layout.Tenant, layout.DB, redactURL(url), o.path)
		}
	}
	d.layout, d.remoteURL = layout, url
	return nil
}

// checkRemoteLacks returns nil if the remote has no database of this name,
// ErrRemoteHasDatabase if it has one, or the error that kept it from
// answering.
func (d *database) checkRemoteLacks(ctx context.Context) error {
	h, _, err := manifest.GetHead(ctx, d.store, d.layout)
	switch {
	case err == nil:
		return fmt.Errorf("%w: %s already holds database %s (epoch %d, txid %d): restore it instead, or set another name",
			ErrRemoteHasDatabase, redactURL(d.remoteURL), d.layout.Root(), h.Epoch, h.Txid)
	case errors.Is(err, remote.ErrNotFound):
		return nil
	case errors.Is(err, manifest.ErrCorrupt), errors.Is(err, manifest.ErrFormatTooNew):
		return fmt.Errorf("%w: %s holds a head for %s that this bop cannot read (%v)", ErrRemoteHasDatabase, redactURL(d.remoteURL), d.layout.Root(), err)
	}
	return fmt.Errorf("ask %s whether it holds %s: %w", redactURL(d.remoteURL), d.layout.Root(), err)
}

// reconcile brings the spool and the WAL on disk into agreement before
// SQLite reads the WAL: frames bop never captured in a WAL generation it
// did not see begin are refused as an outside change.
func (d *database) reconcile() error {
	var h wal.WALFile
	f, err := os.OpenFile(d.path+"-wal", os.O_RDWR, 0)
	switch {
	case err == nil:
		defer f.Close()
		h = osWAL{f}
	case errors.Is(err, os.ErrNotExist):
	default:
		return fmt.Errorf("open %s-wal: %w", d.path, err)
	}
	gone := h == nil
	if !gone {
		// A file without a WAL header (shorter than one, or zeros: a
		// crash before its first sector landed) is no WAL either, to
		// SQLite's recovery and to reconciliation alike. A generation
		// capture confirmed anything in had its header fsynced.
		var hdr [32]byte
		n, err := f.ReadAt(hdr[:], 0)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read %s-wal: %w", d.path, err)
		}
		gone = n < len(hdr) || hdr == [32]byte{}
	}
	if gone {
		// No WAL: the main file must hold what the spool says was
		// committed in the last one (wal.Spool.CheckWALGone).
		if err := d.checkWALGone(); err != nil {
			if errors.Is(err, wal.ErrLost) {
				return fmt.Errorf("%w: %w", ErrChangedOutside, err)
			}
			return err
		}
	}
	if err := d.capture.Reconcile(h); err != nil {
		if errors.Is(err, wal.ErrUnknownWAL) || errors.Is(err, wal.ErrLost) || errors.Is(err, wal.ErrBadWAL) {
			return fmt.Errorf("%w: %w", ErrChangedOutside, err)
		}
		return err
	}
	return nil
}

// openImage loads the presence bitmap of a sparse image.
func (d *database) openImage(hydrate bool) error {
	path := filepath.Join(d.dir, imageFileName)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if d.catalog == nil {
		return fmt.Errorf("%w: %s says the image is sparse, but there is no catalog to read the missing pages through", ErrBadState, path)
	}
	src := &remotePages{store: d.store}
	img, err := loadImage(d.dir, src)
	if err != nil || img == nil {
		return err
	}
	snap, err := d.catalog.SnapshotAt(img.hdr.TSeed)
	if err != nil {
		return fmt.Errorf("page map at T_seed %d: %w", img.hdr.TSeed, err)
	}
	if snap.Txid() != img.hdr.TSeed || snap.PageSize() != img.hdr.PageSize {
		return fmt.Errorf("%w: %s: the catalog's boundary %d (page size %d) is not the image's T_seed %d (page size %d)",
			ErrBadState, path, snap.Txid(), snap.PageSize(), img.hdr.TSeed, img.hdr.PageSize)
	}
	src.snap, src.pageSize = snap, img.hdr.PageSize
	img.hydrate = hydrate
	if img.missing > 0 {
		d.img = img
	}
	return nil
}

// checkSeal compares the seal with the files on disk (see seal.go).
func checkSeal(s sealState, path string, main, wal fileStat) error {
	hint := "restore the database, or move its -bop folder away to adopt the file as a new database"
	if !s.busy && main != s.main {
		return fmt.Errorf("%w: %s is now %s, but bop left it %s: %s", ErrChangedOutside, path, main, s.main, hint)
	}
	if !s.open && wal != s.wal {
		return fmt.Errorf("%w: %s-wal is now %s, but bop closed the database with it %s: %s", ErrChangedOutside, path, wal, s.wal, hint)
	}
	return nil
}

// mainStat returns the main file's identity through bop's own handle.
func (d *database) mainStat() (fileStat, error) {
	fi, err := d.mainFD.Stat()
	if err != nil {
		return fileStat{}, fmt.Errorf("stat %s: %w", d.path, err)
	}
	return statOf(fi), nil
}

// settleDelay is how long a busy seal waits to be settled after bop's
// writes to the main file stop: a checkpoint after a burst of commits
// costs one seal transition, not one per checkpoint. (A variable for
// tests.)
var settleDelay = time.Second

// settleLater arranges a settleNow (one pending at a time).
func (d *database) settleLater() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.settleTimer == nil {
		d.settleTimer = time.AfterFunc(settleDelay, d.settleNow)
	}
}

// settleNow clears a busy seal if no bop write to the main file ran since
// it began: the main file is fsynced (SQLite's fdatasync may leave the
// mtime unpersisted; the seal records an identity only once it is
// durable), identified, and sealed. A write meanwhile leaves the seal busy
// for the next try, which the next main-file sync schedules.
func (d *database) settleNow() {
	d.mu.Lock()
	d.settleTimer = nil
	d.mu.Unlock()
	d.settleMu.Lock()
	defer d.settleMu.Unlock()
	if d.stopped {
		return
	}
	busy, gen := d.seal.busyGen()
	if !busy {
		return
	}
	_, err := d.syncMain(d.fsyncMainFD)
	if err == nil {
		var st fileStat
		if st, err = d.mainStat(); err == nil {
			err = d.seal.settle(gen, st)
		}
	}
	if err != nil && d.cfg.Logf != nil {
		d.cfg.Logf("bop: %s: seal: %v", d.path, err)
	}
}

// writeImage is bop's own write to the main file (hydration), through its
// handle, accounted by the seal.
func (d *database) writeImage(p []byte, off int64) error {
	if err := d.seal.beginWrite(); err != nil {
		return err
	}
	_, err := d.mainFD.WriteAt(p, off)
	d.seal.endWrite()
	if err != nil {
		return fmt.Errorf("bop: write page image %s: %w", d.path, err)
	}
	return nil
}

// close runs when the last connection closed its main file: everything is
// made durable, the seal records the files as bop leaves them, and the
// ownership lock is released last.
func (d *database) close() error {
	var errs []error
	d.mu.Lock()
	if d.settleTimer != nil {
		d.settleTimer.Stop()
		d.settleTimer = nil
	}
	d.mu.Unlock()
	d.settleMu.Lock()
	d.stopped = true
	d.settleMu.Unlock()
	// A late start under way finishes first (the publisher it starts is
	// closed below); none starts after.
	d.roleMu.Lock()
	d.roleClosed = true
	d.roleMu.Unlock()
	errs = append(errs, d.confirmKeptWAL())
	errs = append(errs, d.closePublisher())
	d.cancel()
	if d.capture != nil {
		errs = append(errs, d.capture.Close())
	}
	if d.spool != nil {
		// Everything captured is durable in the spool before it closes.
		if err := d.spool.Sync(); err != nil && !errors.Is(err, wal.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if d.mainFD != nil && d.seal != nil {
		errs = append(errs, d.sealClosed())
	}
	errs = append(errs, d.closeFiles())
	return errors.Join(errs...)
}

// confirmKeptWAL makes the transactions of a WAL that outlives the last
// connection durable and confirmed before the final publish
// (wal.Capture.ConfirmWith): a read-only connection closing last leaves
// the WAL as it is, and no connection's handle is left to fsync it
// through. Usually SQLite has deleted the WAL at the close: nothing to do.
func (d *database) confirmKeptWAL() error {
	if d.capture == nil || d.readOnly && !d.rwJoined.Load() {
		return nil
	}
	f, err := os.OpenFile(d.path+"-wal", os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("bop: open %s-wal to confirm its transactions: %w", d.path, err)
	}
	defer f.Close()
	if err := d.capture.ConfirmWith(osWAL{f}); err != nil {
		return fmt.Errorf("bop: %s: confirm the transactions of the WAL kept at close: %w", d.path, err)
	}
	return nil
}

// sealClosed records a clean close: the main file fsynced and identified,
// the WAL identified (usually absent: SQLite deletes it at the last close).
func (d *database) sealClosed() error {
	if err := d.mainFD.Sync(); err != nil {
		return fmt.Errorf("bop: fsync %s: %w", d.path, err)
	}
	if d.img != nil {
		if err := d.img.persist(); err != nil {
			return err
		}
	}
	main, err := d.mainStat()
	if err != nil {
		return err
	}
	w, err := statFile(d.path + "-wal")
	if err != nil {
		return err
	}
	if w.Present {
		// Its content must be durable before the seal vouches for it.
		if f, err := os.OpenFile(d.path+"-wal", os.O_RDWR, 0); err == nil {
			f.Sync()
			f.Close()
		}
		if w, err = statFile(d.path + "-wal"); err != nil {
			return err
		}
	} else if err := syncStateDir(filepath.Dir(d.path)); err != nil {
		// So must its absence: SQLite deletes the WAL at the last close
		// without fsyncing the folder, and a power loss could bring the
		// file back after the seal said it was gone, which the next open
		// would refuse as an outside change (TestPowerLossVFS, the
		// database's folder followed).
		return err
	}
	st := d.seal.state()
	st.busy, st.open, st.main, st.wal = false, false, main, w
	return d.seal.save(st)
}

// closeFiles closes whatever open opened, the ownership lock last.
func (d *database) closeFiles() error {
	var errs []error
	if d.cancel != nil {
		d.cancel()
	}
	// The seal (closeLocal) goes before mainFD, which its fsync uses.
	errs = append(errs, d.closeLocal())
	if d.catalog != nil {
		errs = append(errs, d.catalog.Close())
		d.catalog = nil
	}
	errs = append(errs, d.closeStores())
	if d.mainFD != nil {
		errs = append(errs, d.mainFD.Close())
		d.mainFD = nil
	}
	if d.owner != nil {
		errs = append(errs, d.owner.close())
		d.owner = nil
	}
	return errors.Join(errs...)
}

func (d *database) setRemoteErr(err error) {
	d.mu.Lock()
	d.remoteErr = err
	d.mu.Unlock()
	if err != nil {
		d.logf("bop: %s: remote: %v", d.path, err)
	}
}

// createEmpty creates an empty file durably.
func createEmpty(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// osWAL is the WAL file opened by bop itself for reconciliation at open.
type osWAL struct{ f *os.File }

func (w osWAL) ReadAt(p []byte, off int64) (int, error) { return w.f.ReadAt(p, off) }
func (w osWAL) Sync() error                             { return w.f.Sync() }
func (w osWAL) Name() string                            { return w.f.Name() }
func (w osWAL) Size() (int64, error) {
	fi, err := w.f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}
