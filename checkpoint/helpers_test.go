package checkpoint

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bopstore/bop/internal/testutil/s3test"
	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/quota"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fsstore"
	"github.com/bopstore/bop/remote/s3store"
	"github.com/bopstore/bop/wal"
)

var testLayout = remote.Layout{Tenant: "default", DB: "app"}

func fsStore(t testing.TB) remote.Store {
	t.Helper()
	s, err := fsstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// s3Store opens the versitygw test server (scripts/test.sh) on a fresh
// prefix; it skips without a server unless BOP_REQUIRE_S3=1.
func s3Store(t testing.TB) remote.Store {
	t.Helper()
	s, _ := s3test.Open(t, "checkpoint-test", func(c *s3store.Config) { c.PartSize, c.MultipartThreshold = 5<<20, 5<<20 })
	return s
}

// stores runs f on the fs store and on versitygw.
func stores(t *testing.T, f func(t *testing.T, store remote.Store)) {
	t.Run("fs", func(t *testing.T) { f(t, fsStore(t)) })
	t.Run("s3", func(t *testing.T) { f(t, s3Store(t)) })
}

// spoolSyncer stands in for wal.Capture on a spool written directly:
// SyncForPublish fsyncs the spool and confirms everything in it.
type spoolSyncer struct{ sp *wal.Spool }

func (s spoolSyncer) SyncForPublish() (uint64, error) {
	if err := s.sp.Sync(); err != nil {
		return 0, err
	}
	last := s.sp.Status().SyncedTxid // appends may go on meanwhile
	if last > s.sp.Confirmed() {
		if err := s.sp.SetConfirmed(last); err != nil {
			return 0, err
		}
	}
	return s.sp.Confirmed(), nil
}

// synth is one database whose spool is written directly (no SQLite): a
// model of the database file is kept alongside, so every boundary can be
// compared with a restore.
type synth struct {
	t          testing.TB
	dir        string
	store      remote.Store
	pageSize   uint32
	chunkPages uint32
	rng        *mrand.Rand

	spool *wal.Spool
	cat   *manifest.Catalog
	w     *manifest.Writer
	pub   *Publisher
	cfg   Config // template for publishers (Store, dirs, hooks)

	model   []byte            // the database after the last txid
	txid    uint64            // last txid appended
	byTxid  map[uint64][]byte // model after each txid (kept when keep is set)
	keep    bool
	counter uint32 // page 1 change counter
}

type synthOpts struct {
	pageSize, chunkPages uint32
	seed                 uint64
	keep                 bool
}

func newSynth(t testing.TB, store remote.Store, o synthOpts) *synth {
	t.Helper()
	if o.pageSize == 0 {
		o.pageSize = 4096
	}
	if o.chunkPages == 0 {
		o.chunkPages = 4
	}
	s := &synth{t: t, dir: t.TempDir(), store: store, pageSize: o.pageSize, chunkPages: o.chunkPages,
		rng: mrand.New(mrand.NewPCG(o.seed, 99)), keep: o.keep, byTxid: map[uint64][]byte{}}
	s.cfg = Config{Store: store, StagingDir: filepath.Join(s.dir, "staging"), NoLoop: true, ForceTakeover: true, Logf: t.Logf}
	s.open()
	t.Cleanup(s.closeAll)
	return s
}

// open opens spool, catalog and writer (a new writer id: a new process).
func (s *synth) open() {
	s.t.Helper()
	var err error
	if s.spool, err = wal.OpenSpool(filepath.Join(s.dir, "spool"), wal.SpoolOptions{}); err != nil {
		s.t.Fatal(err)
	}
	if s.cat, err = manifest.Open(filepath.Join(s.dir, "catalog.db"), manifest.Options{Layout: testLayout,
		PageSize: s.pageSize, ChunkPages: s.chunkPages}); err != nil {
		s.t.Fatal(err)
	}
	s.newWriter()
}

func (s *synth) newWriter() {
	s.t.Helper()
	var err error
	if s.w, err = manifest.NewWriter(s.store, testLayout, s.cat, manifest.NewWriterID("test"), manifest.WriterOptions{}); err != nil {
		s.t.Fatal(err)
	}
}

// publisher starts a publisher with the template config changed by mod.
func (s *synth) publisher(mod func(*Config)) *Publisher {
	s.t.Helper()
	cfg := s.cfg
	cfg.Catalog, cfg.Writer, cfg.Spool, cfg.Capture = s.cat, s.w, s.spool, spoolSyncer{s.spool}
	if mod != nil {
		mod(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	s.pub = p
	return p
}

// crash drops everything as a killed process would: the publisher is not
// closed, leases in memory vanish with the spool.
func (s *synth) crash() {
	if s.pub != nil {
		s.pub.cancel()
		<-s.pub.done
		s.pub = nil
	}
	s.spool.Close()
	s.cat.Close()
}

func (s *synth) closeAll() {
	if s.pub != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s.pub.Close(ctx)
		cancel()
		s.pub = nil
	}
	if s.spool != nil {
		s.spool.Close()
	}
	if s.cat != nil {
		s.cat.Close()
	}
}

// page1 is a minimal SQLite header page: magic, page size, change counter
// and valid-for equal, database size.
func (s *synth) page1(dbPages uint32) []byte {
	p := make([]byte, s.pageSize)
	copy(p, "SQLite format 3\x00")
	ps := s.pageSize
	if ps == 65536 {
		ps = 1
	}
	binary.BigEndian.PutUint16(p[16:], uint16(ps))
	p[18], p[19] = 2, 2
	s.counter++
	binary.BigEndian.PutUint32(p[24:], s.counter)
	binary.BigEndian.PutUint32(p[28:], dbPages)
	binary.BigEndian.PutUint32(p[92:], s.counter)
	for i := 100; i < len(p); i++ {
		p[i] = byte(s.rng.IntN(255) + 1)
	}
	return p
}

// randomPage is a page of non-zero random bytes tagged with its pgno and
// txid.
func (s *synth) randomPage(pgno uint32, txid uint64) []byte {
	p := make([]byte, s.pageSize)
	for i := range p {
		p[i] = byte(s.rng.IntN(255) + 1)
	}
	binary.LittleEndian.PutUint32(p[0:], pgno)
	binary.LittleEndian.PutUint64(p[4:], txid)
	return p
}

// commit appends a transaction writing page 1 and pages, with the database
// at dbPages afterwards, to the spool and to the model. kind is
// wal.KindDirect unless image.
func (s *synth) commit(dbPages uint32, pages []uint32, image bool) uint64 {
	s.t.Helper()
	set := map[uint32]bool{1: true}
	for _, p := range pages {
		if p >= 1 && p <= dbPages {
			set[p] = true
		}
	}
	if image {
		for p := uint32(1); p <= dbPages; p++ {
			set[p] = true
		}
	}
	kind := wal.KindDirect
	if image {
		kind = wal.KindImage
	}
	a, err := s.spool.Begin(wal.RecordHeader{Kind: kind, PageSize: s.pageSize, DBPages: dbPages, NPages: uint32(len(set))})
	if err != nil {
		s.t.Fatal(err)
	}
	txid := a.Txid()
	size := int(dbPages) * int(s.pageSize)
	if len(s.model) > size {
		s.model = s.model[:size]
	} else {
		s.model = append(s.model, make([]byte, size-len(s.model))...)
	}
	for p := uint32(1); p <= dbPages; p++ {
		if !set[p] {
			continue
		}
		var data []byte
		if p == 1 {
			data = s.page1(dbPages)
		} else {
			data = s.randomPage(p, txid)
		}
		if err := a.Add(p, data); err != nil {
			s.t.Fatal(err)
		}
		copy(s.model[int(p-1)*int(s.pageSize):], data)
	}
	got, err := a.Commit()
	if err != nil {
		s.t.Fatal(err)
	}
	if got != txid {
		s.t.Fatalf("commit txid %d, appender said %d", got, txid)
	}
	s.txid = txid
	if s.keep {
		s.byTxid[txid] = bytes.Clone(s.model)
	}
	return txid
}

// randomTxn commits a random transaction: a few pages, sometimes growing or
// shrinking the database.
func (s *synth) randomTxn(maxPages uint32) uint64 {
	db := uint32(len(s.model)) / s.pageSize
	switch r := s.rng.IntN(10); {
	case db == 0 || r < 3:
		db = min(maxPages, db+1+uint32(s.rng.IntN(6)))
	case r == 3 && db > 2:
		db -= 1 + uint32(s.rng.IntN(int(db/2)))
	}
	var pages []uint32
	for range 1 + s.rng.IntN(5) {
		pages = append(pages, 1+uint32(s.rng.IntN(int(db))))
	}
	// Growing writes every new page (as SQLite does).
	for p := uint32(len(s.model))/s.pageSize + 1; p <= db; p++ {
		pages = append(pages, p)
	}
	return s.commit(db, pages, false)
}

// restore restores txid (0: newest) into a new file and returns it.
func restoreBytes(t testing.TB, store remote.Store, cat *manifest.Catalog, txid uint64) ([]byte, RestoreResult) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "restored.db")
	res, err := Restore(context.Background(), RestoreOptions{Store: store, Catalog: cat, Layout: testLayout, Txid: txid, Path: path})
	if err != nil {
		t.Fatalf("restore txid %d: %v", txid, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != res.Size || res.Size != int64(res.DBPages)*int64(res.PageSize) {
		t.Fatalf("restore txid %d: file %d bytes, result says %d (%d pages of %d)", txid, len(b), res.Size, res.DBPages, res.PageSize)
	}
	return b, res
}

// sameBytes fails with the first differing page.
func sameBytes(t testing.TB, what string, got, want []byte, ps int) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	for i := 0; i < max(len(got), len(want)); i += ps {
		x := got[min(i, len(got)):min(i+ps, len(got))]
		y := want[min(i, len(want)):min(i+ps, len(want))]
		if !bytes.Equal(x, y) {
			t.Fatalf("%s: %d bytes vs %d expected; first difference in page %d", what, len(got), len(want), i/ps+1)
		}
	}
}

// checkReferencedObjects HEADs every object the catalog references (live
// or not) and checks its size: the catalog never names a missing object.
func checkReferencedObjects(t testing.TB, store remote.Store, cat *manifest.Catalog) int {
	t.Helper()
	ctx := context.Background()
	n := 0
	snap := cat.Snapshot()
	for _, o := range snap.Objects() {
		info, err := store.Head(ctx, o.Key)
		if err != nil {
			t.Fatalf("catalog references %s: %v", o.Key, err)
		}
		if info.Size != o.Size {
			t.Fatalf("%s is %d bytes, the catalog says %d", o.Key, info.Size, o.Size)
		}
		n++
	}
	// Every object with a live reference in any chunk (nothing in this
	// package retires objects, so that is every object ever added).
	states, err := cat.Chunks()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	for _, cs := range states {
		objs := append(append([]manifest.Object(nil), cs.Deltas...), cs.Shadowed...)
		if cs.Base != nil {
			objs = append(objs, *cs.Base)
		}
		for _, o := range objs {
			if seen[o.ID] {
				continue
			}
			seen[o.ID] = true
			info, err := store.Head(ctx, o.Key)
			if err != nil {
				t.Fatalf("catalog references %s: %v", o.Key, err)
			}
			if info.Size != o.Size {
				t.Fatalf("%s is %d bytes, the catalog says %d", o.Key, info.Size, o.Size)
			}
		}
	}
	return n
}

// checkJobsFinished: no unfinished job, staging empty, quota zero.
func checkJobsFinished(t testing.TB, cat *manifest.Catalog, p *Publisher, staging string) {
	t.Helper()
	jobs, err := cat.UnfinishedJobs()
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 0 {
		t.Fatalf("%d unfinished jobs: first %s in state %s", len(jobs), jobs[0].ID, jobs[0].State)
	}
	names, _ := os.ReadDir(staging)
	if len(names) != 0 {
		t.Fatalf("staging folder holds %d files, first %s", len(names), names[0].Name())
	}
	if p != nil {
		if u := p.QuotaUsed(); u != 0 {
			t.Fatalf("quota still holds %d bytes", u)
		}
	}
	ls, err := cat.Leases(LeaseKind)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 0 {
		t.Fatalf("%d leases left, first held by %s", len(ls), ls[0].Holder)
	}
}

// integrityCheck runs stock sqlite3 on a file.
func integrityCheck(t testing.TB, path string) {
	t.Helper()
	bin, err := exec.LookPath("sqlite3")
	if err != nil {
		if os.Getenv("BOP_REQUIRE_S3") == "1" {
			t.Fatal("sqlite3 not installed (scripts/test.sh installs it)")
		}
		t.Skip("sqlite3 not installed")
	}
	// Work on a copy: sqlite3 may create -wal/-shm next to it.
	cp := path + ".check"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, cp, "PRAGMA integrity_check").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("sqlite3 %s 'PRAGMA integrity_check': %v: %s", path, err, out)
	}
	os.Remove(cp)
	os.Remove(cp + "-wal")
	os.Remove(cp + "-shm")
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func publishNow(t testing.TB, p *Publisher) uint64 {
	t.Helper()
	txid, err := p.PublishNow(context.Background())
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	return txid
}

var _ = fmt.Sprintf

func readFile(path string) ([]byte, error) { return os.ReadFile(path) }

func newQuota(t testing.TB, limit uint64) *quota.Pool {
	t.Helper()
	return quota.NewPool(limit)
}
