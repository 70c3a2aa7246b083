package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/bopstore/bop/internal/crashfs"
	"github.com/bopstore/bop/internal/testutil"
	"github.com/bopstore/bop/internal/vfstest"
	"github.com/bopstore/bop/remote/fsstore"
	"github.com/bopstore/bop/wal"
)

// crashFS adapts crashfs.FS to wal.FS.
type crashFS struct{ crashfs.FS }

func (c crashFS) OpenFile(name string, flag int, perm fs.FileMode) (wal.File, error) {
	f, err := c.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return f, nil
}

var powerVFSSeq atomic.Int64

// Power loss: SQLite's files and the spool go through a file layer that
// drops unsynced writes (all, none, or a random subset of 4 KiB pieces) at
// a simulated power loss, which strikes between transactions or inside a
// publish at a random job phase. The catalog goes through the same file
// layer: its durable commits (synchronous=FULL) survive, its lazy ones
// (job progress, a job's end, the creation; manifest's txLazy) may be
// lost, and the jobs they describe must still be resumed or finished
// correctly. After each
// power loss: reopen (reconciliation), publish, and check that the
// restore equals the live database, every job finished, no referenced
// object is missing, and every row of a transaction that was published
// before the power loss is still in the live database (the WAL and spool
// were made durable before the record was created).
func TestPowerLoss(t *testing.T) {
	for _, mode := range []crashfs.Mode{crashfs.LoseUnsynced, crashfs.KeepUnsynced, crashfs.RandomSubset} {
		for _, sync := range []string{"normal", "full"} {
			t.Run(fmt.Sprintf("%s,sync=%s", mode, sync), func(t *testing.T) {
				powerLoss(t, mode, sync, 1, 3)
			})
		}
	}
}

func TestHeavyPowerLoss(t *testing.T) {
	testutil.Heavy(t)
	for _, mode := range []crashfs.Mode{crashfs.LoseUnsynced, crashfs.KeepUnsynced, crashfs.RandomSubset} {
		for _, sync := range []string{"normal", "full"} {
			for seed := uint64(2); seed <= 5; seed++ {
				t.Run(fmt.Sprintf("%s,sync=%s,seed=%d", mode, sync, seed), func(t *testing.T) {
					powerLoss(t, mode, sync, seed, 8)
				})
			}
		}
	}
}

func powerLoss(t *testing.T, mode crashfs.Mode, syncMode string, seed uint64, rounds int) {
	rng := rand.New(rand.NewPCG(seed, uint64(mode)+uint64(len(syncMode))*3))
	tr := crashfs.New()
	v := vfstest.New(nil)
	v.Crash = tr
	name := fmt.Sprintf("bopckptpower%d", powerVFSSeq.Add(1))
	v.Register(name)
	root := t.TempDir()
	store, err := fsstore.New(filepath.Join(root, "store"))
	must(t, err)
	dir := filepath.Join(root, "db")
	must(t, os.MkdirAll(dir, 0o755))

	var crashPoint Point
	crashNth := 0
	hook := func(ev Event) error {
		if ev.Point == crashPoint {
			crashNth--
			if crashNth == 0 {
				tr.Crash() // the power goes out right here
				return ErrCrash
			}
		}
		return nil
	}
	open := func() *sqlNode {
		return newSQLNodeWith(t, store, dir, 8, false, func(c *Config) {
			c.Hook = hook
			c.Policy.MaxObjectPages = 8
		}, func(n *sqlNode) {
			n.vfs, n.vfsName, n.sync, n.catVFS = v, name, syncMode, name
			n.spoolFS = crashFS{crashfs.FS{T: tr}}
		})
	}
	n := open()
	n.exec("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
	published := map[int]bool{} // rows in a published transaction
	committed := map[int]bool{}
	next := 1
	for round := 0; round < rounds; round++ {
		crashPoint, crashNth = "", 0
		crashed := false
		for i := 0; i < 5+rng.IntN(30) && !crashed; i++ {
			id := next
			next++
			var err error
			if rng.IntN(6) == 0 {
				_, err = n.db.Exec("INSERT INTO t(id, v) SELECT ?, randomblob(1500) UNION ALL SELECT -?*1000-value, randomblob(1200) FROM generate_series(1, 30)", id, id)
			} else {
				_, err = n.db.Exec("INSERT INTO t(id, v) VALUES (?, randomblob(?))", id, 100+rng.IntN(2500))
			}
			must(t, err)
			committed[id] = true
			if rng.IntN(5) == 0 {
				if rng.IntN(3) == 0 {
					// This publish is struck by the power loss.
					crashPoint, crashNth = Points[rng.IntN(len(Points))], 1
				}
				_, err := n.pub.PublishNow(context.Background())
				switch {
				case err == nil:
					for id := range committed {
						published[id] = true
					}
				case errors.Is(err, ErrCrash):
					crashed = true
				default:
					t.Fatalf("round %d: publish: %v", round, err)
				}
			}
		}
		tr.Crash()
		n.db.Close()
		n.db = nil
		n.close()
		os.Remove(n.path + "-shm")
		rep, err := tr.Restore(mode, rng)
		must(t, err)
		t.Logf("round %d: power loss (%s, at %q): %s", round, mode, crashPoint, rep)
		crashPoint, crashNth = "", 0

		n = open()
		n.exec("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)") // lost if never synced
		var busy, logf, ckpt int
		if err := n.db.QueryRow("PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logf, &ckpt); err != nil || busy != 0 {
			t.Fatalf("round %d: checkpoint: %v %d", round, err, busy)
		}
		txid := publishNow(t, n.pub)
		if last := n.spool.Status().LastTxid; last != txid {
			t.Fatalf("round %d: published %d, spool at %d", round, txid, last)
		}
		checkJobsFinished(t, n.cat, n.pub, filepath.Join(dir, "staging"))
		checkReferencedObjects(t, store, n.cat)
		live, err := os.ReadFile(n.path)
		must(t, err)
		got, _ := restoreBytes(t, store, n.cat, 0)
		sameBytes(t, fmt.Sprintf("round %d", round), got, live, 4096)
		rows := map[int]bool{}
		r, err := n.db.Query("SELECT id FROM t WHERE id > 0")
		must(t, err)
		for r.Next() {
			var id int
			must(t, r.Scan(&id))
			rows[id] = true
		}
		r.Close()
		for id := range published {
			if !rows[id] {
				t.Fatalf("round %d: row %d was published before the power loss but the database lost it", round, id)
			}
		}
		for id := range committed {
			if !rows[id] {
				delete(committed, id) // SQLite lost it (not synced): no longer committed
			}
		}
		for id := range committed {
			published[id] = true
		}
	}
}
