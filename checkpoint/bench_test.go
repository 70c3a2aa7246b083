package checkpoint

import (
	"context"
	"testing"
)

// BenchmarkPublish publishes 64 MiB of changed pages (16 transactions of
// 1024 distinct pages) to the fs store in one job. bench/publish measures
// the same at 1 GiB with the harness; this one is for profiling.
func BenchmarkPublish(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		s := newSynth(b, fsStore(b), synthOpts{chunkPages: 16384, seed: 1})
		p := s.publisher(nil)
		for t := uint32(0); t < 16; t++ {
			pages := make([]uint32, 0, 1024)
			for pg := t*1024 + 1; pg <= (t+1)*1024; pg++ {
				pages = append(pages, pg)
			}
			s.commit((t+1)*1024, pages, false)
		}
		b.StartTimer()
		if _, err := p.PublishNow(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(64 << 20)
	}
}
