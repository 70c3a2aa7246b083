package wal_test

import (
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ncruces/go-sqlite3"

	"github.com/bopstore/bop/internal/testutil"
	"github.com/bopstore/bop/internal/vfstest"
	"github.com/bopstore/bop/internal/walgen"
	"github.com/bopstore/bop/wal"
)

var debugVFS func(t *testing.T) (*vfstest.VFS, string)

// scenario sizes: the race pass runs a small one, TestHeavy the full one.
type scale struct {
	small, autockpt, spill, vacuum int
}

var smallScale = scale{small: 20, autockpt: 6, spill: 300, vacuum: 1}
var fullScale = scale{small: 200, autockpt: 30, spill: 2000, vacuum: 1}

// runScenarios drives real SQLite through every pattern of WAL writing the
// research prototype found (create, small transactions, update/delete,
// autocheckpoint and WAL restart, spill with in-place overwrite, rollback
// of spilled frames, savepoint rollback inside a spilled transaction,
// delete + VACUUM shrink, page size change through rollback mode), and
// after each checks that replaying the spool gives the live database byte
// for byte.
func runScenarios(t *testing.T, syncMode string, psow bool, pageSize int, sc scale) {
	var e *env
	if debugVFS != nil {
		v, name := debugVFS(t)
		e = newEnv(t, t.TempDir(), v, name, nil)
		e.copts.Logf = t.Logf
	} else {
		e = newEnv(t, t.TempDir(), nil, "", nil)
	}
	e.mustOpenCapture()
	defer e.closeCapture()
	db := e.openDB(psow, fmt.Sprintf("page_size(%d)", pageSize), "journal_mode(wal)", "busy_timeout(10000)",
		"synchronous("+syncMode+")", "cache_size(20)")
	defer db.Close()
	db.SetMaxOpenConns(4)
	blob := pageSize / 8 // row sizes scale with the page size

	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
	mustExec(t, db, "CREATE INDEX tv ON t(v)")
	e.checkReplay(db, "create (rollback-mode writes, then WAL)")

	for i := 0; i < sc.small; i++ {
		mustExec(t, db, "INSERT INTO t(v) VALUES (randomblob(?))", 20+i*37%blob)
	}
	mustExec(t, db, "UPDATE t SET v = randomblob(30) WHERE id % 3 = 0")
	mustExec(t, db, "DELETE FROM t WHERE id % 7 = 0")
	e.checkReplay(db, "small transactions, update, delete")

	// Enough pages to pass the autocheckpoint (1000 pages) and restart
	// the WAL with new salts, several times.
	for i := 0; i < sc.autockpt; i++ {
		mustExec(t, db, "INSERT INTO t(v) SELECT randomblob(?) FROM generate_series(1,?)", blob, 1000*4096/pageSize/8+10)
	}
	e.checkReplay(db, "autocheckpoint and WAL restart")

	// A transaction larger than the page cache: pages spill into the WAL
	// before commit, and spilled pages modified again are overwritten in
	// place (then every later frame header is rewritten).
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, tx, "INSERT INTO t(v) SELECT randomblob(?) FROM generate_series(1,?)", blob, sc.spill)
	mustExec(t, tx, "UPDATE t SET v = randomblob(?) WHERE id > (SELECT max(id)-? FROM t) AND id % 5 = 0", blob-10, sc.spill)
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	e.checkReplay(db, "spill and in-place overwrite")

	// A spilled transaction rolled back: its frames are abandoned and
	// overwritten by the next transaction.
	tx, _ = db.Begin()
	mustExec(t, tx, "INSERT INTO t(v) SELECT randomblob(?) FROM generate_series(1,?)", blob, sc.spill)
	tx.Rollback()
	mustExec(t, db, "INSERT INTO t(v) VALUES (x'01')")
	e.checkReplay(db, "rollback of spilled frames")

	// Savepoint rollback inside a spilled transaction.
	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, conn, "BEGIN")
	mustExec(t, conn, "INSERT INTO t(v) SELECT randomblob(?) FROM generate_series(1,?)", blob, sc.spill/4)
	mustExec(t, conn, "SAVEPOINT s")
	mustExec(t, conn, "INSERT INTO t(v) SELECT randomblob(?) FROM generate_series(1,?)", blob, sc.spill/2)
	mustExec(t, conn, "ROLLBACK TO s")
	mustExec(t, conn, "INSERT INTO t(v) SELECT randomblob(?) FROM generate_series(1,50)", blob/4)
	mustExec(t, conn, "COMMIT")
	conn.Close()
	e.checkReplay(db, "savepoint rollback inside a spilled transaction")

	for i := 0; i < sc.vacuum; i++ {
		mustExec(t, db, "DELETE FROM t WHERE id % 2 = 0")
		mustExec(t, db, "VACUUM")
	}
	e.checkReplay(db, "delete and VACUUM (the database shrinks)")

	// Page size change: only outside WAL mode. One connection for the
	// mode switch.
	other := pageSize * 2
	if other > 65536 {
		other = pageSize / 2
	}
	db.SetMaxOpenConns(1)
	mustExec(t, db, "PRAGMA journal_mode=delete")
	mustExec(t, db, fmt.Sprintf("PRAGMA page_size=%d", other))
	mustExec(t, db, "VACUUM")
	mustExec(t, db, "PRAGMA journal_mode=wal")
	if got := queryString(t, db, "PRAGMA page_size"); got != fmt.Sprint(other) {
		t.Fatalf("page size is %s, want %d", got, other)
	}
	mustExec(t, db, "INSERT INTO t(v) VALUES (randomblob(?))", blob)
	db.SetMaxOpenConns(4)
	e.checkReplay(db, fmt.Sprintf("page size %d -> %d through rollback mode", pageSize, other))

	if ic := queryString(t, db, "PRAGMA integrity_check"); ic != "ok" {
		t.Fatal(ic)
	}
	t.Logf("sync=%s psow=%v page=%d: %+v", syncMode, psow, pageSize, e.cap.Stats())
}

func TestReplayScenarios(t *testing.T) {
	for _, c := range []struct {
		sync string
		psow bool
	}{{"normal", true}, {"full", false}} {
		t.Run(fmt.Sprintf("sync=%s,psow=%v", c.sync, c.psow), func(t *testing.T) {
			runScenarios(t, c.sync, c.psow, 4096, smallScale)
		})
	}
}

func TestHeavyReplayMatrix(t *testing.T) {
	testutil.Heavy(t)
	for _, ps := range []int{512, 1024, 4096, 16384, 65536} {
		for _, syncMode := range []string{"normal", "full"} {
			for _, psow := range []bool{true, false} {
				t.Run(fmt.Sprintf("page=%d,sync=%s,psow=%v", ps, syncMode, psow), func(t *testing.T) {
					sc := fullScale
					if ps >= 16384 {
						sc.spill /= 4
						sc.small /= 2
					}
					runScenarios(t, syncMode, psow, ps, sc)
				})
			}
		}
	}
}

// A WAL that already exists when capture first attaches: written by plain
// SQLite (another VFS), adopted with the database image.
func TestReplayPreexistingWAL(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, dir, nil, "", nil)
	plain, err := sql.Open("sqlite3", "file:"+e.path+"?_pragma=journal_mode(wal)&_pragma=wal_autocheckpoint(0)")
	if err != nil {
		t.Fatal(err)
	}
	plain.SetMaxOpenConns(1)
	mustExec(t, plain, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
	mustExec(t, plain, "INSERT INTO t(v) SELECT randomblob(300) FROM generate_series(1,50)")
	mustExec(t, plain, "PRAGMA wal_checkpoint(PASSIVE)")
	for i := 0; i < 20; i++ {
		mustExec(t, plain, "INSERT INTO t(v) VALUES (randomblob(300))")
	}
	// Copy the database and its WAL as a crash would leave them.
	src, _ := os.ReadFile(e.path)
	wsrc, _ := os.ReadFile(e.path + "-wal")
	plain.Close()
	if len(wsrc) == 0 {
		t.Fatal("no WAL to adopt")
	}
	dir2 := t.TempDir()
	e = newEnv(t, dir2, nil, "", nil)
	os.WriteFile(e.path, src, 0o644)
	os.WriteFile(e.path+"-wal", wsrc, 0o644)

	// Without adoption, an unknown WAL generation is refused.
	e.mustOpenCapture()
	db := e.openDB(true)
	_, err = db.Exec("SELECT count(*) FROM t")
	if err == nil {
		t.Fatal("opening a WAL bop never captured succeeded without adoption")
	}
	t.Logf("without adoption: %v", err)
	db.Close()
	e.closeCapture()
	os.RemoveAll(filepath.Join(dir2, "spool"))

	// With adoption: one image of the file with the WAL's committed
	// frames over it (wal.AppendImage); capture goes on after them.
	e.mustOpenCapture()
	appendImage(t, e, src, wsrc)
	db = e.openDB(true)
	defer db.Close()
	mustExec(t, db, "INSERT INTO t(v) VALUES (randomblob(300))")
	if n := queryString(t, db, "SELECT count(*) FROM t"); n != "71" {
		t.Fatalf("count %s", n)
	}
	e.checkReplay(db, "adopted database with an existing WAL")
	if st := e.cap.Stats(); st.Reconciled != 0 {
		t.Fatalf("%d transactions of the WAL captured again after the image that holds them: %+v", st.Reconciled, st)
	}
	e.closeCapture()
}

// appendImage spools an adopted database (its file img and WAL wb) as
// wal.AppendImage does for the VFS.
func appendImage(t testing.TB, e *env, img, wb []byte) {
	t.Helper()
	ps := int(img[16])<<8 | int(img[17])
	if ps == 1 {
		ps = 65536
	}
	h, err := wal.AppendImage(e.spool, &memMain{b: img}, uint32(ps), &walgen.File{Path: e.path + "-wal", Data: wb})
	if err != nil {
		t.Fatal(err)
	}
	if h.WAL.Frame == 0 {
		t.Fatalf("image %+v names no WAL frame", h)
	}
}

// Garbage in a database's -wal (something other than SQLite wrote it):
// opening through capture fails with an error naming the file, and nothing
// is spooled from it.
func TestBadWALFileThroughSQLite(t *testing.T) {
	for _, tc := range []struct {
		name string
		mess func(b []byte) []byte
	}{
		{"garbage", func(b []byte) []byte { return []byte(fmt.Sprintf("%0*d", len(b), 7)) }},
		{"header checksum", func(b []byte) []byte { b[27] ^= 0x10; return b }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, t.TempDir(), nil, "", nil)
			e.mustOpenCapture()
			db := e.openDB(true, "journal_mode(wal)")
			db.SetMaxOpenConns(1)
			mustExec(t, db, "CREATE TABLE t(v)")
			mustExec(t, db, "PRAGMA wal_checkpoint(TRUNCATE)")
			mustExec(t, db, "INSERT INTO t VALUES (1)")
			wb, err := os.ReadFile(e.path + "-wal")
			if err != nil || len(wb) < 32 {
				t.Fatalf("no WAL: %v", err)
			}
			db.Close()
			e.closeCapture()
			// Reopen with the WAL replaced (the close deleted it).
			os.WriteFile(e.path+"-wal", tc.mess(wb), 0o644)
			e.mustOpenCapture()
			defer e.closeCapture()
			before := e.spool.Status().LastTxid
			db = e.openDB(true)
			defer db.Close()
			if _, err := db.Exec("SELECT count(*) FROM t"); err == nil {
				t.Fatal("a bad WAL was opened")
			}
			err = e.db.LastErr()
			if !errors.Is(err, wal.ErrBadWAL) || !strings.Contains(err.Error(), e.path+"-wal") {
				t.Fatalf("error %v", err)
			}
			if e.spool.Status().LastTxid != before {
				t.Fatal("spooled from a bad WAL")
			}
		})
	}
}

// With SQLITE_FCNTL_PERSIST_WAL SQLite keeps the WAL file, frames and all,
// when the last connection closes: capture gets no end of the generation.
// Reopening must not capture any of those frames again.
func TestPersistedWALNotCapturedTwice(t *testing.T) {
	e := newEnv(t, t.TempDir(), nil, "", nil)
	e.mustOpenCapture()
	db := e.openDB(true, "journal_mode(wal)", "wal_autocheckpoint(0)")
	db.SetMaxOpenConns(1)
	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	conn.Raw(func(dc any) error {
		_, err := dc.(interface{ Raw() *sqlite3.Conn }).Raw().FileControl("main", sqlite3.FCNTL_PERSIST_WAL, true)
		return err
	})
	mustExec(t, conn, "CREATE TABLE t(v)")
	for i := 0; i < 10; i++ {
		mustExec(t, conn, "INSERT INTO t VALUES (randomblob(500))")
	}
	conn.Close()
	db.Close()
	if fi, err := os.Stat(e.path + "-wal"); err != nil || fi.Size() == 0 {
		t.Fatalf("WAL not kept: %v", err)
	}
	n := countWALRecords(t, e.spool)
	e.closeCapture()
	for round := 0; round < 2; round++ {
		e.mustOpenCapture()
		db = e.openDB(true, "journal_mode(wal)")
		if c := queryString(t, db, "SELECT count(*) FROM t"); c != "10" {
			t.Fatalf("rows %s", c)
		}
		if got := countWALRecords(t, e.spool); got != n {
			t.Fatalf("round %d: %d WAL records, want %d: kept frames captured again", round, got, n)
		}
		checkUniqueIdentities(t, e.spool)
		db.Close()
		e.closeCapture()
	}
	e.mustOpenCapture()
	db = e.openDB(true, "journal_mode(wal)")
	mustExec(t, db, "INSERT INTO t VALUES (1)")
	e.checkReplay(db, "after reopening a kept WAL")
	db.Close()
	e.closeCapture()
}
