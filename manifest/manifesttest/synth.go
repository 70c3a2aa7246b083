// Package manifesttest builds synthetic catalog histories for tests and
// benchmarks: records whose objects exist only as descriptions and
// directories (no page bytes), so a 10 GB database shape costs seconds.
package manifesttest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/bopstore/bop/delta"
	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote"
)

// Object describes a synthetic object of kind holding pgnos (ascending),
// with its directory when it is a delta.
func Object(layout remote.Layout, kind string, id, minTx, maxTx uint64, pgnos []uint32, pageSize, chunkPages uint32) (manifest.ObjectAdded, error) {
	k := delta.KindDelta
	if kind == manifest.ObjectBase {
		k = delta.KindBase
	}
	h := delta.Header{Version: delta.CurrentVersion, Kind: k, PageSize: pageSize, ObjectID: id, MinTxid: minTx, MaxTxid: maxTx,
		FirstPgno: pgnos[0], PageCount: uint32(len(pgnos))}
	sum := delta.Summary{Header: h, Size: delta.ObjectSize(pageSize, h.PageCount), Hash: id*0x9e3779b97f4a7c15 + 1, PageCount: h.PageCount}
	var chunks []uint32
	for i, p := range pgnos {
		sum.Entries = append(sum.Entries, delta.Entry{Pgno: p, Index: uint32(i), Offset: delta.FrameOffset(pageSize, uint32(i)), Length: pageSize})
		if ch := (p - 1) / chunkPages; len(chunks) == 0 || chunks[len(chunks)-1] != ch {
			chunks = append(chunks, ch)
		}
	}
	key, err := layout.Object(kind, id, sum.Hash)
	if err != nil {
		return manifest.ObjectAdded{}, err
	}
	o := manifest.ObjectAdded{ID: id, Kind: kind, Key: key, Size: sum.Size, Hash: manifest.Hash(sum.Hash), FirstPgno: pgnos[0],
		PageCount: h.PageCount, MinTxid: minTx, MaxTxid: maxTx, Chunks: chunks}
	if kind == manifest.ObjectDelta {
		if o.Directory, err = delta.EncodeDirectory(sum); err != nil {
			return manifest.ObjectAdded{}, err
		}
	}
	return o, nil
}

// Shape is a database shape to build.
type Shape struct {
	DBPages       uint32
	DeltaFraction float64 // of pages whose newest version is in a delta
	Deltas        int     // delta objects (records), each spanning every chunk
	Seed          uint64
}

// Build applies to an empty catalog: a takeover, one record with a base
// object for every chunk (txid 1), then Shape.Deltas records each adding
// one delta of random distinct pages, so that about DeltaFraction of the
// pages end up read from deltas.
func Build(ctx context.Context, cat *manifest.Catalog, s Shape) error {
	tip := cat.Tip()
	if tip.Seq != 0 {
		return fmt.Errorf("manifesttest: catalog not empty")
	}
	layout := cat.Layout()
	ps, cp := tip.PageSize, tip.ChunkPages
	rec := func(kind string) *manifest.Record {
		t := cat.Tip()
		return &manifest.Record{Format: manifest.RecordFormat, Seq: t.Seq + 1, Kind: kind, Epoch: 1, Writer: "synth",
			Parent: manifest.Parent{Seq: t.LastSeq, Txid: t.Txid}, Txid: t.Txid, DBPages: t.DBPages, PageSize: ps, ChunkPages: cp}
	}
	if err := cat.Apply(ctx, rec(manifest.KindTakeover)); err != nil {
		return err
	}
	r := rec(manifest.KindPublish)
	r.Txid, r.DBPages = 1, s.DBPages
	id := uint64(1)
	for first := uint32(1); first <= s.DBPages; first += cp {
		last := min(uint64(first)+uint64(cp)-1, uint64(s.DBPages))
		pgnos := make([]uint32, 0, last-uint64(first)+1)
		for p := uint64(first); p <= last; p++ {
			pgnos = append(pgnos, uint32(p))
		}
		o, err := Object(layout, manifest.ObjectBase, id, 1, 1, pgnos, ps, cp)
		if err != nil {
			return err
		}
		id++
		r.Added = append(r.Added, o)
	}
	if err := cat.Apply(ctx, r); err != nil {
		return err
	}
	if s.Deltas == 0 {
		return nil
	}
	rng := rand.New(rand.NewPCG(s.Seed, 1))
	perDelta := int(float64(s.DBPages) * s.DeltaFraction / float64(s.Deltas))
	// Distinct pages across deltas, so the fraction is exact.
	perm := rng.Perm(int(s.DBPages))
	for d := range s.Deltas {
		pick := perm[d*perDelta : (d+1)*perDelta]
		pgnos := make([]uint32, len(pick))
		for i, p := range pick {
			pgnos[i] = uint32(p + 1)
		}
		slices.Sort(pgnos)
		r := rec(manifest.KindPublish)
		r.Txid = uint64(2 + d)
		o, err := Object(layout, manifest.ObjectDelta, id, r.Txid, r.Txid, pgnos, ps, cp)
		if err != nil {
			return err
		}
		id++
		r.Added = []manifest.ObjectAdded{o}
		if err := cat.Apply(ctx, r); err != nil {
			return err
		}
	}
	return nil
}
