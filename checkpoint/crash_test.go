package checkpoint

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fault"
)

var errInjected = errors.New("injected failure")

// failAt returns a hook that fails (or crashes) the n-th time point pt
// is reached, and records the job it hit.
func failAt(pt Point, n int, err error, hit *string) Hook {
	seen := 0
	return func(ev Event) error {
		if ev.Point != pt {
			return nil
		}
		seen++
		if seen != n {
			return nil
		}
		*hit = ev.Job
		return fmt.Errorf("hook at %s: %w", pt, err)
	}
}

// A crash (the process dies, nothing cleaned up) or a failure at every
// phase of a job: after a restart (or the next cycle) the job is resumed
// and completed, the catalog references no missing object, no
// transaction is lost (restore == the database), staging space, quota and
// leases return to zero, and the job's creation and start times are the
// ones written when it was created (seed finding 15).
func TestCrashAtEveryPoint(t *testing.T) {
	for _, pt := range Points {
		for _, nth := range []int{1, 2} {
			if nth == 2 && pt != AtStaged && pt != AtUploaded {
				continue
			}
			for _, mode := range []string{"crash", "fail"} {
				t.Run(fmt.Sprintf("%s-%d-%s", pt, nth, mode), func(t *testing.T) {
					crashAt(t, fsStore(t), pt, nth, mode == "crash")
				})
			}
		}
	}
}

func crashAt(t *testing.T, store remote.Store, pt Point, nth int, crash bool) {
	s := newSynth(t, store, synthOpts{chunkPages: 4, seed: uint64(len(pt)*10 + nth)})
	p := s.publisher(func(c *Config) { c.Policy.MaxObjectPages = 3 })
	for range 3 {
		s.randomTxn(25)
	}
	publishNow(t, p)
	s.randomTxn(25)
	s.commit(25, []uint32{2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, false) // at least 4 objects of 3 pages
	var hit string
	want := errInjected
	if crash {
		want = ErrCrash
	}
	p = s.publisher(func(c *Config) {
		c.Policy.MaxObjectPages = 3
		c.Hook = failAt(pt, nth, want, &hit)
	})
	if _, err := p.PublishNow(context.Background()); !errors.Is(err, want) {
		t.Fatalf("publish: %v, want %v", err, want)
	}
	if hit == "" {
		t.Fatalf("hook at %s #%d never fired", pt, nth)
	}
	before, err := s.cat.GetJob(hit)
	must(t, err)
	if crash {
		s.crash()
		// More commits before the restart.
		s.open()
		s.randomTxn(25)
		p = s.publisher(func(c *Config) { c.Policy.MaxObjectPages = 3 })
	}
	if got := publishNow(t, p); got != s.txid {
		t.Fatalf("after the %v at %s: published %d, spool at %d", want, pt, got, s.txid)
	}
	after, err := s.cat.GetJob(hit)
	must(t, err)
	if after.State != manifest.JobCompleted {
		t.Fatalf("job %s is %s (%s), want completed", hit, after.State, after.LastError)
	}
	if !after.CreatedAt.Equal(before.CreatedAt) || !after.StartedAt.Equal(before.StartedAt) || after.StartedAt.IsZero() {
		t.Fatalf("job times changed: created %v -> %v, started %v -> %v", before.CreatedAt, after.CreatedAt, before.StartedAt, after.StartedAt)
	}
	checkJobsFinished(t, s.cat, p, s.cfg.StagingDir)
	checkReferencedObjects(t, store, s.cat)
	got, _ := restoreBytes(t, store, s.cat, 0)
	sameBytes(t, "after recovery", got, s.model, int(s.pageSize))
	// And publishing goes on.
	s.randomTxn(25)
	publishNow(t, p)
	got, _ = restoreBytes(t, store, s.cat, 0)
	sameBytes(t, "after the next publish", got, s.model, int(s.pageSize))
}

// A job that cannot resume is abandoned safely: a crash leaves a planned
// job, then the catalog moves on without it (here: the plan's range is
// published by a newer job because the job row was made stale on
// purpose). Abandoned jobs release everything and their objects are never
// referenced.
func TestStaleJobAbandoned(t *testing.T) {
	s := newSynth(t, fsStore(t), synthOpts{chunkPages: 4, seed: 31})
	p := s.publisher(nil)
	s.commit(8, []uint32{1, 2, 3, 4, 5, 6, 7, 8}, false)
	publishNow(t, p)
	s.commit(8, []uint32{3}, false)
	var hit string
	p = s.publisher(func(c *Config) { c.Hook = failAt(AtUploaded, 1, ErrCrash, &hit) })
	if _, err := p.PublishNow(context.Background()); !errors.Is(err, ErrCrash) {
		t.Fatal(err)
	}
	s.crash()
	s.open()
	// Someone moved the catalog past the plan's parent: publish the same
	// range through another job first. The simplest faithful way: turn
	// the crashed job's plan stale by editing its parent boundary.
	job, err := s.cat.GetJob(hit)
	must(t, err)
	pl, err := DecodePlan(job.Plan)
	must(t, err)
	must(t, s.cat.FinishJob(hit, manifest.JobAbandoned, "test"))
	pl.Job = "publish-stale-test"
	pl.PrevDBPages++ // no longer the catalog's state
	b, _ := pl.Encode()
	must(t, s.cat.CreateJob(pl.Job, JobKind, b))
	must(t, s.cat.StartJob(pl.Job))
	p = s.publisher(nil)
	publishNow(t, p)
	stale, err := s.cat.GetJob(pl.Job)
	must(t, err)
	if stale.State != manifest.JobAbandoned || stale.LastError == "" {
		t.Fatalf("stale job: %s %q", stale.State, stale.LastError)
	}
	checkJobsFinished(t, s.cat, p, s.cfg.StagingDir)
	got, _ := restoreBytes(t, s.store, s.cat, 0)
	sameBytes(t, "after abandon", got, s.model, int(s.pageSize))
}

// The record is created but its response is lost and the read-back fails:
// the outcome is unknown. Within the process, the next cycle settles it
// (our own record in the log means success) and never publishes the job a
// second time; after a crash instead, the takeover finds the record in
// the log and the resumed job sees it as published. Either way the
// takeover does not count the record as another writer's.
func TestUnknownOutcomeSettled(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run(fmt.Sprint("restart=", restart), func(t *testing.T) {
			fs := fault.New(fsStore(t), fault.Config{})
			s := newSynth(t, fs, synthOpts{chunkPages: 4, seed: 32})
			p := s.publisher(nil)
			s.commit(8, []uint32{1, 2, 3, 4, 5, 6, 7, 8}, false)
			publishNow(t, p)
			s.commit(8, []uint32{5}, false)
			logPrefix := testLayout.LogPrefix()
			must(t, fs.Inject(fault.Fault{Kind: fault.LoseResponse, Op: fault.OpPut, Prefix: logPrefix}))
			must(t, fs.Inject(fault.Fault{Kind: fault.Fail, Op: fault.OpGet, Prefix: logPrefix, Sticky: true}))
			_, err := p.PublishNow(context.Background())
			if err == nil {
				t.Fatal("publish with a lost response and no read-back succeeded")
			}
			fs.ClearFaults()
			tip := s.cat.Tip()
			if restart {
				s.crash()
				s.open()
				p = s.publisher(func(c *Config) {
					c.OnTakeover = func(r TakeoverResult) error {
						if r.ForeignPublishes != 0 {
							return fmt.Errorf("takeover counted %d foreign publishes", r.ForeignPublishes)
						}
						return nil
					}
				})
			}
			if got := publishNow(t, p); got != 2 {
				t.Fatalf("published %d", got)
			}
			rows, err := s.cat.Publishes(tip.Seq+1, 100)
			must(t, err)
			n := 0
			for _, r := range rows {
				if r.Kind == manifest.KindPublish {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("%d publish records after the unknown outcome, want exactly 1", n)
			}
			checkJobsFinished(t, s.cat, p, s.cfg.StagingDir)
			got, _ := restoreBytes(t, fs, s.cat, 0)
			sameBytes(t, "settled", got, s.model, int(s.pageSize))
		})
	}
}

// Two writers of one database: B takes over while A publishes. A's next
// publish meets B's record: ErrFenced, A stops for good (Status says
// fenced, later calls fail at once, no retry), and no restore ever shows
// A's transactions after B's takeover.
func TestFencedWriterStops(t *testing.T) {
	stores(t, func(t *testing.T, store remote.Store) {
		a := newSynth(t, store, synthOpts{chunkPages: 4, seed: 40})
		pa := a.publisher(nil)
		a.commit(6, []uint32{1, 2, 3, 4, 5, 6}, false)
		a.commit(6, []uint32{2}, false)
		publishNow(t, pa)
		shared := bytes.Clone(a.model)

		// B: a node that builds its catalog from the store and takes over.
		b := newSynthFromRemote(t, store, a)
		pb := b.publisher(nil)
		b.commit(6, []uint32{3}, false)
		if got := publishNow(t, pb); got != 3 {
			t.Fatalf("B published %d", got)
		}

		// A commits locally and tries to publish: fenced.
		a.commit(6, []uint32{4}, false)
		_, err := pa.PublishNow(context.Background())
		if !errors.Is(err, ErrFenced) || !errors.Is(err, manifest.ErrFenced) {
			t.Fatalf("A after B's takeover: %v", err)
		}
		st := pa.Status()
		if !st.Fenced {
			t.Fatalf("A's status: %+v", st)
		}
		reqs := 0
		if fs, ok := store.(*fault.Store); ok {
			reqs = int(fs.Stats().Total().Requests)
		}
		if _, err := pa.PublishNow(context.Background()); !errors.Is(err, ErrFenced) {
			t.Fatalf("A publishes again: %v", err)
		}
		if err := pa.WaitPublished(context.Background(), 4); !errors.Is(err, ErrFenced) {
			t.Fatalf("A waits: %v", err)
		}
		_ = reqs
		// Restore: B's history only.
		got, _ := restoreBytes(t, store, b.cat, 0)
		sameBytes(t, "B's state", got, b.model, int(b.pageSize))
		for txid := uint64(1); txid <= 4; txid++ {
			path := t.TempDir() + "/r.db"
			res, err := Restore(context.Background(), RestoreOptions{Store: store, Layout: testLayout, Txid: txid, Path: path})
			if err != nil {
				if txid == 1 && errors.Is(err, ErrNothingPublished) {
					continue
				}
				t.Fatal(err)
			}
			if res.Txid > 3 {
				t.Fatalf("restore of txid %d shows boundary %d: A's transaction after the takeover", txid, res.Txid)
			}
			if res.Txid == 2 {
				gotb, _ := readFile(path)
				sameBytes(t, "before takeover", gotb, shared, int(a.pageSize))
			}
		}
	})
}

// newSynthFromRemote is a second node of a's database: its catalog is
// built from the store, its spool continues at the remote's boundary,
// and its model starts from a's published state.
func newSynthFromRemote(t *testing.T, store remote.Store, a *synth) *synth {
	t.Helper()
	b := newSynth(t, store, synthOpts{pageSize: a.pageSize, chunkPages: a.chunkPages, seed: 41})
	b.cat.Close()
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(filepath.Join(b.dir, "catalog.db"+suffix))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cat, err := manifest.OpenRemote(ctx, store, testLayout, filepath.Join(b.dir, "catalog.db"), manifest.Options{})
	must(t, err)
	b.cat = cat
	b.newWriter()
	must(t, b.spool.SetStart(cat.Tip().Txid))
	got, _ := restoreBytes(t, store, cat, 0)
	b.model = got
	b.txid = cat.Tip().Txid
	b.counter = a.counter + 100
	return b
}

// The image (adoption) path streams its record without an index: a crash
// after some bases are uploaded resumes with the rest, reading past the
// pages already done.
func TestCrashDuringAdoption(t *testing.T) {
	for _, pt := range []Point{AtStaged, AtUploaded, AtAllUploaded, AtPublishing} {
		t.Run(string(pt), func(t *testing.T) {
			s := newSynth(t, fsStore(t), synthOpts{chunkPages: 4, seed: 70})
			s.commit(23, nil, true)
			image := bytes.Clone(s.model)
			var hit string
			p := s.publisher(func(c *Config) { c.Hook = failAt(pt, 3, ErrCrash, &hit) })
			if pt == AtAllUploaded || pt == AtPublishing {
				p = s.publisher(func(c *Config) { c.Hook = failAt(pt, 1, ErrCrash, &hit) })
			}
			if _, err := p.PublishNow(context.Background()); !errors.Is(err, ErrCrash) {
				t.Fatalf("publish: %v", err)
			}
			s.crash()
			s.open()
			p = s.publisher(nil)
			if got := publishNow(t, p); got != 1 {
				t.Fatalf("published %d", got)
			}
			job, err := s.cat.GetJob(hit)
			must(t, err)
			if job.State != manifest.JobCompleted {
				t.Fatalf("job %s", job.State)
			}
			checkJobsFinished(t, s.cat, p, s.cfg.StagingDir)
			got, _ := restoreBytes(t, s.store, s.cat, 1)
			sameBytes(t, "adopted", got, image, int(s.pageSize))
		})
	}
}

// A backlog larger than MaxJobPages is published as several jobs, one
// record each, every boundary restorable.
func TestBacklogSplitIntoJobs(t *testing.T) {
	s := newSynth(t, fsStore(t), synthOpts{chunkPages: 4, seed: 71, keep: true})
	p := s.publisher(func(c *Config) { c.Policy.MaxJobPages = 10 })
	for range 12 {
		s.commit(20, []uint32{2 + uint32(s.rng.IntN(18)), 2 + uint32(s.rng.IntN(18)), 2 + uint32(s.rng.IntN(18))}, false)
	}
	if got := publishNow(t, p); got != s.txid {
		t.Fatalf("published %d of %d", got, s.txid)
	}
	rows, err := s.cat.Publishes(1, 100)
	must(t, err)
	var pubs []uint64
	for _, r := range rows {
		if r.Kind == manifest.KindPublish {
			pubs = append(pubs, r.Txid)
		}
	}
	if len(pubs) < 4 {
		t.Fatalf("%d publishes for 12 records of up to 4 pages at 10 pages per job: %v", len(pubs), pubs)
	}
	for _, b := range pubs {
		got, _ := restoreBytes(t, s.store, s.cat, b)
		sameBytes(t, "split backlog", got, s.byTxid[b], int(s.pageSize))
	}
	checkJobsFinished(t, s.cat, p, s.cfg.StagingDir)
}
