package manifest

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/bopstore/bop/internal/crashfs"
	"github.com/bopstore/bop/internal/vfstest"
)

var lazyVFSSeq atomic.Int64

// Lazy commits (txLazy: job progress, a job's end, a new catalog) are
// atomic and ordered but not durable: a power loss keeps a prefix of
// them, and every one made before a durable commit survives it. The
// catalog runs on a file layer that drops unsynced writes (all, none, or
// a random subset of 4 KiB pieces) at a simulated power loss.
//
// It fails if a lazy commit fsyncs (LoseUnsynced would keep it), if a
// durable commit does not (the job it created would be lost), if a lazy
// commit leaves the connection lazy (the second job's creation would be
// lost), or if a torn WAL tail does not open as an earlier state.
func TestLazyCommitsOnPowerLoss(t *testing.T) {
	eachCut(t, 4, lazyPowerLoss)
}

// eachCut runs f as a subtest for every power-loss mode, with seeds
// 1..seeds for the random one (the others are deterministic: seed 1).
func eachCut(t *testing.T, seeds uint64, f func(t *testing.T, mode crashfs.Mode, seed uint64)) {
	for _, mode := range []crashfs.Mode{crashfs.LoseUnsynced, crashfs.KeepUnsynced, crashfs.RandomSubset} {
		for seed := uint64(1); seed <= seeds; seed++ {
			if mode != crashfs.RandomSubset && seed > 1 {
				continue
			}
			t.Run(fmt.Sprintf("%s,seed=%d", mode, seed), func(t *testing.T) { f(t, mode, seed) })
		}
	}
}

// crashCatalog returns a power-loss file layer and a function that opens
// (again) one catalog whose files go through it.
func crashCatalog(t *testing.T, vfsPrefix string) (*crashfs.Tracker, func() *Catalog) {
	tr := crashfs.New()
	v := vfstest.New(nil)
	v.Crash = tr
	name := fmt.Sprintf("%s%d", vfsPrefix, lazyVFSSeq.Add(1))
	v.Register(name)
	path := filepath.Join(t.TempDir(), "catalog.db")
	return tr, func() *Catalog {
		t.Helper()
		c, err := Open(path, Options{Layout: testLayout, PageSize: testPageSize, ChunkPages: 4, VFS: name})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
}

func lazyPowerLoss(t *testing.T, mode crashfs.Mode, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	tr, open := crashCatalog(t, "boplazy")
	powerLoss := func(c *Catalog) {
		t.Helper()
		tr.Crash()
		c.Close() // fails: the power is out
		rep, err := tr.Restore(mode, rng)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("power loss (%s): %s", mode, rep)
	}
	newJob := func(c *Catalog, id string, lo, hi uint64) uint64 {
		t.Helper()
		first, err := c.StartNewJob(NewJob{ID: id, Kind: "publish", ObjectIDs: 2,
			Lease: &Lease{Kind: "spool", MinTxid: lo, MaxTxid: hi},
			Plan:  func(first uint64) ([]byte, error) { return []byte(fmt.Sprint(first)), nil }})
		if err != nil {
			t.Fatal(err)
		}
		return first
	}

	// The creation itself is lazy: lost or not, the file opens again as
	// a new catalog.
	powerLoss(open())
	c := open()

	firstA := newJob(c, "job-a", 1, 5) // durable
	must(t, c.SaveProgressLazy("job-a", JobStaged, "a staged", []byte("a1")))
	firstB := newJob(c, "job-b", 6, 9) // durable: job-a's lazy save with it
	must(t, c.SaveProgressLazy("job-b", JobStaged, "b staged", []byte("b1")))
	must(t, c.SaveProgressLazy("job-b", JobUploaded, "b uploaded", []byte("b2")))
	must(t, c.SaveProgressLazy("job-a", JobPublished, "a published", []byte("a2")))
	must(t, c.FinishJobLazy("job-a", JobCompleted, ""))
	powerLoss(c)

	c = open()
	defer c.Close()
	a, err := c.GetJob("job-a")
	must(t, err)
	b, err := c.GetJob("job-b")
	must(t, err)
	t.Logf("after: job-a %s %q, job-b %s %q", a.State, a.Progress, b.State, b.Progress)
	// The lazy commits after job-b's creation, in order: b staged, b
	// uploaded, a published, a completed. A prefix survives.
	states := []struct {
		a, b           JobState
		aProg, bProg   string
		aLeases, bLeas int
	}{
		{JobStaged, JobPlanned, "a1", "", 1, 1},
		{JobStaged, JobStaged, "a1", "b1", 1, 1},
		{JobStaged, JobUploaded, "a1", "b2", 1, 1},
		{JobPublished, JobUploaded, "a2", "b2", 1, 1},
		{JobCompleted, JobUploaded, "a2", "b2", 0, 1},
	}
	ls, err := c.Leases("spool")
	must(t, err)
	held := map[string]int{}
	for _, l := range ls {
		held[l.Holder]++
	}
	kept := -1
	for i, s := range states {
		if a.State == s.a && b.State == s.b && string(a.Progress) == s.aProg && string(b.Progress) == s.bProg &&
			held["job-a"] == s.aLeases && held["job-b"] == s.bLeas {
			kept = i
		}
	}
	if kept < 0 {
		t.Fatalf("not a prefix of the commits: job-a %s %q, job-b %s %q, leases %v", a.State, a.Progress, b.State, b.Progress, held)
	}
	switch {
	case mode == crashfs.LoseUnsynced && kept != 0:
		t.Fatalf("lose-unsynced kept %d lazy commits: a lazy commit was synced", kept)
	case mode == crashfs.KeepUnsynced && kept != len(states)-1:
		t.Fatalf("keep-unsynced kept %d of %d lazy commits", kept, len(states)-1)
	}
	// The ids both jobs reserved durably are never handed out again.
	next, err := c.AllocateObjectIDs(1)
	must(t, err)
	if next <= max(firstA, firstB)+1 {
		t.Fatalf("id %d reserved again (job-a got %d, job-b %d)", next, firstA, firstB)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// A new catalog's creation commits with no sync at all (txCreate): its
// page 1 is made durable by the switch to WAL, its schema and meta row
// only by the first durable commit, which fsyncs the WAL with every frame
// before it. A power loss right after that commit keeps the catalog, the
// commit and its job whatever unsynced writes it drops.
//
// It fails if the switch to WAL leaves page 1 unsynced (SQLite then drops
// the WAL of an empty file: the job is lost) or if the first durable
// commit does not carry the creation with it.
func TestCreationDurableWithFirstCommit(t *testing.T) {
	eachCut(t, 3, func(t *testing.T, mode crashfs.Mode, seed uint64) {
		rng := rand.New(rand.NewPCG(seed, 11))
		tr, open := crashCatalog(t, "bopcreate")
		c := open()
		if _, err := c.StartNewJob(NewJob{ID: "job-a", Kind: "publish", ObjectIDs: 1,
			Plan: func(first uint64) ([]byte, error) { return []byte(fmt.Sprint(first)), nil }}); err != nil {
			t.Fatal(err)
		}
		tr.Crash()
		c.Close() // fails: the power is out
		rep, err := tr.Restore(mode, rng)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("power loss (%s): %s", mode, rep)
		c = open()
		defer c.Close()
		if _, err := c.GetJob("job-a"); err != nil {
			t.Fatalf("the job of the first durable commit after a power loss: %v", err)
		}
		if tip := c.Tip(); tip.PageSize != testPageSize {
			t.Fatalf("meta after a power loss: page size %d, want %d", tip.PageSize, testPageSize)
		}
	})
}
