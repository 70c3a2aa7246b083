package vfs

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/bopstore/bop/quota"
	"github.com/ncruces/go-sqlite3"
	"github.com/ncruces/go-sqlite3/util/vfsutil"
	"github.com/ncruces/go-sqlite3/vfs"
)

// VFS is a registered bop VFS. It wraps the default (os) VFS: main
// database files and their WALs are bop's, every other file (temp files,
// sorter spills, statement and rollback journals) goes straight to the
// default VFS.
type VFS struct {
	name string
	cfg  Config
	base vfs.VFS
	// quota is the staging budget of every database of this VFS
	// (Config.StagingBytes), one tenant (Config.Tenant).
	quota *quota.Tenant

	// Guarded by registry.mu.
	closed       bool
	open         int // databases open through this VFS
	unregistered bool
}

var (
	_ vfs.VFSFilename = (*VFS)(nil)
)

// Register validates cfg and registers a bop VFS under name, for
// sql.Open("sqlite3", "file:app.db?vfs=<name>") with the ncruces driver
// (import _ "github.com/ncruces/go-sqlite3/driver" and
// _ "github.com/ncruces/go-sqlite3/embed") or sqlite3.Open. A zero Config
// works. Every connection of a database opened through it is put in WAL
// mode; a page size other than 4096 must come in the DSN
// (_pragma=page_size(8192)), since WAL mode fixes it once page 1 exists.
func Register(name string, cfg Config) (*VFS, error) {
	if name == "" || name == "os" {
		return nil, fmt.Errorf("bop: VFS name %q is reserved", name)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	registerAutoExtension()
	pool := quota.NewPool(uint64(cfg.StagingBytes))
	tenant, err := pool.NewTenant(cfg.Tenant, 0)
	if err != nil {
		return nil, fmt.Errorf("bop: staging quota: %w", err)
	}
	v := &VFS{name: name, cfg: cfg, base: vfs.Find(""), quota: tenant}
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if vfs.Find(name) != nil {
		return nil, fmt.Errorf("bop: a VFS named %q is already registered", name)
	}
	vfs.Register(name, v)
	return v, nil
}

// Name is the name the VFS is registered under.
func (v *VFS) Name() string { return v.name }

// Close stops new opens through the VFS. Databases still open stay usable;
// each one's state closes when its last connection closes, and the VFS is
// unregistered from SQLite once none is left (SQLite looks a VFS up by name
// for as long as a connection uses it).
func (v *VFS) Close() error {
	registry.mu.Lock()
	v.closed = true
	now := v.open == 0
	registry.mu.Unlock()
	if now {
		v.unregister()
	}
	return nil
}

func (v *VFS) unregister() {
	registry.mu.Lock()
	done := v.unregistered
	v.unregistered = true
	registry.mu.Unlock()
	if !done && vfs.Find(v.name) == vfs.VFS(v) {
		vfs.Unregister(v.name)
	}
}

// Open implements vfs.VFS. go-sqlite3 always calls OpenFilename instead;
// an unnamed (temporary) file goes to the default VFS.
func (v *VFS) Open(name string, flags vfs.OpenFlag) (vfs.File, vfs.OpenFlag, error) {
	if name == "" {
		return v.OpenFilename(nil, flags)
	}
	return nil, flags, sqlite3.CANTOPEN
}

// notOurs are the files that go straight to the default VFS.
const notOurs = vfs.OPEN_TEMP_DB | vfs.OPEN_TEMP_JOURNAL | vfs.OPEN_TRANSIENT_DB |
	vfs.OPEN_SUBJOURNAL | vfs.OPEN_MAIN_JOURNAL | vfs.OPEN_SUPER_JOURNAL

// OpenFilename implements vfs.VFSFilename.
func (v *VFS) OpenFilename(name *vfs.Filename, flags vfs.OpenFlag) (vfs.File, vfs.OpenFlag, error) {
	switch {
	case name == nil || name.String() == "" || flags&notOurs != 0:
		return vfsutil.WrapOpenFilename(v.base, name, flags)
	case flags&vfs.OPEN_MAIN_DB != 0:
		return v.openMain(name, flags)
	case flags&vfs.OPEN_WAL != 0:
		return v.openWAL(name, flags)
	}
	return vfsutil.WrapOpenFilename(v.base, name, flags)
}

func (v *VFS) openMain(name *vfs.Filename, flags vfs.OpenFlag) (vfs.File, vfs.OpenFlag, error) {
	path := name.String()
	if flags&vfs.OPEN_CREATE == 0 {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return nil, flags, sqlite3.CANTOPEN
		}
	}
	force, err := uriBool(name.URIParameter("bop_force_takeover"))
	if err != nil {
		return nil, flags, vfs.SystemError(fmt.Errorf("bop: %s: bop_force_takeover: %w", path, err), sqlite3.CANTOPEN)
	}
	d, err := v.acquire(path, openFlags{readOnly: flags&vfs.OPEN_READONLY != 0, name: name.URIParameter("bop_name"), force: force})
	if err != nil {
		return nil, flags, vfs.SystemError(err, sqlite3.CANTOPEN)
	}
	file, oflags, err := vfsutil.WrapOpenFilename(v.base, name, flags)
	if err != nil {
		d.release()
		return nil, flags, err
	}
	return newMainFile(d, file), oflags, nil
}

func (v *VFS) openWAL(name *vfs.Filename, flags vfs.OpenFlag) (vfs.File, vfs.OpenFlag, error) {
	// The WAL belongs to the main file SQLite already opened (go-sqlite3
	// wraps it in its checksum layer; unwrap to ours).
	mf, ok := vfsutil.UnwrapFile[*mainFile](name.DatabaseFile())
	if !ok {
		return nil, flags, vfs.SystemError(fmt.Errorf("bop: %s: its database file is not open through bop", name.String()), sqlite3.CANTOPEN)
	}
	file, oflags, err := vfsutil.WrapOpenFilename(v.base, name, flags)
	if err != nil {
		return nil, flags, err
	}
	wf := &walFile{fileForward: fileForward{file}, cn: mf.cn, d: mf.d}
	if err := mf.cn.AttachWAL(walHandle{f: file, name: name.String(), dir: new(atomic.Bool)}); err != nil {
		file.Close()
		return nil, flags, vfs.SystemError(fmt.Errorf("bop: %s: %w", name.String(), err), sqlite3.CANTOPEN)
	}
	return wf, oflags, nil
}

// Delete implements vfs.VFS. Deleting a database's WAL (SQLite's last
// close) ends its WAL generation in the capture; the main file is made
// durable first (beforeWALReuse), or the WAL stays (SQLite ignores the
// error: the next open recovers from it).
//
// Deleting a database's rollback journal commits a rollback-mode
// transaction (the switch of a new or adopted database to WAL mode):
// its pages are spooled, durable, before (see journalCommit).
func (v *VFS) Delete(name string, syncDir bool) error {
	if db, ok := strings.CutSuffix(name, "-journal"); ok {
		if err := v.journalCommit(db); err != nil {
			return vfs.SystemError(err, sqlite3.IOERR_DELETE)
		}
	}
	var d *database
	if db, ok := strings.CutSuffix(name, "-wal"); ok {
		if d = lookup(db); d != nil && d.v != v {
			d = nil
		}
	}
	if d != nil {
		if err := d.beforeWALReuse("deletion of " + name); err != nil {
			return err
		}
	}
	err := v.base.Delete(name, syncDir)
	if err != nil {
		return err
	}
	if d != nil {
		if err := d.capture.Deleted(); err != nil {
			return vfs.SystemError(err, sqlite3.IOERR_DELETE)
		}
	}
	return nil
}

// journalCommit spools the direct writes of the rollback-mode transaction
// whose journal SQLite is about to delete, and makes them durable. The
// deletion is the transaction's commit point and SQLite reports the
// commit (COMMIT_PHASETWO, where capture would spool it otherwise) only
// after it: a power loss between the two kept the transaction in the
// main file (SQLite fsyncs it before deleting the journal) and lost it
// from the spool, with no journal or WAL left to capture it from again,
// so the spool no longer replayed to the database
// (TestPowerLossAdoptJournalCommit). The main file holds exactly the
// transaction's pages here, as at COMMIT_PHASETWO or the unlock
// (wal.Conn.MainUnlock, which spools them if this connection wrote
// them). Spooled first, a power loss before the deletion leaves a hot
// journal, whose rollback on the next open is captured as one more
// transaction: the spool still replays to the database.
func (v *VFS) journalCommit(db string) error {
	d := lookup(db)
	if d == nil || d.v != v {
		return nil
	}
	if mf := d.directWriter.Load(); mf != nil {
		return mf.cn.MainUnlock()
	}
	return nil
}

// Access implements vfs.VFS.
func (v *VFS) Access(name string, flags vfs.AccessFlag) (bool, error) {
	return v.base.Access(name, flags)
}

// FullPathname implements vfs.VFS.
func (v *VFS) FullPathname(name string) (string, error) {
	return v.base.FullPathname(name)
}

// uriBool parses a boolean URI parameter as SQLite does (1, 0, true,
// false, yes, no, on, off; absent: false).
func uriBool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "", "0", "false", "no", "off":
		return false, nil
	case "1", "true", "yes", "on":
		return true, nil
	}
	if n, err := strconv.Atoi(v); err == nil {
		return n != 0, nil
	}
	return false, fmt.Errorf("%q is not a boolean", v)
}
