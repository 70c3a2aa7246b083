package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fault"
)

// publishRecords returns the publish records after seq.
func publishRecords(t *testing.T, cat *manifest.Catalog, after uint64) []manifest.Publish {
	t.Helper()
	rows, err := cat.Publishes(after+1, 1000)
	must(t, err)
	var out []manifest.Publish
	for _, r := range rows {
		if r.Kind == manifest.KindPublish {
			out = append(out, r)
		}
	}
	return out
}

// A job's log record times out and reads back as missing, but the request
// is applied later (before the retry, or after it and then refused). The
// next cycle settles it by offering the same bytes: the job is published
// once, completed, the publisher is not fenced, and no second record was
// ever offered for that seq.
func TestLateRecordLandsOnce(t *testing.T) {
	for _, landFirst := range []bool{true, false} {
		t.Run(fmt.Sprint("landFirst=", landFirst), func(t *testing.T) {
			stores(t, func(t *testing.T, store remote.Store) {
				ls := fault.NewLate(store, testLayout.LogPrefix())
				s := newSynth(t, ls, synthOpts{chunkPages: 4, seed: 50})
				p := s.publisher(nil)
				s.commit(8, []uint32{1, 2, 3, 4, 5, 6, 7, 8}, false)
				publishNow(t, p)
				tip := s.cat.Tip()
				s.commit(8, []uint32{5, 6}, false)
				ls.Hold()
				_, err := p.PublishNow(context.Background())
				if err == nil || errors.Is(err, ErrFenced) {
					t.Fatalf("publish whose record timed out: %v", err)
				}
				ls.Pass(landFirst)
				if got := publishNow(t, p); got != 2 {
					t.Fatalf("published %d, want 2", got)
				}
				if !landFirst {
					if err := ls.LandRefused(context.Background()); err != nil {
						t.Fatal(err)
					}
				}
				if st := p.Status(); st.Fenced {
					t.Fatalf("fenced by its own record: %+v", st)
				}
				recs := publishRecords(t, s.cat, tip.Seq)
				if len(recs) != 1 || recs[0].Txid != 2 {
					t.Fatalf("publish records after seq %d: %+v, want one up to txid 2", tip.Seq, recs)
				}
				job, err := s.cat.GetJob(recs[0].Job)
				must(t, err)
				if job.State != manifest.JobCompleted {
					t.Fatalf("job %s is %s", job.ID, job.State)
				}
				if err := ls.OneBodyPerKey(); err != nil {
					t.Fatal(err)
				}
				checkJobsFinished(t, s.cat, p, s.cfg.StagingDir)
				got, _ := restoreBytes(t, store, s.cat, 0)
				sameBytes(t, "settled", got, s.model, int(s.pageSize))
			})
		})
	}
}

// The job's record lands late, then another node takes over. Settling
// applies our record and then learns the publisher is fenced: the job is
// published (its record is committed) and completed, never abandoned.
func TestFencedAfterOwnRecordSettled(t *testing.T) {
	ls := fault.NewLate(fsStore(t), testLayout.LogPrefix())
	a := newSynth(t, ls, synthOpts{chunkPages: 4, seed: 51})
	pa := a.publisher(nil)
	a.commit(6, []uint32{1, 2, 3, 4, 5, 6}, false)
	publishNow(t, pa)
	tip := a.cat.Tip()
	a.commit(6, []uint32{2}, false)
	ls.Hold()
	if _, err := pa.PublishNow(context.Background()); err == nil {
		t.Fatal("publish whose record timed out succeeded")
	}
	jobs, err := a.cat.UnfinishedJobs()
	must(t, err)
	if len(jobs) != 1 {
		t.Fatalf("%d unfinished jobs", len(jobs))
	}
	if _, err := ls.Land(context.Background()); err != nil {
		t.Fatal(err)
	}
	ls.Pass(false)
	b := newSynthFromRemote(t, ls.Inner(), a)
	if _, err := b.w.Takeover(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	if _, err := pa.PublishNow(context.Background()); !errors.Is(err, ErrFenced) {
		t.Fatalf("A after B's takeover: %v, want ErrFenced", err)
	}
	if !pa.Status().Fenced {
		t.Fatal("A's status does not say fenced")
	}
	job, err := a.cat.GetJob(jobs[0].ID)
	must(t, err)
	if job.State != manifest.JobCompleted {
		t.Fatalf("job %s whose record is committed is %s (%s)", job.ID, job.State, job.LastError)
	}
	recs := publishRecords(t, a.cat, tip.Seq)
	if len(recs) != 1 || recs[0].Job != job.ID {
		t.Fatalf("records after seq %d: %+v", tip.Seq, recs)
	}
	if err := ls.OneBodyPerKey(); err != nil {
		t.Fatal(err)
	}
}

// A published job is never abandoned: not when a permanent failure comes
// after its record landed (it is found in the catalog and finished), and
// not when its stored plan cannot be read (it is completed without it;
// abandoning it is a forbidden move the catalog refuses).
func TestPublishedJobNeverAbandoned(t *testing.T) {
	t.Run("permanent failure after the record", func(t *testing.T) {
		s := newSynth(t, fsStore(t), synthOpts{chunkPages: 4, seed: 52})
		var hit string
		fail := failAt(AtRecordLanded, 1, permanent(errInjected), &hit)
		p := s.publisher(func(c *Config) { c.Hook = fail })
		s.commit(4, []uint32{1, 2, 3, 4}, false)
		if _, err := p.PublishNow(context.Background()); !errors.Is(err, errInjected) {
			t.Fatalf("publish: %v", err)
		}
		job, err := s.cat.GetJob(hit)
		must(t, err)
		if job.State != manifest.JobCompleted {
			t.Fatalf("job %s whose record landed is %s (%s)", hit, job.State, job.LastError)
		}
		if got := publishNow(t, p); got != 1 {
			t.Fatalf("published %d", got)
		}
		if recs := publishRecords(t, s.cat, 0); len(recs) != 1 || recs[0].Job != hit {
			t.Fatalf("publish records %+v", recs)
		}
		checkJobsFinished(t, s.cat, p, s.cfg.StagingDir)
		got, _ := restoreBytes(t, s.store, s.cat, 0)
		sameBytes(t, "published", got, s.model, int(s.pageSize))
	})
	t.Run("unreadable plan", func(t *testing.T) {
		s := newSynth(t, fsStore(t), synthOpts{chunkPages: 4, seed: 53})
		must(t, s.cat.CreateJob("publish-9-9-broken", JobKind, []byte("not a plan")))
		must(t, s.cat.SaveProgress("publish-9-9-broken", manifest.JobPublished, "published seq 9", nil))
		p := s.publisher(nil)
		s.commit(4, []uint32{1, 2, 3, 4}, false)
		if got := publishNow(t, p); got != 1 {
			t.Fatalf("published %d", got)
		}
		job, err := s.cat.GetJob("publish-9-9-broken")
		must(t, err)
		if job.State != manifest.JobCompleted || !strings.Contains(job.LastError, "plan unreadable") {
			t.Fatalf("published job with a broken plan: %s (%q)", job.State, job.LastError)
		}
		checkJobsFinished(t, s.cat, p, s.cfg.StagingDir)
	})
}
