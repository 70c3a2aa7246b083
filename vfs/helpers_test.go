package vfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bopstore/bop/checkpoint"
	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fault"
	"github.com/bopstore/bop/wal"
	_ "github.com/ncruces/go-sqlite3/driver"
	sqlite3vfs "github.com/ncruces/go-sqlite3/vfs"
)

var vfsSeq atomic.Int64

// newVFS registers a bop VFS with a unique name for the test.
func newVFS(t testing.TB, cfg Config) *VFS {
	t.Helper()
	name := fmt.Sprintf("boptest%d", vfsSeq.Add(1))
	v, err := Register(name, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// dsn builds a URI for path through vfsName with _pragma entries.
func dsn(path, vfsName string, pragmas ...string) string {
	q := url.Values{}
	if vfsName != "" {
		q.Set("vfs", vfsName)
	}
	for _, p := range pragmas {
		q.Add("_pragma", p)
	}
	return "file:" + path + "?" + q.Encode()
}

// openDB opens a database/sql pool on path through v (nil: the default
// VFS). It is closed at cleanup.
func openDB(t testing.TB, v *VFS, path string, pragmas ...string) *sql.DB {
	t.Helper()
	name := ""
	if v != nil {
		name = v.Name()
	}
	db, err := sql.Open("sqlite3", dsn(path, name, pragmas...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

type execer interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}

func mustExec(t testing.TB, db execer, q string, args ...any) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func queryString(t testing.TB, db *sql.DB, q string, args ...any) string {
	t.Helper()
	var s string
	if err := db.QueryRow(q, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return s
}

func queryInt(t testing.TB, db *sql.DB, q string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := db.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func integrityOK(t testing.TB, db *sql.DB) {
	t.Helper()
	if s := queryString(t, db, "PRAGMA integrity_check"); s != "ok" {
		t.Fatalf("integrity_check: %s", s)
	}
}

// fullPath is the path SQLite uses for the file (the state's key).
func fullPath(t testing.TB, v *VFS, path string) string {
	t.Helper()
	p, err := v.base.FullPathname(path)
	if p == "" {
		t.Fatal(err)
	}
	return p
}

// stateOf returns the open database state of path.
func stateOf(t testing.TB, v *VFS, path string) *database {
	t.Helper()
	d := lookup(fullPath(t, v, path))
	if d == nil {
		t.Fatalf("%s is not open", path)
	}
	return d
}

// checkpointTruncate runs wal_checkpoint(TRUNCATE) until no reader blocks it.
func checkpointTruncate(t testing.TB, db *sql.DB) {
	t.Helper()
	for i := 0; ; i++ {
		var busy, logf, ckpt int64
		if err := db.QueryRow("PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logf, &ckpt); err != nil {
			t.Fatal(err)
		}
		if busy == 0 {
			return
		}
		if i > 200 {
			t.Fatal("wal_checkpoint(TRUNCATE) stays busy")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkReplay checkpoints the WAL into the database and checks that the
// published state plus the spool reproduces the database file byte for
// byte: the newest published boundary restored from the store
// (checkpoint.Restore through the database's own catalog), then every
// spooled record after it applied in txid order. The spool range is
// leased meanwhile, so the publisher cannot truncate it.
func checkReplay(t testing.TB, v *VFS, path string, db *sql.DB) {
	t.Helper()
	checkpointTruncate(t, db)
	d := stateOf(t, v, path)
	out := filepath.Join(t.TempDir(), "replay.db")
	st := d.spool.Status()
	if st.FirstTxid <= st.LastTxid {
		release, err := d.spool.Lease(st.FirstTxid, st.LastTxid, "test-replay")
		if err != nil {
			t.Fatal(err)
		}
		defer release()
	}
	base := uint64(0)
	if d.catalog != nil {
		base = d.catalog.Tip().Txid
	}
	if base > 0 {
		if _, err := checkpoint.Restore(context.Background(), checkpoint.RestoreOptions{Store: d.store, Catalog: d.catalog, Txid: base, Path: out}); err != nil {
			t.Fatalf("restore the published boundary %d: %v", base, err)
		}
	}
	if st.FirstTxid > base+1 && st.FirstTxid <= st.LastTxid {
		t.Fatalf("the spool starts at txid %d but the store ends at %d", st.FirstTxid, base)
	}
	n, kinds := replaySpoolFrom(t, d.spool, base+1, st.LastTxid, out)
	if base == 0 && n == 0 {
		t.Fatal("nothing published and the spool holds no records")
	}
	if err := sameFiles(path, out); err != nil {
		t.Fatalf("published boundary %d + replay of %d spooled records (%v) differs from the live database: %v", base, n, kinds, err)
	}
}

// replaySpoolFrom applies the spool's records from..to to the file out
// (created if missing).
func replaySpoolFrom(t testing.TB, sp *wal.Spool, from, to uint64, out string) (records int, kinds map[wal.Kind]int) {
	t.Helper()
	f, err := os.OpenFile(out, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kinds = map[wal.Kind]int{}
	if from > to {
		return 0, kinds
	}
	for rec, err := range sp.Records(from, to) {
		if err != nil {
			t.Fatal(err)
		}
		records++
		kinds[rec.Kind]++
		for pg, err := range rec.Pages() {
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(pg.Data, int64(pg.Pgno-1)*int64(rec.PageSize)); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Truncate(int64(rec.DBPages) * int64(rec.PageSize)); err != nil {
			t.Fatal(err)
		}
	}
	return records, kinds
}

// offline returns cfg with its store in an outage (remote/fault) from the
// start: nothing is published, the spool keeps every record.
func offline(cfg Config) Config {
	cfg.wrapStore = func(s remote.Store) remote.Store {
		f := fault.New(s, fault.Config{})
		f.SetOutage(true)
		return f
	}
	return cfg
}

// sameFiles compares two files, streaming (they may be larger than memory
// should hold).
func sameFiles(a, b string) error {
	fa, err := os.Open(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return err
	}
	defer fb.Close()
	sa, _ := fa.Stat()
	sb, _ := fb.Stat()
	if sa.Size() != sb.Size() {
		return fmt.Errorf("%s is %d bytes, %s is %d", a, sa.Size(), b, sb.Size())
	}
	ba := make([]byte, 1<<20)
	bb := make([]byte, 1<<20)
	for off := int64(0); off < sa.Size(); off += int64(len(ba)) {
		na, err := fa.ReadAt(ba, off)
		if err != nil && err != io.EOF {
			return err
		}
		nb, err := fb.ReadAt(bb, off)
		if err != nil && err != io.EOF {
			return err
		}
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			for i := 0; i < min(na, nb); i++ {
				if ba[i] != bb[i] {
					return fmt.Errorf("first difference at byte %d (page %d at 4 KiB)", off+int64(i), (off+int64(i))/4096+1)
				}
			}
			return fmt.Errorf("difference in block at %d", off)
		}
	}
	return nil
}

func fileHash(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func errContains(err error, s string) bool {
	return err != nil && strings.Contains(err.Error(), s)
}

func openDBURI(t testing.TB, uri string) (*sql.DB, error) {
	t.Helper()
	db, err := sql.Open("sqlite3", uri)
	if err == nil {
		t.Cleanup(func() { db.Close() })
	}
	return db, err
}

func vfsFind(name string) any {
	if v := sqlite3vfs.Find(name); v != nil {
		return v
	}
	return nil
}

// statusOf returns PRAGMA bop_status.
func statusOf(t testing.TB, db *sql.DB) Status {
	t.Helper()
	var s Status
	if err := json.Unmarshal([]byte(queryString(t, db, "PRAGMA bop_status")), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// waitUntil polls cond for up to a minute.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// takeOver makes another node, id, the writer of layout's database in
// store, as a second machine would: with a catalog built from the store
// (fromStore) or a new one, a writer, and its takeover (forced if force).
// The catalog is closed at cleanup.
func takeOver(t testing.TB, store remote.Store, layout remote.Layout, id string, fromStore, force bool) *manifest.Writer {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "catalog.db")
	var cat *manifest.Catalog
	var err error
	if fromStore {
		cat, err = manifest.OpenRemote(ctx, store, layout, path, manifest.Options{})
	} else {
		cat, err = manifest.Open(path, manifest.Options{Layout: layout})
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	w, err := manifest.NewWriter(store, layout, cat, id, manifest.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Takeover(ctx, force); err != nil {
		t.Fatal(err)
	}
	return w
}
