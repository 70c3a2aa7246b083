package wal_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bopstore/bop/internal/crashfs"
	"github.com/bopstore/bop/internal/walgen"
	"github.com/bopstore/bop/wal"
)

// The spool's fsync (beside the WAL's) completes, then the WAL's fsync is
// cut by a power loss (the machine goes down inside it).
// The group appended before the sync is durable in the spool ahead of the
// WAL; reconciliation must drop it (it is above C) and spool and database
// must agree.
func TestPowerLossInsideWALSyncAfterSpoolSync(t *testing.T) {
	for _, mode := range []crashfs.Mode{crashfs.LoseUnsynced, crashfs.KeepUnsynced, crashfs.RandomSubset} {
		for _, seed := range []uint64{1, 2, 3} {
			t.Run(fmt.Sprintf("%s,seed=%d", mode, seed), func(t *testing.T) { powerLossInsideWALSync(t, mode, seed) })
		}
	}
}

func powerLossInsideWALSync(t *testing.T, mode crashfs.Mode, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	tr := crashfs.New()
	v, name := newVFS(t, tr, nil)
	e := newEnv(t, t.TempDir(), v, name, crashFS{crashfs.FS{T: tr}})
	e.sopts.BufferBytes = 3000
	e.copts.Coalesce = 1 << 20
	var armed atomic.Bool
	var spoolAhead atomic.Bool
	v.BeforeWALSync = func() {
		if !armed.Load() {
			return
		}
		// Wait for the spool fsync that runs beside this WAL sync.
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			st := e.spool.Status()
			if st.SyncedTxid == st.LastTxid && st.LastTxid > st.ConfirmedTxid {
				spoolAhead.Store(true)
				break
			}
			time.Sleep(time.Millisecond)
		}
		tr.Crash() // the power goes out inside the WAL's fsync
	}
	pragmas := []string{"journal_mode(wal)", "synchronous(normal)", "wal_autocheckpoint(0)"}
	e.mustOpenCapture()
	db := e.openDB(true, pragmas...)
	db.SetMaxOpenConns(1)
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
	checkpointTruncate(t, db) // everything so far durable and confirmed
	if _, err := e.cap.SyncForPublish(); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 20; i++ {
		mustExec(t, db, "INSERT INTO t VALUES (?, randomblob(?))", i, 100+rng.IntN(2000))
	}
	before := e.spool.Status()
	armed.Store(true)
	_, ckErr := db.Exec("PRAGMA wal_checkpoint(PASSIVE)")
	armed.Store(false)
	mid := e.spool.Status()
	t.Logf("before checkpoint: %+v; after the cut sync: %+v; checkpoint err %v; spool synced ahead of WAL: %v",
		before, mid, ckErr, spoolAhead.Load())
	if !spoolAhead.Load() {
		t.Fatal("the spool was not fsynced beside the WAL sync: scenario not reached")
	}
	t.Logf("crash: %s", e.restoreAfterCrash(db, tr, mode, rng))

	e.mustOpenCapture()
	defer e.closeCapture()
	db = e.openDB(true, pragmas...)
	defer db.Close()
	rows := queryString(t, db, "SELECT count(*) FROM t") // opens: reconciles
	st := e.cap.Stats()
	t.Logf("after reopen: spool %+v", e.spool.Status())
	t.Logf("reconcile: captured %d, dropped %d; rows %s", st.Reconciled, st.ReconDropped, rows)
	if e.spool.Status().ConfirmedTxid < mid.ConfirmedTxid {
		t.Fatalf("C went back: %d < %d", e.spool.Status().ConfirmedTxid, mid.ConfirmedTxid)
	}
	checkUniqueIdentities(t, e.spool)
	e.checkReplay(db, "after power loss inside the WAL sync")
	if ic := queryString(t, db, "PRAGMA integrity_check"); ic != "ok" {
		t.Fatal(ic)
	}
}

// The group's append or the spool fsync, both of which run beside the
// WAL's fsync, fails while the WAL's succeeds (synchronous=NORMAL,
// coalescing: the checkpoint's WAL sync is the one that has a held group
// to append and unsynced records to fsync): the checkpoint must fail and
// capture must stop (sticky), as with the fsync after it; nothing is
// confirmed, and reopening reconciles spool and database.
func TestSpoolFsyncBesideWALSyncFails(t *testing.T) { spoolFaultBesideWALSync(t, "sync") }

func TestGroupAppendBesideWALSyncFails(t *testing.T) { spoolFaultBesideWALSync(t, "write") }

func spoolFaultBesideWALSync(t *testing.T, op string) {
	var fail atomic.Bool
	dir := t.TempDir()
	e := newEnv(t, dir, nil, "", faultFS{suffix: ".seg", op: op, fail: &fail})
	e.sopts.BufferBytes = 3000
	e.copts.Coalesce = 1 << 20
	e.mustOpenCapture()
	db := e.openDB(true, "journal_mode(wal)", "synchronous(normal)", "wal_autocheckpoint(0)")
	db.SetMaxOpenConns(1)
	mustExec(t, db, "CREATE TABLE t(v)")
	checkpointTruncate(t, db)
	confirmed := e.spool.Status().ConfirmedTxid
	mustExec(t, db, "INSERT INTO t VALUES (1)")
	mustExec(t, db, "INSERT INTO t VALUES (2)")
	fail.Store(true)
	var busy, logf, ckpt int
	err := db.QueryRow("PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logf, &ckpt)
	t.Logf("checkpoint: err %v busy %d log %d ckpt %d", err, busy, logf, ckpt)
	if err == nil && ckpt > 0 {
		t.Fatalf("a checkpoint copied frames although the spool could not %s", op)
	}
	if e.cap.Err() == nil {
		t.Fatalf("capture did not stop after a failed spool %s", op)
	}
	if e.spool.Status().Err == nil {
		t.Fatalf("the spool did not stop after a failed %s", op)
	}
	if c := e.spool.Status().ConfirmedTxid; c != confirmed {
		t.Fatalf("C moved from %d to %d although the spool failed", confirmed, c)
	}
	db = e.reopenAfterStop(db, &fail, "journal_mode(wal)", "synchronous(normal)")
	if got := queryString(t, db, "SELECT group_concat(v) FROM t"); got != "1,2" {
		t.Fatalf("rows after reopening: %q, want 1,2", got)
	}
	e.checkReplay(db, "after the failed "+op+" beside the WAL sync")
}

// A WAL sync that failed makes nothing durable. After it, the
// group appended (and fsynced) beside it is ahead of the WAL; the next
// persist may confirm it only after a WAL fsync that succeeded. This is the
// guarantee the spool's fsync beside the WAL's rests on ("C rises only at
// a persist after a WAL sync that succeeded").
func TestFailedWALSyncConfirmsNothing(t *testing.T) {
	s := newHeldGroup(t)
	if err := s.conn.Sync(func() error { return errors.New("EIO") }); err == nil {
		t.Fatal("sync error not returned")
	}
	syncs := s.file.Syncs
	c, err := s.c.SyncForPublish()
	if err != nil {
		t.Fatal(err)
	}
	if c >= 1 && s.file.Syncs == syncs {
		t.Fatalf("txid 1 confirmed (C=%d) although the only WAL sync since its frames were written failed and SyncForPublish did not fsync the WAL", c)
	}
	if c != 1 {
		t.Fatalf("C=%d after SyncForPublish, want 1", c)
	}
}

// coalesceLocked fails half-way through merging a transaction (a
// spill-file read error) after it has already overwritten some of the
// group's pages. Capture stops, and the torn group must stay out of the
// spool: appended under the identity of the group's last complete commit,
// reconciliation would find that frame in the WAL, keep the record and
// confirm it, naming at or below C a state that never existed (page 1
// from T2, page 2 from T1). A session-4 review found Conn.Sync's flush
// before the WAL sync doing exactly that.
func TestCaptureTornGroupNeverAppended(t *testing.T) {
	if wal.ReadBackForced() {
		t.Skip("tests the in-memory frame store (its spill file)")
	}
	const ps = 512
	dir := t.TempDir()
	var fail atomic.Bool
	sopts := wal.SpoolOptions{FS: faultFS{suffix: "capture.spill", op: "read", fail: &fail}}
	copts := wal.CaptureOptions{Coalesce: 64 << 10, MemoryBytes: ps}
	file := &walgen.File{Path: filepath.Join(dir, "db-wal")}
	var sp *wal.Spool
	var c *wal.Capture
	var conn *wal.Conn
	open := func() {
		var err error
		if sp, err = wal.OpenSpool(filepath.Join(dir, "spool"), sopts); err != nil {
			t.Fatal(err)
		}
		if c, err = wal.NewCapture(sp, copts); err != nil {
			t.Fatal(err)
		}
		conn = c.NewConn(nopMain{})
		if err := conn.AttachWAL(file); err != nil {
			t.Fatal(err)
		}
	}
	open()
	var werr error
	w := walgen.New(ps, 0x1234, 0xabcd, func(p []byte, off int64) error {
		file.Write(p, off)
		if err := conn.Write(p, off); err != nil && werr == nil {
			werr = err
		}
		return nil
	})
	w.Header()
	w.Commit(2, []uint32{1, 2}, [][]byte{pg(ps, 1, 1), pg(ps, 2, 1)})                  // T1
	conn.CommitPhaseTwo()                                                              // final, held in the group
	w.Commit(3, []uint32{1, 2, 3}, [][]byte{pg(ps, 1, 2), pg(ps, 2, 2), pg(ps, 3, 2)}) // T2
	if werr != nil {
		t.Fatal(werr)
	}
	fail.Store(true)
	if err := conn.CommitPhaseTwo(); err == nil {
		t.Fatal("merging T2 did not fail")
	}
	fail.Store(false)
	if c.Err() == nil {
		t.Fatal("capture did not stop")
	}
	conn.Sync(func() error { return nil }) // a checkpoint's WAL sync, say
	st := sp.Status()
	t.Logf("after the sync on the stopped capture: %+v", st)
	// The process goes down; reopening reconciles with the (intact) WAL.
	c.Close()
	sp.Close()
	open()
	defer func() { c.Close(); sp.Close() }()
	st = sp.Status()
	t.Logf("after reopen: %+v", st)
	if st.ConfirmedTxid < 1 {
		t.Fatalf("nothing confirmed after reopening: %+v (the check below would check nothing)", st)
	}
	for rec, err := range sp.Records(st.FirstTxid, st.LastTxid) {
		if err != nil {
			t.Fatal(err)
		}
		var pages []string
		for p, err := range rec.Pages() {
			if err != nil {
				t.Fatal(err)
			}
			pages = append(pages, fmt.Sprintf("%d=v%d", p.Pgno, p.Data[2]))
		}
		t.Logf("txid %d (confirmed: %v, WAL frame %d): %s / %d pages", rec.Txid, rec.Txid <= st.ConfirmedTxid, rec.WAL.Frame, strings.Join(pages, ","), rec.DBPages)
		if rec.Txid == 1 && rec.Txid <= st.ConfirmedTxid {
			var v1, v2 byte
			for p, _ := range rec.Pages() {
				if p.Pgno == 1 {
					v1 = p.Data[2]
				}
				if p.Pgno == 2 {
					v2 = p.Data[2]
				}
			}
			if v1 != v2 {
				t.Fatalf("confirmed txid 1 holds page 1 at v%d and page 2 at v%d: a state SQLite never had", v1, v2)
			}
		}
	}
}

// TestCoalesceLargeAndSmallTransactions: groups of large transactions
// (tens to hundreds of pages, up to half the bound), small ones that rewrite
// their pages, large ones that rewrite earlier ones' pages, and deletes
// that shrink the database (auto_vacuum=full: versions past the new end
// are dropped from the group). After every round the spool, replayed, is
// the live database byte for byte: every group's record held the newest
// version of each of its pages.
func TestCoalesceLargeAndSmallTransactions(t *testing.T) {
	e := newEnv(t, t.TempDir(), nil, "", nil)
	e.copts.Coalesce = 2 << 20 // transactions up to 1 MiB (256 pages) join groups
	e.mustOpenCapture()
	defer e.closeCapture()
	db := e.openDB(true, "auto_vacuum(full)", "journal_mode(wal)", "synchronous(normal)", "wal_autocheckpoint(0)")
	defer db.Close()
	db.SetMaxOpenConns(1)
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
	rng := rand.New(rand.NewPCG(7, 11))
	bulk := func(stmt string, n int, arg func() any) {
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			if _, err := tx.Exec(stmt, arg()); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	for round := 0; round < 10; round++ {
		for k := 0; k < 5; k++ {
			switch rng.IntN(4) {
			case 0: // large: ~70-150 new pages
				bulk("INSERT INTO t(v) VALUES (randomblob(?))", 70+rng.IntN(80), func() any { return 2500 + rng.IntN(1000) })
			case 1: // large: rewrites pages of earlier transactions
				mustExec(t, db, "UPDATE t SET v = randomblob(length(v)) WHERE id % 3 = ?", rng.IntN(3))
			case 2: // small: single pages, autocommit
				for i := 0; i < 5; i++ {
					mustExec(t, db, "UPDATE t SET v = randomblob(length(v)) WHERE id = (SELECT id FROM t ORDER BY random() LIMIT 1)")
				}
			case 3: // shrinks the database
				mustExec(t, db, "DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY random() LIMIT ?)", 10+rng.IntN(40))
			}
		}
		e.checkReplay(db, fmt.Sprintf("round %d", round))
	}
	st := e.cap.Stats()
	t.Logf("capture stats: %+v", st)
	if st.Coalesced == 0 {
		t.Fatal("no transaction joined a group")
	}
}
