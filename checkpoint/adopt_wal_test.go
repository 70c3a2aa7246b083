package checkpoint

import (
	"database/sql"
	"path/filepath"
	"testing"
)

// An adopted database whose WAL was checkpointed into the main file but
// not restarted (a crash image of a stock SQLite process). The adopted
// image is the state main+WAL hold, so every published boundary restores
// to a state that existed: the image (byte-identical to the files
// checkpointed by stock SQLite) and each transaction after it. One record
// per job (MaxJobPages 1) publishes every boundary separately.
func TestAdoptBackfilledWALPublishesExistingStates(t *testing.T) {
	store := fsStore(t)
	dir := t.TempDir()
	live := filepath.Join(t.TempDir(), "live.db")
	plain, err := sql.Open("sqlite3", "file:"+live+"?_pragma=journal_mode(wal)&_pragma=wal_autocheckpoint(0)")
	must(t, err)
	plain.SetMaxOpenConns(1)
	for _, q := range []string{
		"CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
		"PRAGMA wal_checkpoint(TRUNCATE)",
		"INSERT INTO t(v) VALUES ('first')",
		"INSERT INTO t(v) SELECT printf('%0200d', value) FROM generate_series(1, 500)",
		"PRAGMA wal_checkpoint(PASSIVE)", // backfills both; the WAL stays
	} {
		if _, err := plain.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	// A crash image: main file and WAL copied while the writer has them.
	ref := filepath.Join(t.TempDir(), "ref.db")
	for _, to := range []string{filepath.Join(dir, "app.db"), ref} {
		copyFile(t, live, to)
		copyFile(t, live+"-wal", to+"-wal")
	}
	must(t, plain.Close())
	// The state the pair holds, as stock SQLite reads it.
	refDB, err := sql.Open("sqlite3", "file:"+ref)
	must(t, err)
	if _, err := refDB.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		t.Fatal(err)
	}
	must(t, refDB.Close())

	n := newSQLNode(t, store, dir, 16, true, func(c *Config) { c.Policy.MaxJobPages = 1 })
	var cnt int
	must(t, n.db.QueryRow("SELECT count(*) FROM t").Scan(&cnt)) // SQLite opens the WAL: reconciliation
	if cnt != 501 {
		t.Fatalf("%d rows", cnt)
	}
	if st := n.spool.Status(); st.LastTxid != 1 || n.capture.Stats().Reconciled != 0 {
		t.Fatalf("spool holds txids up to %d, reconciliation captured %d: the image holds the WAL", st.LastTxid, n.capture.Stats().Reconciled)
	}
	refs := map[uint64]string{1: ref}
	if got := publishNow(t, n.pub); got != 1 {
		t.Fatalf("adoption published up to txid %d", got)
	}
	n.exec("INSERT INTO t(v) VALUES ('after adoption')")
	n.boundary(refs)
	n.exec("DELETE FROM t WHERE id % 3 = 0")
	n.boundary(refs)
	if got := publishNow(t, n.pub); got != 3 {
		t.Fatalf("published up to txid %d, want 3", got)
	}
	checkBoundaries(t, store, n.cat, refs)
}
