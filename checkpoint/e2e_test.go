package checkpoint

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	_ "github.com/ncruces/go-sqlite3/driver"

	"github.com/bopstore/bop/internal/testutil"
	"github.com/bopstore/bop/internal/vfstest"
	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/wal"
)

// End to end without bop's VFS: real SQLite writes through the capture
// test VFS (internal/vfstest), so the spool holds exactly what SQLite
// committed; the publisher publishes along the way; every boundary is
// restored and compared byte for byte with a copy of the live database
// taken at that boundary, and passes stock sqlite3's integrity_check.

var (
	captureOnce sync.Once
	captureVFS  *vfstest.VFS
)

const captureVFSName = "bopckptcapture"

func sharedCaptureVFS() *vfstest.VFS {
	captureOnce.Do(func() {
		captureVFS = vfstest.New(nil)
		captureVFS.Register(captureVFSName)
	})
	return captureVFS
}

// sqlNode is one database driven by real SQLite with its spool, capture,
// catalog, writer and publisher.
type sqlNode struct {
	t          testing.TB
	dir, path  string
	store      remote.Store
	chunkPages uint32
	spool      *wal.Spool
	capture    *wal.Capture
	cat        *manifest.Catalog
	w          *manifest.Writer
	pub        *Publisher
	db         *sql.DB
	pubCfg     func(*Config)
	// Power-loss tests: their own capture VFS (with a crash tracker) and
	// the spool's file system.
	vfs     *vfstest.VFS
	vfsName string
	spoolFS wal.FS
	sync    string // synchronous pragma (default full)
	// catVFS: the SQLite VFS of the catalog ("": the default). The power
	// loss test passes its crash-tracking VFS, so that the catalog's lazy
	// commits (manifest's txLazy) are lost with the rest.
	catVFS string
}

func newSQLNode(t testing.TB, store remote.Store, dir string, chunkPages uint32, adopt bool, pubCfg func(*Config)) *sqlNode {
	return newSQLNodeWith(t, store, dir, chunkPages, adopt, pubCfg, nil)
}

// newSQLNodeWith is newSQLNode with a chance to change the node (its VFS,
// spool file system, synchronous mode) before it opens.
func newSQLNodeWith(t testing.TB, store remote.Store, dir string, chunkPages uint32, adopt bool, pubCfg func(*Config), setup func(*sqlNode)) *sqlNode {
	n := &sqlNode{t: t, dir: dir, path: filepath.Join(dir, "app.db"), store: store, chunkPages: chunkPages, pubCfg: pubCfg,
		vfs: sharedCaptureVFS(), vfsName: captureVFSName, sync: "full"}
	if setup != nil {
		setup(n)
	}
	n.open(adopt)
	t.Cleanup(n.close)
	return n
}

func (n *sqlNode) open(adopt bool) {
	t := n.t
	t.Helper()
	var err error
	if n.spool, err = wal.OpenSpool(filepath.Join(n.dir, "spool"), wal.SpoolOptions{FS: n.spoolFS}); err != nil {
		t.Fatal(err)
	}
	if adopt {
		if _, err := recordImage(n.spool, n.path); err != nil {
			t.Fatal(err)
		}
	}
	if n.capture, err = wal.NewCapture(n.spool, wal.CaptureOptions{Adopt: adopt}); err != nil {
		t.Fatal(err)
	}
	n.vfs.Attach(n.path, n.capture)
	if n.cat, err = manifest.Open(filepath.Join(n.dir, "catalog.db"), manifest.Options{Layout: testLayout, PageSize: 4096,
		ChunkPages: n.chunkPages, VFS: n.catVFS}); err != nil {
		t.Fatal(err)
	}
	if n.w, err = manifest.NewWriter(n.store, testLayout, n.cat, manifest.NewWriterID("e2e"), manifest.WriterOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Store: n.store, Catalog: n.cat, Writer: n.w, Spool: n.spool, Capture: n.capture,
		StagingDir: filepath.Join(n.dir, "staging"), NoLoop: true, ForceTakeover: true}
	if n.pubCfg != nil {
		n.pubCfg(&cfg)
	}
	if n.pub, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	q := url.Values{}
	q.Set("vfs", n.vfsName)
	for _, p := range []string{"journal_mode(wal)", "synchronous(" + n.sync + ")", "cache_size(50)", "busy_timeout(10000)", "wal_autocheckpoint(300)"} {
		q.Add("_pragma", p)
	}
	if n.db, err = sql.Open("sqlite3", "file:"+n.path+"?"+q.Encode()); err != nil {
		t.Fatal(err)
	}
	n.db.SetMaxOpenConns(1)
}

func (n *sqlNode) close() {
	if n.db != nil {
		n.db.Close()
		n.db = nil
	}
	if n.pub != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		n.pub.Close(ctx)
		cancel()
		n.pub = nil
	}
	if n.capture != nil {
		n.capture.Close()
		n.capture = nil
	}
	if n.spool != nil {
		n.spool.Close()
		n.spool = nil
	}
	n.vfs.Detach(n.path)
	if n.cat != nil {
		n.cat.Close()
		n.cat = nil
	}
}

func (n *sqlNode) exec(q string, args ...any) {
	n.t.Helper()
	if _, err := n.db.Exec(q, args...); err != nil {
		n.t.Fatalf("%s: %v", q, err)
	}
}

// boundary checkpoints the WAL into the file, publishes, and saves a copy
// of the file as the reference for the published boundary.
func (n *sqlNode) boundary(refs map[uint64]string) uint64 {
	n.t.Helper()
	var busy, logf, ckpt int
	if err := n.db.QueryRow("PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logf, &ckpt); err != nil || busy != 0 {
		n.t.Fatalf("wal_checkpoint: %v busy %d", err, busy)
	}
	txid := publishNow(n.t, n.pub)
	if last := n.spool.Status().LastTxid; txid != last || txid != n.cat.Tip().Txid {
		n.t.Fatalf("published %d, spool ends at %d, catalog at %d", txid, last, n.cat.Tip().Txid)
	}
	ref := filepath.Join(n.dir, fmt.Sprintf("ref-%d.db", txid))
	copyFile(n.t, n.path, ref)
	refs[txid] = ref
	return txid
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// recordImage appends the database at path, with its -wal's committed
// frames over it, as one image record (what the VFS does when it adopts
// an existing database: wal.AppendImage), durable and confirmed.
func recordImage(sp *wal.Spool, path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var w wal.WALFile
	if wf, err := os.Open(path + "-wal"); err == nil {
		defer wf.Close()
		w = osFile{wf}
	}
	h, err := wal.AppendImage(sp, osFile{f}, 4096, w)
	return h.Txid, err
}

// osFile is a file as wal.MainFile and wal.WALFile.
type osFile struct{ *os.File }

func (f osFile) Size() (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// checkBoundaries restores every boundary and compares it with its
// reference copy; each restored file passes sqlite3's integrity_check.
func checkBoundaries(t testing.TB, store remote.Store, cat *manifest.Catalog, refs map[uint64]string) {
	t.Helper()
	for txid, ref := range refs {
		want, err := os.ReadFile(ref)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), fmt.Sprintf("restored-%d.db", txid))
		res, err := Restore(context.Background(), RestoreOptions{Store: store, Catalog: cat, Txid: txid, Path: path})
		if err != nil {
			t.Fatalf("restore %d: %v", txid, err)
		}
		if res.Txid != txid || res.Rounded {
			t.Fatalf("restore %d gave boundary %d", txid, res.Txid)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		sameBytes(t, fmt.Sprintf("boundary %d", txid), got, want, 4096)
		integrityCheck(t, path)
	}
}

// workload runs a mixed workload: schema, inserts, updates, deletes, a
// large transaction, VACUUM (shrink), a schema change, publishing at
// each step.
func workload(n *sqlNode, scale int, refs map[uint64]string) {
	n.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB, k TEXT)")
	n.exec("CREATE INDEX tk ON t(k)")
	n.boundary(refs)
	for i := range 10 * scale {
		n.exec("INSERT INTO t(v, k) VALUES (randomblob(?), hex(randomblob(8)))", 100+(i*137)%3000)
	}
	n.boundary(refs)
	n.exec("UPDATE t SET v = randomblob(500) WHERE id % 3 = 0")
	n.exec("DELETE FROM t WHERE id % 5 = 0")
	n.boundary(refs)
	// A large transaction (spills past the page cache).
	n.exec("INSERT INTO t(v, k) SELECT randomblob(3000), hex(randomblob(8)) FROM generate_series(1, ?)", 300*scale)
	n.boundary(refs)
	// A schema change.
	n.exec("ALTER TABLE t ADD COLUMN extra INTEGER DEFAULT 7")
	n.exec("CREATE TABLE u(a, b)")
	n.exec("INSERT INTO u SELECT value, randomblob(200) FROM generate_series(1, ?)", 50*scale)
	n.boundary(refs)
	// Shrink: delete most rows, VACUUM.
	n.exec("DELETE FROM t WHERE id % 4 != 0")
	n.exec("DROP TABLE u")
	n.exec("VACUUM")
	n.boundary(refs)
	for i := range 5 * scale {
		n.exec("INSERT INTO t(v, k) VALUES (randomblob(?), 'after')", 200+i)
	}
	n.boundary(refs)
}

func TestEndToEndSQLite(t *testing.T) {
	stores(t, func(t *testing.T, store remote.Store) {
		n := newSQLNode(t, store, t.TempDir(), 8, false, nil)
		refs := map[uint64]string{}
		workload(n, 1, refs)
		if len(refs) != 7 {
			t.Fatalf("%d boundaries", len(refs))
		}
		checkBoundaries(t, store, n.cat, refs)
		checkJobsFinished(t, n.cat, n.pub, filepath.Join(n.dir, "staging"))
		checkReferencedObjects(t, store, n.cat)
		// Cold: a catalog built from the store alone, newest boundary.
		path := filepath.Join(t.TempDir(), "cold.db")
		res, err := Restore(context.Background(), RestoreOptions{Store: store, Layout: testLayout, Path: path})
		must(t, err)
		got, _ := os.ReadFile(path)
		want, _ := os.ReadFile(refs[res.Txid])
		if res.Txid != n.cat.Tip().Txid || !bytes.Equal(got, want) {
			t.Fatalf("cold restore at %d differs", res.Txid)
		}
		integrityCheck(t, path)
	})
}

// The large version: a transaction of a few hundred MB, more rows.
func TestHeavyEndToEndSQLite(t *testing.T) {
	testutil.Heavy(t)
	stores(t, func(t *testing.T, store remote.Store) {
		n := newSQLNode(t, store, t.TempDir(), 256, false, nil)
		refs := map[uint64]string{}
		workload(n, 20, refs)
		// Several hundred MB in one transaction.
		n.exec("INSERT INTO t(v, k) SELECT randomblob(4000), 'big' FROM generate_series(1, 75000)")
		n.boundary(refs)
		n.exec("DELETE FROM t WHERE k = 'big'")
		n.exec("VACUUM")
		n.boundary(refs)
		checkBoundaries(t, store, n.cat, refs)
		checkJobsFinished(t, n.cat, n.pub, filepath.Join(n.dir, "staging"))
		checkReferencedObjects(t, store, n.cat)
	})
}

// Adoption: an existing database (written with the default VFS) is
// recorded as an image, published first as base objects across several
// chunks, and restores byte-identical; later transactions follow as
// deltas.
func TestEndToEndAdoption(t *testing.T) {
	stores(t, func(t *testing.T, store remote.Store) {
		dir := t.TempDir()
		path := filepath.Join(dir, "app.db")
		plain, err := sql.Open("sqlite3", "file:"+path+"?_pragma=journal_mode(wal)")
		must(t, err)
		for _, q := range []string{
			"CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)",
			"INSERT INTO t(v) SELECT randomblob(1500) FROM generate_series(1, 200)",
			"PRAGMA wal_checkpoint(TRUNCATE)",
		} {
			if _, err := plain.Exec(q); err != nil {
				t.Fatal(err)
			}
		}
		must(t, plain.Close())
		original, err := os.ReadFile(path)
		must(t, err)
		if len(original) < 20*4096 {
			t.Fatalf("database of %d bytes", len(original))
		}

		n := newSQLNode(t, store, dir, 16, true, nil)
		refs := map[uint64]string{}
		if got := publishNow(t, n.pub); got != 1 {
			t.Fatalf("adoption published at %d", got)
		}
		snap := n.cat.Snapshot()
		if objs := snap.Objects(); len(objs) != (len(original)/4096+15)/16 {
			t.Fatalf("%d objects for %d pages at 16 per chunk", len(objs), len(original)/4096)
		} else {
			for _, o := range objs {
				if o.Kind != manifest.ObjectBase {
					t.Fatalf("adoption published a %s", o.Kind)
				}
			}
		}
		imgPath := filepath.Join(dir, "ref-1.db")
		must(t, os.WriteFile(imgPath, original, 0o644))
		refs[1] = imgPath
		n.exec("INSERT INTO t(v) SELECT randomblob(700) FROM generate_series(1, 30)")
		n.boundary(refs)
		checkBoundaries(t, store, n.cat, refs)
	})
}
