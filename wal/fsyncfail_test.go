package wal_test

import (
	"errors"
	"io/fs"
	"sync/atomic"
	"testing"

	"github.com/bopstore/bop/wal"
)

// failingFS fails every fsync of spool files while fail is set.
type failingFS struct {
	wal.OSFS
	fail *atomic.Bool
}

type failingFile struct {
	wal.File
	fail *atomic.Bool
}

func (f failingFS) OpenFile(name string, flag int, perm fs.FileMode) (wal.File, error) {
	file, err := f.OSFS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return failingFile{file, f.fail}, nil
}

func (f failingFile) Sync() error {
	if f.fail.Load() {
		return errors.New("injected spool fsync failure")
	}
	return f.File.Sync()
}

// A spool fsync that fails (after which nothing written since the last
// good fsync can be trusted): capture stops, SQLite's commit fails, every
// later commit fails, and reopening reconciles spool and database.
func TestSpoolFsyncFailureStopsCapture(t *testing.T) {
	var fail atomic.Bool
	e := newEnv(t, t.TempDir(), nil, "", failingFS{fail: &fail})
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
	fail.Store(false)
	if _, err := db.Exec("INSERT INTO t VALUES (3)"); err == nil {
		t.Fatal("a commit succeeded after capture stopped")
	}
	db.Close()
	e.closeCapture()

	e.mustOpenCapture()
	defer e.closeCapture()
	db = e.openDB(true, "journal_mode(wal)")
	defer db.Close()
	t.Logf("rows after reopen: %s", queryString(t, db, "SELECT group_concat(v) FROM t"))
	e.checkReplay(db, "after a failed spool fsync")
	mustExec(t, db, "INSERT INTO t VALUES (4)")
	e.checkReplay(db, "capture goes on after reopening")
}
