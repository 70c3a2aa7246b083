package vfs

// Throwaway review test (to be deleted): legitimate sequences after which
// SQLite has copied the whole WAL into the main file (a complete
// checkpoint), then the WAL disappears without the spool recording the
// generation as ended (the crash window between SQLite's deletion of the
// WAL and capture.Deleted's state write). CheckWALGone must accept every
// one of them, and must reject the same state with one page of the main
// file changed (so the page comparison really ran).

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bopstore/bop/wal"
)

func TestZZReviewWALGoneLegit(t *testing.T) {
	type step func(t *testing.T, db *sql.DB)
	ex := func(qs ...string) step {
		return func(t *testing.T, db *sql.DB) {
			for _, q := range qs {
				mustExec(t, db, q)
			}
		}
	}
	rows := func(from, n, size int) step {
		return func(t *testing.T, db *sql.DB) {
			for i := from; i < from+n; i++ {
				mustExec(t, db, "INSERT INTO t(id, v) VALUES(?, randomblob(?))", i, size)
			}
		}
	}
	bigTxn := func(from, n, size int) step {
		return func(t *testing.T, db *sql.DB) {
			tx, err := db.Begin()
			if err != nil {
				t.Fatal(err)
			}
			for i := from; i < from+n; i++ {
				if _, err := tx.Exec("INSERT INTO t(id, v) VALUES(?, randomblob(?))", i, size); err != nil {
					t.Fatal(err)
				}
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
		}
	}
	cases := []struct {
		name    string
		pragmas []string
		steps   []step
	}{
		{"inserts", nil, []step{rows(0, 30, 500)}},
		{"delete+vacuum shrink", nil, []step{rows(0, 60, 3000), ex("DELETE FROM t WHERE id > 3", "VACUUM")}},
		{"shrink then regrow", nil, []step{rows(0, 60, 3000), ex("DELETE FROM t WHERE id > 3", "VACUUM"), rows(100, 20, 3000)}},
		{"auto_vacuum full", []string{"auto_vacuum(full)"}, []step{rows(0, 60, 3000), ex("DELETE FROM t WHERE id % 2 = 0"), rows(200, 5, 100)}},
		{"incremental vacuum", []string{"auto_vacuum(incremental)"}, []step{rows(0, 60, 3000), ex("DELETE FROM t WHERE id > 5", "PRAGMA incremental_vacuum(10)"), rows(300, 3, 100)}},
		{"generations: truncate, restart", nil, []step{rows(0, 20, 2000), ex("PRAGMA wal_checkpoint(TRUNCATE)"), rows(100, 20, 2000), ex("PRAGMA wal_checkpoint(RESTART)"), rows(200, 20, 2000)}},
		{"truncate then nothing", nil, []step{rows(0, 20, 2000), ex("PRAGMA wal_checkpoint(TRUNCATE)")}},
		{"journal_size_limit", []string{"journal_size_limit(0)"}, []step{rows(0, 20, 2000), ex("PRAGMA wal_checkpoint(PASSIVE)"), rows(100, 10, 2000)}},
		{"page size 1024", []string{"page_size(1024)"}, []step{rows(0, 30, 1500), ex("DELETE FROM t WHERE id < 10", "VACUUM")}},
		{"page size 65536", []string{"page_size(65536)"}, []step{rows(0, 10, 70000)}},
		{"sync off", []string{"synchronous(off)"}, []step{rows(0, 30, 2000), ex("DELETE FROM t WHERE id > 5", "VACUUM"), rows(50, 5, 100)}},
		{"sync full", []string{"synchronous(full)"}, []step{rows(0, 30, 2000)}},
		{"big transaction", []string{"cache_size(10)"}, []step{bigTxn(0, 2000, 3000), ex("DELETE FROM t WHERE id > 10")}},
		{"rollback of first txn of a generation", nil, []step{rows(0, 10, 2000), ex("PRAGMA wal_checkpoint(TRUNCATE)"),
			func(t *testing.T, db *sql.DB) {
				tx, _ := db.Begin()
				tx.Exec("INSERT INTO t(id, v) VALUES(9999, randomblob(50000))")
				tx.Rollback()
			}, rows(100, 5, 100)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			old := settleDelay
			settleDelay = time.Hour
			defer func() { settleDelay = old }()
			v := newVFS(t, offline(Config{AutoCheckpoint: -1}))
			path := filepath.Join(t.TempDir(), "app.db")
			db := openDB(t, v, path, c.pragmas...)
			db.SetMaxOpenConns(1)
			mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
			for _, s := range c.steps {
				s(t, db)
			}
			var busy, logf, ckpt int64
			if err := db.QueryRow("PRAGMA wal_checkpoint(FULL)").Scan(&busy, &logf, &ckpt); err != nil {
				t.Fatal(err)
			}
			if busy != 0 || logf != ckpt {
				t.Fatalf("checkpoint not complete: %d %d %d", busy, logf, ckpt)
			}
			statePath := filepath.Join(path+"-bop", "spool", "state")
			state, err := os.ReadFile(statePath)
			if err != nil {
				t.Fatal(err)
			}
			want := queryInt(t, db, "SELECT count(*) FROM t")
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(path + "-wal"); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("WAL still there after close: %v", err)
			}
			// The crash window: the state as before the deletion was recorded.
			if err := os.WriteFile(statePath, state, 0o644); err != nil {
				t.Fatal(err)
			}
			// Direct check, and the control: one byte of the main file changed.
			main, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			sp, err := wal.OpenSpool(filepath.Join(path+"-bop", "spool"), wal.SpoolOptions{})
			if err != nil {
				t.Fatal(err)
			}
			st := sp.Status()
			gerr := sp.CheckWALGone(bytes.NewReader(main), int64(len(main)), path, path+"-wal")
			ctl := 0
			for off := 0; off < len(main); off += 512 {
				bad := bytes.Clone(main)
				bad[off] ^= 0xff
				if err := sp.CheckWALGone(bytes.NewReader(bad), int64(len(bad)), path, path+"-wal"); errors.Is(err, wal.ErrLost) {
					ctl++
				}
			}
			sp.Close()
			t.Logf("spool %d..%d confirmed %d, main %d bytes; %d of %d flipped offsets detected", st.FirstTxid, st.LastTxid, st.ConfirmedTxid, len(main), ctl, (len(main)+511)/512)
			if gerr != nil {
				t.Fatalf("FALSE POSITIVE: %v", gerr)
			}
			if ctl == 0 {
				t.Errorf("control: no flipped byte detected (the comparison did not run)")
			}
			db2 := openDB(t, v, path, c.pragmas...)
			if n := queryInt(t, db2, "SELECT count(*) FROM t"); n != want {
				t.Fatalf("%d rows, want %d", n, want)
			}
			integrityOK(t, db2)
			mustExec(t, db2, "INSERT INTO t(id, v) VALUES(100000, 'after')")
			checkReplay(t, v, path, db2)
			_ = fmt.Sprint()
		})
	}
}

// False negative: a WAL that is "gone" for SQLite (shorter than its
// header, or an all-zero header: SQLite's recovery then reads the main
// file alone) is not "gone" for database.reconcile (size == 0 only), so
// CheckWALGone never runs and the open continues from the older main file.
func TestZZReviewWALShortNotChecked(t *testing.T) {
	for _, c := range []struct {
		name string
		mod  func(path string) error
	}{
		{"deleted", func(p string) error { return os.Remove(p) }},
		{"truncated to 0", func(p string) error { return os.Truncate(p, 0) }},
		{"truncated to 16", func(p string) error { return os.Truncate(p, 16) }},
		{"zeroed header", func(p string) error {
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt(make([]byte, 32), 0)
			return err
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := crashAfterPublish(t, 40, false)
			if err := c.mod(path + "-wal"); err != nil {
				t.Fatal(err)
			}
			os.Remove(path + "-shm")
			_, _, n, err := openAfterCrash(t, path, "SELECT count(*) FROM sqlite_schema")
			t.Logf("open: n=%d err=%v", n, err)
			if !errors.Is(err, wal.ErrLost) {
				t.Errorf("MISSED: a WAL %s with published transactions opened without ErrLost (sqlite_schema has %d rows)", c.name, n)
			}
		})
	}
}
