package cache

import (
	"sync/atomic"
	"testing"

	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fault"
	"github.com/bopstore/bop/remote/fsstore"
	"github.com/bopstore/bop/remote/storetest"
)

func newFS(t *testing.T) *fsstore.Store {
	t.Helper()
	s, err := fsstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// The cache is a drop-in Store: with the default Cacheable (the suite's
// keys are not Layout keys, so everything passes through) ...
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) remote.Store {
		return newCache(t, newFS(t), Config{})
	}, storetest.Options{})
}

// ... and with every key cached, so every rule of the contract (range
// edges, empty objects, missing keys, replacement and ETags, conditional
// races, cancellation) is answered by the cache's own read path. Small
// blocks make multi-block ranges and read-ahead the common case.
func TestConformanceCacheAll(t *testing.T) {
	for _, bs := range []int64{4 << 10, 64 << 10} {
		t.Run(sizeName(bs), func(t *testing.T) {
			var hits, misses atomic.Int64
			storetest.Run(t, func(t *testing.T) remote.Store {
				c := newCache(t, newFS(t), Config{Cacheable: cacheAll, BlockSize: bs, ReadAhead: 16 * bs})
				t.Cleanup(func() {
					st := c.Stats()
					hits.Add(st.Hits)
					misses.Add(st.Misses)
				})
				return c
			}, storetest.Options{})
			// The suite's reads really went through blocks.
			if hits.Load() == 0 || misses.Load() == 0 {
				t.Errorf("%d block hits, %d misses over the suite: the cache was bypassed", hits.Load(), misses.Load())
			}
			t.Logf("%d block hits, %d misses over the suite", hits.Load(), misses.Load())
		})
	}
}

// Over the fault wrapper (as production stacks may run it) with a quota
// small enough that the large cases evict while they stream.
func TestConformanceOverFault(t *testing.T) {
	storetest.Run(t, func(t *testing.T) remote.Store {
		return newCache(t, fault.New(newFS(t), fault.Config{}), Config{Cacheable: cacheAll, BlockSize: 16 << 10, MaxBytes: 1 << 20})
	}, storetest.Options{})
}

func sizeName(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return itoa(n>>20) + "MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return itoa(n>>10) + "KiB"
	}
	return itoa(n) + "B"
}

func itoa(n int64) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}
