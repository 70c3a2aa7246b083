// Command pagemap measures the manifest's page maps and publish path:
//
//   - map-*: build a synthetic catalog (4 KiB pages, 64 MiB chunks, a base
//     per chunk, 10% of the pages in 20 deltas spread over every chunk),
//     close it, then time a cold Open (which builds the newest page map
//     from the stored directories) and a SnapshotAt of an older boundary,
//     and measure the map's memory per delta page two ways: the structure
//     size (Snapshot.MemoryBytes) and the live heap it retains.
//   - publish-*: 60 publishes of a small delta each through a Writer
//     (log record If-None-Match PUT + catalog commit + head If-Match PUT),
//     timing each; on the fs store, and on S3 when BOP_S3_* point at a
//     server (versitygw as scripts/test.sh starts it).
//
// The baseline (map-bases-1GB) has no delta pages: its map costs nothing
// but the chunk table. Wall and CPU columns include building the synthetic
// catalog; the extras are the measurements.
//
//	go run ./bench/pagemap
package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/bopstore/bop/bench/harness"
	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/manifest/manifesttest"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fsstore"
	"github.com/bopstore/bop/remote/s3store"
)

const pageSize = 4096

func main() {
	variants := []harness.Variant{
		{Name: "map-bases-1GB", Baseline: true, Run: mapShape(1<<30/pageSize, 0)},
		{Name: "map-1GB", Run: mapShape(1<<30/pageSize, 0.10)},
		{Name: "map-10GB", Run: mapShape(10<<30/pageSize, 0.10)},
		{Name: "publish-fs", Run: publish(func(dir string) (remote.Store, error) { return fsstore.New(filepath.Join(dir, "store")) })},
	}
	if os.Getenv("BOP_S3_ENDPOINT") != "" {
		variants = append(variants, harness.Variant{Name: "publish-s3", Run: publish(s3)})
	}
	harness.Main("manifest: page maps and publish latency", variants)
}

func mapShape(pages uint32, fraction float64) func(string) (map[string]float64, error) {
	return func(dir string) (map[string]float64, error) {
		ctx := context.Background()
		layout, _ := remote.NewLayout("", "bench")
		path := filepath.Join(dir, "catalog.db")
		cat, err := manifest.Open(path, manifest.Options{Layout: layout, PageSize: pageSize})
		if err != nil {
			return nil, err
		}
		deltas := 20
		if fraction == 0 {
			deltas = 0
		}
		if err := manifesttest.Build(ctx, cat, manifesttest.Shape{DBPages: pages, DeltaFraction: fraction, Deltas: deltas, Seed: 1}); err != nil {
			return nil, err
		}
		if err := cat.Close(); err != nil {
			return nil, err
		}
		start := time.Now()
		cat, err = manifest.Open(path, manifest.Options{Layout: layout})
		if err != nil {
			return nil, err
		}
		defer cat.Close()
		openTime := time.Since(start)
		tip := cat.Snapshot()
		out := map[string]float64{
			"open_ms":     float64(openTime.Microseconds()) / 1000,
			"delta_pages": float64(tip.DeltaPages()),
			"map_bytes":   float64(tip.MemoryBytes()),
		}
		if tip.DeltaPages() > 0 {
			out["struct_B/dpage"] = float64(tip.MemoryBytes()) / float64(tip.DeltaPages())
		}
		if deltas > 0 {
			// An older boundary, built from rows: once to warm SQLite up,
			// once measured (time and retained heap).
			if _, err := cat.SnapshotAt(tip.Txid() - 1); err != nil {
				return nil, err
			}
			var m0, m1 runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&m0)
			start = time.Now()
			old, err := cat.SnapshotAt(tip.Txid() - 1)
			if err != nil {
				return nil, err
			}
			out["at_ms"] = float64(time.Since(start).Microseconds()) / 1000
			runtime.GC()
			runtime.ReadMemStats(&m1)
			out["heap_B/dpage"] = float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc)) / float64(old.DeltaPages())
			runtime.KeepAlive(old)
		}
		return out, nil
	}
}

func s3(dir string) (remote.Store, error) {
	return s3store.New(context.Background(), s3store.Config{
		Bucket: os.Getenv("BOP_S3_BUCKET"), Prefix: "bench-pagemap/" + filepath.Base(dir), Endpoint: os.Getenv("BOP_S3_ENDPOINT"),
		Region: os.Getenv("BOP_S3_REGION"), PathStyle: true, AccessKey: os.Getenv("BOP_S3_ACCESS_KEY"),
		SecretKey: os.Getenv("BOP_S3_SECRET_KEY"), DisableIMDS: true,
	})
}

func publish(open func(dir string) (remote.Store, error)) func(string) (map[string]float64, error) {
	return func(dir string) (map[string]float64, error) {
		ctx := context.Background()
		store, err := open(dir)
		if err != nil {
			return nil, err
		}
		layout, _ := remote.NewLayout("", "bench")
		cat, err := manifest.Open(filepath.Join(dir, "catalog.db"), manifest.Options{Layout: layout, PageSize: pageSize})
		if err != nil {
			return nil, err
		}
		defer cat.Close()
		w, err := manifest.NewWriter(store, layout, cat, "bench-writer", manifest.WriterOptions{})
		if err != nil {
			return nil, err
		}
		if _, err := w.Takeover(ctx, false); err != nil {
			return nil, err
		}
		rng := rand.New(rand.NewPCG(1, 1))
		var lat []time.Duration
		for i := range 60 {
			tip := cat.Tip()
			id, err := cat.AllocateObjectIDs(1)
			if err != nil {
				return nil, err
			}
			set := map[uint32]bool{}
			for range 20 {
				set[1+uint32(rng.IntN(50000))] = true
			}
			var pgnos []uint32
			for p := range set {
				pgnos = append(pgnos, p)
			}
			slices.Sort(pgnos)
			o, err := manifesttest.Object(layout, manifest.ObjectDelta, id, tip.Txid+1, tip.Txid+1, pgnos, pageSize, tip.ChunkPages)
			if err != nil {
				return nil, err
			}
			// The object itself is not read by Publish (its directory
			// travels with the record); a small placeholder stands in.
			if _, err := store.Put(ctx, o.Key, bytes.NewReader([]byte("x")), remote.PutOptions{Size: 1}); err != nil {
				return nil, err
			}
			rec := &manifest.Record{Txid: tip.Txid + 1, DBPages: 50000, Job: fmt.Sprint("job-", i), Added: []manifest.ObjectAdded{o}}
			start := time.Now()
			if err := w.Publish(ctx, rec); err != nil {
				return nil, err
			}
			lat = append(lat, time.Since(start))
		}
		lat = lat[10:] // warm-up
		slices.Sort(lat)
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		return map[string]float64{"publish_p50_ms": ms(lat[len(lat)/2]), "publish_p90_ms": ms(lat[len(lat)*9/10])}, nil
	}
}
