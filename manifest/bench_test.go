package manifest_test

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/manifest/manifesttest"
	"github.com/bopstore/bop/remote"
)

// BenchmarkResolve: the newest snapshot of a 1M-page database (4 KiB
// pages, 64 MiB chunks) with 10% of its pages in 20 deltas spread over
// every chunk; random page numbers. Target < 200 ns/op, 0 allocs/op.
func BenchmarkResolve(b *testing.B) {
	layout, _ := remote.NewLayout("", "bench")
	cat, err := manifest.Open(filepath.Join(b.TempDir(), "c.db"), manifest.Options{Layout: layout, PageSize: 4096})
	if err != nil {
		b.Fatal(err)
	}
	defer cat.Close()
	const pages = 1 << 20
	if err := manifesttest.Build(context.Background(), cat, manifesttest.Shape{DBPages: pages, DeltaFraction: 0.10, Deltas: 20, Seed: 1}); err != nil {
		b.Fatal(err)
	}
	s := cat.Snapshot()
	if s.DeltaPages() < pages/10-20 {
		b.Fatalf("%d delta pages", s.DeltaPages())
	}
	rng := rand.New(rand.NewPCG(2, 2))
	pgnos := make([]uint32, 1<<16)
	for i := range pgnos {
		pgnos[i] = 1 + uint32(rng.IntN(pages))
	}
	b.ReportAllocs()
	b.ResetTimer()
	var inObject int
	for i := 0; b.Loop(); i++ {
		loc, err := s.Resolve(pgnos[i&(len(pgnos)-1)])
		if err != nil {
			b.Fatal(err)
		}
		if loc.Kind == manifest.InObject {
			inObject++
		}
	}
	if inObject == 0 {
		b.Fatal("nothing resolved to an object")
	}
	b.ReportMetric(float64(s.MemoryBytes())/float64(s.DeltaPages()), "mapB/deltapage")
}
