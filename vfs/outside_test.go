package vfs

import (
	"database/sql"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// bopDatabase creates a database through a fresh bop VFS, writes rows, and
// closes it cleanly (the seal records the files as bop leaves them).
func bopDatabase(t *testing.T, path string) {
	t.Helper()
	bopDatabaseWith(t, path, Config{})
}

// bopDatabaseWith is bopDatabase through a VFS with cfg; an offline
// store's failed final publish at close is expected.
func bopDatabaseWith(t *testing.T, path string, cfg Config) {
	t.Helper()
	v := newVFS(t, cfg)
	db := openDB(t, v, path)
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
	mustExec(t, db, "INSERT INTO t(v) SELECT 'row' || value FROM generate_series(1, 500)")
	if err := db.Close(); err != nil && cfg.wrapStore == nil {
		t.Fatal(err)
	}
	if lookup(fullPath(t, v, path)) != nil {
		t.Fatal("state still open after the last connection closed")
	}
}

// openErr is the error of the first use of a bop pool on path.
func openErr(t *testing.T, path string) error {
	t.Helper()
	v := newVFS(t, Config{})
	db := openDB(t, v, path)
	var n int
	err := db.QueryRow("SELECT count(*) FROM t").Scan(&n)
	db.Close()
	return err
}

func TestChangedOutsideRefused(t *testing.T) {
	t.Run("plain sqlite wrote and closed", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "a.db")
		bopDatabase(t, path)
		// The outside write keeps the file's size and inode: only the
		// mtime shows it. Kernels with coarse timestamps stamp mtime per
		// clock tick (up to 10 ms); a write within the tick of bop's last
		// one is a documented blind spot (docs/arch/vfs.md), not what this
		// case is about.
		time.Sleep(20 * time.Millisecond)
		plain := openDB(t, nil, path)
		mustExec(t, plain, "INSERT INTO t(v) VALUES ('behind bop')")
		plain.Close()
		if err := openErr(t, path); !errors.Is(err, ErrChangedOutside) {
			t.Fatalf("open after an outside write: %v, want ErrChangedOutside", err)
		}
	})
	t.Run("plain sqlite wrote and still has the WAL", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "b.db")
		bopDatabase(t, path)
		plain := openDB(t, nil, path, "wal_autocheckpoint(0)")
		plain.SetMaxOpenConns(1)
		mustExec(t, plain, "INSERT INTO t(v) VALUES ('behind bop')")
		if _, err := os.Stat(path + "-wal"); err != nil {
			t.Fatalf("expected the outside writer's WAL: %v", err)
		}
		err := openErr(t, path)
		if !errors.Is(err, ErrChangedOutside) {
			t.Fatalf("open with an outside WAL: %v, want ErrChangedOutside", err)
		}
		t.Log(err)
		plain.Close()
	})
	t.Run("file replaced by a copy", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "c.db")
		bopDatabase(t, path)
		copyFile(t, path, path+".copy")
		if err := os.Rename(path+".copy", path); err != nil {
			t.Fatal(err)
		}
		if err := openErr(t, path); !errors.Is(err, ErrChangedOutside) {
			t.Fatalf("open of a replaced file: %v, want ErrChangedOutside", err)
		}
	})
	t.Run("file deleted", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "d.db")
		bopDatabase(t, path)
		os.Remove(path)
		if err := openErr(t, path); !errors.Is(err, ErrChangedOutside) {
			t.Fatalf("open of a deleted file: %v, want ErrChangedOutside", err)
		}
	})
}

// Stock SQLite may read the live file with immutable=1 while bop is not
// running: nothing is written, and bop opens it afterwards.
func TestImmutableReadIsNotAChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ro.db")
	bopDatabase(t, path)
	ro, err := sql.Open("sqlite3", "file:"+path+"?immutable=1")
	if err != nil {
		t.Fatal(err)
	}
	if n := queryInt(t, ro, "SELECT count(*) FROM t"); n != 500 {
		t.Fatalf("stock read sees %d rows", n)
	}
	if s := queryString(t, ro, "PRAGMA integrity_check"); s != "ok" {
		t.Fatal(s)
	}
	ro.Close()
	v := newVFS(t, Config{})
	db := openDB(t, v, path)
	if n := queryInt(t, db, "SELECT count(*) FROM t"); n != 500 {
		t.Fatalf("%d rows", n)
	}
	mustExec(t, db, "INSERT INTO t(v) VALUES ('more')")
	checkReplay(t, v, path, db)
}

// Reopening through bop, again and again, is never mistaken for an outside
// change (the seal follows bop's own checkpoints and closes).
func TestReopenCycles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cycle.db")
	for i := 0; i < 5; i++ {
		v := newVFS(t, Config{})
		db := openDB(t, v, path, "wal_autocheckpoint(10)")
		mustExec(t, db, "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
		mustExec(t, db, "INSERT INTO t(v) SELECT randomblob(3000) FROM generate_series(1, 50)")
		if i == 4 {
			if n := queryInt(t, db, "SELECT count(*) FROM t"); n != 250 {
				t.Fatalf("%d rows", n)
			}
			checkReplay(t, v, path, db)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		v.Close()
	}
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// After bop's writes to the main file stop, the seal settles: busy is
// cleared and the recorded identity is the file's.
func TestSealSettles(t *testing.T) {
	v := newVFS(t, Config{})
	path := filepath.Join(t.TempDir(), "settle.db")
	db := openDB(t, v, path)
	mustExec(t, db, "CREATE TABLE t(a)")
	mustExec(t, db, "INSERT INTO t SELECT value FROM generate_series(1, 1000)")
	checkpointTruncate(t, db)
	d := stateOf(t, v, path)
	deadline := time.Now().Add(10 * time.Second)
	for d.seal.state().busy {
		if time.Now().After(deadline) {
			t.Fatal("the seal stays busy")
		}
		time.Sleep(50 * time.Millisecond)
	}
	st := d.seal.state()
	now, err := statFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !st.open || st.main != now {
		t.Fatalf("settled seal %+v, file %+v", st, now)
	}
}
