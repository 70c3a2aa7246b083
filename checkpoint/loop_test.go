package checkpoint

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote/fault"
)

func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// firstCycleDone waits until the loop's start-up cycle finished.
func firstCycleDone(t testing.TB, p *Publisher) {
	waitFor(t, "the first cycle", 10*time.Second, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.cycleDone >= 1
	})
}

// The background loop publishes every Interval while commits go on, and
// the lag drops back to zero.
func TestLoopPublishesOnInterval(t *testing.T) {
	s := newSynth(t, fsStore(t), synthOpts{chunkPages: 4, seed: 50})
	p := s.publisher(func(c *Config) { c.NoLoop = false; c.Interval = 30 * time.Millisecond })
	// Two rounds of commits, each left to the loop (no explicit publish):
	// at least two publishes, whatever the machine's speed.
	for range 2 {
		for range 10 {
			s.randomTxn(30)
		}
		waitFor(t, "the loop to publish everything", 10*time.Second, func() bool { return p.Status().PublishedTxid == s.txid })
	}
	st := p.Status()
	if st.LagTxns != 0 || st.Lag != 0 || st.LastError != nil || st.Publishes < 2 {
		t.Fatalf("status %+v", st)
	}
	got, _ := restoreBytes(t, s.store, s.cat, 0)
	sameBytes(t, "loop", got, s.model, int(s.pageSize))
}

// A spool holding SpoolBytes triggers a publish long before the interval.
func TestLoopPublishesOnSpoolBytes(t *testing.T) {
	s := newSynth(t, fsStore(t), synthOpts{chunkPages: 64, seed: 51})
	p := s.publisher(func(c *Config) { c.NoLoop = false; c.Interval = time.Hour; c.SpoolBytes = 200 << 10 })
	firstCycleDone(t, p)
	s.commit(10, []uint32{2, 3}, false)
	time.Sleep(100 * time.Millisecond)
	if st := p.Status(); st.PublishedTxid != 0 {
		t.Fatalf("published %d below the spool threshold and the interval", st.PublishedTxid)
	}
	var pages []uint32
	for pg := uint32(1); pg <= 60; pg++ {
		pages = append(pages, pg)
	}
	s.commit(60, pages, false) // 240 KiB
	waitFor(t, "the spool-size trigger", 10*time.Second, func() bool { return p.Status().PublishedTxid == s.txid })
}

// WaitPublished (sync durability) and WaitLag (max_lag backpressure)
// publish at once instead of waiting for the interval; concurrent waiters
// share publishes. A failed publish attempt fails the waiters (the
// transaction stays committed locally) instead of hanging them.
func TestWaitPublishedAndLag(t *testing.T) {
	fs := fault.New(fsStore(t), fault.Config{})
	s := newSynth(t, fs, synthOpts{chunkPages: 4, seed: 52})
	p := s.publisher(func(c *Config) { c.NoLoop = false; c.Interval = time.Hour })
	firstCycleDone(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	p.Notify(s.randomTxn(20)) // the VFS notifies at commit
	time.Sleep(30 * time.Millisecond)
	if lag := p.Status().Lag; lag < 20*time.Millisecond {
		t.Fatalf("lag %v after 30ms", lag)
	}
	must(t, p.WaitLag(ctx, 10*time.Millisecond))
	if st := p.Status(); st.LagTxns != 0 {
		t.Fatalf("after WaitLag: %+v", st)
	}

	before := p.Status().Publishes
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 8 {
		mu.Lock()
		txid := s.randomTxn(20)
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.WaitPublished(ctx, txid); err != nil {
				t.Errorf("wait %d: %v", txid, err)
			}
		}()
	}
	wg.Wait()
	// At most one publish per waiter (those the waiters share count once).
	st := p.Status()
	if st.PublishedTxid != s.txid || st.Publishes-before > 8 {
		t.Fatalf("status %+v, %d publishes before the 8 waiters", st, before)
	}

	t0 := time.Now()
	// The store goes away: waiters get an error, not a hang.
	fs.SetOutage(true)
	txid := s.randomTxn(20)
	err := p.WaitPublished(ctx, txid)
	if err == nil || !strings.Contains(err.Error(), "committed locally") || ctx.Err() != nil {
		t.Fatalf("wait during an outage: %v", err)
	}
	t.Logf("outage noticed after %v", time.Since(t0))
	fs.SetOutage(false)
	must(t, p.WaitPublished(ctx, txid))
	t.Logf("published after %v", time.Since(t0))
}

// Close publishes what is left and writes a release record: the next
// writer takes over without forcing and without waiting for the lease.
func TestCloseReleases(t *testing.T) {
	s := newSynth(t, fsStore(t), synthOpts{chunkPages: 4, seed: 53})
	p := s.publisher(func(c *Config) { c.NoLoop = false; c.Interval = time.Hour })
	s.randomTxn(20)
	s.randomTxn(20)
	must(t, p.Close(context.Background()))
	s.pub = nil
	if tip := s.cat.Tip(); tip.Txid != s.txid {
		t.Fatalf("Close left txids %d..%d unpublished", tip.Txid+1, s.txid)
	}
	rows, err := s.cat.Publishes(s.cat.Tip().Seq, 1)
	must(t, err)
	if rows[0].Kind != manifest.KindRelease {
		t.Fatalf("last record is %s, want release", rows[0].Kind)
	}
	if _, err := p.PublishNow(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("publish after close: %v", err)
	}
	s.newWriter()
	p2 := s.publisher(func(c *Config) { c.ForceTakeover = false })
	s.randomTxn(20)
	if got := publishNow(t, p2); got != s.txid {
		t.Fatalf("published %d", got)
	}
}

// Commits (spool appends) run concurrently with background publishing,
// status reads and waiters (a race-detector test).
func TestConcurrentCommitsAndPublishing(t *testing.T) {
	s := newSynth(t, fsStore(t), synthOpts{chunkPages: 4, seed: 54})
	p := s.publisher(func(c *Config) { c.NoLoop = false; c.Interval = 5 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-done:
				return
			default:
			}
			p.Status()
			time.Sleep(time.Millisecond)
		}
	}()
	for range 60 {
		txid := s.randomTxn(40)
		p.Notify(txid)
	}
	must(t, p.WaitPublished(ctx, s.txid))
	done <- struct{}{}
	<-done
	got, _ := restoreBytes(t, s.store, s.cat, 0)
	sameBytes(t, "concurrent", got, s.model, int(s.pageSize))
}

// Without a background loop, waiting publishes in the caller; a txid that
// is not in the spool fails at once instead of spinning.
func TestWaitWithoutLoop(t *testing.T) {
	s := newSynth(t, fsStore(t), synthOpts{chunkPages: 4, seed: 55})
	p := s.publisher(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	txid := s.randomTxn(10)
	must(t, p.WaitPublished(ctx, txid))
	if err := p.WaitPublished(ctx, txid+5); err == nil || ctx.Err() != nil {
		t.Fatalf("wait for a txid not in the spool: %v", err)
	}
	s.randomTxn(10)
	must(t, p.WaitLag(ctx, 0))
	if st := p.Status(); st.LagTxns != 0 {
		t.Fatalf("after WaitLag: %+v", st)
	}
}

// The lag clock stays bounded under a long backlog, keeps the oldest
// sample, and merges samples only conservatively: every transaction's
// time is at most its own first observation (the lag is never
// understated).
func TestLagSamplesBounded(t *testing.T) {
	p := &Publisher{changed: make(chan struct{})}
	seen := map[uint64]time.Time{}
	for txid := uint64(1); txid <= 20000; txid++ {
		p.Notify(txid)
		seen[txid] = time.Now()
	}
	if n := len(p.samples); n > maxLagSamples || n < maxLagSamples/2 {
		t.Fatalf("%d samples after 20000 commits", n)
	}
	if p.samples[0].txid != 1 {
		t.Fatalf("the oldest sample is txid %d", p.samples[0].txid)
	}
	for i := 1; i < len(p.samples); i++ {
		a, b := p.samples[i-1], p.samples[i]
		if b.txid <= a.txid || b.at.Before(a.at) {
			t.Fatalf("samples %d and %d out of order: %+v %+v", i-1, i, a, b)
		}
	}
	// For every published boundary, the clock's time of the oldest
	// unpublished transaction is no later than that transaction's commit.
	for _, pub := range []uint64{0, 1, 2, 100, 4095, 9999, 19998} {
		p.mu.Lock()
		p.published = pub
		p.dropSamplesLocked()
		got := p.samples[0].at
		p.mu.Unlock()
		if want := seen[pub+1]; got.After(want) {
			t.Fatalf("published %d: the clock dates txid %d at %v, it was committed by %v", pub, pub+1, got, want)
		}
	}
}

// With coalescing every commit of a group notifies the group's txid: the
// lag counts from the first of them. This guards the behaviour Notify's
// fast path (a txid seen before returns at once) must keep; the slow path
// alone keeps it too, so the test passes without the fast path.
func TestNotifyKeepsFirstTime(t *testing.T) {
	s := newSynth(t, fsStore(t), synthOpts{chunkPages: 4, seed: 54})
	p := s.publisher(func(c *Config) { c.NoLoop = false; c.Interval = time.Hour })
	firstCycleDone(t, p)
	txid := s.randomTxn(20)
	p.Notify(txid)
	time.Sleep(40 * time.Millisecond)
	p.Notify(txid) // a later commit of the same group
	if lag := p.Status().Lag; lag < 40*time.Millisecond {
		t.Fatalf("lag %v: counted from the group's later commit, not its first", lag)
	}
	p.Notify(txid - 1) // older: nothing changes
	if lag := p.Status().Lag; lag < 40*time.Millisecond {
		t.Fatalf("lag %v after notifying an older txid", lag)
	}
}
