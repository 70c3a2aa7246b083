package vfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/backend"
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
//	    cache/       remote byte-range cache (default CacheDir)
type database struct {
	v     *VFS
	cfg   Config
	path  string // full path of the main file
	dir   string // path + "-bop"
	start time.Time

	layout    remote.Layout
	remoteURL string
	meta      *meta
	owner     *ownerLock
	seal      *sealFile
	spool     *wal.Spool
	capture   *wal.Capture
	img       *image // nil: the image is complete
	mainFD    *os.File
	store     remote.Store
	catalog   *manifest.Catalog
	pub       publisher

	ctx    context.Context // cancelled at close: remote reads stop
	cancel context.CancelFunc

	mu          sync.Mutex
	remoteErr   error       // the last error talking to the remote
	lagSince    time.Time   // when the oldest unpublished transaction was first seen
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
func (v *VFS) acquire(path string, flags openFlags, uriName string) (*database, error) {
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
			err := d.open(flags, uriName)
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
		<-d.ready
		if d.openErr != nil {
			return nil, d.openErr
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

// openFlags is what the open sequence needs to know of SQLite's flags.
type openFlags struct {
	readOnly bool
}

// remoteCheckTimeout bounds the first open's question to the remote.
const remoteCheckTimeout = 10 * time.Second

// open runs the open sequence of the first connection (docs/arch/vfs.md):
//
//  1. ownership: flock <db>-bop/lock or fail with ErrOwnedElsewhere;
//  2. identity: meta.json (tenant, name, remote) must agree with the
//     configuration;
//  3. outside changes: the seal must match the main file and the WAL;
//  4. first open only: ask the remote whether it already has the database
//     (ErrRemoteHasDatabase); adopt an existing file (image record);
//  5. the spool, the capture, and reconciliation of the WAL on disk (a WAL
//     of a generation bop never captured is ErrChangedOutside);
//  6. the image (sparse or complete), the catalog, the publisher;
//  7. the seal is marked open; the first open writes meta.json last.
func (d *database) open(flags openFlags, uriName string) (err error) {
	d.start = time.Now()
	d.ctx, d.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			d.closeFiles()
			err = fmt.Errorf("bop: open %s: %w", d.path, err)
		}
	}()
	cfg := &d.cfg
	name, err := cfg.dbName(d.path, uriName)
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
		Writer: manifest.NewWriterID(fmt.Sprintf("%s-pid%d", host, os.Getpid()))}
	if d.owner, err = openOwner(filepath.Join(d.dir, "lock"), me); err != nil {
		return err
	}

	m, err := readMeta(d.dir)
	if err != nil {
		return err
	}
	first := m == nil
	mainSt, err := statFile(d.path)
	if err != nil {
		return err
	}
	walSt, err := statFile(d.path + "-wal")
	if err != nil {
		return err
	}
	adopt := false
	var adoptPS uint32
	if first {
		// A crash during an earlier first open may have left pieces:
		// nothing was published (nothing publishes without meta.json).
		for _, p := range []string{"spool", sealFileName, imageFileName} {
			if err := os.RemoveAll(filepath.Join(d.dir, p)); err != nil {
				return fmt.Errorf("remove leftover %s: %w", p, err)
			}
		}
		m = &meta{Format: metaFormat, Tenant: cfg.Tenant, Name: name, Origin: originNew,
			CreatedMs: d.start.UnixMilli(), Remote: cfg.Remote, RemoteChecked: true}
		if mainSt.Present && mainSt.Size > 0 {
			if adoptPS, err = checkAdoptable(d.path, mainSt.Size); err != nil {
				return err
			}
			adopt = true
			m.Origin = originAdopted
		} else if !mainSt.Present {
			if flags.readOnly {
				return fmt.Errorf("%s does not exist", d.path)
			}
			// Create it now, so that the seal records a file that exists
			// (SQLite would create it right after, unrecorded).
			if err := createEmpty(d.path); err != nil {
				return err
			}
			if mainSt, err = statFile(d.path); err != nil {
				return err
			}
		}
		if d.seal, _, err = openSeal(d.dir, true); err != nil {
			return err
		}
	} else {
		if m.Tenant != cfg.Tenant || m.Name != name {
			return fmt.Errorf("its bop state (%s) belongs to database %s/%s, but it is being opened as %s/%s: set Config.Tenant and Name (or bop_name) to match",
				d.dir, m.Tenant, m.Name, cfg.Tenant, name)
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
	d.meta = m

	// The store. Opening one does no I/O for s3 and is local for file.
	octx, cancel := context.WithTimeout(d.ctx, remoteCheckTimeout)
	defer cancel()
	if d.store, err = backend.Open(octx, d.remoteURL, cfg.backendOptions()); err != nil {
		return err
	}
	if first {
		switch err := d.checkRemoteLacks(octx); {
		case errors.Is(err, ErrRemoteHasDatabase):
			return err
		case err != nil:
			if cfg.Durability == Sync {
				return fmt.Errorf("the remote is unreachable and durability is sync: %w", err)
			}
			// Async: local writes go on; the publisher checks before its
			// first publish.
			m.RemoteChecked = false
			d.setRemoteErr(err)
		}
	}

	spoolOpts := wal.SpoolOptions{FS: spoolFS{}, MaxBytes: cfg.spoolMax()}
	if !publisherAvailable() {
		// Nothing drains the spool in this build: a full spool fails
		// commits with a clear error rather than blocking them forever.
		spoolOpts.AppendTimeout = 10 * time.Second
	}
	if d.spool, err = wal.OpenSpool(filepath.Join(d.dir, "spool"), spoolOpts); err != nil {
		return err
	}
	if adopt {
		if _, err := recordImage(d.spool, d.path, adoptPS); err != nil {
			return err
		}
	}
	if d.capture, err = wal.NewCapture(d.spool, wal.CaptureOptions{Adopt: first, Logf: cfg.Logf}); err != nil {
		return err
	}
	if err := d.reconcile(); err != nil {
		return err
	}

	d.mainFD, err = os.OpenFile(d.path, os.O_RDWR, 0)
	hydrate := err == nil
	if err != nil {
		if d.mainFD, err = os.Open(d.path); err != nil {
			return fmt.Errorf("open %s: %w", d.path, err)
		}
	}
	if _, err := os.Stat(filepath.Join(d.dir, "catalog.db")); err == nil {
		d.catalog, err = manifest.Open(filepath.Join(d.dir, "catalog.db"), manifest.Options{Layout: d.layout,
			Directories: manifest.StoreDirectories{Store: d.store}})
		if err != nil {
			return err
		}
	}
	if err := d.openImage(hydrate); err != nil {
		return err
	}

	// From here bop's writes to the main file are accounted by the seal.
	if mainSt, err = d.mainStat(); err != nil {
		return err
	}
	st := d.seal.state()
	st.busy, st.open, st.main, st.wal = false, true, mainSt, fileStat{}
	if err := d.seal.save(st); err != nil {
		return err
	}
	if last := d.spool.Status().LastTxid; last > 0 {
		d.lagSince = d.start
	}
	if publisherAvailable() {
		if d.pub, err = newPublisher(d.parts()); err != nil {
			return err
		}
	}
	if first {
		if err := writeMeta(d.dir, m); err != nil {
			return err
		}
	}
	return nil
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

// afterMainSync runs after SQLite's successful fsync of the main file:
// the image's presence marks can be persisted, and a busy seal settled.
// busy and gen were read before that fsync began.
func (d *database) afterMainSync(busy bool, gen uint64) error {
	if d.img != nil {
		if err := d.img.persist(); err != nil {
			return err
		}
	}
	if busy {
		d.settleLater()
	}
	return nil
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
	err := d.mainFD.Sync()
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
	if d.pub != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		errs = append(errs, d.pub.Close(ctx))
		cancel()
	}
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
	if d.capture != nil {
		errs = append(errs, d.capture.Close())
		d.capture = nil
	}
	if d.spool != nil {
		errs = append(errs, d.spool.Close())
		d.spool = nil
	}
	if d.catalog != nil {
		errs = append(errs, d.catalog.Close())
		d.catalog = nil
	}
	if c, ok := d.store.(io.Closer); ok {
		errs = append(errs, c.Close())
	}
	d.store = nil
	if d.mainFD != nil {
		errs = append(errs, d.mainFD.Close())
		d.mainFD = nil
	}
	if d.seal != nil {
		errs = append(errs, d.seal.close())
		d.seal = nil
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
	if d.cfg.Logf != nil {
		d.cfg.Logf("bop: %s: remote: %v", d.path, err)
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
