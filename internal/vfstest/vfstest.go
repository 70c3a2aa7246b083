// Package vfstest is a test and benchmark VFS: a wrapper over ncruces'
// default (os) VFS that forwards every optional file interface of the
// wrapped files (without FileSharedMemory SQLite silently leaves WAL mode)
// and feeds each database's WAL and main-file events to a wal.Capture.
// Around that it offers the layers tests need: a trace of VFS events, WAL
// sync fault injection, and power-loss tracking of SQLite's files through
// a crashfs.Tracker.
//
// It is not bop's VFS (package vfs is): it captures and otherwise stays
// out of the way.
package vfstest

import (
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ncruces/go-sqlite3"
	"github.com/ncruces/go-sqlite3/util/vfsutil"
	"github.com/ncruces/go-sqlite3/vfs"

	"github.com/bopstore/bop/internal/crashfs"
	"github.com/bopstore/bop/wal"
)

// EventKind names a traced VFS event.
type EventKind string

// Traced events.
const (
	OpenMain    EventKind = "open-main"
	CloseMain   EventKind = "close-main"
	OpenWAL     EventKind = "open-wal"
	WALWrite    EventKind = "wal-write"
	WALSync     EventKind = "wal-sync"
	WALTruncate EventKind = "wal-truncate"
	WALDelete   EventKind = "wal-delete"
	MainWrite   EventKind = "main-write"
	MainSync    EventKind = "main-sync"
	MainUnlock  EventKind = "main-unlock"
	CkptStart   EventKind = "ckpt-start"
	CkptDone    EventKind = "ckpt-done"
	PhaseTwo    EventKind = "commit-phasetwo"
)

// Event is one traced VFS call (after it ran).
type Event struct {
	Kind EventKind
	DB   string // main database path
	Conn uint64 // connection (main file handle) number, 1-based per VFS
	Off  int64
	Len  int
	// Frame header fields, for a WAL write of a whole frame header.
	FrameHeader bool
	Pgno        uint32
	Commit      uint32
	Err         error
}

// VFS is the wrapper. Configure it before registering; Attach and the
// fault setters may be called at any time.
type VFS struct {
	base vfs.VFS
	// Crash, if set, follows every main, WAL and journal file.
	Crash *crashfs.Tracker
	// Trace, if set, receives every event (from SQLite's goroutines).
	Trace func(Event)
	// BeforeWALSync, if set, runs inside capture's Sync, just before the real WAL sync (a power cut inside it: TestPowerLossInsideWALSyncAfterSpoolSync).
	BeforeWALSync func()

	mu      sync.Mutex
	dbs     map[string]*DB
	connSeq atomic.Uint64
}

// DB is the per-database state: the capture it feeds and its faults.
type DB struct {
	Path    string
	Capture *wal.Capture

	failSyncs atomic.Int64 // WAL syncs to fail
	syncErr   atomic.Pointer[error]
	lastErr   atomic.Pointer[error]
}

// LastErr is the last error capture returned to SQLite for this database
// (SQLite itself reports only an error code).
func (d *DB) LastErr() error {
	if p := d.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

func (d *DB) noteErr(err error) error {
	if err != nil {
		d.lastErr.Store(&err)
	}
	return err
}

// New wraps base (nil: the default VFS).
func New(base vfs.VFS) *VFS {
	if base == nil {
		base = vfs.Find("")
	}
	return &VFS{base: base, dbs: map[string]*DB{}}
}

// Register registers the wrapper with SQLite under name.
func (v *VFS) Register(name string) { vfs.Register(name, v) }

// Attach sets the capture for the database at path (nil: pass-through).
// Call it before the database is opened.
func (v *VFS) Attach(path string, c *wal.Capture) *DB {
	d := v.db(canon(path))
	v.mu.Lock()
	d.Capture = c
	v.mu.Unlock()
	return d
}

// Detach forgets the database (after every connection closed).
func (v *VFS) Detach(path string) {
	v.mu.Lock()
	delete(v.dbs, canon(path))
	v.mu.Unlock()
}

// FailWALSyncs makes the next n WAL syncs of this database fail with err
// (the real fsync is not done).
func (d *DB) FailWALSyncs(n int, err error) {
	d.syncErr.Store(&err)
	d.failSyncs.Store(int64(n))
}

func canon(path string) string {
	if p, err := filepath.Abs(path); err == nil {
		path = p
	}
	dir, file := filepath.Split(path)
	if d, err := filepath.EvalSymlinks(dir); err == nil {
		return filepath.Join(d, file)
	}
	return path
}

func (v *VFS) db(path string) *DB {
	v.mu.Lock()
	defer v.mu.Unlock()
	d := v.dbs[path]
	if d == nil {
		d = &DB{Path: path}
		v.dbs[path] = d
	}
	return d
}

func (v *VFS) lookup(path string) *DB {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.dbs[path]
}

func (v *VFS) trace(e Event) {
	if v.Trace != nil {
		v.Trace(e)
	}
}

// Open implements vfs.VFS (SQLite calls OpenFilename).
func (v *VFS) Open(name string, flags vfs.OpenFlag) (vfs.File, vfs.OpenFlag, error) {
	if name == "" {
		return v.OpenFilename(nil, flags)
	}
	return nil, flags, sqlite3.CANTOPEN
}

// Delete implements vfs.VFS.
func (v *VFS) Delete(name string, syncDir bool) error {
	if v.Crash != nil {
		if err := v.Crash.Check(); err != nil {
			return err
		}
	}
	err := v.base.Delete(name, syncDir)
	if err != nil {
		return err
	}
	if v.Crash != nil {
		v.Crash.Remove(name)
	}
	if db, ok := strings.CutSuffix(name, "-wal"); ok {
		if d := v.lookup(canon(db)); d != nil {
			var cerr error
			if c := d.Capture; c != nil {
				cerr = c.Deleted()
			}
			v.trace(Event{Kind: WALDelete, DB: d.Path, Err: cerr})
			if cerr != nil {
				return cerr
			}
		}
	}
	return nil
}

// Access implements vfs.VFS.
func (v *VFS) Access(name string, flags vfs.AccessFlag) (bool, error) {
	return v.base.Access(name, flags)
}

// FullPathname implements vfs.VFS.
func (v *VFS) FullPathname(name string) (string, error) { return v.base.FullPathname(name) }

// OpenFilename implements vfs.VFSFilename.
func (v *VFS) OpenFilename(name *vfs.Filename, flags vfs.OpenFlag) (vfs.File, vfs.OpenFlag, error) {
	if v.Crash != nil && flags&(vfs.OPEN_CREATE|vfs.OPEN_READWRITE) != 0 && name != nil {
		if err := v.Crash.Check(); err != nil {
			return nil, flags, err
		}
	}
	file, oflags, err := vfsutil.WrapOpenFilename(v.base, name, flags)
	if err != nil {
		return file, oflags, err
	}
	path := ""
	if name != nil && name.String() != "" {
		path = name.String()
		if v.Crash != nil && flags&(vfs.OPEN_MAIN_DB|vfs.OPEN_WAL|vfs.OPEN_MAIN_JOURNAL) != 0 {
			if err := v.Crash.Open(path); err != nil {
				file.Close()
				return nil, flags, err
			}
		}
	}
	switch {
	case flags&vfs.OPEN_MAIN_DB != 0:
		d := v.db(canon(path))
		mf := &mainFile{File: file, v: v, db: d, path: path, id: v.connSeq.Add(1)}
		if c := d.Capture; c != nil {
			mf.conn = c.NewConn(mf)
		}
		v.trace(Event{Kind: OpenMain, DB: d.Path, Conn: mf.id})
		return mf, oflags, nil

	case flags&vfs.OPEN_WAL != 0:
		// The owning main file is the one SQLite opened for this
		// connection (go-sqlite3 wraps it in a checksum layer: unwrap).
		mf, ok := vfsutil.UnwrapFile[*mainFile](name.DatabaseFile())
		if !ok {
			file.Close()
			return nil, oflags, sqlite3.CANTOPEN
		}
		wf := &walFile{File: file, v: v, main: mf, path: path}
		var aerr error
		if mf.conn != nil {
			aerr = mf.db.noteErr(mf.conn.AttachWAL(walHandle{wf}))
		}
		v.trace(Event{Kind: OpenWAL, DB: mf.db.Path, Conn: mf.id, Err: aerr})
		if aerr != nil {
			file.Close()
			return nil, oflags, aerr
		}
		return wf, oflags, nil

	case flags&vfs.OPEN_MAIN_JOURNAL != 0 && path != "":
		return &trackedFile{File: file, v: v, path: path}, oflags, nil
	}
	return file, oflags, nil
}

// trackedFile reports mutations to the crash tracker (journals).
type trackedFile struct {
	vfs.File
	v    *VFS
	path string
}

func (f *trackedFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.v.crashCheck(); err != nil {
		return 0, err
	}
	n, err := f.File.WriteAt(p, off)
	if n > 0 && f.v.Crash != nil {
		f.v.Crash.Write(f.path, p[:n], off)
	}
	return n, err
}

func (f *trackedFile) Truncate(size int64) error {
	if err := f.v.crashCheck(); err != nil {
		return err
	}
	err := f.File.Truncate(size)
	if err == nil && f.v.Crash != nil {
		f.v.Crash.Truncate(f.path, size)
	}
	return err
}

func (f *trackedFile) Sync(flags vfs.SyncFlag) error {
	if err := f.v.crashCheck(); err != nil {
		return err
	}
	err := f.File.Sync(flags)
	if err == nil && f.v.Crash != nil {
		f.v.Crash.Sync(f.path)
	}
	return err
}

func (f *trackedFile) Unwrap() vfs.File { return f.File }

func (v *VFS) crashCheck() error {
	if v.Crash != nil {
		return v.Crash.Check()
	}
	return nil
}
