package vfs

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/bopstore/bop/checkpoint"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fsstore"
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

	store, err := fsstore.New(filepath.Join(path+"-bop", "store"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	restored := filepath.Join(t.TempDir(), "r.db")
	if _, err := checkpoint.Restore(context.Background(), checkpoint.RestoreOptions{Store: store,
		Layout: remote.Layout{Tenant: DefaultTenant, DB: "join.db"}, Path: restored}); err != nil {
		t.Fatal(err)
	}
	if n := queryInt(t, openDB(t, nil, restored), "SELECT count(*) FROM t WHERE v = 'joined'"); n != 1 {
		t.Fatalf("the joined connection's row is not in the store (%d)", n)
	}
}
