package checkpoint

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/bopstore/bop/delta"
	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fault"
)

// The executor stages the real page bytes from the spool (seed finding
// 1: zeros were uploaded). The hook copies every staged object before it
// is uploaded; decoding it must give exactly the newest version of each
// page in the published range: non-zero, equal to what was committed.
func TestStagedPayloadsAreRealPages(t *testing.T) {
	s := newSynth(t, fsStore(t), synthOpts{chunkPages: 4, seed: 1, keep: true})
	var copies [][]byte
	p := s.publisher(func(c *Config) {
		c.Policy.MaxObjectPages = 5 // several objects per publish
		c.Hook = func(ev Event) error {
			if ev.Point == AtStaged {
				b, err := os.ReadFile(ev.Path)
				if err != nil {
					return err
				}
				copies = append(copies, b)
			}
			return nil
		}
	})
	for range 6 {
		s.randomTxn(30)
	}
	want := s.byTxid[s.txid]
	published := publishNow(t, p)
	if published != s.txid {
		t.Fatalf("published txid %d, spool ends at %d", published, s.txid)
	}
	if len(copies) < 2 {
		t.Fatalf("%d objects staged", len(copies))
	}
	ps := int(s.pageSize)
	seen := map[uint32]bool{}
	for _, obj := range copies {
		o, err := delta.Open(bytes.NewReader(obj), int64(len(obj)))
		must(t, err)
		must(t, o.Verify())
		for _, e := range o.Directory() {
			page, err := o.ReadPage(e.Pgno, nil)
			must(t, err)
			if bytes.Count(page, []byte{0}) == len(page) {
				t.Fatalf("page %d staged as zeros", e.Pgno)
			}
			if !bytes.Equal(page, want[int(e.Pgno-1)*ps:int(e.Pgno)*ps]) {
				t.Fatalf("staged page %d differs from the committed page", e.Pgno)
			}
			if seen[e.Pgno] {
				t.Fatalf("page %d staged twice", e.Pgno)
			}
			seen[e.Pgno] = true
		}
	}
	if len(seen) != len(want)/ps {
		// Every page was written at least once (new pages are written).
		t.Fatalf("%d pages staged, database has %d", len(seen), len(want)/ps)
	}
}

// Publishing along the way and restoring at every boundary gives the
// database as it was at that boundary, byte for byte, with multi-chunk
// databases (chunk_pages 4), shrinks and growth; a txid between two
// boundaries rounds down and says so.
func TestPublishRestoreEveryBoundary(t *testing.T) {
	stores(t, func(t *testing.T, store remote.Store) {
		s := newSynth(t, store, synthOpts{chunkPages: 4, seed: 2, keep: true})
		p := s.publisher(nil)
		var boundaries []uint64
		for round := range 12 {
			for range 1 + s.rng.IntN(4) {
				s.randomTxn(40)
			}
			txid := publishNow(t, p)
			if txid != s.txid {
				t.Fatalf("round %d: published %d, spool at %d", round, txid, s.txid)
			}
			boundaries = append(boundaries, txid)
			if st := s.spool.Status(); st.FirstTxid != txid+1 {
				t.Fatalf("spool not truncated to the published txid: holds from %d, published %d", st.FirstTxid, txid)
			}
		}
		checkJobsFinished(t, s.cat, p, s.cfg.StagingDir)
		checkReferencedObjects(t, store, s.cat)
		ps := int(s.pageSize)
		for _, b := range boundaries {
			got, res := restoreBytes(t, store, s.cat, b)
			if res.Txid != b || res.Rounded {
				t.Fatalf("restore %d: boundary %d rounded %v", b, res.Txid, res.Rounded)
			}
			sameBytes(t, "boundary", got, s.byTxid[b], ps)
		}
		// Between boundaries: rounds down.
		for i := 1; i < len(boundaries); i++ {
			if boundaries[i]-boundaries[i-1] < 2 {
				continue
			}
			mid := boundaries[i-1] + 1
			got, res := restoreBytes(t, store, s.cat, mid)
			if res.Txid != boundaries[i-1] || !res.Rounded || res.Requested != mid {
				t.Fatalf("restore %d: %+v", mid, res)
			}
			sameBytes(t, "rounded", got, s.byTxid[boundaries[i-1]], ps)
		}
		// Newest, from a catalog built from the store alone.
		path := t.TempDir() + "/cold.db"
		res, err := Restore(context.Background(), RestoreOptions{Store: store, Layout: testLayout, Path: path})
		must(t, err)
		got, _ := os.ReadFile(path)
		if res.Txid != s.txid {
			t.Fatalf("cold restore at %d, want %d", res.Txid, s.txid)
		}
		sameBytes(t, "cold", got, s.model, ps)
	})
}

// A publish after the database shrank holds no page above the new size,
// and the restore is exactly the smaller file.
func TestShrinkExcludesPages(t *testing.T) {
	s := newSynth(t, fsStore(t), synthOpts{chunkPages: 4, seed: 3})
	p := s.publisher(nil)
	var all []uint32
	for pg := uint32(1); pg <= 20; pg++ {
		all = append(all, pg)
	}
	s.commit(20, all, false)
	publishNow(t, p)
	s.commit(20, []uint32{15, 18}, false) // versions that the shrink cuts
	s.commit(7, []uint32{2, 6}, false)
	publishNow(t, p)
	tip := s.cat.Tip()
	if tip.DBPages != 7 {
		t.Fatalf("catalog size %d", tip.DBPages)
	}
	rows, err := s.cat.Publishes(tip.LastSeq, 1)
	must(t, err)
	job, err := s.cat.GetJob(rows[0].Job)
	must(t, err)
	pl, err := DecodePlan(job.Plan)
	must(t, err)
	for _, a := range pl.Actions {
		if a.Last > 7 {
			t.Fatalf("action %+v holds pages above the database size 7", a)
		}
	}
	got, res := restoreBytes(t, s.store, s.cat, 0)
	if res.DBPages != 7 {
		t.Fatalf("restored %d pages", res.DBPages)
	}
	sameBytes(t, "shrunk", got, s.model, int(s.pageSize))
	// Growing again: the pages above 7 are new versions, never the old
	// ones that the shrink cut.
	s.commit(12, []uint32{8, 9, 10, 11, 12}, false)
	publishNow(t, p)
	got, _ = restoreBytes(t, s.store, s.cat, 0)
	sameBytes(t, "regrown", got, s.model, int(s.pageSize))
}

// A range that shrinks the database and grows it again inside one publish
// without writing some pages: they restore as zeros, not as the versions
// published before the shrink.
func TestShrinkAndRegrowInsideOnePublish(t *testing.T) {
	s := newSynth(t, fsStore(t), synthOpts{chunkPages: 4, seed: 4})
	p := s.publisher(nil)
	var all []uint32
	for pg := uint32(1); pg <= 16; pg++ {
		all = append(all, pg)
	}
	s.commit(16, all, false)
	publishNow(t, p)
	s.commit(5, nil, false)
	s.commit(16, []uint32{6, 9, 16}, false) // 7, 8, 10..15 never rewritten: zeros
	publishNow(t, p)
	got, _ := restoreBytes(t, s.store, s.cat, 0)
	sameBytes(t, "regrown", got, s.model, int(s.pageSize))
	ps := int(s.pageSize)
	if !bytes.Equal(got[6*ps:8*ps], make([]byte, 2*ps)) {
		t.Fatal("pages 7 and 8 are not zeros")
	}
}

// Many deltas for one chunk: every publish creates its own object with
// its own id and key (seed finding 3: deltas reused the base's key and
// overwrote each other), and every boundary still restores.
func TestManyDeltasOneChunk(t *testing.T) {
	s := newSynth(t, fsStore(t), synthOpts{chunkPages: 16, seed: 5, keep: true})
	p := s.publisher(nil)
	s.commit(12, []uint32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, false)
	var boundaries []uint64
	boundaries = append(boundaries, publishNow(t, p))
	for range 40 {
		s.commit(12, []uint32{1 + uint32(s.rng.IntN(12)), 1 + uint32(s.rng.IntN(12))}, false)
		boundaries = append(boundaries, publishNow(t, p))
	}
	states, err := s.cat.Chunks()
	must(t, err)
	if len(states) != 1 || states[0].Chunk != 0 || len(states[0].Deltas) < 41 {
		t.Fatalf("chunk states: %+v", states)
	}
	keys := map[string]bool{}
	ids := map[uint64]bool{}
	for _, o := range states[0].Deltas {
		if keys[o.Key] || ids[o.ID] {
			t.Fatalf("object %d key %s used twice", o.ID, o.Key)
		}
		keys[o.Key], ids[o.ID] = true, true
		if !strings.Contains(o.Key, "/obj/delta-") {
			t.Fatalf("delta key %s", o.Key)
		}
	}
	checkReferencedObjects(t, s.store, s.cat)
	for _, b := range boundaries {
		got, _ := restoreBytes(t, s.store, s.cat, b)
		sameBytes(t, "boundary", got, s.byTxid[b], int(s.pageSize))
	}
}

// Pages in chunks other than 0 resolve to objects covering their chunk
// (seed findings 5 and 6: everything resolved to chunk 0, offsets from
// absolute page numbers) and restore correctly, for deltas and for the
// bases of an adopted database.
func TestMultiChunkResolve(t *testing.T) {
	s := newSynth(t, fsStore(t), synthOpts{chunkPages: 4, seed: 6})
	p := s.publisher(nil)
	s.commit(23, nil, true) // image: bases for chunks 0..5
	if got := publishNow(t, p); got != 1 {
		t.Fatalf("image published at %d", got)
	}
	snap := s.cat.Snapshot()
	bases := 0
	for pg := uint32(1); pg <= 23; pg++ {
		loc, err := snap.Resolve(pg)
		must(t, err)
		ch := (pg - 1) / 4
		if loc.Kind != manifest.InObject || loc.Object.Kind != manifest.ObjectBase || loc.Object.FirstPgno != ch*4+1 || loc.Frame != pg-1-ch*4 {
			t.Fatalf("page %d: %+v (object %+v)", pg, loc, loc.Object)
		}
		if pg == loc.Object.FirstPgno {
			bases++
		}
	}
	if bases != 6 {
		t.Fatalf("%d base objects, want 6", bases)
	}
	got, _ := restoreBytes(t, s.store, s.cat, 0)
	sameBytes(t, "image", got, s.model, int(s.pageSize))

	s.commit(23, []uint32{6, 14, 22}, false)
	publishNow(t, p)
	snap = s.cat.Snapshot()
	for _, pg := range []uint32{6, 14, 22} {
		loc, err := snap.Resolve(pg)
		must(t, err)
		if loc.Object.Kind != manifest.ObjectDelta {
			t.Fatalf("page %d resolves to %+v", pg, loc.Object)
		}
	}
	got, _ = restoreBytes(t, s.store, s.cat, 0)
	sameBytes(t, "delta over bases", got, s.model, int(s.pageSize))
}

// Adoption: an image record is published alone, first, as base objects,
// and the restore is byte-identical to the adopted file; transactions
// after it are published as deltas in a later publish.
func TestAdoptionPublishesImageAlone(t *testing.T) {
	s := newSynth(t, fsStore(t), synthOpts{chunkPages: 8, seed: 7, keep: true})
	p := s.publisher(nil)
	s.commit(30, nil, true)
	image := bytes.Clone(s.model)
	s.commit(31, []uint32{3, 31}, false)
	s.commit(31, []uint32{17}, false)
	publishNow(t, p)
	rows, err := s.cat.Publishes(1, 100)
	must(t, err)
	var pubs []manifest.Publish
	for _, r := range rows {
		if r.Kind == manifest.KindPublish {
			pubs = append(pubs, r)
		}
	}
	if len(pubs) != 2 || pubs[0].Txid != 1 || pubs[1].Txid != 3 {
		t.Fatalf("publishes %+v", pubs)
	}
	got, _ := restoreBytes(t, s.store, s.cat, 1)
	sameBytes(t, "adopted image", got, image, int(s.pageSize))
	got, _ = restoreBytes(t, s.store, s.cat, 3)
	sameBytes(t, "after adoption", got, s.model, int(s.pageSize))
}

// newCountedPublisher is a publisher on an fs store whose requests are
// counted (fault.Store.Stats), past its first publish (takeover, probe).
func newCountedPublisher(t *testing.T, seed uint64) (*fault.Store, *synth, *Publisher) {
	fs := fault.New(fsStore(t), fault.Config{})
	s := newSynth(t, fs, synthOpts{chunkPages: 4, seed: seed})
	p := s.publisher(nil)
	s.commit(10, []uint32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, false)
	publishNow(t, p)
	return fs, s, p
}

// A publish costs at most 3 PUTs (object, log record, head) and no LIST;
// a catalog snapshot, when due, adds its own PUTs.
func TestRequestsPerPublish(t *testing.T) {
	fs, s, p := newCountedPublisher(t, 8)
	for i := range 20 {
		s.randomTxn(30)
		s.randomTxn(30)
		fs.Reset()
		publishNow(t, p)
		st := fs.Stats()
		if st.Put.Requests > 3 || st.List.Requests != 0 || st.Delete.Requests != 0 {
			t.Fatalf("publish %d: %d PUTs, %d LISTs, %d DELETEs, %d GETs, %d HEADs", i, st.Put.Requests, st.List.Requests,
				st.Delete.Requests, st.Get.Requests, st.Head.Requests)
		}
		if st.Put.Requests != 3 {
			t.Fatalf("publish %d: %d PUTs, want object+record+head", i, st.Put.Requests)
		}
		if st.Get.Requests != 0 || st.Head.Requests != 0 {
			t.Fatalf("publish %d: %d GETs, %d HEADs", i, st.Get.Requests, st.Head.Requests)
		}
	}
	// Nothing to publish: no request at all (within the renew interval).
	fs.Reset()
	publishNow(t, p)
	if st := fs.Stats(); st.Total().Requests != 0 {
		t.Fatalf("idle publish made %d requests", st.Total().Requests)
	}
}

// Close publishes what is left and releases with 4 PUTs (object, publish
// record, release record, head): the final publish leaves head to the
// release (Writer.HoldHead). Head then names the release record, marked
// released, so the next writer need not wait for the lease.
func TestCloseWritesHeadOnce(t *testing.T) {
	fs, s, p := newCountedPublisher(t, 12)
	s.randomTxn(30)
	fs.Reset()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	must(t, p.Close(ctx))
	s.pub = nil
	if st := fs.Stats(); st.Put.Requests != 4 || st.List.Requests != 0 || st.Delete.Requests != 0 {
		t.Fatalf("close: %d PUTs (want object, record, release record, head), %d LISTs, %d DELETEs",
			st.Put.Requests, st.List.Requests, st.Delete.Requests)
	}
	tip := s.cat.Tip()
	head, _, err := manifest.GetHead(ctx, fs, testLayout)
	must(t, err)
	if head.Seq != tip.Seq || head.Txid != tip.Txid || !head.Released {
		t.Fatalf("head after close: seq %d txid %d released %v; catalog tip seq %d txid %d", head.Seq, head.Txid, head.Released, tip.Seq, tip.Txid)
	}
	if rows, err := s.cat.Publishes(tip.Seq-1, 2); err != nil || len(rows) != 2 || rows[0].Kind != manifest.KindPublish || rows[1].Kind != manifest.KindRelease {
		t.Fatalf("the last two records: %+v, %v; want a publish, then the release", rows, err)
	}
}

// A lease held by someone else over the job's range fails the job loudly,
// naming the holder (seed finding 4: lease errors were dropped); nothing
// is published and the spool is not truncated. Once the lease goes, the
// next publish succeeds.
func TestLeaseConflictNamesHolder(t *testing.T) {
	s := newSynth(t, fsStore(t), synthOpts{chunkPages: 4, seed: 9})
	p := s.publisher(nil)
	s.commit(6, []uint32{1, 2, 3, 4, 5, 6}, false)
	s.commit(6, []uint32{2}, false)
	id, err := s.cat.RegisterLease(manifest.Lease{Holder: "compactor-7", Kind: LeaseKind, MinTxid: 2, MaxTxid: 9})
	must(t, err)
	_, err = p.PublishNow(context.Background())
	if err == nil || !errors.Is(err, manifest.ErrLeaseConflict) || !strings.Contains(err.Error(), "compactor-7") {
		t.Fatalf("publish under a conflicting lease: %v", err)
	}
	if st := p.Status(); st.PublishedTxid != 0 || st.LastError == nil {
		t.Fatalf("status %+v", st)
	}
	if tip := s.cat.Tip(); tip.Txid != 0 {
		t.Fatalf("published to %d", tip.Txid)
	}
	if st := s.spool.Status(); st.FirstTxid != 1 {
		t.Fatalf("spool truncated to %d", st.FirstTxid-1)
	}
	// The job was abandoned, saying why.
	jobs, err := s.cat.UnfinishedJobs()
	must(t, err)
	if len(jobs) != 0 {
		t.Fatalf("unfinished jobs: %+v", jobs)
	}
	must(t, s.cat.ReleaseLease(id))
	if got := publishNow(t, p); got != 2 {
		t.Fatalf("published %d", got)
	}
	checkJobsFinished(t, s.cat, p, s.cfg.StagingDir)
}

// Staging space comes from a quota (global -> tenant -> job). A request
// that can never fit fails at once and clearly; one that does not fit now
// waits, then fails for now (the job resumes later). Commits continue
// locally meanwhile, and publishing catches up once there is room.
func TestQuotaExhausted(t *testing.T) {
	s := newSynth(t, fsStore(t), synthOpts{chunkPages: 4, seed: 10})
	pool := newQuota(t, 1<<20)
	tenant, err := pool.NewTenant("default", 0)
	must(t, err)
	p := s.publisher(func(c *Config) { c.Quota = tenant; c.QuotaWait = 100e6 })
	// 300 pages of 4 KiB: more than the 1 MiB pool can ever hold.
	var big []uint32
	for pg := uint32(1); pg <= 300; pg++ {
		big = append(big, pg)
	}
	s.commit(300, big, false)
	_, err = p.PublishNow(context.Background())
	if err == nil || !strings.Contains(err.Error(), "exhausted") || !strings.Contains(err.Error(), "staging") {
		t.Fatalf("publish over the quota: %v", err)
	}
	// Commits go on.
	for range 5 {
		s.commit(300, []uint32{7}, false)
	}
	if st := p.Status(); st.SpoolTxid != 6 || st.PublishedTxid != 0 || st.LagTxns != 6 {
		t.Fatalf("status %+v", st)
	}
	// Room now, but another job holds it: the publish waits, then fails
	// for now, leaving its job to resume.
	pool.SetLimit(4 << 20)
	other, err := tenant.NewJob("other", 0)
	must(t, err)
	held, err := other.Reserve(4 << 20)
	must(t, err)
	_, err = p.PublishNow(context.Background())
	if err == nil || !strings.Contains(err.Error(), "waited") {
		t.Fatalf("publish while the quota is held: %v", err)
	}
	held.Close()
	if got := publishNow(t, p); got != 6 {
		t.Fatalf("published %d", got)
	}
	checkJobsFinished(t, s.cat, p, s.cfg.StagingDir)
	if tenant.Used() != 0 {
		t.Fatalf("tenant holds %d bytes", tenant.Used())
	}
	got, _ := restoreBytes(t, s.store, s.cat, 0)
	sameBytes(t, "after quota", got, s.model, int(s.pageSize))
}
