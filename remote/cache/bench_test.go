package cache

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/bopstore/bop/delta"
)

// The hit path against a plain pread of the same bytes: random page frames
// of an 8 MiB base object, every block cached. bench/cache measures the
// same with process CPU time; this one shows ns and allocations per read.
//
//	go test -run '^$' -bench 'Hit|Pread' -benchmem ./remote/cache/
func BenchmarkReadAtHit(b *testing.B) {
	const pageSize, pages = 4096, 2048
	m, fs := newMetered(b)
	key := objKey(b, 1)
	putBase(b, m, key, 1, pages, pageSize)
	c := newCache(b, fs, Config{})
	frame := make([]byte, delta.FrameSize(pageSize))
	for i := range uint32(pages) {
		readFrame(b, c, key, 1, i, pageSize)
	}
	misses := c.Stats().Misses
	rng := rand.New(rand.NewPCG(1, 1))
	ctx := b.Context()
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		off := delta.FrameOffset(pageSize, uint32(rng.IntN(pages)))
		if _, err := c.ReadAt(ctx, key, frame, off); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if st := c.Stats(); st.Misses != misses {
		b.Fatalf("%d misses while timed: not all hits", st.Misses-misses)
	}
}

func BenchmarkPread(b *testing.B) {
	const pageSize, pages = 4096, 2048
	_, fs := newMetered(b)
	key := objKey(b, 1)
	putBase(b, fs, key, 1, pages, pageSize)
	f, err := os.Open(filepath.Join(fs.Root(), filepath.FromSlash(key)))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	frame := make([]byte, delta.FrameSize(pageSize))
	rng := rand.New(rand.NewPCG(1, 1))
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		off := delta.FrameOffset(pageSize, uint32(rng.IntN(pages)))
		if _, err := f.ReadAt(frame, off); err != nil {
			b.Fatal(err)
		}
	}
}
