package vfs

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bopstore/bop/checkpoint"
	"github.com/bopstore/bop/internal/testutil"
	"github.com/bopstore/bop/internal/testutil/s3test"
	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fault"
	"github.com/bopstore/bop/remote/fsstore"
	"github.com/ncruces/go-sqlite3"
)

// End to end through vfs=bop: SQLite writes through the VFS, the VFS's
// publisher publishes to a real store (fsstore, versitygw), and every
// boundary restores (checkpoint.Restore, through the local catalog and
// from the store alone) byte for byte equal to a copy of the live file
// taken at that boundary; restored files pass stock sqlite3's
// integrity_check.

// remoteStore is a store URL for Config.Remote plus a handle on the same
// store for the test's own checks.
type remoteStore struct {
	name  string
	url   string
	cfg   func(*Config) // credentials
	store remote.Store
}

func (r remoteStore) config(cfg Config) Config {
	cfg.Remote = r.url
	if r.cfg != nil {
		r.cfg(&cfg)
	}
	return cfg
}

// fsRemote is an fsstore in a temporary folder.
func fsRemote(t testing.TB) remoteStore {
	t.Helper()
	dir := t.TempDir()
	s, err := fsstore.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return remoteStore{name: "fs", url: "file://" + dir, store: s}
}

// s3Remote is a fresh prefix on the versitygw test server
// (scripts/test.sh); it skips without one unless BOP_REQUIRE_S3=1.
func s3Remote(t testing.TB) remoteStore {
	t.Helper()
	s, c := s3test.Open(t, "vfs-test", nil)
	return remoteStore{name: "s3",
		url: fmt.Sprintf("s3://%s/%s?endpoint=%s&region=%s&path_style=true", c.Bucket, c.Prefix, c.Endpoint, c.Region),
		cfg: func(cfg *Config) {
			cfg.S3AccessKey, cfg.S3SecretKey, cfg.DisableIMDS = c.AccessKey, c.SecretKey, true
		},
		store: s}
}

// remotes runs f against the fs store and versitygw.
func remotes(t *testing.T, f func(t *testing.T, r remoteStore)) {
	t.Run("fs", func(t *testing.T) { f(t, fsRemote(t)) })
	t.Run("s3", func(t *testing.T) { f(t, s3Remote(t)) })
}

// boundaries records reference copies of the live database at published
// boundaries.
type boundaries struct {
	t    testing.TB
	dir  string
	refs map[uint64]string
}

func newBoundaries(t testing.TB) *boundaries {
	return &boundaries{t: t, dir: t.TempDir(), refs: map[uint64]string{}}
}

// publish checkpoints the WAL into the file, publishes (PRAGMA
// bop_checkpoint, which must return the newest txid) and saves a copy of
// the file as the reference for that boundary. The pool has one
// connection, so no writer runs meanwhile.
func (b *boundaries) publish(db *sql.DB) uint64 {
	b.t.Helper()
	checkpointTruncate(b.t, db)
	var txid, last uint64
	if err := db.QueryRow("PRAGMA bop_checkpoint").Scan(&txid); err != nil {
		b.t.Fatalf("bop_checkpoint: %v", err)
	}
	if err := db.QueryRow("PRAGMA bop_txid").Scan(&last); err != nil {
		b.t.Fatal(err)
	}
	if txid != last {
		b.t.Fatalf("bop_checkpoint published up to %d, the newest txid is %d", txid, last)
	}
	var path string
	if err := db.QueryRow("PRAGMA database_list").Scan(new(int), new(string), &path); err != nil {
		b.t.Fatal(err)
	}
	ref := filepath.Join(b.dir, fmt.Sprintf("ref-%d.db", txid))
	copyFile(b.t, path, ref)
	b.refs[txid] = ref
	return txid
}

// check restores every boundary twice (through cat, when given, and from
// the store alone, as an empty machine would) and compares each with its
// reference; each restored file passes sqlite3's integrity_check.
func (b *boundaries) check(store remote.Store, layout remote.Layout, cat *manifest.Catalog) {
	t := b.t
	t.Helper()
	txids := make([]uint64, 0, len(b.refs))
	for txid := range b.refs {
		txids = append(txids, txid)
	}
	sort.Slice(txids, func(i, j int) bool { return txids[i] < txids[j] })
	for _, txid := range txids {
		for _, how := range []string{"catalog", "cold"} {
			if how == "catalog" && cat == nil {
				continue
			}
			opts := checkpoint.RestoreOptions{Store: store, Layout: layout, Txid: txid,
				Path: filepath.Join(t.TempDir(), fmt.Sprintf("restored-%d-%s.db", txid, how))}
			if how == "catalog" {
				opts.Catalog = cat
			}
			res, err := checkpoint.Restore(context.Background(), opts)
			if err != nil {
				t.Fatalf("restore boundary %d (%s): %v", txid, how, err)
			}
			if res.Txid != txid || res.Rounded {
				t.Fatalf("restore of boundary %d (%s) gave %d", txid, how, res.Txid)
			}
			if err := sameFiles(opts.Path, b.refs[txid]); err != nil {
				t.Fatalf("boundary %d (%s): restored file differs from the live database then: %v", txid, how, err)
			}
			sqliteIntegrity(t, opts.Path)
		}
	}
}

// sqliteIntegrity runs stock sqlite3's integrity_check on a copy of path.
func sqliteIntegrity(t testing.TB, path string) {
	t.Helper()
	bin, err := exec.LookPath("sqlite3")
	if err != nil {
		if os.Getenv("BOP_REQUIRE_S3") == "1" {
			t.Fatal("sqlite3 not installed (scripts/test.sh installs it)")
		}
		t.Log("sqlite3 not installed: integrity_check skipped")
		return
	}
	cp := filepath.Join(t.TempDir(), "check.db")
	copyFile(t, path, cp)
	out, err := exec.Command(bin, cp, "PRAGMA integrity_check").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("sqlite3 %s 'PRAGMA integrity_check': %v: %s", path, err, out)
	}
}

// randomWorkload runs a random mix of transactions through db, publishing
// at boundaries along the way: inserts, updates, deletes, a large
// transaction (bigRows rows of 3 KB), a schema change, VACUUM.
func randomWorkload(t testing.TB, db *sql.DB, b *boundaries, seed uint64, steps, bigRows int) {
	rng := mrand.New(mrand.NewPCG(seed, 7))
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v BLOB)")
	mustExec(t, db, "CREATE INDEX t_k ON t(k)")
	b.publish(db)
	altered := false
	for step := 0; step < steps; step++ {
		switch op := rng.IntN(10); {
		case op < 3:
			tx, err := db.Begin()
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 1+rng.IntN(50); i++ {
				mustExec(t, tx, "INSERT INTO t(k, v) VALUES (hex(randomblob(6)), randomblob(?))", 50+rng.IntN(3000))
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
		case op < 5:
			mustExec(t, db, "UPDATE t SET v = randomblob(?) WHERE id % ? = 0", 10+rng.IntN(2000), 2+rng.IntN(7))
		case op < 6:
			mustExec(t, db, "DELETE FROM t WHERE id % ? = 0", 3+rng.IntN(5))
		case op < 7:
			if !altered {
				mustExec(t, db, "ALTER TABLE t ADD COLUMN extra INTEGER DEFAULT 7")
				mustExec(t, db, "CREATE TABLE u(a INTEGER PRIMARY KEY, b BLOB)")
				altered = true
			} else {
				mustExec(t, db, "INSERT INTO u(b) SELECT randomblob(300) FROM generate_series(1, ?)", 1+rng.IntN(200))
			}
		case op < 8:
			mustExec(t, db, "VACUUM")
		default:
			b.publish(db)
		}
	}
	b.publish(db)
	// The large transaction, then shrink it away.
	mustExec(t, db, "INSERT INTO t(k, v) SELECT 'big', randomblob(3000) FROM generate_series(1, ?)", bigRows)
	b.publish(db)
	mustExec(t, db, "DELETE FROM t WHERE k = 'big'")
	mustExec(t, db, "VACUUM")
	b.publish(db)
}

// e2eWorkload is the end-to-end test on one store.
func e2eWorkload(t *testing.T, r remoteStore, steps, bigRows int) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.db")
	v := newVFS(t, r.config(Config{ChunkPages: 64, CheckpointInterval: 50 * time.Millisecond}))
	db := openDB(t, v, path)
	db.SetMaxOpenConns(1)
	b := newBoundaries(t)
	randomWorkload(t, db, b, uint64(time.Now().UnixNano()), steps, bigRows)
	integrityOK(t, db)
	checkReplay(t, v, path, db)
	if err := db.Close(); err != nil {
		t.Fatalf("close (final publish and release): %v", err)
	}
	layout := remote.Layout{Tenant: DefaultTenant, DB: "app.db"}
	cat, err := manifest.Open(filepath.Join(path+"-bop", "catalog.db"), manifest.Options{Layout: layout,
		Directories: manifest.StoreDirectories{Store: r.store}})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	if len(b.refs) < 4 {
		t.Fatalf("only %d boundaries", len(b.refs))
	}
	b.check(r.store, layout, cat)
	checkLog(t, cat, "")
	jobs, err := cat.UnfinishedJobs()
	if err != nil || len(jobs) != 0 {
		t.Fatalf("unfinished jobs after close: %v %v", jobs, err)
	}
	if names, _ := os.ReadDir(filepath.Join(path+"-bop", "staging")); len(names) != 0 {
		t.Fatalf("staging holds %d files after close", len(names))
	}
}

func TestEndToEndThroughVFS(t *testing.T) {
	remotes(t, func(t *testing.T, r remoteStore) { e2eWorkload(t, r, 12, 300) })
}

// The large version: more steps and a transaction of about 300 MB.
func TestHeavyEndToEndThroughVFS(t *testing.T) {
	testutil.Heavy(t)
	remotes(t, func(t *testing.T, r remoteStore) { e2eWorkload(t, r, 60, 100_000) })
}

// checkLog checks the remote log as the catalog holds it: the publishes
// continue one another (each one's parent is the previous boundary, txids
// strictly increase), so every transaction was published exactly once,
// and the last record is a release (a clean close). It returns the
// publishes' writers in order. notWriter, if set, must write no record.
func checkLog(t testing.TB, cat *manifest.Catalog, notWriter string) []string {
	t.Helper()
	rows, err := cat.Publishes(1, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	var prev uint64
	var writers []string
	for _, r := range rows {
		if r.Void {
			continue
		}
		if notWriter != "" && r.Writer == notWriter {
			t.Fatalf("log/%d (%s) was written by %s", r.Seq, r.Kind, notWriter)
		}
		if r.Kind != manifest.KindPublish {
			continue
		}
		if r.Parent.Txid != prev || r.Txid <= prev {
			t.Fatalf("log/%d publishes txids %d..%d after boundary %d: a gap or a transaction published twice", r.Seq, r.Parent.Txid+1, r.Txid, prev)
		}
		prev = r.Txid
		writers = append(writers, r.Writer)
	}
	if last := rows[len(rows)-1]; last.Kind != manifest.KindRelease {
		t.Fatalf("the last record is a %s, want a release (clean close)", last.Kind)
	}
	return writers
}

// Adoption: an existing database published for the first time (as base
// objects, at txid 1) restores byte-identical to the file that was
// adopted; later transactions follow.
func TestEndToEndAdoption(t *testing.T) {
	remotes(t, func(t *testing.T, r remoteStore) {
		dir := t.TempDir()
		path := filepath.Join(dir, "app.db")
		plainDatabase(t, path, 2)
		b := newBoundaries(t)
		b.refs[1] = filepath.Join(b.dir, "original.db")
		copyFile(t, path, b.refs[1])

		v := newVFS(t, r.config(Config{ChunkPages: 128}))
		db := openDB(t, v, path)
		db.SetMaxOpenConns(1)
		mustExec(t, db, "INSERT INTO t(k, v) VALUES (1, 'after adoption')")
		b.publish(db)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		b.check(r.store, remote.Layout{Tenant: DefaultTenant, DB: "app.db"}, nil)
	})
}

// A second machine opens the database from the store alone (an empty
// folder) and reads the same rows; its txids continue the store's.
func TestOpenFromRemoteOnEmptyMachine(t *testing.T) {
	remotes(t, func(t *testing.T, r remoteStore) {
		cfg := r.config(Config{})
		pathA := filepath.Join(t.TempDir(), "app.db")
		a := openDB(t, newVFS(t, cfg), pathA)
		a.SetMaxOpenConns(1)
		mustExec(t, a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
		mustExec(t, a, "INSERT INTO t(v) SELECT 'row ' || value FROM generate_series(1, 2000)")
		want := queryString(t, a, "SELECT group_concat(v, ',') FROM t")
		last := queryInt(t, a, "PRAGMA bop_txid")
		if err := a.Close(); err != nil { // final publish, release
			t.Fatal(err)
		}

		pathB := filepath.Join(t.TempDir(), "app.db")
		vb := newVFS(t, cfg)
		bdb := openDB(t, vb, pathB)
		if got := queryString(t, bdb, "SELECT group_concat(v, ',') FROM t"); got != want {
			t.Fatal("the database opened from the store reads different rows")
		}
		integrityOK(t, bdb)
		mustExec(t, bdb, "INSERT INTO t(v) VALUES ('from b')")
		if txid := queryInt(t, bdb, "PRAGMA bop_txid"); txid != last+1 {
			t.Fatalf("first txid on the new machine %d, want %d", txid, last+1)
		}
		if s := statusOf(t, bdb); s.Origin != originTakeover || s.TSeed != uint64(last) {
			t.Fatalf("status %+v", s)
		}
		checkReplay(t, vb, pathB, bdb)
	})
}

// A second machine opens the database from a store whose catalog
// snapshot (the one head names) is corrupt: the catalog is built from the
// whole log instead, the rows are the same, and the VFS logs why.
func TestOpenFromRemoteWithDamagedSnapshot(t *testing.T) {
	remotes(t, func(t *testing.T, r remoteStore) {
		ctx := context.Background()
		var mu sync.Mutex
		var logged []string
		cfg := r.config(Config{Logf: func(format string, args ...any) {
			mu.Lock()
			defer mu.Unlock()
			logged = append(logged, fmt.Sprintf(format, args...))
		}})
		pathA := filepath.Join(t.TempDir(), "app.db")
		a := openDB(t, newVFS(t, cfg), pathA)
		a.SetMaxOpenConns(1)
		mustExec(t, a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
		mustExec(t, a, "INSERT INTO t(v) SELECT 'row ' || value FROM generate_series(1, 500)")
		want := queryString(t, a, "SELECT group_concat(v, ',') FROM t")
		if err := a.Close(); err != nil { // final publish, release
			t.Fatal(err)
		}

		// Another node takes the released database over, uploads a
		// snapshot of its catalog and hands the database back.
		layout := remote.Layout{Tenant: DefaultTenant, DB: "app.db"}
		w := takeOver(t, r.store, layout, "maintenance", true, false)
		if err := w.UploadSnapshot(ctx); err != nil {
			t.Fatal(err)
		}
		if err := w.Release(ctx); err != nil {
			t.Fatal(err)
		}
		head, _, err := manifest.GetHead(ctx, r.store, layout)
		if err != nil {
			t.Fatal(err)
		}
		if head.Snapshot == nil {
			t.Fatal("head names no snapshot")
		}
		snapKey := layout.Snapshot(head.Snapshot.Seq)
		rc, _, err := r.store.Get(ctx, snapKey, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/3] ^= 0x40
		if _, err := r.store.Put(ctx, snapKey, bytes.NewReader(b), remote.PutOptions{Size: int64(len(b))}); err != nil {
			t.Fatal(err)
		}

		// A restore from the store alone rebuilds around it too, and
		// says so.
		restored := filepath.Join(t.TempDir(), "restored.db")
		res, err := checkpoint.Restore(ctx, checkpoint.RestoreOptions{Store: r.store, Layout: layout, Path: restored})
		if err != nil {
			t.Fatal(err)
		}
		if res.SnapshotDamage == nil || res.SnapshotDamage.Seq != head.Snapshot.Seq {
			t.Fatalf("restore's snapshot damage %v, want the snapshot at seq %d", res.SnapshotDamage, head.Snapshot.Seq)
		}
		if got := queryString(t, openDB(t, nil, restored), "SELECT group_concat(v, ',') FROM t"); got != want {
			t.Fatal("the restored database reads different rows")
		}

		pathB := filepath.Join(t.TempDir(), "app.db")
		bdb := openDB(t, newVFS(t, cfg), pathB)
		if got := queryString(t, bdb, "SELECT group_concat(v, ',') FROM t"); got != want {
			t.Fatal("the database opened from the store reads different rows")
		}
		integrityOK(t, bdb)
		mu.Lock()
		defer mu.Unlock()
		found := false
		for _, l := range logged {
			found = found || strings.Contains(l, snapKey) && strings.Contains(l, "rebuilt from the whole log")
		}
		if !found {
			t.Fatalf("no log line names the damaged snapshot %s: %q", snapKey, logged)
		}
		// B, now the writer, replaced the snapshot: the next cold open
		// uses it.
		head2, _, err := manifest.GetHead(ctx, r.store, layout)
		if err != nil {
			t.Fatal(err)
		}
		if head2.Snapshot == nil || head2.Snapshot.Seq <= head.Snapshot.Seq {
			t.Fatalf("head's snapshot %+v after B's open, want one past seq %d", head2.Snapshot, head.Snapshot.Seq)
		}
		cat2, err := manifest.OpenRemote(ctx, r.store, layout, filepath.Join(t.TempDir(), "catalog.db"), manifest.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer cat2.Close()
		if sd := cat2.SnapshotDamage(); sd != nil {
			t.Fatalf("the replaced snapshot is damaged too: %v", sd)
		}
	})
}

// Sync durability: a commit returns only once the publish containing it
// is done; with the store in an outage it returns an error wrapping
// ErrOutcomeUnknown, the row stays committed locally, and it is published
// once the store is back.
func TestSyncDurability(t *testing.T) {
	var fs *fault.Store
	cfg := Config{Durability: Sync, SyncTimeout: 20 * time.Second, CheckpointInterval: time.Hour}
	cfg.wrapStore = func(s remote.Store) remote.Store { fs = fault.New(s, fault.Config{}); return fs }
	v := newVFS(t, cfg)
	path := filepath.Join(t.TempDir(), "sync.db")
	db := openDB(t, v, path)
	db.SetMaxOpenConns(1)
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
	for i := 0; i < 5; i++ {
		mustExec(t, db, "INSERT INTO t(v) VALUES ('synced')")
		// The interval is an hour: only the commit's own wait published.
		s := statusOf(t, db)
		if s.PublishedTxid < s.Txid || s.Durability != "sync" {
			t.Fatalf("commit returned before its publish: %+v", s)
		}
	}
	// Concurrent commits share publishes and all wait.
	db.SetMaxOpenConns(4)
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		go func() { _, err := db.Exec("INSERT INTO t(v) VALUES ('concurrent')"); errs <- err }()
	}
	for i := 0; i < 8; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	db.SetMaxOpenConns(1)
	if s := statusOf(t, db); s.PublishedTxid != s.Txid {
		t.Fatalf("after concurrent sync commits: %+v", s)
	}

	fs.SetOutage(true)
	_, err := db.Exec("INSERT INTO t(v) VALUES ('during the outage')")
	if !errors.Is(err, ErrOutcomeUnknown) || !strings.Contains(err.Error(), "outcome unknown") {
		t.Fatalf("commit during an outage: %v, want ErrOutcomeUnknown", err)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM t WHERE v = 'during the outage'"); n != 1 {
		t.Fatalf("%d rows committed during the outage, want 1 (committed locally)", n)
	}
	txid := uint64(queryInt(t, db, "PRAGMA bop_txid"))
	if s := statusOf(t, db); s.PublishedTxid >= txid || s.PublishError == "" {
		t.Fatalf("status during the outage: %+v", s)
	}
	fs.SetOutage(false)
	// The next commit waits for a publish holding both.
	mustExec(t, db, "INSERT INTO t(v) VALUES ('after the outage')")
	if s := statusOf(t, db); s.PublishedTxid < txid+1 {
		t.Fatalf("after the outage: %+v", s)
	}
	b := newBoundaries(t)
	b.publish(db)
	integrityOK(t, db)
	db.Close()
	store, err := fsstore.New(filepath.Join(path+"-bop", "store"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	b.check(store, remote.Layout{Tenant: DefaultTenant, DB: "sync.db"}, nil)
	restored := filepath.Join(t.TempDir(), "r.db")
	if _, err := checkpoint.Restore(context.Background(), checkpoint.RestoreOptions{Store: store,
		Layout: remote.Layout{Tenant: DefaultTenant, DB: "sync.db"}, Path: restored}); err != nil {
		t.Fatal(err)
	}
	if n := queryInt(t, openDB(t, nil, restored), "SELECT count(*) FROM t WHERE v = 'during the outage'"); n != 1 {
		t.Fatalf("the row committed during the outage was not published (%d)", n)
	}
}

// MaxLag: with publishing slowed down (each PUT takes 400 ms), async
// commits wait once the oldest unpublished transaction is older than
// MaxLag. Measured through the status, not by timing: commits waited
// (lag_waits), and the worst lag seen right after a commit returned is
// below the worst lag of the same workload without the bound (where no
// commit waits). The slow PUTs keep the two apart by seconds (about 0.3 s
// against 2.5 s), so a stalled test goroutine on a loaded machine, which
// adds to the bounded run's lag, does not close the gap.
func TestMaxLagBackpressure(t *testing.T) {
	run := func(maxLag time.Duration) (waits uint64, worst float64) {
		cfg := Config{MaxLag: maxLag, CheckpointInterval: 20 * time.Millisecond}
		cfg.wrapStore = func(s remote.Store) remote.Store {
			f := fault.New(s, fault.Config{})
			f.SetLatency(fault.OpPut, 400*time.Millisecond)
			return f
		}
		v := newVFS(t, cfg)
		db := openDB(t, v, filepath.Join(t.TempDir(), "lag.db"))
		db.SetMaxOpenConns(1)
		mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) {
			mustExec(t, db, "INSERT INTO t(v) VALUES (randomblob(100))")
			s := statusOf(t, db)
			worst = max(worst, s.LagSeconds)
			waits = s.LagWaits
		}
		db.Close()
		return waits, worst
	}
	const maxLag = 300 * time.Millisecond
	waits, worst := run(maxLag)
	if waits == 0 {
		t.Fatal("no commit waited for publishing although it was slowed down")
	}
	unbounded, worstFree := run(time.Hour)
	if unbounded != 0 || worstFree <= worst {
		t.Fatalf("without the bound: %d waits, worst lag %.3fs (bounded: %.3fs): the test cannot tell", unbounded, worstFree, worst)
	}
	t.Logf("bounded: %d waits, worst lag %.3fs; unbounded: worst lag %.3fs", waits, worst, worstFree)
}

// bop's WAL hook replaces SQLite's auto-checkpoint: it must still
// checkpoint (the WAL stays bounded), honour PRAGMA wal_autocheckpoint,
// and a wal_autocheckpoint pragma must not remove the hook (sync commits
// still wait).
func TestAutoCheckpointHook(t *testing.T) {
	walFrames := func(path string) int64 {
		fi, err := os.Stat(path + "-wal")
		if err != nil {
			return 0
		}
		return (fi.Size() - 32) / (4096 + 24)
	}
	v := newVFS(t, Config{})
	path := filepath.Join(t.TempDir(), "ckpt.db")
	db := openDB(t, v, path)
	db.SetMaxOpenConns(1)
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
	if n := queryInt(t, db, "PRAGMA wal_autocheckpoint"); n != 1000 {
		t.Fatalf("wal_autocheckpoint %d, want the default 1000", n)
	}
	// ~3 pages per commit: 3000 commits would make a WAL of ~9000 frames.
	for i := 0; i < 3000; i++ {
		mustExec(t, db, "INSERT INTO t(v) VALUES (randomblob(5000))")
	}
	if f := walFrames(path); f > 1100 {
		t.Fatalf("the WAL holds %d frames: auto-checkpoint did not run", f)
	}
	if n := queryInt(t, db, "PRAGMA wal_autocheckpoint=100"); n != 100 {
		t.Fatalf("wal_autocheckpoint=100 returned %d", n)
	}
	checkpointTruncate(t, db)
	for i := 0; i < 500; i++ {
		mustExec(t, db, "INSERT INTO t(v) VALUES (randomblob(5000))")
	}
	if f := walFrames(path); f > 150 {
		t.Fatalf("the WAL holds %d frames with wal_autocheckpoint=100", f)
	}
	mustExec(t, db, "PRAGMA wal_autocheckpoint=0")
	checkpointTruncate(t, db)
	for i := 0; i < 500; i++ {
		mustExec(t, db, "INSERT INTO t(v) VALUES (randomblob(5000))")
	}
	if f := walFrames(path); f < 1000 {
		t.Fatalf("the WAL holds %d frames with wal_autocheckpoint=0: something checkpointed", f)
	}
	integrityOK(t, db)
	checkReplay(t, v, path, db)

	// Sync durability after the pragma: the hook is still ours.
	vs := newVFS(t, Config{Durability: Sync, CheckpointInterval: time.Hour})
	spath := filepath.Join(t.TempDir(), "sync.db")
	sdb := openDB(t, vs, spath, "wal_autocheckpoint(50)")
	sdb.SetMaxOpenConns(1)
	mustExec(t, sdb, "PRAGMA wal_autocheckpoint=20")
	mustExec(t, sdb, "CREATE TABLE t(v)")
	for i := 0; i < 30; i++ {
		mustExec(t, sdb, "INSERT INTO t VALUES (randomblob(3000))")
		if s := statusOf(t, sdb); s.PublishedTxid < s.Txid {
			t.Fatalf("sync commit returned unpublished after PRAGMA wal_autocheckpoint: %+v", s)
		}
	}
	if f := walFrames(spath); f > 40 {
		t.Fatalf("the WAL holds %d frames with wal_autocheckpoint=20", f)
	}
}

// A statement whose context ends while its commit waits for the publish
// (Sync durability, publishing slowed down) reports ErrOutcomeUnknown: the
// commit stands. It used to report SQLite's "interrupted", which says the
// statement did not happen, inviting a retry that inserts the row twice.
func TestSyncWaitCancelledOutcomeUnknown(t *testing.T) {
	db, f := faultDB(t, Config{Durability: Sync, SyncTimeout: 20 * time.Second, CheckpointInterval: time.Hour})
	f.SetLatency(fault.OpPut, 2*time.Second)
	// Cancel once the commit's publish has begun its first PUT: the
	// commit is then waiting. A timer could fire before the statement got
	// there on a loaded machine, and interrupt it for real.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	puts := f.Stats().Put.Requests
	go func() {
		defer cancel()
		for deadline := time.Now().Add(10 * time.Second); ctx.Err() == nil && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if f.Stats().Put.Requests > puts {
				return
			}
		}
	}()
	_, err := db.ExecContext(ctx, "INSERT INTO t VALUES ('x')")
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("commit whose publish wait was cancelled: %v, want ErrOutcomeUnknown", err)
	}
	f.SetLatency(fault.OpPut, 0)
	if n := queryInt(t, db, "SELECT count(*) FROM t"); n != 1 {
		t.Fatalf("%d rows: the commit must stand", n)
	}
}

// PRAGMA bop_checkpoint waits on the statement's context: with publishing
// slowed down, a statement whose context ends returns an error instead of
// waiting for the publish (it used to wait on the database's context,
// which ends only at close).
func TestCheckpointPragmaHonoursContext(t *testing.T) {
	db, f := faultDB(t, Config{CheckpointInterval: time.Hour})
	mustExec(t, db, "INSERT INTO t VALUES ('x')")
	f.SetLatency(fault.OpPut, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var txid int64
	err := db.QueryRowContext(ctx, "PRAGMA bop_checkpoint").Scan(&txid)
	if err == nil {
		t.Fatalf("bop_checkpoint with an ended context published txid %d, want an error", txid)
	}
	// It returned before the publish did (each PUT takes 5 s): database/sql
	// reports an ended context even for a statement that ran to the end.
	if s := statusOf(t, db); s.PublishedTxid >= s.Txid {
		t.Fatalf("bop_checkpoint waited for the publish (published %d of %d) past its context", s.PublishedTxid, s.Txid)
	}
	f.SetLatency(fault.OpPut, 0)
	if n := queryInt(t, db, "PRAGMA bop_checkpoint"); n == 0 {
		t.Fatal("bop_checkpoint after the slowdown published nothing")
	}
}

// A commit waiting for space in a full spool (the store down) gives up
// with its statement's context, rolled back, instead of blocking for the
// spool's minute-long wait and failing with a bare I/O error. After the
// outage, commits go on.
func TestSpoolFullWaitHonoursContext(t *testing.T) {
	db, f := faultDB(t, Config{SpoolLimit: 256 << 10, MaxLag: time.Hour, CheckpointInterval: 10 * time.Millisecond})
	f.SetOutage(true)
	var err error
	inserted := 0
	// Up to 24 MB: past the 8 MiB a coalesced group may hold in memory
	// before it is spooled, whenever the publisher's syncs come.
	for i := 0; i < 3000 && err == nil; i++ {
		// Only the insert that finds the spool full waits out its
		// deadline: 3 s leaves the others room on a loaded machine.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err = db.ExecContext(ctx, "INSERT INTO t VALUES (randomblob(8000))")
		cancel()
		if err == nil {
			inserted++
		}
	}
	if err == nil {
		t.Fatal("3000 inserts of 8 kB into a 256 KiB spool with the store down: none waited")
	}
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, sqlite3.INTERRUPT) {
		t.Fatalf("insert into a full spool: %v, want the statement's context or SQLite's interrupt", err)
	}
	if s := statusOf(t, db); s.SpoolBytes < 256<<10 {
		t.Fatalf("the insert gave up with the spool at %d bytes, under its limit", s.SpoolBytes)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM t"); n != int64(inserted) {
		t.Fatalf("%d rows, want the %d inserts that returned (the one that gave up is rolled back)", n, inserted)
	}
	f.SetOutage(false)
	waitUntil(t, "the spool to drain", func() bool { return statusOf(t, db).SpoolBytes < 256<<10 })
	mustExec(t, db, "INSERT INTO t VALUES ('after')")
}

// faultDB opens a new database through a VFS with cfg whose store is
// wrapped in a fault store, on one connection, with a table t(v).
func faultDB(t *testing.T, cfg Config) (*sql.DB, *fault.Store) {
	t.Helper()
	var f *fault.Store
	cfg.wrapStore = func(s remote.Store) remote.Store {
		f = fault.New(s, fault.Config{})
		return f
	}
	v := newVFS(t, cfg)
	db := openDB(t, v, filepath.Join(t.TempDir(), "fault.db"))
	db.SetMaxOpenConns(1)
	mustExec(t, db, "CREATE TABLE t(v)")
	return db, f
}
