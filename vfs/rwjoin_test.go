package vfs

import (
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ncruces/go-sqlite3"
)

// A process whose first connection to a database is read-only (a read
// pool opened before the write pool, a common database/sql layout) takes
// the writer role when a read-write connection joins, and publishes its
// commits: they used to stay in the spool, with "the publisher is not
// running", until another process opened the database read-write first.
func TestReadWriteJoinsReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "join.db")
	v := newVFS(t, Config{})
	db := openDB(t, v, path)
	mustExec(t, db, "CREATE TABLE t(v)")
	mustExec(t, db, "INSERT INTO t VALUES ('first process')")
	db.Close()

	v2 := newVFS(t, Config{})
	ro, err := sqlite3.OpenFlags(dsn(path, v2.Name()), sqlite3.OPEN_READONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	rwDB := openDB(t, v2, path)
	mustExec(t, rwDB, "INSERT INTO t VALUES ('joined')")
	if s := statusOf(t, rwDB); s.Publisher != "running" {
		t.Fatalf("publisher %q after a read-write connection joined, want running", s.Publisher)
	}
	txid := queryInt(t, rwDB, "PRAGMA bop_checkpoint")
	if s := statusOf(t, rwDB); s.PublishedTxid != uint64(txid) || s.PublishedTxid != s.Txid {
		t.Fatalf("published txid %d (bop_checkpoint %d), committed %d", s.PublishedTxid, txid, s.Txid)
	}
	rwDB.Close()
	ro.Close()
	if _, n := restoreRows(t, path, 0); n != 2 {
		t.Fatalf("%d rows in the store, want 2 (the joined connection's too)", n)
	}
}

// The write pool closed before the read pool (deferred closes in the
// order the pools were opened): the read-only connection closes last and
// SQLite keeps the WAL (only a read-write connection checkpoints and
// deletes it at close). The final publish still holds every commit: the
// close fsyncs the kept WAL and confirms its transactions first.
func TestCloseReadOnlyLastPublishesAll(t *testing.T) {
	path := filepath.Join(t.TempDir(), "order.db")
	v := newVFS(t, Config{CheckpointInterval: time.Hour})
	rw := openDB(t, v, path)
	mustExec(t, rw, "CREATE TABLE t(v)")
	ro, err := openDBURI(t, "file:"+path+"?mode=ro&vfs="+v.Name())
	if err != nil {
		t.Fatal(err)
	}
	if n := queryInt(t, ro, "SELECT count(*) FROM t"); n != 0 {
		t.Fatalf("%d rows", n)
	}
	mustExec(t, rw, "INSERT INTO t VALUES ('last')")
	if err := rw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ro.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + "-wal"); err != nil {
		t.Fatalf("the read-only connection closing last kept no WAL (%v): the case this test is about did not happen", err)
	}
	if _, n := restoreRows(t, path, 0); n != 1 {
		t.Fatalf("%d rows in the store after a clean close, want 1 (the last commit)", n)
	}
}

// attachedStatus is PRAGMA <schema>.bop_status on db.
func attachedStatus(t *testing.T, db *sql.DB, schema string) Status {
	t.Helper()
	var s Status
	if err := json.Unmarshal([]byte(queryString(t, db, "PRAGMA "+schema+".bop_status")), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// Databases whose commits no WAL hook of bop sees start their publisher
// from a commit (startPublisherLate): a new bop database ATTACHed to a bop
// connection (it stays in rollback mode), and an existing one ATTACHed to
// a plain connection in a process whose first connection to it was
// read-only. Both used to stay unpublished, "not started", until an
// explicit bop_checkpoint or another process.
func TestAttachedCommitsPublish(t *testing.T) {
	published := func(t *testing.T, db *sql.DB, schema string) {
		t.Helper()
		waitUntil(t, schema+" published", func() bool {
			s := attachedStatus(t, db, schema)
			return s.Publisher == "running" && s.Txid > 0 && s.PublishedTxid == s.Txid
		})
	}
	t.Run("new database attached to a bop connection", func(t *testing.T) {
		dir := t.TempDir()
		v := newVFS(t, Config{CheckpointInterval: 20 * time.Millisecond})
		a := openDB(t, v, filepath.Join(dir, "a.db"))
		a.SetMaxOpenConns(1)
		mustExec(t, a, "CREATE TABLE t(v)")
		mustExec(t, a, "ATTACH DATABASE ? AS b", dsn(filepath.Join(dir, "b.db"), v.Name()))
		mustExec(t, a, "CREATE TABLE b.t(v)")
		mustExec(t, a, "INSERT INTO b.t VALUES (1)")
		published(t, a, "b")
	})
	t.Run("read-only first, then attached to a plain connection", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "e.db")
		v := newVFS(t, Config{CheckpointInterval: 20 * time.Millisecond})
		db := openDB(t, v, path)
		mustExec(t, db, "CREATE TABLE t(v)")
		db.Close()
		ro, err := openDBURI(t, "file:"+path+"?mode=ro&vfs="+v.Name())
		if err != nil {
			t.Fatal(err)
		}
		queryInt(t, ro, "SELECT count(*) FROM t")
		plain := openDB(t, nil, filepath.Join(dir, "plain.db"))
		plain.SetMaxOpenConns(1)
		mustExec(t, plain, "ATTACH DATABASE ? AS e", dsn(path, v.Name()))
		for i := range 5 {
			mustExec(t, plain, "INSERT INTO e.t VALUES (?)", i)
		}
		published(t, plain, "e")
	})
}

// A read-only process reports what the store holds (the catalog's tip),
// not a lag growing from zero published transactions.
func TestReadOnlyStatusPublished(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ro.db")
	v := newVFS(t, Config{})
	db := openDB(t, v, path)
	mustExec(t, db, "CREATE TABLE t(v)")
	mustExec(t, db, "INSERT INTO t VALUES (1)")
	db.Close()
	v2 := newVFS(t, Config{})
	ro, err := openDBURI(t, "file:"+path+"?mode=ro&vfs="+v2.Name())
	if err != nil {
		t.Fatal(err)
	}
	s := statusOf(t, ro)
	if s.Txid == 0 || s.PublishedTxid != s.Txid || s.LagTxns != 0 || s.LagSeconds != 0 {
		t.Fatalf("read-only status of a fully published database: txid %d, published %d, lag %d txns %.3f s",
			s.Txid, s.PublishedTxid, s.LagTxns, s.LagSeconds)
	}
}
