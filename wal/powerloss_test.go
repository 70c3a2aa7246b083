package wal_test

import (
	"database/sql"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/bopstore/bop/internal/crashfs"
	"github.com/bopstore/bop/internal/testutil"
	"github.com/bopstore/bop/wal"
)

// Power loss: a file layer follows every file (the database, its WAL and
// journal, and the spool's segments and state) and, at a random moment,
// drops writes not yet fsynced: all of them, none, or a random subset of
// 4 KiB pieces. After it, opening again (reconciliation) must leave spool
// and WAL agreeing on every transaction SQLite still has: the replay of the
// spool equals the database, no transaction is spooled twice, and every
// transaction confirmed for publishing before the crash survives in both.
//
// With buffering (SpoolOptions.BufferBytes, what the VFS runs with)
// records also sit in process memory until the spool syncs, and with
// coalescing (CaptureOptions.Coalesce) final transactions wait in memory
// to share a record: the crash loses both.
func TestPowerLoss(t *testing.T) {
	for _, mode := range []crashfs.Mode{crashfs.LoseUnsynced, crashfs.KeepUnsynced, crashfs.RandomSubset} {
		for _, syncMode := range []string{"normal", "full"} {
			for _, o := range []lossOpts{{}, {buffer: 3000}, {buffer: 3000, coalesce: 1 << 20}} {
				t.Run(fmt.Sprintf("%s,sync=%s,%s", mode, syncMode, o), func(t *testing.T) {
					powerLoss(t, mode, syncMode, o, 1, 2, 12)
				})
			}
		}
	}
}

// lossOpts are the buffering options a crash test runs with.
type lossOpts struct{ buffer, coalesce int }

func (o lossOpts) String() string { return fmt.Sprintf("buffer=%d,coalesce=%d", o.buffer, o.coalesce) }

func TestHeavyPowerLoss(t *testing.T) {
	testutil.Heavy(t)
	for _, mode := range []crashfs.Mode{crashfs.LoseUnsynced, crashfs.KeepUnsynced, crashfs.RandomSubset} {
		for _, syncMode := range []string{"normal", "full"} {
			for seed := uint64(1); seed <= 6; seed++ {
				o := []lossOpts{{}, {buffer: 3000}, {buffer: 256 << 10, coalesce: 4 << 20}, {coalesce: 64 << 10}}[seed%4]
				t.Run(fmt.Sprintf("%s,sync=%s,%s,seed=%d", mode, syncMode, o, seed), func(t *testing.T) {
					powerLoss(t, mode, syncMode, o, seed, 4, 40)
				})
			}
		}
	}
}

func powerLoss(t *testing.T, mode crashfs.Mode, syncMode string, o lossOpts, seed uint64, rounds, maxTxns int) {
	rng := rand.New(rand.NewPCG(seed, uint64(mode)*7+uint64(len(syncMode))))
	tr := crashfs.New()
	v, name := newVFS(t, tr, nil)
	e := newEnv(t, t.TempDir(), v, name, crashFS{crashfs.FS{T: tr}})
	e.sopts.BufferBytes = o.buffer
	e.copts.Coalesce = o.coalesce
	pragmas := []string{"journal_mode(wal)", "synchronous(" + syncMode + ")", "cache_size(20)", "wal_autocheckpoint(200)"}

	published := map[int]bool{} // rows committed before a SyncForPublish that succeeded
	committed := map[int]bool{} // rows whose COMMIT returned
	next := 1
	var db *sql.DB
	open := func() {
		t.Helper()
		e.mustOpenCapture()
		db = e.openDB(rng.IntN(2) == 0, pragmas...)
		db.SetMaxOpenConns(1)
		mustExec(t, db, "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
	}
	open()
	for round := 0; round < rounds; round++ {
		n := 1 + rng.IntN(maxTxns)
		for i := 0; i < n; i++ {
			id := next
			next++
			var err error
			switch r := rng.IntN(10); {
			case r < 6:
				_, err = db.Exec("INSERT INTO t(id, v) VALUES (?, randomblob(?))", id, 100+rng.IntN(3000))
			case r < 8: // spills
				_, err = db.Exec("INSERT INTO t(id, v) SELECT ?, randomblob(?) UNION ALL SELECT -?-value, randomblob(1500) FROM generate_series(1,40)", id, 1000, id*1000)
			case r < 9:
				_, err = db.Exec("UPDATE t SET v = randomblob(200) WHERE id % 5 = ? AND id > 0", id%5)
				if err == nil {
					_, err = db.Exec("INSERT INTO t(id, v) VALUES (?, x'00')", id)
				}
			default:
				if _, err = e.cap.SyncForPublish(); err == nil {
					for k := range committed {
						published[k] = true
					}
				}
				_, err = db.Exec("INSERT INTO t(id, v) VALUES (?, x'01')", id)
			}
			if err != nil {
				t.Fatalf("round %d txn %d: %v", round, i, err)
			}
			committed[id] = true
		}
		// The power goes out.
		tr.Crash()
		rep := e.restoreAfterCrash(db, tr, mode, rng)
		t.Logf("round %d: %d transactions, crash: %s", round, n, rep)

		open()
		rows := map[int]bool{}
		r, err := db.Query("SELECT id FROM t WHERE id > 0")
		if err != nil {
			t.Fatal(err)
		}
		for r.Next() {
			var id int
			r.Scan(&id)
			rows[id] = true
		}
		r.Close()
		for id := range published {
			if !rows[id] {
				t.Fatalf("round %d: row %d was confirmed for publishing before the crash but SQLite lost it", round, id)
			}
		}
		for id := range rows {
			if !committed[id] {
				t.Fatalf("row %d in SQLite was never committed", id)
			}
		}
		if mode == crashfs.KeepUnsynced || syncMode == "full" {
			for id := range committed {
				if !rows[id] {
					t.Fatalf("round %d: committed row %d lost (%s, synchronous=%s)", round, id, mode, syncMode)
				}
			}
		}
		// What SQLite lost is no longer committed.
		for id := range committed {
			if !rows[id] {
				delete(committed, id)
				delete(published, id)
			}
		}
		checkUniqueIdentities(t, e.spool)
		e.checkReplay(db, fmt.Sprintf("round %d after %s", round, mode))
		if ic := queryString(t, db, "PRAGMA integrity_check"); ic != "ok" {
			t.Fatal(ic)
		}
		st := e.cap.Stats()
		t.Logf("round %d: reconcile captured %d, dropped %d; spool %d..%d", round, st.Reconciled, st.ReconDropped,
			e.spool.Status().FirstTxid, e.spool.Status().LastTxid)
	}
	db.Close()
	e.closeCapture()
}

// checkUniqueIdentities: no WAL frame is spooled as two transactions.
func checkUniqueIdentities(t testing.TB, sp *wal.Spool) {
	t.Helper()
	st := sp.Status()
	if st.LastTxid < st.FirstTxid {
		return
	}
	seen := map[wal.WALIdentity]uint64{}
	for rec, err := range sp.Records(st.FirstTxid, st.LastTxid) {
		if err != nil {
			t.Fatal(err)
		}
		if rec.Kind != wal.KindWAL {
			continue
		}
		if prev, ok := seen[rec.WAL]; ok {
			t.Fatalf("txids %d and %d are the same WAL commit frame %+v", prev, rec.Txid, rec.WAL)
		}
		seen[rec.WAL] = rec.Txid
	}
}
