package vfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bopstore/bop/internal/testutil"
	"github.com/bopstore/bop/wal"
	"github.com/ncruces/go-sqlite3"
)

// The SQLite behaviours users rely on, through vfs=bop, each ending with
// the spool replayed to the same bytes as the live database.

func TestNewDatabaseIsWALAndCapturesItsFirstWrites(t *testing.T) {
	v := newVFS(t, Config{})
	path := filepath.Join(t.TempDir(), "new.db")
	db := openDB(t, v, path)
	mustExec(t, db, "CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT)")
	mustExec(t, db, "INSERT INTO t(b) VALUES ('x'), ('y')")
	if m := queryString(t, db, "PRAGMA journal_mode"); m != "wal" {
		t.Fatalf("journal_mode %q, want wal", m)
	}
	d := stateOf(t, v, path)
	// The write that put the new database in WAL mode (page 1, in
	// rollback mode) is the spool's first record.
	h, err := d.spool.Header(1)
	if err != nil {
		t.Fatal(err)
	}
	if h.Kind != wal.KindDirect {
		t.Fatalf("first record is %s, want the direct write that created page 1", h.Kind)
	}
	checkReplay(t, v, path, db)
	integrityOK(t, db)
}

func TestPoolManyConnections(t *testing.T) {
	v := newVFS(t, Config{})
	path := filepath.Join(t.TempDir(), "pool.db")
	db := openDB(t, v, path, "busy_timeout(10000)")
	db.SetMaxOpenConns(12)
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, worker INT, n INT, v TEXT)")
	const workers, each = 8, 60
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, err := db.Exec("INSERT INTO t(worker, n, v) VALUES (?, ?, ?)", w, i, strings.Repeat("v", 50+i)); err != nil {
					errs <- err
					return
				}
				var n int
				if err := db.QueryRow("SELECT count(*) FROM t WHERE worker = ?", w).Scan(&n); err != nil {
					errs <- err
					return
				}
				if n != i+1 {
					errs <- fmt.Errorf("worker %d sees %d of its rows after %d inserts", w, n, i+1)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if st := db.Stats(); st.MaxOpenConnections != 12 || st.OpenConnections < 2 {
		t.Fatalf("pool did not use several connections: %+v", st)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM t"); n != workers*each {
		t.Fatalf("%d rows, want %d", n, workers*each)
	}
	integrityOK(t, db)
	checkReplay(t, v, path, db)
}

// readersInvariant runs 4 readers that check, in every snapshot, that the
// sum of n equals count*(count-1)/2 and never goes backwards, while one
// writer commits txns transactions.
func readersInvariant(t *testing.T, txns int) {
	v := newVFS(t, Config{})
	path := filepath.Join(t.TempDir(), "readers.db")
	db := openDB(t, v, path, "busy_timeout(10000)", "synchronous(normal)")
	db.SetMaxOpenConns(6)
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, n INT, pad TEXT)")
	var done atomic.Bool
	var reads atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last int64
			for !done.Load() {
				var cnt, sum int64
				if err := db.QueryRow("SELECT count(*), coalesce(sum(n), 0) FROM t").Scan(&cnt, &sum); err != nil {
					errs <- err
					return
				}
				if sum != cnt*(cnt-1)/2 {
					errs <- fmt.Errorf("inconsistent snapshot: count %d, sum %d", cnt, sum)
					return
				}
				if cnt < last {
					errs <- fmt.Errorf("snapshot went backwards: %d after %d", cnt, last)
					return
				}
				last = cnt
				reads.Add(1)
			}
		}()
	}
	pad := strings.Repeat("p", 200)
	n := 0
	for i := 0; i < txns; i++ {
		// Mostly one row per transaction; every 10th a batch, so some
		// transactions spill several pages.
		k := 1
		if i%10 == 9 {
			k = 25
		}
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		for j := 0; j < k; j++ {
			if _, err := tx.Exec("INSERT INTO t(n, pad) VALUES (?, ?)", n, pad); err != nil {
				t.Fatal(err)
			}
			n++
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(20 * time.Millisecond)
	done.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if reads.Load() < 4 {
		t.Fatalf("readers ran only %d snapshots", reads.Load())
	}
	if c := queryInt(t, db, "SELECT count(*) FROM t"); c != int64(n) {
		t.Fatalf("count %d, want %d", c, n)
	}
	integrityOK(t, db)
	checkReplay(t, v, path, db)
	t.Logf("%d transactions (%d rows), %d reader snapshots", txns, n, reads.Load())
}

func TestReadersSeeConsistentSnapshots(t *testing.T) {
	txns := 2000
	if testutil.RaceEnabled {
		txns = 600
	}
	readersInvariant(t, txns)
}

func TestHeavyReadersSeeConsistentSnapshots(t *testing.T) {
	testutil.Heavy(t)
	readersInvariant(t, 20000)
}

func TestVacuum(t *testing.T) {
	v := newVFS(t, Config{})
	path := filepath.Join(t.TempDir(), "vacuum.db")
	db := openDB(t, v, path)
	db.SetMaxOpenConns(1)
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
	mustExec(t, db, "INSERT INTO t(v) SELECT randomblob(1000) FROM generate_series(1, 2000)")
	mustExec(t, db, "DELETE FROM t WHERE id % 3 != 0")
	before := queryInt(t, db, "PRAGMA page_count")
	mustExec(t, db, "VACUUM")
	after := queryInt(t, db, "PRAGMA page_count")
	if after >= before {
		t.Fatalf("VACUUM did not shrink the database: %d -> %d pages", before, after)
	}
	if m := queryString(t, db, "PRAGMA journal_mode"); m != "wal" {
		t.Fatalf("journal_mode %q after VACUUM", m)
	}
	integrityOK(t, db)
	checkReplay(t, v, path, db)
	mustExec(t, db, "INSERT INTO t(v) VALUES (randomblob(10))")
	checkReplay(t, v, path, db)
}

func TestSavepoints(t *testing.T) {
	v := newVFS(t, Config{})
	path := filepath.Join(t.TempDir(), "sp.db")
	db := openDB(t, v, path, "cache_size(10)")
	db.SetMaxOpenConns(1)
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	big := strings.Repeat("s", 3000)
	for _, q := range []string{
		"BEGIN",
		"INSERT INTO t(v) VALUES ('kept-1')",
		"SAVEPOINT a",
		// Enough rows to spill pages to the WAL before the savepoint
		// is rolled back (cache_size 10).
		"INSERT INTO t(v) SELECT '" + big + "' FROM generate_series(1, 200)",
		"ROLLBACK TO a",
		"INSERT INTO t(v) VALUES ('kept-2')",
		"SAVEPOINT b",
		"INSERT INTO t(v) VALUES ('kept-3')",
		"RELEASE b",
		"SAVEPOINT c",
		"UPDATE t SET v = 'gone' WHERE v = 'kept-1'",
		"ROLLBACK TO c",
		"RELEASE c",
		"COMMIT",
		// A whole transaction rolled back after spilling.
		"BEGIN",
		"INSERT INTO t(v) SELECT '" + big + "' FROM generate_series(1, 200)",
		"ROLLBACK",
	} {
		mustExec(t, conn, q)
	}
	var got []string
	rows, err := conn.QueryContext(context.Background(), "SELECT v FROM t ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		rows.Scan(&s)
		got = append(got, s)
	}
	rows.Close()
	if strings.Join(got, ",") != "kept-1,kept-2,kept-3" {
		t.Fatalf("rows %v, want kept-1,kept-2,kept-3", got)
	}
	conn.Close()
	integrityOK(t, db)
	checkReplay(t, v, path, db)
}

func TestAttachSecondBopDatabase(t *testing.T) {
	v := newVFS(t, Config{})
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")
	dbb := openDB(t, v, b)
	mustExec(t, dbb, "CREATE TABLE u(id INTEGER PRIMARY KEY, v TEXT)")
	dba := openDB(t, v, a)
	dba.SetMaxOpenConns(1)
	mustExec(t, dba, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
	mustExec(t, dba, "ATTACH DATABASE ? AS other", dsn(b, v.Name()))
	if m := queryString(t, dba, "PRAGMA other.journal_mode"); m != "wal" {
		t.Fatalf("attached journal_mode %q", m)
	}
	conn, err := dba.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"BEGIN",
		"INSERT INTO t(v) SELECT 'a' || value FROM generate_series(1, 300)",
		"INSERT INTO other.u(v) SELECT 'b' || value FROM generate_series(1, 300)",
		"COMMIT",
	} {
		mustExec(t, conn, q)
	}
	conn.Close()
	if n := queryInt(t, dba, "SELECT (SELECT count(*) FROM t) + (SELECT count(*) FROM other.u)"); n != 600 {
		t.Fatalf("%d rows", n)
	}
	if n := queryInt(t, dbb, "SELECT count(*) FROM u"); n != 300 {
		t.Fatalf("b sees %d rows", n)
	}
	if s := queryString(t, dba, "PRAGMA other.integrity_check"); s != "ok" {
		t.Fatal(s)
	}
	integrityOK(t, dba)
	checkReplay(t, v, a, dba)
	checkReplay(t, v, b, dbb)
}

func TestPageSizes(t *testing.T) {
	v := newVFS(t, Config{})
	dir := t.TempDir()
	for ps := 512; ps <= 65536; ps *= 2 {
		t.Run(fmt.Sprint(ps), func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("ps%d.db", ps))
			db := openDB(t, v, path, fmt.Sprintf("page_size(%d)", ps))
			db.SetMaxOpenConns(2)
			mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
			mustExec(t, db, "INSERT INTO t(v) SELECT randomblob(700) FROM generate_series(1, 150)")
			mustExec(t, db, "UPDATE t SET v = randomblob(300) WHERE id % 2 = 0")
			mustExec(t, db, "DELETE FROM t WHERE id % 5 = 0")
			if got := queryInt(t, db, "PRAGMA page_size"); got != int64(ps) {
				t.Fatalf("page_size %d, want %d", got, ps)
			}
			if m := queryString(t, db, "PRAGMA journal_mode"); m != "wal" {
				t.Fatalf("journal_mode %q", m)
			}
			integrityOK(t, db)
			checkReplay(t, v, path, db)
		})
	}
}

// TestHeavyLockBytePage grows a database past 1 GiB, across SQLite's
// lock-byte page (the page at byte offset 2^30, never written).
func TestHeavyLockBytePage(t *testing.T) {
	testutil.Heavy(t)
	v := newVFS(t, Config{SpoolLimit: -1})
	path := filepath.Join(t.TempDir(), "big.db")
	db := openDB(t, v, path, "page_size(65536)", "synchronous(normal)")
	db.SetMaxOpenConns(1)
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
	for i := 0; i < 11; i++ {
		// 100 MiB per transaction.
		mustExec(t, db, "INSERT INTO t(v) SELECT zeroblob(1048576) FROM generate_series(1, 100)")
	}
	mustExec(t, db, "INSERT INTO t(v) VALUES ('after the lock byte')")
	mustExec(t, db, "UPDATE t SET v = 'changed' WHERE id = 3")
	lockPage := int64(1<<30)/65536 + 1
	if n := queryInt(t, db, "PRAGMA page_count"); n <= lockPage {
		t.Fatalf("%d pages: did not cross the lock-byte page %d", n, lockPage)
	}
	integrityOK(t, db)
	checkReplay(t, v, path, db)
	if s := queryString(t, db, "SELECT v FROM t ORDER BY id DESC LIMIT 1"); s != "after the lock byte" {
		t.Fatalf("last row %q", s)
	}
}

// TestPlainAPI: the WAL auto-extension and the pragmas work through
// sqlite3.Open as well as database/sql.
func TestPlainAPI(t *testing.T) {
	v := newVFS(t, Config{})
	path := filepath.Join(t.TempDir(), "plain.db")
	c, err := sqlite3.Open(dsn(path, v.Name()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Exec("CREATE TABLE t(a); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	st, _, err := c.Prepare("PRAGMA journal_mode")
	if err != nil {
		t.Fatal(err)
	}
	st.Step()
	mode := st.ColumnText(0)
	st.Close()
	if mode != "wal" {
		t.Fatalf("journal_mode %q", mode)
	}
	err = c.Exec("PRAGMA journal_mode=truncate")
	if err == nil || !strings.Contains(err.Error(), "journal_mode=truncate refused") {
		t.Fatalf("journal_mode=truncate: %v", err)
	}
	var serr *sqlite3.Error
	if !errors.As(err, &serr) {
		t.Fatalf("%T", err)
	}
}

// VACUUM INTO through a bop connection makes the copy through bop too (it
// is a main database file of the connection's VFS); a URI naming the
// default VFS makes a plain file, as docs/arch/vfs.md says.
func TestVacuumIntoPlainCopy(t *testing.T) {
	v := newVFS(t, Config{})
	dir := t.TempDir()
	db := openDB(t, v, filepath.Join(dir, "src.db"))
	mustExec(t, db, "CREATE TABLE t(a); INSERT INTO t SELECT value FROM generate_series(1, 1000)")
	out := filepath.Join(dir, "copy.db")
	mustExec(t, db, "VACUUM INTO ?", "file:"+out+"?vfs=os")
	if _, err := os.Stat(out + "-bop"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the plain copy got bop state: %v", err)
	}
	plain := openDB(t, nil, out)
	if n := queryInt(t, plain, "SELECT count(*) FROM t"); n != 1000 {
		t.Fatalf("copy has %d rows", n)
	}
	integrityOK(t, plain)
}
