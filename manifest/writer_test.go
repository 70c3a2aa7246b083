package manifest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bopstore/bop/delta"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fault"
)

// OpenRemote on an empty folder reproduces the writer's catalog exactly:
// every table derived from the log, and the page map (newest and older
// boundaries), with a snapshot in the middle of the history and records
// after it.
func TestOpenRemoteReproducesCatalog(t *testing.T) {
	stores(t, func(t *testing.T, store remote.Store) {
		ctx := context.Background()
		n := newNode(t, store, "writer-a", 4, WriterOptions{SnapshotEvery: 5})
		if _, err := n.w.Takeover(ctx, false); err != nil {
			t.Fatal(err)
		}
		rng := mrand.New(mrand.NewPCG(7, 7))
		snapshots := 0
		for i := range 13 {
			if err := n.w.Publish(ctx, n.randomPublish(rng, 40)); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
			did, err := n.w.MaybeSnapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if did {
				snapshots++
			}
		}
		if snapshots < 2 {
			t.Fatalf("%d snapshots in 13 publishes with SnapshotEvery 5", snapshots)
		}
		head, _, err := GetHead(ctx, store, testLayout)
		if err != nil {
			t.Fatal(err)
		}
		if head.Snapshot == nil || head.Snapshot.Seq >= n.cat.Tip().Seq {
			t.Fatalf("head %+v: want a snapshot before the tip %d", head.Snapshot, n.cat.Tip().Seq)
		}
		path := filepath.Join(t.TempDir(), "replica.db")
		// Count the GETs of a cold open: head, snapshot, the log after it,
		// and directories of deltas after the snapshot only.
		meter := fault.New(store, fault.Config{})
		rep, err := OpenRemote(ctx, meter, testLayout, path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer rep.Close()
		if got, want := dumpState(t, rep), dumpState(t, n.cat); got != want {
			t.Fatalf("OpenRemote state differs:\n--- replica\n%s\n--- writer\n%s", got, want)
		}
		sameMaps(t, "newest", rep.Snapshot(), n.cat.Snapshot(), 50)
		for txid := uint64(0); txid <= n.cat.Tip().Txid; txid++ {
			a, err := rep.SnapshotAt(txid)
			if err != nil {
				t.Fatal(err)
			}
			b, err := n.cat.SnapshotAt(txid)
			if err != nil {
				t.Fatal(err)
			}
			sameMaps(t, "at txid", a, b, 50)
		}
		after := n.cat.Tip().Seq - head.Snapshot.Seq
		if lists := meter.Stats().Op(fault.OpList).Requests; lists != 0 {
			t.Fatalf("OpenRemote listed %d times", lists)
		}
		// head + snapshot + records after it + the 404 + at most two
		// ranged reads per object published after the snapshot.
		if gets := meter.Stats().Op(fault.OpGet).Requests; gets > int64(3+after+4*after) {
			t.Fatalf("OpenRemote made %d GETs for %d records after the snapshot", gets, after)
		}

		// A follower keeps up with Refresh.
		for range 3 {
			if err := n.w.Publish(ctx, n.randomPublish(rng, 40)); err != nil {
				t.Fatal(err)
			}
		}
		if k, err := rep.Refresh(ctx, store); err != nil || k != 3 {
			t.Fatalf("Refresh applied %d: %v", k, err)
		}
		if got, want := dumpState(t, rep), dumpState(t, n.cat); got != want {
			t.Fatalf("state after Refresh differs:\n--- replica\n%s\n--- writer\n%s", got, want)
		}
		sameMaps(t, "after refresh", rep.Snapshot(), n.cat.Snapshot(), 50)
	})
}

// A writer whose log PUT landed but whose response was lost retries, gets
// 412, reads the record back, finds its own bytes: success.
func TestLostResponseIsOwnSuccess(t *testing.T) {
	ctx := context.Background()
	fs := fsStore(t)
	st := fault.New(fs, fault.Config{})
	n := newNode(t, st, "writer-a", 4, WriterOptions{})
	if _, err := n.w.Takeover(ctx, false); err != nil {
		t.Fatal(err)
	}
	rng := mrand.New(mrand.NewPCG(1, 2))
	rec := n.randomPublish(rng, 20)
	seq := n.cat.Tip().Seq + 1
	key := testLayout.Log(seq)
	if err := st.Inject(fault.Fault{Kind: fault.LoseResponse, Op: fault.OpPut, Prefix: key}); err != nil {
		t.Fatal(err)
	}
	st.Reset()
	if err := n.w.Publish(ctx, rec); err != nil {
		t.Fatalf("publish with a lost response: %v", err)
	}
	stats := st.Stats().Op(fault.OpPut)
	if stats.Requests < 2 {
		t.Fatalf("%d puts: the lost response was not retried", stats.Requests)
	}
	if tip := n.cat.Tip(); tip.Seq != seq || tip.Txid != rec.Txid {
		t.Fatalf("tip %+v after publish of seq %d", tip, seq)
	}
	// The writer is not fenced and continues.
	if err := n.w.Publish(ctx, n.randomPublish(rng, 20)); err != nil {
		t.Fatal(err)
	}
	// And the record really is in the store once.
	got, _, err := getRecord(ctx, fs, testLayout, seq)
	if err != nil || got.Writer != "writer-a" || got.Txid != rec.Txid {
		t.Fatalf("record %d: %+v %v", seq, got, err)
	}

	// A lost response on the head bump of a takeover is resolved too.
	if err := st.Inject(fault.Fault{Kind: fault.LoseResponse, Op: fault.OpPut, Prefix: testLayout.Head()}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.w.Takeover(ctx, false); err != nil {
		t.Fatalf("takeover with a lost head response: %v", err)
	}
	if err := n.w.Publish(ctx, n.randomPublish(rng, 20)); err != nil {
		t.Fatal(err)
	}
}

// An unknown outcome that cannot be read back is settled before the next
// record: the writer never skips or duplicates a seq.
func TestPendingRecordSettled(t *testing.T) {
	ctx := context.Background()
	st := fault.New(fsStore(t), fault.Config{})
	n := newNode(t, st, "writer-a", 4, WriterOptions{})
	if _, err := n.w.Takeover(ctx, false); err != nil {
		t.Fatal(err)
	}
	rng := mrand.New(mrand.NewPCG(3, 4))
	rec := n.randomPublish(rng, 20)
	seq := n.cat.Tip().Seq + 1
	key := testLayout.Log(seq)
	// The put lands but every answer is lost, and the read-back fails.
	st.Inject(fault.Fault{Kind: fault.LoseResponse, Op: fault.OpPut, Prefix: key, Sticky: true})
	st.Inject(fault.Fault{Kind: fault.Fail, Op: fault.OpGet, Prefix: key})
	err := n.w.Publish(ctx, rec)
	if err == nil || !strings.Contains(err.Error(), "outcome unknown") {
		t.Fatalf("publish: %v, want outcome unknown", err)
	}
	if n.cat.Tip().Seq != seq-1 {
		t.Fatalf("catalog applied an unsettled record")
	}
	st.ClearFaults()
	// The next publish settles seq first (it landed), then goes to seq+1.
	next := n.randomPublish(rng, 20)
	next.Txid = rec.Txid + 1
	if err := n.w.Publish(ctx, next); err != nil {
		t.Fatal(err)
	}
	if tip := n.cat.Tip(); tip.Seq != seq+1 {
		t.Fatalf("tip %d, want %d", tip.Seq, seq+1)
	}
}

// A store that ignores conditional writes is refused by the probe, and so
// by Takeover.
func TestProbeRefusesStoreIgnoringConditions(t *testing.T) {
	ctx := context.Background()
	st := fault.New(fsStore(t), fault.Config{IgnoreConditions: true})
	n := newNode(t, st, "writer-a", 4, WriterOptions{})
	if err := n.w.Probe(ctx); !errors.Is(err, ErrUnsafeStore) {
		t.Fatalf("probe: %v, want ErrUnsafeStore", err)
	}
	if _, err := n.w.Takeover(ctx, true); !errors.Is(err, ErrUnsafeStore) {
		t.Fatalf("takeover: %v, want ErrUnsafeStore", err)
	}
	if _, _, err := GetHead(ctx, st, testLayout); !errors.Is(err, remote.ErrNotFound) {
		t.Fatalf("head after a refused takeover: %v", err)
	}
	st.SetIgnoreConditions(false)
	if err := n.w.Probe(ctx); err != nil {
		t.Fatalf("probe of the honest store: %v", err)
	}
}

// opLog records the order of head puts and deletes on a store.
type opLog struct {
	remote.Store
	mu  sync.Mutex
	ops []string
}

func (s *opLog) Put(ctx context.Context, key string, r io.Reader, opts remote.PutOptions) (remote.PutResult, error) {
	res, err := s.Store.Put(ctx, key, r, opts)
	if err == nil && key == testLayout.Head() {
		s.mu.Lock()
		s.ops = append(s.ops, "head")
		s.mu.Unlock()
	}
	return res, err
}

func (s *opLog) Delete(ctx context.Context, key string) error {
	s.mu.Lock()
	s.ops = append(s.ops, "delete "+key)
	s.mu.Unlock()
	return s.Store.Delete(ctx, key)
}

// The store probe deletes nothing in a database that has no head yet (a
// delete that empties a folder makes versitygw remove the database's own
// folder, which lost a head being created in it for good: the
// TestFencingRace/s3 flake); the writer deletes what it left once head
// exists, so nothing stays in probe/.
func TestProbeDeletesAfterHead(t *testing.T) {
	ctx := context.Background()
	base := fsStore(t)
	st := &opLog{Store: base}
	left, err := ProbeStore(ctx, st, testLayout)
	if err != nil || len(left) != 1 || len(st.ops) != 0 {
		t.Fatalf("probe of a new database: leftovers %v, ops %v, err %v; want one leftover and no delete", left, st.ops, err)
	}
	if _, _, err := st.Get(ctx, left[0], 0, -1); err != nil {
		t.Fatalf("the leftover %s is not there: %v", left[0], err)
	}
	n := newNode(t, st, "writer-a", 4, WriterOptions{StoreProbed: true, ProbeLeftovers: left})
	if _, err := n.w.Takeover(ctx, false); err != nil {
		t.Fatal(err)
	}
	if want := []string{"head", "delete " + left[0]}; !slices.Equal(st.ops, want) {
		t.Fatalf("ops %q, want %q", st.ops, want)
	}
	var keys []string
	if err := base.List(ctx, testLayout.Root()+"probe/", func(oi remote.ObjectInfo) error { keys = append(keys, oi.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 0 {
		t.Fatalf("probe objects left: %v", keys)
	}

	// With head there, the probe deletes its object at once.
	st.ops = nil
	left, err = ProbeStore(ctx, st, testLayout)
	if err != nil || len(left) != 0 || len(st.ops) != 1 || !strings.HasPrefix(st.ops[0], "delete ") {
		t.Fatalf("probe of a database with head: leftovers %v, ops %v, err %v", left, st.ops, err)
	}

	// A writer that probes itself does the same (Writer.Probe, then
	// Takeover) in a new database.
	other := remote.Layout{Tenant: "default", DB: "other"}
	cat, err := Open(filepath.Join(t.TempDir(), "other.db"), Options{Layout: other})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	w, err := NewWriter(st, other, cat, "writer-b", WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st.ops = nil
	if _, err := w.Takeover(ctx, false); err != nil {
		t.Fatal(err)
	}
	keys = nil
	if err := base.List(ctx, other.Root()+"probe/", func(oi remote.ObjectInfo) error { keys = append(keys, oi.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 0 || len(st.ops) == 0 || !strings.HasPrefix(st.ops[len(st.ops)-1], "delete "+other.Root()+"probe/") {
		t.Fatalf("probe objects left %v, ops %q: want the probe deleted last", keys, st.ops)
	}
}

// Ownership: a live writer's database is ErrOwnedElsewhere to a
// non-forced taker; a forced takeover fences the old writer; a release
// hands off without waiting for the lease.
func TestOwnershipAndRelease(t *testing.T) {
	ctx := context.Background()
	store := fsStore(t)
	now := time.Unix(1700000000, 0)
	clock := func() time.Time { return now }
	a := newNode(t, store, "writer-a", 4, WriterOptions{LeaseTTL: time.Minute, Now: clock})
	b := newNode(t, store, "writer-b", 4, WriterOptions{LeaseTTL: time.Minute, Now: clock})
	rng := mrand.New(mrand.NewPCG(5, 6))
	if _, err := a.w.Takeover(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := a.w.Publish(ctx, a.randomPublish(rng, 20)); err != nil {
		t.Fatal(err)
	}
	_, err := b.w.Takeover(ctx, false)
	if !errors.Is(err, ErrOwnedElsewhere) || !strings.Contains(err.Error(), "writer-a") {
		t.Fatalf("takeover of a live database: %v, want ErrOwnedElsewhere naming writer-a", err)
	}
	// Renewals keep it owned; silence past the TTL frees it.
	now = now.Add(50 * time.Second)
	if err := a.w.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	now = now.Add(50 * time.Second)
	if _, err := b.w.Takeover(ctx, false); !errors.Is(err, ErrOwnedElsewhere) {
		t.Fatalf("takeover after a renewal: %v", err)
	}
	now = now.Add(2 * time.Minute)
	info, err := b.w.Takeover(ctx, false)
	if err != nil {
		t.Fatalf("takeover after the lease expired: %v", err)
	}
	if info.Txid != a.cat.Tip().Txid || info.DBPages != a.cat.Tip().DBPages {
		t.Fatalf("T_seed %+v does not continue from the last record %+v", info, a.cat.Tip())
	}
	if info.Foreign != 2 {
		t.Fatalf("takeover found %d foreign records, want 2 (a's takeover and publish)", info.Foreign)
	}
	if err := a.w.CheckStillWriter(ctx); !errors.Is(err, ErrFenced) {
		t.Fatalf("CheckStillWriter of the taken-over writer: %v", err)
	}
	if err := b.w.CheckStillWriter(ctx); err != nil {
		t.Fatalf("CheckStillWriter of the new writer: %v", err)
	}
	// a is fenced: its next publish writes nothing and says so.
	before := b.cat.Tip()
	if err := a.w.Publish(ctx, a.randomPublish(rng, 20)); !errors.Is(err, ErrFenced) {
		t.Fatalf("publish by the old writer: %v, want ErrFenced", err)
	}
	if err := a.w.Renew(ctx); !errors.Is(err, ErrFenced) {
		t.Fatalf("renew by the old writer: %v, want ErrFenced", err)
	}
	if _, err := b.cat.Refresh(ctx, store); err != nil {
		t.Fatal(err)
	}
	if b.cat.Tip() != before {
		t.Fatalf("the fenced writer's publish reached the log")
	}
	// b publishes, then releases: a may take over at once, no TTL wait.
	if err := b.w.Publish(ctx, b.randomPublish(rng, 20)); err != nil {
		t.Fatal(err)
	}
	if err := b.w.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.w.Publish(ctx, b.randomPublish(rng, 20)); !errors.Is(err, ErrNotWriter) {
		t.Fatalf("publish after release: %v", err)
	}
	if _, err := a.w.Takeover(ctx, false); err != nil {
		t.Fatalf("takeover after a release: %v", err)
	}
	if err := a.w.Publish(ctx, a.randomPublish(rng, 20)); err != nil {
		t.Fatal(err)
	}
	rows, _ := a.cat.Publishes(1, 100)
	kinds := ""
	for _, r := range rows {
		kinds += r.Kind[:1]
	}
	if kinds != "tptprtp" {
		t.Fatalf("record kinds %q", kinds)
	}
}

// A publish whose boundary goes backwards (or stays with new objects) is
// refused before anything is written, locally or remotely.
func TestPublishBoundaryBackwards(t *testing.T) {
	ctx := context.Background()
	store := fsStore(t)
	n := newNode(t, store, "writer-a", 4, WriterOptions{})
	if _, err := n.w.Takeover(ctx, false); err != nil {
		t.Fatal(err)
	}
	rng := mrand.New(mrand.NewPCG(8, 9))
	if err := n.w.Publish(ctx, n.randomPublish(rng, 20)); err != nil {
		t.Fatal(err)
	}
	tip := n.cat.Tip()
	state := dumpState(t, n.cat)
	for _, c := range []struct {
		name string
		edit func(r *Record)
	}{
		{"backwards", func(r *Record) { r.Txid = tip.Txid - 1; r.Added[0].MaxTxid = r.Txid; r.Added[0].MinTxid = r.Txid }},
		{"equal with objects", func(r *Record) { r.Txid = tip.Txid }},
		{"object newer than the boundary", func(r *Record) { r.Added[0].MaxTxid = r.Txid + 1 }},
		{"retire a dead reference", func(r *Record) { r.Retired = []ObjectRetired{{ID: 999, Chunks: []uint32{0}}} }},
	} {
		rec := n.randomPublish(rng, 20)
		c.edit(rec)
		err := n.w.Publish(ctx, rec)
		if !errors.Is(err, ErrBadRecord) {
			t.Fatalf("%s: %v, want ErrBadRecord", c.name, err)
		}
		if _, _, err := getRecord(ctx, store, testLayout, tip.Seq+1); !errors.Is(err, remote.ErrNotFound) {
			t.Fatalf("%s: log/%d exists after a refused publish: %v", c.name, tip.Seq+1, err)
		}
		if n.cat.Tip() != tip || dumpState(t, n.cat) != state {
			t.Fatalf("%s: the catalog changed", c.name)
		}
	}
	// The writer is still fine.
	if err := n.w.Publish(ctx, n.randomPublish(rng, 20)); err != nil {
		t.Fatal(err)
	}
}

// Corrupted or truncated remote objects give ErrCorrupt naming the key.
func TestCorruptRemoteObjects(t *testing.T) {
	ctx := context.Background()
	store := fsStore(t)
	n := newNode(t, store, "writer-a", 4, WriterOptions{})
	if _, err := n.w.Takeover(ctx, false); err != nil {
		t.Fatal(err)
	}
	rng := mrand.New(mrand.NewPCG(10, 11))
	for range 3 {
		if err := n.w.Publish(ctx, n.randomPublish(rng, 20)); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.w.UploadSnapshot(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.w.Publish(ctx, n.randomPublish(rng, 20)); err != nil {
		t.Fatal(err)
	}
	if err := PutPin(ctx, store, testLayout, Pin{ID: "replica-1", Boundary: 2, Owner: "node-2"}); err != nil {
		t.Fatal(err)
	}
	head, _, err := GetHead(ctx, store, testLayout)
	if err != nil {
		t.Fatal(err)
	}
	pinKey, _ := testLayout.Pin("replica-1")
	lastLog := testLayout.Log(n.cat.Tip().Seq)
	read := func(key string) []byte { return readObject(t, store, key) }
	write := func(key string, data []byte) { writeObject(t, store, key, data) }
	damages := map[string]func([]byte) []byte{
		"bit flip": func(b []byte) []byte {
			b = bytes.Clone(b)
			b[len(b)*2/3] ^= 0x04
			return b
		},
		"truncated": func(b []byte) []byte { return b[:len(b)/2] },
	}
	checks := []struct {
		key   string
		check func() error
	}{
		{lastLog, func() error {
			_, err := OpenRemote(ctx, store, testLayout, filepath.Join(t.TempDir(), "c.db"), Options{})
			return err
		}},
		{testLayout.Head(), func() error { _, _, err := GetHead(ctx, store, testLayout); return err }},
		{testLayout.Snapshot(head.Snapshot.Seq), func() error {
			// Not fatal: the catalog is rebuilt from the log, and the
			// damage is reported beside it (TestSnapshotFallback).
			cat, err := OpenRemote(ctx, store, testLayout, filepath.Join(t.TempDir(), "c.db"), Options{})
			if err != nil {
				return fmt.Errorf("rebuild without the snapshot: %v", err) // not ErrCorrupt: fails the check
			}
			defer cat.Close()
			if cat.Tip().Seq != head.Seq {
				return fmt.Errorf("rebuilt to seq %d, head says %d", cat.Tip().Seq, head.Seq)
			}
			if d := cat.SnapshotDamage(); d != nil {
				return d
			}
			return nil
		}},
		{pinKey, func() error { _, err := GetPin(ctx, store, testLayout, "replica-1"); return err }},
		{pinKey, func() error { _, err := ListPins(ctx, store, testLayout); return err }},
	}
	for _, c := range checks {
		orig := read(c.key)
		for name, damage := range damages {
			bad := damage(orig)
			if bytes.Equal(bad, orig) {
				t.Fatalf("%s of %s changed nothing", name, c.key)
			}
			write(c.key, bad)
			err := c.check()
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.key) {
				t.Errorf("%s of %s: %v, want ErrCorrupt naming the key", name, c.key, err)
			}
		}
		write(c.key, orig)
		if err := c.check(); err != nil {
			t.Fatalf("%s restored: %v", c.key, err)
		}
	}
}

// A record whose epoch is below the nearest takeover before it is void:
// taken as a seq, never applied.
func TestVoidRecord(t *testing.T) {
	ctx := context.Background()
	store := fsStore(t)
	a := newNode(t, store, "writer-a", 4, WriterOptions{})
	if _, err := a.w.Takeover(ctx, false); err != nil {
		t.Fatal(err)
	}
	rng := mrand.New(mrand.NewPCG(12, 13))
	if err := a.w.Publish(ctx, a.randomPublish(rng, 20)); err != nil {
		t.Fatal(err)
	}
	b := newNode(t, store, "writer-b", 4, WriterOptions{})
	if _, err := b.w.Takeover(ctx, true); err != nil {
		t.Fatal(err)
	}
	// A broken store let writer a (epoch 1) write after b's takeover
	// (epoch 2): forge that record directly in the store.
	rec := a.randomPublish(rng, 20)
	tip := b.cat.Tip()
	rec.Format, rec.Seq, rec.Kind, rec.Epoch, rec.Writer = RecordFormat, tip.Seq+1, KindPublish, 1, "writer-a"
	rec.Parent = Parent{Seq: tip.Seq - 1, Txid: tip.Txid}
	rec.PageSize, rec.ChunkPages = tip.PageSize, tip.ChunkPages
	raw, _ := EncodeRecord(rec)
	if _, err := store.Put(ctx, testLayout.Log(rec.Seq), bytes.NewReader(raw), remote.PutOptions{IfNoneMatch: true, Size: int64(len(raw))}); err != nil {
		t.Fatal(err)
	}
	before := b.cat.Snapshot()
	// A reader applies it as void: its seq is taken, its objects are not.
	rep, err := OpenRemote(ctx, store, testLayout, filepath.Join(t.TempDir(), "r.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rep.Close()
	rows, _ := rep.Publishes(rec.Seq, 1)
	if len(rows) != 1 || !rows[0].Void {
		t.Fatalf("record %d: %+v, want void", rec.Seq, rows)
	}
	sameMaps(t, "void", rep.Snapshot(), before, 30)
	if _, err := rep.Object(rec.Added[0].ID); err == nil {
		t.Fatalf("the void record's object is in the catalog")
	}
}

func TestRemotePins(t *testing.T) {
	stores(t, func(t *testing.T, store remote.Store) {
		ctx := context.Background()
		now := time.Now()
		for _, p := range []Pin{
			{ID: "replica-1", Boundary: 10, Owner: "node-1", ExpiresMs: now.Add(time.Hour).UnixMilli()},
			{ID: "fork-x", Boundary: 4, Owner: "node-2", Reason: "fork"},
		} {
			if err := PutPin(ctx, store, testLayout, p); err != nil {
				t.Fatal(err)
			}
		}
		p, err := GetPin(ctx, store, testLayout, "replica-1")
		if err != nil || p.Boundary != 10 || p.Owner != "node-1" || p.Expired(now) || !p.Expired(now.Add(2*time.Hour)) {
			t.Fatalf("pin %+v %v", p, err)
		}
		pins, err := ListPins(ctx, store, testLayout)
		if err != nil || len(pins) != 2 || pins[0].ID != "fork-x" || pins[0].Expired(now.Add(1000*time.Hour)) {
			t.Fatalf("pins %+v %v", pins, err)
		}
		if err := DeletePin(ctx, store, testLayout, "fork-x"); err != nil {
			t.Fatal(err)
		}
		if _, err := GetPin(ctx, store, testLayout, "fork-x"); !errors.Is(err, remote.ErrNotFound) {
			t.Fatalf("deleted pin: %v", err)
		}
		if err := PutPin(ctx, store, testLayout, Pin{ID: "Bad/Id", Owner: "x"}); err == nil {
			t.Fatal("pin with an invalid id accepted")
		}
	})
}

// A follower reads each delta's directory once, with at most two ranged
// GETs of the object's header and directory, never the frames (seed
// review: a delta downloaded twice per lookup, a whole chunk fetched for
// one page).
func TestFollowerReadsDirectoriesOnly(t *testing.T) {
	ctx := context.Background()
	store := fsStore(t)
	n := newNode(t, store, "writer-a", 256, WriterOptions{})
	if _, err := n.w.Takeover(ctx, false); err != nil {
		t.Fatal(err)
	}
	var objBytes int64
	for i := range 3 {
		tip := n.cat.Tip()
		var pgnos []uint32
		for p := uint32(1); p <= 200; p++ {
			pgnos = append(pgnos, p*3+uint32(i))
		}
		o := n.object(ObjectDelta, tip.Txid+1, tip.Txid+1, pgnos)
		objBytes += o.Size
		if err := n.w.Publish(ctx, &Record{Txid: tip.Txid + 1, DBPages: 1000, Added: []ObjectAdded{o}}); err != nil {
			t.Fatal(err)
		}
	}
	meter := fault.New(store, fault.Config{})
	rep, err := OpenRemote(ctx, meter, testLayout, filepath.Join(t.TempDir(), "r.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rep.Close()
	sameMaps(t, "follower", rep.Snapshot(), n.cat.Snapshot(), 1000)
	st := meter.Stats().Op(fault.OpGet)
	// head + 4 log records + the 404 + at most 2 per object.
	if st.Requests > 6+2*3 {
		t.Fatalf("%d GETs", st.Requests)
	}
	if st.BytesOut > objBytes/4 {
		t.Fatalf("read %d bytes for objects of %d bytes in all: frames were fetched", st.BytesOut, objBytes)
	}
}

// The log record is the commit point: if the catalog then fails to apply
// it, the publish reports so, and the next publish first applies it from
// the log (never re-using its seq).
func TestCatalogCatchesUpAfterFailedApply(t *testing.T) {
	ctx := context.Background()
	store := fsStore(t)
	n := newNode(t, store, "writer-a", 4, WriterOptions{})
	if _, err := n.w.Takeover(ctx, false); err != nil {
		t.Fatal(err)
	}
	rng := mrand.New(mrand.NewPCG(21, 22))
	rec := n.randomPublish(rng, 20)
	seq := n.cat.Tip().Seq + 1
	n.cat.applyHook = func(stage string) error {
		if stage == "apply" {
			// Even a cause that reads as a refusal: after the commit
			// point the caller must not think nothing was written.
			return fmt.Errorf("disk full: %w", ErrBadRecord)
		}
		return nil
	}
	err := n.w.Publish(ctx, rec)
	if err == nil || !strings.Contains(err.Error(), "was published but the local catalog did not apply it") {
		t.Fatalf("publish with a failing catalog: %v", err)
	}
	if errors.Is(err, ErrBadRecord) || errors.Is(err, ErrFenced) {
		t.Fatalf("a committed publish reports %v", err)
	}
	n.cat.applyHook = nil
	if got, _, err := getRecord(ctx, store, testLayout, seq); err != nil || got.Txid != rec.Txid {
		t.Fatalf("log/%d: %v", seq, err)
	}
	next := n.randomPublish(rng, 20)
	next.Txid = rec.Txid + 1
	if err := n.w.Publish(ctx, next); err != nil {
		t.Fatal(err)
	}
	if tip := n.cat.Tip(); tip.Seq != seq+1 || tip.Txid != next.Txid {
		t.Fatalf("tip %+v, want seq %d txid %d", tip, seq+1, next.Txid)
	}
}

// OpenRemotePartial stops at the first record that cannot be read or
// applied and reports it, with the catalog holding exactly the records
// before it; OpenRemote fails on the same store.
func TestOpenRemotePartial(t *testing.T) {
	ctx := context.Background()
	store := fsStore(t)
	n := newNode(t, store, "writer-a", 4, WriterOptions{})
	if _, err := n.w.Takeover(ctx, false); err != nil {
		t.Fatal(err)
	}
	rng := mrand.New(mrand.NewPCG(20, 21))
	var recs []*Record
	for i := range 6 {
		rec := n.randomPublish(rng, 20)
		if err := n.w.Publish(ctx, rec); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
		if i == 1 {
			if err := n.w.UploadSnapshot(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	head, _, err := GetHead(ctx, store, testLayout)
	if err != nil {
		t.Fatal(err)
	}
	open := func(t *testing.T) (*Catalog, *Damage) {
		t.Helper()
		cat, dmg, err := OpenRemotePartial(ctx, store, testLayout, filepath.Join(t.TempDir(), "c.db"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cat.Close() })
		return cat, dmg
	}
	t.Run("whole", func(t *testing.T) {
		cat, dmg := open(t)
		if dmg != nil {
			t.Fatalf("damage %v in an intact store", dmg)
		}
		if cat.Tip().Seq != head.Seq {
			t.Fatalf("tip seq %d, head %d", cat.Tip().Seq, head.Seq)
		}
	})

	get := func(key string) []byte { return readObject(t, store, key) }
	put := func(key string, b []byte) { writeObject(t, store, key, b) }
	// The fourth publish (after the snapshot) is damaged in each way.
	bad := recs[3]
	obj := bad.Added[0].Key
	damages := []struct {
		name    string
		key     string
		damage  func()
		wantErr error
	}{
		{"object missing", obj, func() {
			if err := store.Delete(ctx, obj); err != nil {
				t.Fatal(err)
			}
		}, remote.ErrNotFound},
		{"object truncated", obj, func() { put(obj, get(obj)[:40]) }, delta.ErrCorrupt},
		{"record missing", testLayout.Log(bad.Seq), func() {
			if err := store.Delete(ctx, testLayout.Log(bad.Seq)); err != nil {
				t.Fatal(err)
			}
		}, ErrCorrupt},
		{"record bit flip", testLayout.Log(bad.Seq), func() {
			b := get(testLayout.Log(bad.Seq))
			b[len(b)/2] ^= 0x10
			put(testLayout.Log(bad.Seq), b)
		}, ErrCorrupt},
	}
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			orig := get(d.key)
			d.damage()
			defer put(d.key, orig)
			if _, err := OpenRemote(ctx, store, testLayout, filepath.Join(t.TempDir(), "c.db"), Options{}); err == nil {
				t.Fatal("OpenRemote accepted the damaged store")
			}
			cat, dmg := open(t)
			if dmg == nil {
				t.Fatal("no damage reported")
			}
			if dmg.Seq != bad.Seq || !errors.Is(dmg, d.wantErr) {
				t.Fatalf("damage %v (seq %d), want seq %d and %v", dmg, dmg.Seq, bad.Seq, d.wantErr)
			}
			if cat.Tip().Seq != bad.Seq-1 {
				t.Fatalf("tip seq %d, want %d", cat.Tip().Seq, bad.Seq-1)
			}
			want, err := n.cat.SnapshotAt(recs[2].Txid)
			if err != nil {
				t.Fatal(err)
			}
			sameMaps(t, d.name, cat.Snapshot(), want, 30)
		})
	}

	t.Run("record missing past a lagging head", func(t *testing.T) {
		// head may lag the log (a crash after a record, before head):
		// the end of the log is not the first missing seq.
		headKey := testLayout.Head()
		orig, oldHead := get(headKey), get(headKey)
		old, err := DecodeHead(headKey, oldHead)
		if err != nil {
			t.Fatal(err)
		}
		lagged := *old
		lagged.Seq, lagged.Txid = recs[1].Seq, recs[1].Txid
		raw, err := EncodeHead(&lagged)
		if err != nil {
			t.Fatal(err)
		}
		put(headKey, raw)
		defer put(headKey, orig)
		missing := testLayout.Log(bad.Seq)
		rec := get(missing)
		if err := store.Delete(ctx, missing); err != nil {
			t.Fatal(err)
		}
		defer put(missing, rec)
		if _, err := OpenRemote(ctx, store, testLayout, filepath.Join(t.TempDir(), "c.db"), Options{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), missing) {
			t.Fatalf("OpenRemote: %v, want ErrCorrupt naming %s", err, missing)
		}
		cat, dmg := open(t)
		if dmg == nil || dmg.Seq != bad.Seq || cat.Tip().Seq != bad.Seq-1 {
			t.Fatalf("damage %v, tip %d; want seq %d", dmg, cat.Tip().Seq, bad.Seq)
		}
	})

	t.Run("one-off fault", func(t *testing.T) {
		// A read that fails once (a fault of the transport or a store
		// that answers 404 for a moment) is read again, not reported.
		fs := &failOnce{Store: store, key: obj}
		cat, dmg, err := OpenRemotePartial(ctx, fs, testLayout, filepath.Join(t.TempDir(), "c.db"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer cat.Close()
		if !fs.failed || dmg != nil || cat.Tip().Seq != head.Seq {
			t.Fatalf("failed %v, damage %v, tip %d; want one failure, no damage, tip %d", fs.failed, dmg, cat.Tip().Seq, head.Seq)
		}
	})

	t.Run("stream cut", func(t *testing.T) {
		// A body shorter than the object the store reports is a cut
		// stream, not a short object: an error, never damage.
		cs := cutStream{Store: store, key: obj}
		_, dmg, err := OpenRemotePartial(ctx, cs, testLayout, filepath.Join(t.TempDir(), "c.db"), Options{})
		if err == nil || dmg != nil || errors.Is(err, delta.ErrCorrupt) {
			t.Fatalf("damage %v, err %v; want an error that is not corruption", dmg, err)
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		// Cancelled while reading a record whose body comes back cut
		// short: corrupt as far as the bytes go, but the context ended, so
		// it is no evidence about the store.
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		cs := cancelOnGet{Store: store, key: testLayout.Log(bad.Seq), cancel: cancel}
		_, dmg, err := OpenRemotePartial(cctx, cs, testLayout, filepath.Join(t.TempDir(), "c.db"), Options{})
		if err == nil || dmg != nil {
			t.Fatalf("cancelled open: damage %v, err %v; want an error and no damage", dmg, err)
		}
	})
}

// A snapshot that head names but that is missing or corrupt is only a
// copy of the log: the catalog is rebuilt from the whole log, the same as
// with it, and the damage is reported beside it. If the rebuild needs an
// object the store no longer holds, OpenRemote fails and
// OpenRemotePartial stops there, both saying the snapshot was not used.
func TestSnapshotFallback(t *testing.T) {
	ctx := context.Background()
	store := fsStore(t)
	n := newNode(t, store, "writer-a", 4, WriterOptions{})
	if _, err := n.w.Takeover(ctx, false); err != nil {
		t.Fatal(err)
	}
	rng := mrand.New(mrand.NewPCG(30, 31))
	var recs []*Record
	for i := range 8 {
		rec := n.randomPublish(rng, 20)
		if err := n.w.Publish(ctx, rec); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
		if i == 5 {
			if err := n.w.UploadSnapshot(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	head, _, err := GetHead(ctx, store, testLayout)
	if err != nil {
		t.Fatal(err)
	}
	if head.Snapshot == nil || head.Snapshot.Seq != recs[5].Seq {
		t.Fatalf("head's snapshot %+v, want seq %d", head.Snapshot, recs[5].Seq)
	}
	snap := testLayout.Snapshot(head.Snapshot.Seq)
	get := func(key string) []byte { return readObject(t, store, key) }
	put := func(key string, b []byte) { writeObject(t, store, key, b) }
	orig := get(snap)
	want := n.cat.Snapshot()

	cases := []struct {
		name    string
		damage  func()
		wantErr error
	}{
		{"bit flip", func() {
			b := bytes.Clone(orig)
			b[len(b)/2] ^= 0x20
			put(snap, b)
		}, ErrCorrupt},
		{"truncated", func() { put(snap, orig[:len(orig)/2]) }, ErrCorrupt},
		{"missing", func() {
			if err := store.Delete(ctx, snap); err != nil {
				t.Fatal(err)
			}
		}, remote.ErrNotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.damage()
			defer put(snap, orig)
			cat, err := OpenRemote(ctx, store, testLayout, filepath.Join(t.TempDir(), "c.db"), Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer cat.Close()
			sd := cat.SnapshotDamage()
			if sd == nil || sd.Seq != head.Snapshot.Seq || !errors.Is(sd, c.wantErr) || !strings.Contains(sd.Error(), snap) {
				t.Fatalf("snapshot damage %v, want seq %d, %v naming %s", sd, head.Snapshot.Seq, c.wantErr, snap)
			}
			if cat.Tip().Seq != head.Seq {
				t.Fatalf("tip seq %d, head %d", cat.Tip().Seq, head.Seq)
			}
			sameMaps(t, c.name, cat.Snapshot(), want, 30)
			for _, r := range recs[:6] {
				got, err := cat.SnapshotAt(r.Txid)
				if err != nil {
					t.Fatal(err)
				}
				w, err := n.cat.SnapshotAt(r.Txid)
				if err != nil {
					t.Fatal(err)
				}
				sameMaps(t, fmt.Sprintf("%s at txid %d", c.name, r.Txid), got, w, 30)
			}
			pcat, dmg, err := OpenRemotePartial(ctx, store, testLayout, filepath.Join(t.TempDir(), "c.db"), Options{})
			if err != nil || dmg != nil || pcat.SnapshotDamage() == nil {
				t.Fatalf("partial open: err %v, damage %v, snapshot damage %v; want only snapshot damage", err, dmg, pcat.SnapshotDamage())
			}
			pcat.Close()
		})
	}

	t.Run("intact", func(t *testing.T) {
		cat, err := OpenRemote(ctx, store, testLayout, filepath.Join(t.TempDir(), "c.db"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer cat.Close()
		if sd := cat.SnapshotDamage(); sd != nil {
			t.Fatalf("snapshot damage %v in an intact store", sd)
		}
	})

	t.Run("one-off fault", func(t *testing.T) {
		// A snapshot read that fails once is read again, not reported.
		fs := &failOnce{Store: store, key: snap}
		cat, err := OpenRemote(ctx, fs, testLayout, filepath.Join(t.TempDir(), "c.db"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer cat.Close()
		if !fs.failed || cat.SnapshotDamage() != nil {
			t.Fatalf("failed %v, snapshot damage %v; want one failure and none", fs.failed, cat.SnapshotDamage())
		}
	})

	t.Run("object gone", func(t *testing.T) {
		// A record before the snapshot adds an object the store no
		// longer holds (garbage collection deletes what only old
		// boundaries needed): the rebuild cannot pass it.
		put(snap, orig[:len(orig)/2])
		defer put(snap, orig)
		gone := recs[1]
		obj := gone.Added[0].Key
		o := get(obj)
		if err := store.Delete(ctx, obj); err != nil {
			t.Fatal(err)
		}
		defer put(obj, o)
		_, err := OpenRemote(ctx, store, testLayout, filepath.Join(t.TempDir(), "c.db"), Options{})
		if !errors.Is(err, remote.ErrNotFound) || !strings.Contains(err.Error(), snap) {
			t.Fatalf("OpenRemote: %v, want ErrNotFound saying the snapshot %s was not used", err, snap)
		}
		cat, dmg, err := OpenRemotePartial(ctx, store, testLayout, filepath.Join(t.TempDir(), "c.db"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer cat.Close()
		if dmg == nil || dmg.Seq != gone.Seq || !strings.Contains(dmg.Error(), snap) || cat.SnapshotDamage() == nil || cat.Tip().Seq != gone.Seq-1 {
			t.Fatalf("damage %v, snapshot damage %v, tip %d; want seq %d naming %s", dmg, cat.SnapshotDamage(), cat.Tip().Seq, gone.Seq, snap)
		}
	})

	t.Run("log lost past a lagging head", func(t *testing.T) {
		// head's seq lags its snapshot's (publishes with head held): the
		// log must reach the snapshot's seq even when the snapshot is
		// not used, or the catalog would end early without a word and
		// the next takeover would reuse a committed seq.
		store := fsStore(t)
		n := newNode(t, store, "writer-a", 4, WriterOptions{})
		if _, err := n.w.Takeover(ctx, false); err != nil {
			t.Fatal(err)
		}
		n.w.HoldHead(true)
		for range 4 {
			if err := n.w.Publish(ctx, n.randomPublish(rng, 20)); err != nil {
				t.Fatal(err)
			}
		}
		if err := n.w.UploadSnapshot(ctx); err != nil {
			t.Fatal(err)
		}
		head, _, err := GetHead(ctx, store, testLayout)
		if err != nil {
			t.Fatal(err)
		}
		tip := n.cat.Tip().Seq
		if head.Snapshot == nil || head.Snapshot.Seq != tip || head.Seq >= tip {
			t.Fatalf("head seq %d, snapshot %+v, tip %d: want head lagging a snapshot at the tip", head.Seq, head.Snapshot, tip)
		}
		lost := testLayout.Log(tip)
		if err := store.Delete(ctx, lost); err != nil {
			t.Fatal(err)
		}
		if err := store.Delete(ctx, testLayout.Snapshot(tip)); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenRemote(ctx, store, testLayout, filepath.Join(t.TempDir(), "c.db"), Options{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), lost) {
			t.Fatalf("OpenRemote: %v, want ErrCorrupt naming %s", err, lost)
		}
		cat, dmg, err := OpenRemotePartial(ctx, store, testLayout, filepath.Join(t.TempDir(), "c.db"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer cat.Close()
		if dmg == nil || dmg.Seq != tip || cat.Tip().Seq != tip-1 {
			t.Fatalf("damage %v, tip %d; want damage at seq %d", dmg, cat.Tip().Seq, tip)
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		put(snap, orig[:len(orig)/2])
		defer put(snap, orig)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, _, err := OpenRemotePartial(cctx, store, testLayout, filepath.Join(t.TempDir(), "c.db"), Options{}); err == nil {
			t.Fatal("a cancelled open succeeded")
		}
	})
}

// cancelOnGet cancels a context when key is read and returns the first
// half of its body, as a stream cut by the cancellation would.
type cancelOnGet struct {
	remote.Store
	key    string
	cancel func()
}

func (s cancelOnGet) Get(ctx context.Context, key string, off, length int64) (io.ReadCloser, remote.ObjectInfo, error) {
	if key != s.key {
		return s.Store.Get(ctx, key, off, length)
	}
	rc, info, err := s.Store.Get(ctx, key, off, length)
	if err != nil {
		return nil, info, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	s.cancel()
	return io.NopCloser(bytes.NewReader(b[:len(b)/2])), info, err
}

// failOnce answers the first Get of key with ErrNotFound.
type failOnce struct {
	remote.Store
	key    string
	failed bool
}

func (s *failOnce) Get(ctx context.Context, key string, off, length int64) (io.ReadCloser, remote.ObjectInfo, error) {
	if key == s.key && !s.failed {
		s.failed = true
		return nil, remote.ObjectInfo{}, fmt.Errorf("get %s: %w", key, remote.ErrNotFound)
	}
	return s.Store.Get(ctx, key, off, length)
}

// cutStream returns half of every body of key, and io.ErrUnexpectedEOF,
// as a dropped connection does.
type cutStream struct {
	remote.Store
	key string
}

func (s cutStream) Get(ctx context.Context, key string, off, length int64) (io.ReadCloser, remote.ObjectInfo, error) {
	rc, info, err := s.Store.Get(ctx, key, off, length)
	if err != nil || key != s.key {
		return rc, info, err
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return io.NopCloser(io.MultiReader(bytes.NewReader(b[:len(b)/2]), errReader{io.ErrUnexpectedEOF})), info, nil
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// snapshotLander stores a snapshot but reports the put refused, as the
// client's retry of a put whose response was lost is refused by it.
type snapshotLander struct {
	remote.Store
}

func (s snapshotLander) Put(ctx context.Context, key string, r io.Reader, opts remote.PutOptions) (remote.PutResult, error) {
	res, err := s.Store.Put(ctx, key, r, opts)
	if err == nil && strings.Contains(key, "/manifest/") {
		return remote.PutResult{}, fmt.Errorf("test: put %s (retried): %w", key, remote.ErrPrecondition)
	}
	return res, err
}

// A snapshot put refused because the key exists is taken as landed only
// if the object there is exactly this snapshot; head never vouches for
// other bytes at the key (they would pass every check of a later open).
func TestSnapshotPutRefused(t *testing.T) {
	ctx := context.Background()
	base := fsStore(t)
	n := newNode(t, snapshotLander{base}, "writer-a", 4, WriterOptions{})
	if _, err := n.w.Takeover(ctx, false); err != nil {
		t.Fatal(err)
	}
	rng := mrand.New(mrand.NewPCG(40, 41))
	if err := n.w.Publish(ctx, n.randomPublish(rng, 20)); err != nil {
		t.Fatal(err)
	}
	// Our own put, its response lost: landed.
	if err := n.w.UploadSnapshot(ctx); err != nil {
		t.Fatalf("snapshot whose put landed but was reported refused: %v", err)
	}
	head, _, err := GetHead(ctx, base, testLayout)
	if err != nil || head.Snapshot == nil || head.Snapshot.Seq != n.cat.Tip().Seq {
		t.Fatalf("head %+v, err %v: want the landed snapshot named", head, err)
	}
	cat, err := OpenRemote(ctx, base, testLayout, filepath.Join(t.TempDir(), "c.db"), Options{})
	if err != nil || cat.SnapshotDamage() != nil {
		t.Fatalf("open with the landed snapshot: %v, damage %v", err, cat.SnapshotDamage())
	}
	cat.Close()

	// Other bytes already at the next snapshot's key: refused, head keeps
	// the snapshot it had.
	if err := n.w.Publish(ctx, n.randomPublish(rng, 20)); err != nil {
		t.Fatal(err)
	}
	next := testLayout.Snapshot(n.cat.Tip().Seq)
	writeObject(t, base, next, []byte("rotten bytes where a snapshot should be"))
	if err := n.w.UploadSnapshot(ctx); err == nil || !strings.Contains(err.Error(), "not this snapshot") {
		t.Fatalf("snapshot over other bytes: %v, want refused", err)
	}
	head2, _, err := GetHead(ctx, base, testLayout)
	if err != nil || head2.Snapshot == nil || *head2.Snapshot != *head.Snapshot {
		t.Fatalf("head's snapshot %+v after a refused snapshot, want %+v", head2.Snapshot, head.Snapshot)
	}
}

// Two snapshots of one seq are the same bytes whatever local changes the
// catalog logged between them (snapshotLocked's comparison relies on it).
func TestSnapshotBytesStable(t *testing.T) {
	ctx := context.Background()
	n := newNode(t, fsStore(t), "writer-a", 4, WriterOptions{})
	if _, err := n.w.Takeover(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := n.w.Publish(ctx, n.randomPublish(mrand.New(mrand.NewPCG(50, 51)), 20)); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")
	if _, err := n.cat.writeSnapshot(a); err != nil {
		t.Fatal(err)
	}
	n.cat.mu.Lock()
	err := n.cat.tx(func() error { return n.cat.logChange("test", "a local change between two snapshots") })
	n.cat.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.cat.writeSnapshot(b); err != nil {
		t.Fatal(err)
	}
	ba, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	bb, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ba, bb) {
		t.Fatalf("two snapshots of seq %d differ (%d and %d bytes)", n.cat.Tip().Seq, len(ba), len(bb))
	}
}

// No probe object stays behind: not from a writer that loses the race to
// a new database (its leftovers go once head exists, whatever the
// takeover's outcome), nor from probes of a store refused as unsafe.
func TestProbeLeavesNothing(t *testing.T) {
	ctx := context.Background()
	probes := func(t *testing.T, st remote.Store) []string {
		t.Helper()
		var keys []string
		if err := st.List(ctx, testLayout.Root()+"probe/", func(oi remote.ObjectInfo) error { keys = append(keys, oi.Key); return nil }); err != nil {
			t.Fatal(err)
		}
		return keys
	}
	t.Run("lost race", func(t *testing.T) {
		st := fsStore(t)
		la, err := ProbeStore(ctx, st, testLayout)
		if err != nil {
			t.Fatal(err)
		}
		lb, err := ProbeStore(ctx, st, testLayout)
		if err != nil {
			t.Fatal(err)
		}
		if len(la) != 1 || len(lb) != 1 {
			t.Fatalf("leftovers %v and %v, want one each (no head yet)", la, lb)
		}
		a := newNode(t, st, "writer-a", 4, WriterOptions{StoreProbed: true, ProbeLeftovers: la})
		b := newNode(t, st, "writer-b", 4, WriterOptions{StoreProbed: true, ProbeLeftovers: lb})
		if _, err := a.w.Takeover(ctx, false); err != nil {
			t.Fatal(err)
		}
		if _, err := b.w.Takeover(ctx, false); !errors.Is(err, ErrOwnedElsewhere) {
			t.Fatalf("second takeover: %v, want ErrOwnedElsewhere", err)
		}
		if keys := probes(t, st); len(keys) != 0 {
			t.Fatalf("probe objects left: %v", keys)
		}
	})
	t.Run("unsafe store", func(t *testing.T) {
		st := fault.New(fsStore(t), fault.Config{IgnoreConditions: true})
		for range 3 {
			left, err := ProbeStore(ctx, st, testLayout)
			if !errors.Is(err, ErrUnsafeStore) || len(left) != 0 {
				t.Fatalf("probe of an unsafe store: leftovers %v, err %v", left, err)
			}
		}
		if keys := probes(t, st); len(keys) != 0 {
			t.Fatalf("probe objects left: %v", keys)
		}
	})
}
