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

// powerRig is one database whose files, spool and catalog go through
// the power-loss file layer, published to an fs store, with a crash
// point: the hook cuts the power at the crashNth time crashPoint is
// reached during a publish.
type powerRig struct {
	t          *testing.T
	tr         *crashfs.Tracker
	v          *vfstest.VFS
	name       string
	store      *fsstore.Store
	dir        string
	syncMode   string
	crashPoint Point
	crashNth   int
}

func newPowerRig(t *testing.T, syncMode string) *powerRig {
	r := &powerRig{t: t, tr: crashfs.New(), v: vfstest.New(nil), syncMode: syncMode}
	r.v.Crash = r.tr
	r.name = fmt.Sprintf("bopckptpower%d", powerVFSSeq.Add(1))
	r.v.Register(r.name)
	root := t.TempDir()
	var err error
	r.store, err = fsstore.New(filepath.Join(root, "store"))
	must(t, err)
	r.dir = filepath.Join(root, "db")
	must(t, os.MkdirAll(r.dir, 0o755))
	return r
}

func (r *powerRig) hook(ev Event) error {
	if ev.Point == r.crashPoint {
		r.crashNth--
		if r.crashNth == 0 {
			r.tr.Crash() // the power goes out right here
			return ErrCrash
		}
	}
	return nil
}

func (r *powerRig) open() *sqlNode {
	n := newSQLNodeWith(r.t, r.store, r.dir, 8, false, func(c *Config) {
		c.Hook = r.hook
		c.Policy.MaxObjectPages = 8
	}, func(n *sqlNode) {
		n.vfs, n.vfsName, n.sync, n.catVFS = r.v, r.name, r.syncMode, r.name
		n.spoolFS = crashFS{crashfs.FS{T: r.tr}}
	})
	n.exec("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)") // lost if never synced
	return n
}

// cut takes the power away (if the hook has not), drops n's files as mode
// says, and returns the report.
func (r *powerRig) cut(n *sqlNode, mode crashfs.Mode, rng *rand.Rand) string {
	r.tr.Crash()
	n.db.Close()
	n.db = nil
	n.close()
	os.Remove(n.path + "-shm")
	rep, err := r.tr.Restore(mode, rng)
	must(r.t, err)
	r.crashPoint, r.crashNth = "", 0
	return rep.String()
}

// check runs on a node reopened after a power loss: it checkpoints and
// publishes, then checks that every job finished (no lease, staging file
// or quota left), no referenced object is missing, the restore equals the
// live file, and every row published before the loss is still there. It
// returns the rows (ids > 0) the database holds.
func (r *powerRig) check(n *sqlNode, label string, published map[int]bool) map[int]bool {
	t := r.t
	var busy, logf, ckpt int
	if err := n.db.QueryRow("PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logf, &ckpt); err != nil || busy != 0 {
		t.Fatalf("%s: checkpoint: %v %d", label, err, busy)
	}
	txid := publishNow(t, n.pub)
	if last := n.spool.Status().LastTxid; last != txid {
		t.Fatalf("%s: published %d, spool at %d", label, txid, last)
	}
	checkJobsFinished(t, n.cat, n.pub, filepath.Join(r.dir, "staging"))
	checkReferencedObjects(t, r.store, n.cat)
	live, err := os.ReadFile(n.path)
	must(t, err)
	got, _ := restoreBytes(t, r.store, n.cat, 0)
	sameBytes(t, label, got, live, 4096)
	rows := map[int]bool{}
	q, err := n.db.Query("SELECT id FROM t WHERE id > 0")
	must(t, err)
	for q.Next() {
		var id int
		must(t, q.Scan(&id))
		rows[id] = true
	}
	q.Close()
	for id := range published {
		if !rows[id] {
			t.Fatalf("%s: row %d was published before the power loss but the database lost it", label, id)
		}
	}
	return rows
}

func powerLoss(t *testing.T, mode crashfs.Mode, syncMode string, seed uint64, rounds int) {
	rng := rand.New(rand.NewPCG(seed, uint64(mode)+uint64(len(syncMode))*3))
	r := newPowerRig(t, syncMode)
	n := r.open()
	published := map[int]bool{} // rows in a published transaction
	committed := map[int]bool{}
	next := 1
	for round := 0; round < rounds; round++ {
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
					r.crashPoint, r.crashNth = Points[rng.IntN(len(Points))], 1
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
		at := r.crashPoint
		t.Logf("round %d: power loss (%s, at %q): %s", round, mode, at, r.cut(n, mode, rng))
		n = r.open()
		rows := r.check(n, fmt.Sprintf("round %d", round), published)
		for id := range committed {
			if !rows[id] {
				delete(committed, id) // SQLite lost it (not synced): no longer committed
			}
		}
		for id := range committed {
			published[id] = true
		}
	}
	n.close()
}

// A power loss at every hook point of a publish that follows a completed
// one (the first and the second time the point is reached), the catalog
// on the dropping layer: the lazy commits before the point are lost or
// kept, and the restart must finish or abandon the job either way (a
// session-4 review's test of the lazy catalog commits).
func TestPowerLossAtEveryPoint(t *testing.T) {
	for _, mode := range []crashfs.Mode{crashfs.LoseUnsynced, crashfs.RandomSubset} {
		for _, pt := range Points {
			for nth := 1; nth <= 2; nth++ {
				t.Run(fmt.Sprintf("%s,%s,%d", mode, pt, nth), func(t *testing.T) { powerLossAt(t, mode, pt, nth) })
			}
		}
	}
}

func powerLossAt(t *testing.T, mode crashfs.Mode, pt Point, nth int) {
	rng := rand.New(rand.NewPCG(uint64(nth), 9))
	r := newPowerRig(t, "full")
	n := r.open()
	published := map[int]bool{}
	id := 1
	for round := 0; round < 2; round++ {
		for i := 0; i < 6; i++ {
			_, err := n.db.Exec("INSERT INTO t(id, v) VALUES (?, randomblob(?))", id, 100+rng.IntN(2500))
			must(t, err)
			id++
		}
		if round == 1 {
			r.crashPoint, r.crashNth = pt, nth
		}
		_, err := n.pub.PublishNow(context.Background())
		switch {
		case err == nil:
			for i := 1; i < id; i++ {
				published[i] = true
			}
		case errors.Is(err, ErrCrash):
		default:
			t.Fatalf("publish: %v", err)
		}
	}
	t.Logf("power loss at %s #%d: %s", pt, nth, r.cut(n, mode, rng))
	n = r.open()
	if js, err := n.cat.UnfinishedJobs(); err == nil {
		for _, j := range js {
			t.Logf("after reopen: job %s state %s progress %s", j.ID, j.State, j.Progress)
		}
	}
	r.check(n, fmt.Sprintf("power loss at %s #%d", pt, nth), published)
	n.close()
}
