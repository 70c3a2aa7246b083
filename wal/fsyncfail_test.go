package wal_test

import (
	"database/sql"
	"errors"
	"io/fs"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/bopstore/bop/wal"
)

// faultFS fails one operation (op: "sync", "write" or "read") of the
// files whose name ends with suffix ("": every file) while fail is set.
type faultFS struct {
	wal.OSFS
	suffix, op string
	fail       *atomic.Bool
}

type faultFile struct {
	wal.File
	op   string
	fail *atomic.Bool
}

func (f faultFS) OpenFile(name string, flag int, perm fs.FileMode) (wal.File, error) {
	file, err := f.OSFS.OpenFile(name, flag, perm)
	if err != nil || !strings.HasSuffix(name, f.suffix) {
		return file, err
	}
	return faultFile{file, f.op, f.fail}, nil
}

func (f faultFile) failing(op string) bool { return f.op == op && f.fail.Load() }

func (f faultFile) Sync() error {
	if f.failing("sync") {
		return errors.New("injected fsync failure")
	}
	return f.File.Sync()
}

func (f faultFile) WriteAt(p []byte, off int64) (int, error) {
	if f.failing("write") {
		return 0, errors.New("injected write failure")
	}
	return f.File.WriteAt(p, off)
}

func (f faultFile) ReadAt(p []byte, off int64) (int, error) {
	if f.failing("read") {
		return 0, errors.New("injected read failure")
	}
	return f.File.ReadAt(p, off)
}

// A spool fsync that fails (after which nothing written since the last
// good fsync can be trusted): capture stops, SQLite's commit fails, every
// later commit fails, and reopening reconciles spool and database.
func TestSpoolFsyncFailureStopsCapture(t *testing.T) {
	var fail atomic.Bool
	e := newEnv(t, t.TempDir(), nil, "", faultFS{op: "sync", fail: &fail})
	e.mustOpenCapture()
	db := e.openDB(true, "journal_mode(wal)", "synchronous(full)")
	db.SetMaxOpenConns(1)
	mustExec(t, db, "CREATE TABLE t(v)")
	mustExec(t, db, "INSERT INTO t VALUES (1)")
	fail.Store(true)
	if _, err := db.Exec("INSERT INTO t VALUES (2)"); err == nil {
		t.Fatal("commit succeeded although the spool could not be fsynced")
	}
	if err := e.cap.Err(); err == nil {
		t.Fatal("capture did not stop")
	}
	db = e.reopenAfterStop(db, &fail, "journal_mode(wal)")
	t.Logf("rows after reopen: %s", queryString(t, db, "SELECT group_concat(v) FROM t"))
	e.checkReplay(db, "after a failed spool fsync")
	mustExec(t, db, "INSERT INTO t VALUES (4)")
	e.checkReplay(db, "capture goes on after reopening")
}

// reopenAfterStop clears the fault, checks that a commit fails while
// capture is stopped, closes db and capture, and opens both again
// (reconciliation); they are closed when the test ends.
func (e *env) reopenAfterStop(db *sql.DB, fail *atomic.Bool, pragmas ...string) *sql.DB {
	e.t.Helper()
	fail.Store(false)
	if _, err := db.Exec("INSERT INTO t VALUES (3)"); err == nil {
		e.t.Fatal("a commit succeeded after capture stopped")
	}
	db.Close()
	e.closeCapture()
	e.mustOpenCapture()
	e.t.Cleanup(e.closeCapture)
	db = e.openDB(true, pragmas...)
	e.t.Cleanup(func() { db.Close() })
	return db
}
