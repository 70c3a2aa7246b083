package vfs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/bopstore/bop/delta"
	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fsstore"
)

// publishFile publishes the pages of the database file src as base objects
// at txid 1 into the store at storeDir, building the catalog at catPath:
// the remote state a takeover would start from.
func publishFile(t *testing.T, src, storeDir, catPath string, layout remote.Layout, chunkPages uint32) (pageSize, dbPages uint32) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := headerPageSize(data[:100])
	if err != nil {
		t.Fatal(err)
	}
	n := uint32(len(data) / int(ps))
	store, err := fsstore.New(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	cat, err := manifest.Open(catPath, manifest.Options{Layout: layout, PageSize: ps, ChunkPages: chunkPages})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	ctx := context.Background()
	w, err := manifest.NewWriter(store, layout, cat, "test-publisher", manifest.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Takeover(ctx, false); err != nil {
		t.Fatal(err)
	}
	rec := &manifest.Record{Txid: 1, DBPages: n}
	nchunks := (n + chunkPages - 1) / chunkPages
	first, err := cat.AllocateObjectIDs(int(nchunks))
	if err != nil {
		t.Fatal(err)
	}
	for c := uint32(0); c < nchunks; c++ {
		lo, hi := c*chunkPages+1, min((c+1)*chunkPages, n)
		id := first + uint64(c)
		var buf bytes.Buffer
		enc, err := delta.NewEncoder(&buf, delta.Header{Kind: delta.KindBase, PageSize: ps, ObjectID: id, MinTxid: 1, MaxTxid: 1, FirstPgno: lo, PageCount: hi - lo + 1})
		if err != nil {
			t.Fatal(err)
		}
		for p := lo; p <= hi; p++ {
			if err := enc.Add(p, data[int64(p-1)*int64(ps):int64(p)*int64(ps)]); err != nil {
				t.Fatal(err)
			}
		}
		sum, err := enc.Close()
		if err != nil {
			t.Fatal(err)
		}
		dir, err := delta.EncodeDirectory(sum)
		if err != nil {
			t.Fatal(err)
		}
		key, err := layout.Object(manifest.ObjectBase, id, sum.Hash)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.Put(ctx, key, bytes.NewReader(buf.Bytes()), remote.PutOptions{IfNoneMatch: true, Size: int64(buf.Len())}); err != nil {
			t.Fatal(err)
		}
		rec.Added = append(rec.Added, manifest.ObjectAdded{ID: id, Kind: manifest.ObjectBase, Key: key, Size: sum.Size, Hash: manifest.Hash(sum.Hash),
			FirstPgno: lo, PageCount: hi - lo + 1, MinTxid: 1, MaxTxid: 1, Chunks: []uint32{c}, Directory: dir})
	}
	if err := w.Publish(ctx, rec); err != nil {
		t.Fatal(err)
	}
	// A planned handoff: the next writer need not wait for the lease.
	if err := w.Release(ctx); err != nil {
		t.Fatal(err)
	}
	return ps, n
}

// The read path of a sparse image: pages the image never held are read at
// T_seed through the catalog and the store, verified, and written into the
// image; writes mark pages present; the bitmap survives a reopen; mmap is
// never offered on the sparse file.
func TestSparseImageReadsFromRemote(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.db")
	plainDatabase(t, src, 2)
	plain := openDB(t, nil, src)
	wantRows := queryInt(t, plain, "SELECT count(*) FROM t")
	wantSum := queryInt(t, plain, "SELECT sum(k) + sum(length(v)) FROM t")
	plain.Close()

	path := filepath.Join(dir, "app.db")
	bopDir := path + "-bop"
	os.MkdirAll(bopDir, 0o755)
	layout := remote.Layout{Tenant: "default", DB: "app.db"}
	ps, pages := publishFile(t, src, filepath.Join(bopDir, "store"), filepath.Join(bopDir, "catalog.db"), layout, 64)
	if err := seedSparse(path, &meta{Format: metaFormat, Tenant: "default", Name: "app.db", TSeed: 1, RemoteChecked: true}, ps, pages); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Size() != int64(pages)*int64(ps) {
		t.Fatalf("sparse image is %d bytes", fi.Size())
	}

	v := newVFS(t, Config{})
	// mmap asked for: it must not be used on the sparse file (it would
	// read holes as zeros and the checks below would fail). 32 MiB: the
	// mapper of go-sqlite3's wasm build maps regions this size (a 256 MiB
	// request silently falls back to reads).
	db := openDB(t, v, path, "mmap_size(33554432)")
	if n := queryInt(t, db, "SELECT count(*) FROM t WHERE k >= 0"); n != wantRows {
		t.Fatalf("%d rows through the sparse image, want %d", n, wantRows)
	}
	d := stateOf(t, v, path)
	if d.img == nil || d.img.fetches.Load() == 0 {
		t.Fatal("no page was read from the remote")
	}
	missing := d.img.Missing()
	if missing == 0 || missing >= pages {
		t.Fatalf("%d of %d pages missing after a partial read", missing, pages)
	}
	if got := queryInt(t, db, "SELECT sum(k) + sum(length(v)) FROM t"); got != wantSum {
		t.Fatalf("content sum %d, want %d", got, wantSum)
	}
	integrityOK(t, db)
	// Txids continue from T_seed.
	mustExec(t, db, "UPDATE t SET k = -1 WHERE id = 1")
	if txid := queryString(t, db, "PRAGMA bop_txid"); txid != "2" {
		t.Fatalf("first local txid %s, want 2 (T_seed 1 + 1)", txid)
	}
	checkpointTruncate(t, db)
	fetches := d.img.fetches.Load()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopen: the pages hydrated before are local now.
	v2 := newVFS(t, Config{})
	db2 := openDB(t, v2, path)
	if n := queryInt(t, db2, "SELECT count(*) FROM t WHERE k = -1"); n != 1 {
		t.Fatalf("%d updated rows after reopen", n)
	}
	integrityOK(t, db2)
	d2 := stateOf(t, v2, path)
	if d2.img != nil {
		if f := d2.img.fetches.Load(); f != 0 {
			t.Fatalf("%d pages fetched again after reopen (first session fetched %d; integrity_check read them all)", f, fetches)
		}
	}
	// The database equals the published state plus the spooled
	// transactions (the local ones were published at the first close).
	checkReplay(t, v2, path, db2)
	if _, err := os.Stat(filepath.Join(path+"-bop", imageFileName)); !os.IsNotExist(err) {
		t.Fatalf("the bitmap of a complete image was not removed: %v", err)
	}
}
