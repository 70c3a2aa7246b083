package manifest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ncruces/go-sqlite3"
)

func TestSchemaTooNew(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	c := openTestCatalog(t, path, 4)
	c.Close()
	conn, err := sqlite3.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Exec(fmt.Sprintf("PRAGMA user_version = %d", SchemaVersion+1)); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	_, err = Open(path, Options{Layout: testLayout})
	if !errors.Is(err, ErrSchemaTooNew) || !strings.Contains(err.Error(), "upgrade bop") {
		t.Fatalf("open of a newer schema: %v, want ErrSchemaTooNew with a clear message", err)
	}
}

func TestNotACatalog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.db")
	conn, err := sqlite3.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	conn.Exec("CREATE TABLE t (x)")
	conn.Close()
	if _, err := Open(path, Options{Layout: testLayout}); err == nil || !strings.Contains(err.Error(), "not a bop catalog") {
		t.Fatalf("open of a foreign database: %v", err)
	}
}

func TestCatalogExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	c := openTestCatalog(t, path, 4)
	defer c.Close()
	if c2, err := Open(path, Options{Layout: testLayout}); err == nil {
		c2.Close()
		t.Fatal("a second open of a catalog in use succeeded")
	}
}

func TestResolveBadPage(t *testing.T) {
	c := newTestCatalog(t, 4)
	mustApply(t, c, nextRecord(c, KindTakeover, 1, "w"))
	r := nextRecord(c, KindPublish, 1, "w")
	r.Txid, r.DBPages = 1, 10
	_, o := makeObject(t, testLayout, ObjectDelta, 1, 1, 1, []uint32{2, 9}, 4)
	r.Added = []ObjectAdded{o}
	mustApply(t, c, r)
	s := c.Snapshot()
	for _, p := range []uint32{0, MaxPgno + 1} {
		if _, err := s.Resolve(p); !errors.Is(err, ErrBadPage) {
			t.Fatalf("Resolve(%d): %v, want ErrBadPage", p, err)
		}
	}
	for p, want := range map[uint32]LocationKind{1: Zero, 2: InObject, 9: InObject, 10: Zero, 11: Beyond, MaxPgno: Beyond} {
		loc, err := s.Resolve(p)
		if err != nil || loc.Kind != want {
			t.Fatalf("Resolve(%d) = %v, %v; want %v", p, loc.Kind, err, want)
		}
	}
	// Page 9 is in chunk 2 and frame 1 of its object.
	if loc, _ := s.Resolve(9); loc.Frame != 1 || loc.Object.ID != 1 {
		t.Fatalf("page 9 at %+v", loc)
	}
}

// Every invariant Apply checks, each leaving the catalog as it was.
func TestApplyRejects(t *testing.T) {
	c := newTestCatalog(t, 4)
	mustApply(t, c, nextRecord(c, KindTakeover, 1, "w"))
	base := nextRecord(c, KindPublish, 1, "w")
	base.Txid, base.DBPages = 5, 12
	_, o1 := makeObject(t, testLayout, ObjectDelta, 1, 1, 5, []uint32{1, 5, 12}, 4)
	base.Added = []ObjectAdded{o1}
	mustApply(t, c, base)
	state := dumpState(t, c)
	tip := c.Tip()

	delta := func(id uint64, minTx, maxTx uint64, pgnos ...uint32) ObjectAdded {
		_, o := makeObject(t, testLayout, ObjectDelta, id, minTx, maxTx, pgnos, 4)
		return o
	}
	cases := []struct {
		name string
		edit func(r *Record)
	}{
		{"seq gap", func(r *Record) { r.Seq++ }},
		{"wrong parent", func(r *Record) { r.Parent.Txid-- }},
		{"txid backwards", func(r *Record) { r.Txid = 4; r.Added = []ObjectAdded{delta(2, 4, 4, 3)} }},
		{"equal txid with objects", func(r *Record) { r.Txid = 5; r.Added = []ObjectAdded{delta(2, 5, 5, 3)} }},
		{"object id exists", func(r *Record) { r.Added = []ObjectAdded{delta(1, 6, 6, 3)} }},
		{"object newer than boundary", func(r *Record) { r.Added = []ObjectAdded{delta(2, 6, 7, 3)} }},
		{"wrong key", func(r *Record) {
			o := delta(2, 6, 6, 3)
			o.Key = strings.Replace(o.Key, "delta-", "base-", 1)
			r.Added = []ObjectAdded{o}
		}},
		{"base not at chunk start", func(r *Record) {
			_, o := makeObject(t, testLayout, ObjectBase, 2, 1, 6, []uint32{6, 7, 8}, 4)
			r.Added = []ObjectAdded{o}
		}},
		{"base spanning chunks", func(r *Record) {
			_, o := makeObject(t, testLayout, ObjectBase, 2, 1, 6, []uint32{5, 6, 7, 8, 9}, 4)
			r.Added = []ObjectAdded{o}
		}},
		{"chunks disagree with directory", func(r *Record) {
			o := delta(2, 6, 6, 3, 9)
			o.Chunks = []uint32{0, 1}
			r.Added = []ObjectAdded{o}
		}},
		{"directory of another object", func(r *Record) {
			o := delta(2, 6, 6, 3)
			o.Directory = delta(3, 6, 6, 3).Directory
			r.Added = []ObjectAdded{o}
		}},
		{"retire a chunk it never covered", func(r *Record) { r.Retired = []ObjectRetired{{ID: 1, Chunks: []uint32{3}}} }},
		{"retire unknown object", func(r *Record) { r.Retired = []ObjectRetired{{ID: 7, Chunks: []uint32{0}}} }},
		{"publish by a newer epoch without takeover", func(r *Record) { r.Epoch = 2 }},
		{"takeover not above the epoch", func(r *Record) { r.Kind = KindTakeover; r.Txid = r.Parent.Txid; r.DBPages = 12 }},
		{"release changing the size", func(r *Record) { r.Kind = KindRelease; r.Txid = r.Parent.Txid; r.DBPages = 3 }},
		{"page size", func(r *Record) { r.PageSize = 1024 }},
		{"unknown kind", func(r *Record) { r.Kind = "merge" }},
		{"delta without directory and no source", func(r *Record) {
			o := delta(2, 6, 6, 3)
			o.Directory = nil
			r.Added = []ObjectAdded{o}
		}},
	}
	for _, tc := range cases {
		r := nextRecord(c, KindPublish, 1, "w")
		r.Txid, r.DBPages = 6, 12
		tc.edit(r)
		err := c.Apply(context.Background(), r)
		if err == nil {
			t.Fatalf("%s: applied", tc.name)
		}
		if c.Tip() != tip || dumpState(t, c) != state {
			t.Fatalf("%s: the catalog changed (%v)", tc.name, err)
		}
	}
	// And a good record still applies after all those refusals.
	r := nextRecord(c, KindPublish, 1, "w")
	r.Txid, r.DBPages = 6, 12
	r.Added = []ObjectAdded{delta(2, 6, 6, 3)}
	mustApply(t, c, r)
}

// Job progress saves never change created_at or started_at.
func TestJobTimestamps(t *testing.T) {
	now := time.UnixMilli(1700000000000)
	c, err := Open(filepath.Join(t.TempDir(), "catalog.db"), Options{Layout: testLayout, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tick := func() { now = now.Add(time.Second) }
	if err := c.CreateJob("job-1", "checkpoint", []byte("plan")); err != nil {
		t.Fatal(err)
	}
	created := now
	tick()
	if err := c.StartJob("job-1"); err != nil {
		t.Fatal(err)
	}
	started := now
	for i, st := range []JobState{JobStaged, JobStaged, JobUploaded, JobPublished} {
		tick()
		if err := c.SaveProgress("job-1", st, fmt.Sprintf("phase-%d", i), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		tick()
		if err := c.StartJob("job-1"); err != nil { // a resume starts it again
			t.Fatal(err)
		}
		j, err := c.GetJob("job-1")
		if err != nil {
			t.Fatal(err)
		}
		if !j.CreatedAt.Equal(created) || !j.StartedAt.Equal(started) {
			t.Fatalf("after save %d: created %v started %v, want %v %v", i, j.CreatedAt, j.StartedAt, created, started)
		}
		if j.State != st || j.Phase != fmt.Sprintf("phase-%d", i) || string(j.Progress) != string([]byte{byte(i)}) || string(j.Plan) != "plan" {
			t.Fatalf("after save %d: %+v", i, j)
		}
		if !j.UpdatedAt.Equal(now) {
			t.Fatalf("updated_at %v, want %v", j.UpdatedAt, now)
		}
	}
	if err := c.SaveProgress("job-1", JobStaged, "back", nil); err == nil {
		t.Fatal("state went backwards")
	}
	if jobs, _ := c.UnfinishedJobs(); len(jobs) != 1 || jobs[0].ID != "job-1" {
		t.Fatalf("unfinished %+v", jobs)
	}
	if err := c.FinishJob("job-1", JobCompleted, ""); err != nil {
		t.Fatal(err)
	}
	if jobs, _ := c.UnfinishedJobs(); len(jobs) != 0 {
		t.Fatalf("unfinished after finish: %+v", jobs)
	}
	if err := c.SaveProgress("job-1", JobCompleted, "again", nil); err == nil {
		t.Fatal("progress on a finished job")
	}
	j, _ := c.GetJob("job-1")
	if !j.CreatedAt.Equal(created) || !j.StartedAt.Equal(started) {
		t.Fatalf("finished job: created %v started %v", j.CreatedAt, j.StartedAt)
	}
	if err := c.StartJob("nope"); !errors.Is(err, ErrJobNotFound) {
		t.Fatalf("start unknown job: %v", err)
	}
}

func TestLeaseConflictNamesHolder(t *testing.T) {
	c := newTestCatalog(t, 4)
	id, err := c.RegisterLease(Lease{Holder: "job-1", Kind: "spool", MinTxid: 10, MaxTxid: 20})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.RegisterLease(Lease{Holder: "job-2", Kind: "spool", MinTxid: 20, MaxTxid: 30})
	if !errors.Is(err, ErrLeaseConflict) || !strings.Contains(err.Error(), "job-1") {
		t.Fatalf("conflicting lease: %v, want ErrLeaseConflict naming job-1", err)
	}
	if _, err := c.RegisterLease(Lease{Holder: "job-2", Kind: "spool", MinTxid: 21, MaxTxid: 30}); err != nil {
		t.Fatalf("disjoint lease: %v", err)
	}
	if _, err := c.RegisterLease(Lease{Holder: "job-3", Kind: "gc", MinTxid: 10, MaxTxid: 30}); err != nil {
		t.Fatalf("lease of another kind: %v", err)
	}
	if err := c.ReleaseLease(id); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RegisterLease(Lease{Holder: "job-4", Kind: "spool", MinTxid: 10, MaxTxid: 20}); err != nil {
		t.Fatalf("lease after release: %v", err)
	}
	if err := c.PinLocal(LocalPin{ID: "replica-conn-1", Boundary: 7, Owner: "vfs"}); err != nil {
		t.Fatal(err)
	}
	if pins, _ := c.LocalPins(); len(pins) != 1 || pins[0].Boundary != 7 {
		t.Fatalf("pins %+v", pins)
	}
}

// Crash in the middle of a catalog change: a child process applies a
// record and is SIGKILLed inside the transaction (after half the rows are
// written). The catalog reopens at the previous state, whole, and the same
// record then applies.
func TestCrashMidApply(t *testing.T) {
	if os.Getenv("BOP_MANIFEST_CRASH_CHILD") != "" {
		crashChild()
		return
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "catalog.db")
	c := openTestCatalog(t, path, 4)
	build := func() []*Record {
		var recs []*Record
		recs = append(recs, nextRecord(c, KindTakeover, 1, "w"))
		return recs
	}
	mustApply(t, c, build()[0])
	for i := range 3 {
		r := nextRecord(c, KindPublish, 1, "w")
		r.Txid, r.DBPages = uint64(i+1), 40
		_, o := makeObject(t, testLayout, ObjectDelta, uint64(i+1), uint64(i+1), uint64(i+1), []uint32{uint32(i + 1), uint32(10 + i), 33}, 4)
		r.Added = []ObjectAdded{o}
		mustApply(t, c, r)
	}
	before := dumpState(t, c)
	snapBefore := c.Snapshot()
	c.Close()

	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashMidApply$", "-test.v")
		cmd.Env = append(os.Environ(), "BOP_MANIFEST_CRASH_CHILD="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		mid := false
		for sc.Scan() {
			if sc.Text() == "MID-TRANSACTION" {
				mid = true
				break
			}
		}
		cmd.Process.Kill() // SIGKILL
		cmd.Wait()
		if !mid {
			t.Fatalf("round %d: the child never reached the middle of the transaction", round)
		}
		c = openTestCatalog(t, path, 4)
		if got := dumpState(t, c); got != before {
			t.Fatalf("round %d: state after a crash mid-transaction differs:\n%s\nwant\n%s", round, got, before)
		}
		sameMaps(t, "after crash", c.Snapshot(), snapBefore, 45)
		c.Close()
	}
	// The record the child was applying applies cleanly now.
	c = openTestCatalog(t, path, 4)
	defer c.Close()
	mustApply(t, c, crashRecord(t, c))
}

func crashRecord(t testing.TB, c *Catalog) *Record {
	r := nextRecord(c, KindPublish, 1, "w")
	r.Txid, r.DBPages = 10, 44
	for i := range 6 {
		id := uint64(100 + i)
		_, o := makeObject(t, testLayout, ObjectDelta, id, 10, 10, []uint32{uint32(1 + i), uint32(20 + i), 41}, 4)
		r.Added = append(r.Added, o)
	}
	r.Retired = []ObjectRetired{{ID: 1, Chunks: []uint32{0, 2, 8}}}
	return r
}

func crashChild() {
	path := os.Getenv("BOP_MANIFEST_CRASH_CHILD")
	c, err := Open(path, Options{Layout: testLayout})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	var once sync.Once
	c.applyHook = func(stage string) error {
		once.Do(func() {
			fmt.Println("MID-TRANSACTION")
			os.Stdout.Sync()
			time.Sleep(time.Minute) // killed here
		})
		return nil
	}
	t := &testing.T{}
	err = c.Apply(context.Background(), crashRecord(t, c))
	fmt.Println("apply returned:", err)
	os.Exit(3)
}

// Readers holding old snapshots keep consistent answers while publishes
// continue (run with -race): every snapshot answers exactly what it
// answered when it was taken.
func TestSnapshotsStableUnderPublishes(t *testing.T) {
	c := newTestCatalog(t, 4)
	mustApply(t, c, nextRecord(c, KindTakeover, 1, "w"))
	type seen struct {
		snap *Snapshot
		locs []Location
	}
	record := func(s *Snapshot) seen {
		v := seen{snap: s}
		for p := uint32(1); p <= 40; p++ {
			loc, _ := s.Resolve(p)
			v.locs = append(v.locs, loc)
		}
		return v
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var held []seen
			for {
				select {
				case <-stop:
					return
				default:
				}
				held = append(held, record(c.Snapshot()))
				if len(held) > 20 {
					held = held[1:]
				}
				for _, h := range held {
					now := record(h.snap)
					for i := range now.locs {
						if now.locs[i] != h.locs[i] {
							errs <- fmt.Errorf("snapshot at txid %d: page %d changed from %+v to %+v", h.snap.Txid(), i+1, h.locs[i], now.locs[i])
							return
						}
					}
				}
			}
		}()
	}
	for i := range 25 {
		r := nextRecord(c, KindPublish, 1, "w")
		r.Txid, r.DBPages = uint64(i+1), uint32(30+i%10)
		_, o := makeObject(t, testLayout, ObjectDelta, uint64(2*i+1), uint64(i+1), uint64(i+1), []uint32{uint32(1 + i%9), uint32(12 + i%7), 29}, 4)
		r.Added = []ObjectAdded{o}
		if i%3 == 2 {
			ch := uint32(i % 7)
			var ps []uint32
			for p := chunkFirst(ch, 4); p <= chunkLast(ch, 4); p++ {
				ps = append(ps, p)
			}
			_, b := makeObject(t, testLayout, ObjectBase, uint64(2*i+2), 1, uint64(i+1), ps, 4)
			r.Added = append(r.Added, b)
		}
		mustApply(t, c, r)
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

// Epochs shared by two takers (a store whose If-Match is unreliable): the
// first takeover with the epoch wins; the other writer's records with the
// same epoch are void.
func TestSharedEpochIsVoid(t *testing.T) {
	c := newTestCatalog(t, 4)
	mustApply(t, c, nextRecord(c, KindTakeover, 1, "a"))
	mustApply(t, c, nextRecord(c, KindTakeover, 2, "a"))
	mustApply(t, c, nextRecord(c, KindTakeover, 2, "b")) // same epoch, another writer
	pub := func(writer string, id uint64, txid uint64) *Record {
		r := nextRecord(c, KindPublish, 2, writer)
		r.Txid, r.DBPages = txid, 8
		_, o := makeObject(t, testLayout, ObjectDelta, id, txid, txid, []uint32{uint32(id)}, 4)
		r.Added = []ObjectAdded{o}
		return r
	}
	mustApply(t, c, pub("b", 1, 1))
	mustApply(t, c, pub("a", 2, 1))
	rows, _ := c.Publishes(1, 10)
	var voids []bool
	for _, r := range rows {
		voids = append(voids, r.Void)
	}
	if fmt.Sprint(voids) != "[false false true true false]" {
		t.Fatalf("void flags %v", voids)
	}
	if loc, _ := c.Snapshot().Resolve(1); loc.Kind != Zero {
		t.Fatalf("page 1 of the void writer resolves to %+v", loc)
	}
	if loc, _ := c.Snapshot().Resolve(2); loc.Kind != InObject || loc.Object.ID != 2 {
		t.Fatalf("page 2 resolves to %+v", loc)
	}
	// The same writer cannot take over twice with one epoch.
	if err := c.Apply(context.Background(), nextRecord(c, KindTakeover, 2, "a")); !errors.Is(err, ErrBadRecord) {
		t.Fatalf("second takeover with one epoch: %v", err)
	}
}

func TestChunksAndHistoryFloor(t *testing.T) {
	c := newTestCatalog(t, 4)
	mustApply(t, c, nextRecord(c, KindTakeover, 1, "w"))
	pub := func(txid uint64, objs ...ObjectAdded) {
		r := nextRecord(c, KindPublish, 1, "w")
		r.Txid, r.DBPages = txid, 12
		r.Added = objs
		mustApply(t, c, r)
	}
	obj := func(kind string, id, txid uint64, pgnos ...uint32) ObjectAdded {
		_, o := makeObject(t, testLayout, kind, id, txid, txid, pgnos, 4)
		return o
	}
	pub(1, obj(ObjectDelta, 1, 1, 2, 6))      // chunks 0, 1
	pub(2, obj(ObjectBase, 2, 2, 5, 6, 7, 8)) // chunk 1 base (delta 1 shadowed there)
	pub(3, obj(ObjectDelta, 3, 3, 7), obj(ObjectDelta, 4, 3, 1, 3))
	cs, err := c.Chunks()
	if err != nil {
		t.Fatal(err)
	}
	got := ""
	for _, s := range cs {
		got += fmt.Sprintf("chunk %d base %v deltas", s.Chunk, s.Base != nil)
		for _, d := range s.Deltas {
			got += fmt.Sprintf(" %d", d.ID)
		}
		got += " shadowed"
		for _, d := range s.Shadowed {
			got += fmt.Sprintf(" %d", d.ID)
		}
		got += fmt.Sprintf(" pages %d; ", s.DeltaPages)
	}
	want := "chunk 0 base false deltas 4 1 shadowed pages 3; chunk 1 base true deltas 3 shadowed 1 pages 1; "
	if got != want {
		t.Fatalf("chunks:\n%s\nwant\n%s", got, want)
	}
	if err := c.SetHistoryFloor(2); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SnapshotAt(1); !errors.Is(err, ErrSnapshotTooOld) {
		t.Fatalf("SnapshotAt below the floor: %v", err)
	}
	if s, err := c.SnapshotAt(2); err != nil || s.Txid() != 2 {
		t.Fatalf("SnapshotAt(2): %v", err)
	}
}
