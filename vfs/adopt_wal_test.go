package vfs

import (
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/bopstore/bop/wal"
)

// Adoption of a database whose WAL holds committed frames (as a crash of
// a stock SQLite process leaves it). A checkpoint may have copied some or
// all of those frames into the main file already (and the WAL is only
// restarted by the next write), so the adopted state must be the one
// SQLite reads from both files, recorded as one image, and capture must go
// on after the WAL's last commit frame.

// crashImage is a database copied, main file and WAL, while stock SQLite
// had it open, and the state stock SQLite reads from that pair.
type crashImage struct {
	path string // the copy to adopt
	// ref: a second copy checkpointed by stock SQLite (the default VFS):
	// the bytes of the state main+WAL hold.
	ref     string
	mxFrame int64 // the WAL's frames up to its last commit frame, as SQLite's recovery finds them
	walSize int64
}

// makeCrashImage builds a database in WAL mode with stock SQLite, lets
// build run transactions and checkpoints on it (build returns a function
// run after the copy, or nil), and copies the files.
func makeCrashImage(t *testing.T, build func(db *sql.DB, live string) (after func())) crashImage {
	t.Helper()
	dir := t.TempDir()
	live := filepath.Join(dir, "live.db")
	db := openDB(t, nil, live, "journal_mode(wal)", "wal_autocheckpoint(0)")
	db.SetMaxOpenConns(1)
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
	checkpointTruncate(t, db)
	after := build(db, live)
	ci := crashImage{path: filepath.Join(dir, "adopt.db"), ref: filepath.Join(t.TempDir(), "ref.db")}
	for _, to := range []string{ci.path, ci.ref} {
		copyFile(t, live, to)
		copyFile(t, live+"-wal", to+"-wal")
	}
	if after != nil {
		after()
	}
	db.Close()
	fi, err := os.Stat(ci.path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	ci.walSize = fi.Size()

	ref := openDB(t, nil, ci.ref)
	ref.SetMaxOpenConns(1)
	var busy, ckpt int64
	if err := ref.QueryRow("PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &ci.mxFrame, &ckpt); err != nil || busy != 0 || ckpt != ci.mxFrame {
		t.Fatalf("checkpoint of the reference: busy %d, log %d, checkpointed %d: %v", busy, ci.mxFrame, ckpt, err)
	}
	checkpointTruncate(t, ref)
	integrityOK(t, ref)
	if err := ref.Close(); err != nil {
		t.Fatal(err)
	}
	return ci
}

// dumpState is the content of table t, for comparing states.
func dumpState(t testing.TB, db *sql.DB) string {
	t.Helper()
	return queryString(t, db, "SELECT count(*) || ':' || coalesce(group_concat(id || '=' || v, ','), '') FROM (SELECT id, v FROM t ORDER BY id)")
}

// replayedState replays the spool's records 1..txid into a new file, and
// returns its content after sqlite3's integrity_check passed.
func replayedState(t *testing.T, sp *wal.Spool, txid uint64) (path, state string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), fmt.Sprintf("at%d.db", txid))
	replaySpoolFrom(t, sp, 1, txid, out)
	db := openDB(t, nil, out)
	defer db.Close()
	if s := queryString(t, db, "PRAGMA integrity_check"); s != "ok" {
		t.Fatalf("boundary txid %d is not a sound database: %s", txid, s)
	}
	return out, dumpState(t, db)
}

// walFramesAt is the size of a WAL of n frames of 4 KiB pages.
func walFramesAt(n int64) int64 { return 32 + n*(24+4096) }

func TestAdoptWithWALFrames(t *testing.T) {
	rows := func(t *testing.T, db *sql.DB, tag string, n int) {
		t.Helper()
		mustExec(t, db, "INSERT INTO t(v) SELECT printf('%s-%0200d', ?, value) FROM generate_series(1, ?)", tag, n)
	}
	for _, tc := range []struct {
		name  string
		build func(t *testing.T, db *sql.DB, live string) func()
		// interrupt: a checkpoint copied the first half of the
		// state's pages into the main file before it was interrupted.
		interrupt bool
		check     func(t *testing.T, ci crashImage)
	}{
		{name: "committed frames", build: func(t *testing.T, db *sql.DB, live string) func() {
			mustExec(t, db, "INSERT INTO t(v) VALUES ('first')")
			rows(t, db, "a", 300)
			mustExec(t, db, "UPDATE t SET v = 'updated' WHERE id % 5 = 0")
			return nil
		}},
		{name: "backfilled, not restarted", build: func(t *testing.T, db *sql.DB, live string) func() {
			// The reviewer's case: the first transaction leaves the table
			// a single leaf, the second splits it; the checkpoint copies
			// both into the file, the WAL stays.
			mustExec(t, db, "INSERT INTO t(v) VALUES ('first')")
			rows(t, db, "a", 500)
			var busy, logf, ckpt int64
			if err := db.QueryRow("PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logf, &ckpt); err != nil || busy != 0 || logf != ckpt || logf == 0 {
				t.Fatalf("checkpoint: busy %d log %d ckpt %d: %v", busy, logf, ckpt, err)
			}
			return nil
		}},
		{name: "partial backfill", build: func(t *testing.T, db *sql.DB, live string) func() {
			mustExec(t, db, "INSERT INTO t(v) VALUES ('first')")
			rows(t, db, "a", 200)
			// A reader keeps the checkpoint from copying what follows.
			reader := openDB(t, nil, live)
			tx, err := reader.BeginTx(t.Context(), &sql.TxOptions{ReadOnly: true}) // deferred: a read lock only
			if err != nil {
				t.Fatal(err)
			}
			var n int
			if err := tx.QueryRow("SELECT count(*) FROM t").Scan(&n); err != nil {
				t.Fatal(err)
			}
			rows(t, db, "b", 300)
			mustExec(t, db, "DELETE FROM t WHERE id % 3 = 0")
			var busy, logf, ckpt int64
			if err := db.QueryRow("PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logf, &ckpt); err != nil || ckpt == 0 || ckpt >= logf {
				t.Fatalf("checkpoint: busy %d log %d ckpt %d (want a partial one): %v", busy, logf, ckpt, err)
			}
			return func() { tx.Rollback() }
		}},
		{name: "interrupted checkpoint", interrupt: true, build: func(t *testing.T, db *sql.DB, live string) func() {
			mustExec(t, db, "INSERT INTO t(v) VALUES ('first')")
			rows(t, db, "a", 300)
			mustExec(t, db, "UPDATE t SET v = 'updated' WHERE id % 4 = 0")
			return nil
		}},
		{name: "uncommitted trailing frames", build: func(t *testing.T, db *sql.DB, live string) func() {
			mustExec(t, db, "INSERT INTO t(v) VALUES ('first')")
			rows(t, db, "a", 100)
			// A transaction too big for a tiny cache spills pages into
			// the WAL before it commits; the copy is taken meanwhile.
			conn, err := db.Conn(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			mustExec(t, conn, "PRAGMA cache_size = 5")
			mustExec(t, conn, "BEGIN")
			mustExec(t, conn, "INSERT INTO t(v) SELECT printf('never-%0200d', value) FROM generate_series(1, 2000)")
			return func() {
				mustExec(t, conn, "ROLLBACK")
				conn.Close()
			}
		}, check: func(t *testing.T, ci crashImage) {
			if ci.walSize <= walFramesAt(ci.mxFrame) {
				t.Fatalf("the WAL (%d bytes) has no frames past its last commit frame %d", ci.walSize, ci.mxFrame)
			}
		}},
		{name: "stale frames of an older generation", build: func(t *testing.T, db *sql.DB, live string) func() {
			rows(t, db, "old", 600)
			var busy, logf, ckpt int64
			if err := db.QueryRow("PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logf, &ckpt); err != nil || logf != ckpt {
				t.Fatalf("checkpoint: busy %d log %d ckpt %d: %v", busy, logf, ckpt, err)
			}
			// The next write restarts the WAL over the old frames.
			mustExec(t, db, "UPDATE t SET v = 'new' WHERE id = 7")
			return nil
		}, check: func(t *testing.T, ci crashImage) {
			if ci.mxFrame == 0 || ci.walSize <= walFramesAt(ci.mxFrame) {
				t.Fatalf("the WAL (%d bytes, last commit frame %d) holds no old frames", ci.walSize, ci.mxFrame)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ci := makeCrashImage(t, func(db *sql.DB, live string) func() { return tc.build(t, db, live) })
			if tc.check != nil {
				tc.check(t, ci)
			}
			if ci.mxFrame == 0 {
				t.Fatal("the WAL holds no committed frame")
			}
			if tc.interrupt {
				interruptedCheckpoint(t, ci)
			}
			adoptAndCheck(t, ci)
		})
	}
}

// interruptedCheckpoint copies the first half of the state's pages into
// the main file (a checkpoint copies in page order).
func interruptedCheckpoint(t *testing.T, ci crashImage) {
	t.Helper()
	ref, err := os.ReadFile(ci.ref)
	if err != nil {
		t.Fatal(err)
	}
	main, err := os.ReadFile(ci.path)
	if err != nil {
		t.Fatal(err)
	}
	k := len(ref) / 4096 / 2 * 4096
	if k == 0 || string(main[:min(k, len(main))]) == string(ref[:min(k, len(main))]) {
		t.Fatal("nothing to copy: the WAL changes no page of the first half")
	}
	if k > len(main) {
		main = append(main, make([]byte, k-len(main))...)
	}
	copy(main, ref[:k])
	if err := os.WriteFile(ci.path, main, 0o644); err != nil {
		t.Fatal(err)
	}
}

// adoptAndCheck adopts ci with bop and checks: the spool holds one image
// record, byte-identical to the state stock SQLite reads, naming the WAL's
// last commit frame; bop reads that state; every later boundary replays to
// a sound database equal to the state after that transaction; reopening
// captures nothing twice.
func adoptAndCheck(t *testing.T, ci crashImage) {
	t.Helper()
	mainBefore, walBefore := fileHash(t, ci.path), fileHash(t, ci.path+"-wal")
	v := newVFS(t, offline(Config{}))
	bop := openDB(t, v, ci.path)
	bop.SetMaxOpenConns(1)
	refDB := openDB(t, nil, ci.ref)
	states := []string{"", dumpState(t, refDB)} // states[txid]
	refDB.Close()
	if got := dumpState(t, bop); got != states[1] {
		t.Fatal("bop reads another state than stock SQLite from the same files")
	}
	d := stateOf(t, v, ci.path)
	st := d.spool.Status()
	if st.LastTxid != 1 || d.capture.Stats().Reconciled != 0 {
		t.Fatalf("spool holds txids up to %d, reconciliation captured %d: want the image alone", st.LastTxid, d.capture.Stats().Reconciled)
	}
	h, err := d.spool.Header(1)
	if err != nil {
		t.Fatal(err)
	}
	if h.Kind != wal.KindImage || h.WAL.Frame != uint32(ci.mxFrame) {
		t.Fatalf("record 1: %+v, want an image naming commit frame %d", h, ci.mxFrame)
	}
	img, _ := replayedState(t, d.spool, 1)
	if err := sameFiles(ci.ref, img); err != nil {
		t.Fatalf("the image is not what stock SQLite reads from the file and its WAL: %v", err)
	}
	if fileHash(t, ci.path) != mainBefore || fileHash(t, ci.path+"-wal") != walBefore {
		t.Fatal("adoption modified the database file or its WAL")
	}

	// Transactions after adoption: each a boundary. (With async durability
	// capture would hold them as one group until a checkpoint or publish;
	// Flush appends each as its own record.)
	for _, q := range []string{
		"INSERT INTO t(v) VALUES ('after adoption')",
		"UPDATE t SET v = 'again' WHERE id % 7 = 1",
		"DELETE FROM t WHERE id % 11 = 2",
	} {
		mustExec(t, bop, q)
		if err := d.capture.Flush(); err != nil {
			t.Fatal(err)
		}
		states = append(states, dumpState(t, bop))
	}
	last := d.spool.Status().LastTxid
	if last != uint64(len(states)-1) {
		t.Fatalf("spool holds %d records after %d transactions on the image", last, len(states)-2)
	}
	for txid := uint64(1); txid <= last; txid++ {
		if _, got := replayedState(t, d.spool, txid); got != states[txid] {
			t.Fatalf("boundary txid %d is not the state after that transaction", txid)
		}
	}
	checkReplay(t, v, ci.path, bop)
	bop.Close()

	// Reopen: the WAL (kept or restarted) yields nothing again.
	v2 := newVFS(t, offline(Config{}))
	bop2 := openDB(t, v2, ci.path)
	if got := dumpState(t, bop2); got != states[len(states)-1] {
		t.Fatal("reopened database lost transactions")
	}
	d2 := stateOf(t, v2, ci.path)
	if got := d2.spool.Status().LastTxid; got != last || d2.capture.Stats().Reconciled != 0 {
		t.Fatalf("reopen: spool holds %d records (had %d), reconciliation captured %d", got, last, d2.capture.Stats().Reconciled)
	}
	mustExec(t, bop2, "INSERT INTO t(v) VALUES ('after reopening')")
	checkReplay(t, v2, ci.path, bop2)
}

// An empty database file next to a WAL with committed frames: stock SQLite
// deletes such a WAL (a zero-page database has none), so its frames are
// no state of the database. bop refuses to open it rather than capture
// them or let them vanish.
func TestAdoptEmptyFileWithWAL(t *testing.T) {
	ci := makeCrashImage(t, func(db *sql.DB, live string) func() {
		mustExec(t, db, "INSERT INTO t(v) VALUES ('in the wal')")
		return nil
	})
	if err := os.Truncate(ci.path, 0); err != nil {
		t.Fatal(err)
	}
	err := openErr(t, ci.path)
	if !errors.Is(err, ErrChangedOutside) || !errors.Is(err, wal.ErrUnknownWAL) {
		t.Fatalf("open: %v, want ErrChangedOutside (an unknown WAL generation)", err)
	}
	if fi, err := os.Stat(ci.path + "-wal"); err != nil || fi.Size() != ci.walSize {
		t.Fatalf("the WAL was changed: %v", err)
	}
}
