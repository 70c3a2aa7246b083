package vfs

import (
	"bytes"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ncruces/go-sqlite3"
	"github.com/ncruces/go-sqlite3/util/vfsutil"
	sqlite3vfs "github.com/ncruces/go-sqlite3/vfs"
)

// syncFaultVFS wraps bop's base (os) VFS: SQLite's fsyncs of main database
// files are counted and fail with EIO while fail is set.
type syncFaultVFS struct {
	sqlite3vfs.VFS
	fail  atomic.Bool
	syncs atomic.Int64
}

func (v *syncFaultVFS) OpenFilename(name *sqlite3vfs.Filename, flags sqlite3vfs.OpenFlag) (sqlite3vfs.File, sqlite3vfs.OpenFlag, error) {
	f, oflags, err := vfsutil.WrapOpenFilename(v.VFS, name, flags)
	if err != nil || flags&sqlite3vfs.OPEN_MAIN_DB == 0 {
		return f, oflags, err
	}
	return &syncFaultFile{fileForward: fileForward{f}, v: v}, oflags, nil
}

// syncFaultFile forwards every optional interface (fileForward) and
// injects the fault into Sync.
type syncFaultFile struct {
	fileForward
	v *syncFaultVFS
}

func (f *syncFaultFile) Sync(flags sqlite3vfs.SyncFlag) error {
	f.v.syncs.Add(1)
	if f.v.fail.Load() {
		return syscall.EIO
	}
	return f.File.Sync(flags)
}

// newSyncFaultVFS registers an offline bop VFS (nothing is published: the
// spool keeps every transaction) over a syncFaultVFS, without automatic
// checkpoints or seal settling, so that every checkpoint and main-file
// fsync is the test's.
func newSyncFaultVFS(t *testing.T) (*VFS, *syncFaultVFS) {
	t.Helper()
	old := settleDelay
	settleDelay = time.Hour
	t.Cleanup(func() { settleDelay = old })
	v := newVFS(t, offline(Config{AutoCheckpoint: -1}))
	fv := &syncFaultVFS{VFS: v.base}
	v.base = fv
	return v, fv
}

// setFsync replaces bop's own fsync of the database's main file.
func (d *database) setFsync(f func() error) {
	d.durable.mu.Lock()
	d.durable.fsync = f
	d.durable.mu.Unlock()
}

func walHeader(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < walHeaderSize {
		t.Fatalf("%s-wal holds %d bytes, no header", path, len(b))
	}
	return b[:walHeaderSize]
}

func insertRows(t *testing.T, db *sql.DB, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		mustExec(t, db, "INSERT INTO t(id, v) VALUES(?, randomblob(3000))", i)
	}
}

// checkIOErr checks that err is SQLite's fsync I/O error (bop's
// explanation is in Status.MainSyncError and the log: SQLite's rollback
// makes more VFS calls before the statement returns, so the Go error does
// not reach the caller).
func checkIOErr(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, the fsync failure is silent", what)
	}
	if !errors.Is(err, sqlite3.IOERR_FSYNC) {
		t.Fatalf("%s: %v, want SQLITE_IOERR_FSYNC", what, err)
	}
}

// TestMainSyncFailureAtCheckpointEnd: SQLite's fsync of the main file at
// the end of a complete checkpoint fails (synchronous=NORMAL). The error
// surfaces from the checkpoint, the WAL is never restarted, truncated or
// deleted over frames the file may not hold (even once the fault clears:
// a failed fsync can have dropped the pages), no committed transaction is
// lost, and reopening the database recovers.
func TestMainSyncFailureAtCheckpointEnd(t *testing.T) {
	v, fv := newSyncFaultVFS(t)
	path := filepath.Join(t.TempDir(), "app.db")
	db := openDB(t, v, path, "synchronous(normal)")
	db.SetMaxOpenConns(1)
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
	insertRows(t, db, 0, 20)
	hdr := walHeader(t, path)

	fv.fail.Store(true)
	_, err := db.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
	checkIOErr(t, "checkpoint with a failing main-file fsync", err)
	if st := statusOf(t, db); st.MainSyncError == "" {
		t.Error("Status.MainSyncError is empty after a failed fsync of the main file")
	}
	// The checkpoint did not complete: commits go on into the WAL.
	insertRows(t, db, 20, 5)

	fv.fail.Store(false)
	// SQLite now copies the WAL again and its fsync succeeds, but the
	// truncation of the WAL is refused: pages written before the failed
	// fsync may never reach the disk.
	_, err = db.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
	checkIOErr(t, "WAL truncation after a failed fsync", err)
	if !bytes.Equal(walHeader(t, path), hdr) {
		t.Fatal("the WAL was restarted after a failed fsync of the main file")
	}
	// The next write would restart the WAL: refused.
	_, err = db.Exec("INSERT INTO t(id, v) VALUES(1000, 'x')")
	checkIOErr(t, "a write that restarts the WAL after a failed fsync", err)
	if !bytes.Equal(walHeader(t, path), hdr) {
		t.Fatal("the WAL was restarted after a failed fsync of the main file")
	}
	// Reads work, and see every committed transaction.
	if n := queryInt(t, db, "SELECT count(*) FROM t"); n != 25 {
		t.Fatalf("%d rows, want 25", n)
	}

	// The last close keeps the WAL (its deletion is refused).
	db.Close()
	if _, err := os.Stat(path + "-wal"); err != nil {
		t.Fatalf("the WAL was deleted at close after a failed fsync of the main file: %v", err)
	}

	db = openDB(t, v, path, "synchronous(normal)")
	db.SetMaxOpenConns(1)
	if n := queryInt(t, db, "SELECT count(*) FROM t"); n != 25 {
		t.Fatalf("after reopening: %d rows, want 25", n)
	}
	if st := statusOf(t, db); st.MainSyncError != "" {
		t.Fatalf("after reopening: Status.MainSyncError %q", st.MainSyncError)
	}
	insertRows(t, db, 25, 5)
	checkpointTruncate(t, db)
	insertRows(t, db, 30, 5)
	integrityOK(t, db)
	checkReplay(t, v, path, db)
	if n := queryInt(t, db, "SELECT count(*) FROM t"); n != 35 {
		t.Fatalf("%d rows, want 35", n)
	}
}

// TestSynchronousOffFsyncFailureBeforeRestart: with synchronous=OFF
// SQLite never fsyncs the main file; bop's own fsync before the WAL
// restart fails. The write that would restart the WAL fails (it was never
// committed), the WAL keeps its frames, nothing committed is lost, and
// reopening recovers.
func TestSynchronousOffFsyncFailureBeforeRestart(t *testing.T) {
	v, fv := newSyncFaultVFS(t)
	path := filepath.Join(t.TempDir(), "app.db")
	db := openDB(t, v, path, "synchronous(off)")
	db.SetMaxOpenConns(1)
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
	var fail atomic.Bool
	var calls atomic.Int64
	stateOf(t, v, path).setFsync(func() error {
		calls.Add(1)
		if fail.Load() {
			return syscall.EIO
		}
		return nil // no fsync at all: only the order is tested here
	})
	insertRows(t, db, 0, 20)
	// A complete checkpoint: with synchronous=OFF SQLite fsyncs nothing.
	before := fv.syncs.Load()
	var busy, logf, ckpt int64
	if err := db.QueryRow("PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logf, &ckpt); err != nil {
		t.Fatal(err)
	}
	if busy != 0 || logf != ckpt || ckpt == 0 {
		t.Fatalf("checkpoint: busy %d, log %d, checkpointed %d: want a complete one", busy, logf, ckpt)
	}
	if n := fv.syncs.Load() - before; n != 0 {
		t.Fatalf("SQLite fsynced the main file %d times with synchronous=OFF", n)
	}
	hdr := walHeader(t, path)

	fail.Store(true)
	_, err := db.Exec("INSERT INTO t(id, v) VALUES(1000, 'x')")
	checkIOErr(t, "a write that restarts the WAL while the main-file fsync fails", err)
	if calls.Load() == 0 {
		t.Fatal("the WAL restart did not fsync the main file")
	}
	if !bytes.Equal(walHeader(t, path), hdr) {
		t.Fatal("the WAL was restarted although the main file could not be fsynced")
	}
	if st := statusOf(t, db); st.MainSyncError == "" {
		t.Error("Status.MainSyncError is empty after a failed fsync of the main file")
	}
	fail.Store(false)
	_, err = db.Exec("INSERT INTO t(id, v) VALUES(1000, 'x')")
	checkIOErr(t, "a write that restarts the WAL after a failed fsync", err)
	if n := queryInt(t, db, "SELECT count(*) FROM t"); n != 20 {
		t.Fatalf("%d rows, want 20", n)
	}
	db.Close()
	if _, err := os.Stat(path + "-wal"); err != nil {
		t.Fatalf("the WAL was deleted at close after a failed fsync of the main file: %v", err)
	}

	db = openDB(t, v, path, "synchronous(off)")
	db.SetMaxOpenConns(1)
	if n := queryInt(t, db, "SELECT count(*) FROM t"); n != 20 {
		t.Fatalf("after reopening: %d rows, want 20", n)
	}
	insertRows(t, db, 20, 5)
	checkpointTruncate(t, db)
	insertRows(t, db, 25, 5)
	integrityOK(t, db)
	checkReplay(t, v, path, db)
}

// TestMainFsyncedBeforeWALRestart: the main file is fsynced before the
// WAL is restarted over frames a checkpoint copied, with
// synchronous=OFF (bop's fsync, before the header write), and not a
// second time with synchronous=NORMAL (SQLite's checkpoint fsync already
// covered the copy).
func TestMainFsyncedBeforeWALRestart(t *testing.T) {
	for _, sync := range []string{"off", "normal"} {
		t.Run(sync, func(t *testing.T) {
			v, fv := newSyncFaultVFS(t)
			path := filepath.Join(t.TempDir(), "app.db")
			db := openDB(t, v, path, "synchronous("+sync+")")
			db.SetMaxOpenConns(1)
			mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
			d := stateOf(t, v, path)
			var hdr []byte
			var sawOld, calls atomic.Int64
			d.setFsync(func() error {
				calls.Add(1)
				if hdr != nil {
					if b, err := os.ReadFile(path + "-wal"); err == nil && bytes.HasPrefix(b, hdr) {
						sawOld.Add(1)
					}
				}
				return d.mainFD.Sync()
			})
			for round := range 3 {
				insertRows(t, db, round*10, 10)
				sqliteSyncs := fv.syncs.Load()
				var busy, logf, ckpt int64
				if err := db.QueryRow("PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logf, &ckpt); err != nil {
					t.Fatal(err)
				}
				if busy != 0 || logf != ckpt {
					t.Fatalf("incomplete checkpoint: %d %d %d", busy, logf, ckpt)
				}
				sqliteSyncs = fv.syncs.Load() - sqliteSyncs
				hdr = walHeader(t, path)
				calls.Store(0)
				sawOld.Store(0)
				insertRows(t, db, 1000+round, 1) // restarts the WAL
				if bytes.Equal(walHeader(t, path), hdr) {
					t.Fatal("the WAL was not restarted")
				}
				switch sync {
				case "off":
					if sqliteSyncs != 0 {
						t.Fatalf("SQLite fsynced the main file %d times with synchronous=OFF", sqliteSyncs)
					}
					if calls.Load() != 1 || sawOld.Load() != 1 {
						t.Fatalf("round %d: %d fsyncs of the main file at the WAL restart (%d before the new header), want 1 before it", round, calls.Load(), sawOld.Load())
					}
				case "normal":
					if sqliteSyncs == 0 {
						t.Fatal("SQLite did not fsync the main file at the end of a complete checkpoint")
					}
					if calls.Load() != 0 {
						t.Fatalf("round %d: %d extra fsyncs of the main file at the WAL restart after SQLite's own", round, calls.Load())
					}
				}
			}
			integrityOK(t, db)
			checkReplay(t, v, path, db)
		})
	}
}

// TestImageSavesMarksFromBeforeTheFsync: a sparse image's bitmap saved
// after an fsync of the main file holds the marks as they were when the
// fsync began, not a mark set by a write (a hydration on another
// connection) the fsync may have missed; the later mark is saved by the
// next fsync.
func TestImageSavesMarksFromBeforeTheFsync(t *testing.T) {
	dir := t.TempDir()
	if err := createImage(dir, imageHeader{PageSize: 4096, SeedPages: 12, TSeed: 7}); err != nil {
		t.Fatal(err)
	}
	img, err := loadImage(dir, nil)
	if err != nil || img == nil {
		t.Fatalf("load: %v, %v", img, err)
	}
	mark := func(p uint32) {
		img.mu.Lock()
		img.markLocked(p)
		img.mu.Unlock()
	}
	present := func() (ps []uint32) {
		t.Helper()
		got, err := loadImage(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got == nil {
			return nil // complete: the bitmap file is gone
		}
		for p := uint32(1); p <= got.hdr.SeedPages; p++ {
			if got.hasLocked(p) {
				ps = append(ps, p)
			}
		}
		return ps
	}
	mark(3)
	m := img.marksBefore() // the fsync begins
	mark(5)                // a write the fsync may miss
	if err := img.save(m); err != nil {
		t.Fatal(err)
	}
	if ps := present(); len(ps) != 1 || ps[0] != 3 {
		t.Fatalf("saved marks %v, want [3]", ps)
	}
	if !img.unsaved() {
		t.Fatal("the mark of page 5 is not reported unsaved")
	}
	// An older copy never overwrites a newer one.
	newer := img.marksBefore()
	if err := img.save(newer); err != nil {
		t.Fatal(err)
	}
	if err := img.save(m); err != nil {
		t.Fatal(err)
	}
	if ps := present(); len(ps) != 2 || ps[0] != 3 || ps[1] != 5 {
		t.Fatalf("saved marks %v, want [3 5]", ps)
	}
	if img.unsaved() {
		t.Fatal("every mark is saved, but unsaved reports some")
	}
	for p := uint32(1); p <= 12; p++ {
		mark(p)
	}
	if err := img.save(img.marksBefore()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, imageFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a complete image keeps its bitmap file: %v", err)
	}
}
