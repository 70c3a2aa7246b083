package manifest

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/bopstore/bop/delta"
	"github.com/bopstore/bop/internal/testutil"
	"github.com/bopstore/bop/remote"
)

var testLayout = remote.Layout{Tenant: "default", DB: "testdb"}

const testPageSize = 512

func openTestCatalog(t testing.TB, path string, chunkPages uint32) *Catalog {
	t.Helper()
	c, err := Open(path, Options{Layout: testLayout, PageSize: testPageSize, ChunkPages: chunkPages})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newTestCatalog(t testing.TB, chunkPages uint32) *Catalog {
	t.Helper()
	c := openTestCatalog(t, filepath.Join(t.TempDir(), "catalog.db"), chunkPages)
	t.Cleanup(func() { c.Close() })
	return c
}

// pageBytes is the deterministic content of page pgno in object id.
func pageBytes(id uint64, pgno uint32, size uint32) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(uint64(pgno)*31 + id*7 + uint64(i))
	}
	return b
}

// makeObject encodes a real page object holding pgnos (ascending) and
// returns its bytes and the ObjectAdded describing it, directory included.
func makeObject(t testing.TB, layout remote.Layout, kind string, id uint64, minTx, maxTx uint64, pgnos []uint32, chunkPages uint32) ([]byte, ObjectAdded) {
	t.Helper()
	k := delta.KindDelta
	if kind == ObjectBase {
		k = delta.KindBase
	}
	var buf bytes.Buffer
	enc, err := delta.NewEncoder(&buf, delta.Header{Kind: k, PageSize: testPageSize, ObjectID: id, MinTxid: minTx, MaxTxid: maxTx,
		FirstPgno: pgnos[0], PageCount: uint32(len(pgnos))})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pgnos {
		if err := enc.Add(p, pageBytes(id, p, testPageSize)); err != nil {
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
	key, err := layout.Object(kind, id, sum.Hash)
	if err != nil {
		t.Fatal(err)
	}
	var chunks []uint32
	for _, p := range pgnos {
		ch := chunkOf(p, chunkPages)
		if len(chunks) == 0 || chunks[len(chunks)-1] != ch {
			chunks = append(chunks, ch)
		}
	}
	return buf.Bytes(), ObjectAdded{ID: id, Kind: kind, Key: key, Size: sum.Size, Hash: Hash(sum.Hash), FirstPgno: pgnos[0],
		PageCount: uint32(len(pgnos)), MinTxid: minTx, MaxTxid: maxTx, Chunks: chunks, Directory: dir}
}

// nextRecord starts a record that follows the catalog's tip.
func nextRecord(c *Catalog, kind string, epoch uint64, writer string) *Record {
	tip := c.Tip()
	return &Record{Format: RecordFormat, Seq: tip.Seq + 1, Kind: kind, Epoch: epoch, Writer: writer,
		Parent: Parent{Seq: tip.LastSeq, Txid: tip.Txid}, Txid: tip.Txid, DBPages: tip.DBPages,
		PageSize: tip.PageSize, ChunkPages: tip.ChunkPages, CreatedMs: 1700000000000 + int64(tip.Seq)}
}

func mustApply(t testing.TB, c *Catalog, r *Record) {
	t.Helper()
	if err := c.Apply(context.Background(), r); err != nil {
		t.Fatalf("apply seq %d: %v", r.Seq, err)
	}
}

func heavy(t testing.TB) { testutil.Heavy(t) }
