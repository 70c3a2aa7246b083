package checkpoint

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote/fault"
)

// The loop's first cycle only recovers: what the spool holds is published
// an Interval later like any commit (here: never, the interval is an
// hour), and Close publishes it.
func TestFirstLoopCycleOnlyRecovers(t *testing.T) {
	s := newSynth(t, fsStore(t), synthOpts{chunkPages: 4, seed: 60})
	s.randomTxn(20)
	s.randomTxn(20)
	p := s.publisher(func(c *Config) { c.NoLoop = false; c.Interval = time.Hour })
	firstCycleDone(t, p)
	if st := p.Status(); st.PublishedTxid != 0 || st.Publishes != 0 || st.LastError != nil {
		t.Fatalf("after the first cycle: %+v", st)
	}
	must(t, p.Close(context.Background()))
	s.pub = nil
	if tip := s.cat.Tip(); tip.Txid != s.txid {
		t.Fatalf("Close published up to %d, spool at %d", tip.Txid, s.txid)
	}
	got, _ := restoreBytes(t, s.store, s.cat, 0)
	sameBytes(t, "after close", got, s.model, int(s.pageSize))
}

// An unfinished job left by a crash is still resumed by the first cycle,
// at once (not an Interval later).
func TestFirstLoopCycleResumesJob(t *testing.T) {
	s := newSynth(t, fsStore(t), synthOpts{chunkPages: 4, seed: 61})
	s.randomTxn(20)
	var hit string
	p := s.publisher(func(c *Config) { c.Hook = failAt(AtUploaded, 1, ErrCrash, &hit) })
	if _, err := p.PublishNow(context.Background()); !errors.Is(err, ErrCrash) {
		t.Fatalf("publish: %v", err)
	}
	s.crash()
	s.open()
	p = s.publisher(func(c *Config) { c.NoLoop = false; c.Interval = time.Hour })
	firstCycleDone(t, p)
	j, err := s.cat.GetJob(hit)
	must(t, err)
	if j.State != manifest.JobCompleted || p.Status().PublishedTxid != s.txid {
		t.Fatalf("job %s is %s after the first cycle; published %d of %d", hit, j.State, p.Status().PublishedTxid, s.txid)
	}
	checkJobsFinished(t, s.cat, p, s.cfg.StagingDir)
}

// Close lets a cycle of the loop that is under way finish instead of
// cancelling it: the job is staged and uploaded once, not cut short and
// then recovered (staged and uploaded again) by the final cycle.
func TestCloseLetsLoopCycleFinish(t *testing.T) {
	s := newSynth(t, fsStore(t), synthOpts{chunkPages: 4, seed: 62})
	var mu sync.Mutex
	staged := map[string]int{}
	inCycle := make(chan struct{})
	resume := make(chan struct{})
	var once sync.Once
	hook := func(ev Event) error {
		if ev.Point != AtStaged {
			return nil
		}
		mu.Lock()
		staged[fmt.Sprintf("%s/%d", ev.Job, ev.Action)]++
		mu.Unlock()
		once.Do(func() {
			close(inCycle)
			<-resume // Close is called meanwhile
		})
		return nil
	}
	p := s.publisher(func(c *Config) { c.NoLoop = false; c.Interval = 10 * time.Millisecond; c.Hook = hook })
	firstCycleDone(t, p)
	s.randomTxn(20)
	select {
	case <-inCycle:
	case <-time.After(10 * time.Second):
		t.Fatal("the loop never published")
	}
	closed := make(chan error, 1)
	go func() { closed <- p.Close(context.Background()) }()
	waitFor(t, "Close to begin", 10*time.Second, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.closing
	})
	close(resume)
	must(t, <-closed)
	s.pub = nil
	mu.Lock()
	defer mu.Unlock()
	for k, n := range staged {
		if n != 1 {
			t.Fatalf("action %s staged %d times", k, n)
		}
	}
	if tip := s.cat.Tip(); tip.Txid != s.txid {
		t.Fatalf("published up to %d, spool at %d", tip.Txid, s.txid)
	}
	checkJobsFinished(t, s.cat, p, s.cfg.StagingDir)
}

// A staging file is written only by the stage call that created it:
// staging again over a file of the same name (a resumed job's, left by a
// crash) makes a new file and leaves the old one's bytes alone. The old
// file may be a stored object (fsstore's PutFile keeps the staging file
// itself as the object); truncating it in place would change that object.
func TestStageNeverRewritesAFile(t *testing.T) {
	s := newSynth(t, fsStore(t), synthOpts{chunkPages: 4, seed: 63})
	s.randomTxn(20)
	p := s.publisher(nil)
	confirmed, err := spoolSyncer{s.spool}.SyncForPublish()
	must(t, err)
	tip := s.cat.Tip()
	rng, ps, err := p.scan(tip, confirmed)
	must(t, err)
	defer ps.Close()
	pl, err := MakePlan(rng, tip, Policy{})
	must(t, err)
	pl.AssignIDs("publish-test", 1)

	path := stagingName(s.cfg.StagingDir, pl.Job, 0)
	old := bytes.Repeat([]byte("a stored object "), 1000)
	must(t, os.WriteFile(path, old, 0o644))
	object := filepath.Join(s.dir, "object") // the store's name for it
	must(t, os.Link(path, object))

	st, err := stage(context.Background(), path, pl, &pl.Actions[0], ps, rng.Pgnos)
	must(t, err)
	defer st.close()
	if b, err := os.ReadFile(object); err != nil || !bytes.Equal(b, old) {
		t.Fatalf("the old file changed: %d bytes, %v", len(b), err)
	}
	oi, err := os.Stat(object)
	must(t, err)
	ni, err := os.Stat(path)
	must(t, err)
	if os.SameFile(oi, ni) || ni.Size() != st.sum.Size {
		t.Fatalf("staged into the old file (same %v), %d bytes, want %d", os.SameFile(oi, ni), ni.Size(), st.sum.Size)
	}
}

// A publisher started right after its Writer took over (as the VFS does)
// does not renew the lease the takeover just wrote: its first cycle makes
// no request at all.
func TestFirstCycleAfterTakeoverIsQuiet(t *testing.T) {
	m := fault.New(fsStore(t), fault.Config{})
	s := newSynth(t, m, synthOpts{chunkPages: 4, seed: 64})
	if _, err := TakeOver(context.Background(), s.cat, s.w, true); err != nil {
		t.Fatal(err)
	}
	before := m.Stats()
	p := s.publisher(func(c *Config) { c.NoLoop = false; c.Interval = time.Hour })
	firstCycleDone(t, p)
	after := m.Stats()
	if after.Put.Requests != before.Put.Requests || after.Get.Requests != before.Get.Requests {
		t.Fatalf("the first cycle made %d puts and %d gets", after.Put.Requests-before.Put.Requests, after.Get.Requests-before.Get.Requests)
	}
}
