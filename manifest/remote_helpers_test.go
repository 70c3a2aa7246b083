package manifest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bopstore/bop/internal/testutil/s3test"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fsstore"
	"github.com/ncruces/go-sqlite3"
)

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
	s, _ := s3test.Open(t, "manifest-test", nil)
	return s
}

// stores runs f on the fs store and on versitygw.
func stores(t *testing.T, f func(t *testing.T, store remote.Store)) {
	t.Run("fs", func(t *testing.T) { f(t, fsStore(t)) })
	t.Run("s3", func(t *testing.T) { f(t, s3Store(t)) })
}

// node is one process's view: a catalog and a writer on a store.
type node struct {
	t     testing.TB
	store remote.Store
	cat   *Catalog
	w     *Writer
	path  string
}

func newNode(t testing.TB, store remote.Store, id string, chunkPages uint32, opts WriterOptions) *node {
	t.Helper()
	path := filepath.Join(t.TempDir(), "catalog.db")
	cat := openTestCatalog(t, path, chunkPages)
	t.Cleanup(func() { cat.Close() })
	w, err := NewWriter(store, testLayout, cat, id, opts)
	if err != nil {
		t.Fatal(err)
	}
	return &node{t: t, store: store, cat: cat, w: w, path: path}
}

// upload creates the object and returns its description.
func (n *node) object(kind string, minTx, maxTx uint64, pgnos []uint32) ObjectAdded {
	n.t.Helper()
	id, err := n.cat.AllocateObjectIDs(1)
	if err != nil {
		n.t.Fatal(err)
	}
	data, o := makeObject(n.t, testLayout, kind, id, minTx, maxTx, pgnos, n.cat.Tip().ChunkPages)
	// Keys carry the content hash: a 412 means the same bytes are there
	// (two test writers can build identical objects).
	if _, err := n.store.Put(context.Background(), o.Key, bytes.NewReader(data), remote.PutOptions{IfNoneMatch: true, Size: int64(len(data))}); err != nil && !errors.Is(err, remote.ErrPrecondition) {
		n.t.Fatal(err)
	}
	return o
}

// randomPublish builds a publish of random pages (and sometimes a base
// rewrite of one chunk) on top of the catalog's tip. It uploads the
// objects but does not publish.
func (n *node) randomPublish(rng *mrand.Rand, maxPages uint32) *Record {
	n.t.Helper()
	tip := n.cat.Tip()
	cp := tip.ChunkPages
	t := tip.Txid + 1
	size := min(maxPages, max(1, tip.DBPages+uint32(rng.IntN(5)))-uint32(rng.IntN(2)))
	if size == 0 {
		size = 1
	}
	set := map[uint32]bool{}
	for range 1 + rng.IntN(6) {
		set[1+uint32(rng.IntN(int(size)))] = true
	}
	var pgnos []uint32
	for p := range set {
		pgnos = append(pgnos, p)
	}
	slices.Sort(pgnos)
	rec := &Record{Txid: t, DBPages: size, Job: fmt.Sprintf("job-%d", t)}
	rec.Added = append(rec.Added, n.object(ObjectDelta, tip.Txid+1, t, pgnos))
	if rng.IntN(4) == 0 {
		ch := uint32(rng.IntN(int((size-1)/cp) + 1))
		var ps []uint32
		for p := chunkFirst(ch, cp); p <= min(chunkLast(ch, cp), size); p++ {
			ps = append(ps, p)
		}
		rec.Added = append(rec.Added, n.object(ObjectBase, 1, t, ps))
		states, err := n.cat.Chunks()
		if err != nil {
			n.t.Fatal(err)
		}
		for _, cs := range states {
			if cs.Chunk != ch {
				continue
			}
			var old []Object
			if cs.Base != nil {
				old = append(old, *cs.Base)
			}
			old = append(append(old, cs.Deltas...), cs.Shadowed...)
			for _, o := range old {
				rec.Retired = append(rec.Retired, ObjectRetired{ID: o.ID, Chunks: []uint32{ch}})
			}
		}
	}
	return rec
}

// dumpState renders every table derived from the log (not the local
// ones), for comparing two catalogs.
func dumpState(t testing.TB, c *Catalog) string {
	t.Helper()
	if err := c.lock(); err != nil {
		t.Fatal(err)
	}
	defer c.mu.Unlock()
	var b strings.Builder
	for _, q := range []string{
		"SELECT format, tenant, db, page_size, chunk_pages, tip_seq, last_seq, last_txid, db_pages, epoch, writer, fence_epoch, history_floor_txid FROM meta",
		"SELECT * FROM publishes ORDER BY seq",
		"SELECT * FROM objects ORDER BY id",
		"SELECT * FROM object_chunks ORDER BY chunk, object_id",
		"SELECT object_id, hex(entries) FROM directories ORDER BY object_id",
	} {
		fmt.Fprintf(&b, "-- %s\n", q)
		err := c.query(q, nil, func(s *sqlite3.Stmt) error {
			for i := range s.ColumnCount() {
				fmt.Fprintf(&b, "%v|", s.ColumnValue(i).Text())
			}
			b.WriteByte('\n')
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// sameMaps checks two snapshots resolve every page alike.
func sameMaps(t testing.TB, what string, a, b *Snapshot, upTo uint32) {
	t.Helper()
	if a.Txid() != b.Txid() || a.DBPages() != b.DBPages() {
		t.Fatalf("%s: boundary %d/%d pages vs %d/%d", what, a.Txid(), a.DBPages(), b.Txid(), b.DBPages())
	}
	for p := uint32(1); p <= upTo; p++ {
		x, err1 := a.Resolve(p)
		y, err2 := b.Resolve(p)
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: page %d: %v %v", what, p, err1, err2)
		}
		if x.Kind != y.Kind || x.Frame != y.Frame || x.Offset != y.Offset || (x.Object == nil) != (y.Object == nil) ||
			(x.Object != nil && *x.Object != *y.Object) {
			t.Fatalf("%s: page %d: %+v vs %+v", what, p, x, y)
		}
	}
}

// readObject returns the whole object at key.
func readObject(t testing.TB, store remote.Store, key string) []byte {
	t.Helper()
	rc, _, err := store.Get(context.Background(), key, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeObject replaces the object at key with b (damaging it, in tests).
func writeObject(t testing.TB, store remote.Store, key string, b []byte) {
	t.Helper()
	if _, err := store.Put(context.Background(), key, bytes.NewReader(b), remote.PutOptions{Size: int64(len(b))}); err != nil {
		t.Fatal(err)
	}
}
