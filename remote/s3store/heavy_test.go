package s3store

import (
	"io"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/bopstore/bop/internal/testutil"
	"github.com/bopstore/bop/remote"
)

// TestHeavyPutMemory: a 256 MiB object generated on the fly goes up with a
// bounded heap (seed review, finding 12: uploads buffered whole), and
// comes back with the same xxhash64.
//
// What is measured: HeapInuse (spans holding live or not yet collected
// objects), sampled every 2 ms during the upload, its peak minus its value
// after a GC just before the upload. Garbage counts against us, so this is
// stricter than live heap; a part buffer lives for a whole UploadPart, far
// longer than the sampling interval, so no buffer escapes the sampling.
// With PartSize 5 MiB and Concurrency 4 the design bound is 20 MiB of
// part buffers; the test allows 32 MiB for everything (SDK included).
func TestHeavyPutMemory(t *testing.T) {
	testutil.Heavy(t)
	s := newTestStore(t, func(c *Config) {
		c.PartSize = MinPartSize
		c.MultipartThreshold = MinPartSize
		c.Concurrency = 4
	})
	const size = 256 << 20
	const seed = 42

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base, baseAlloc := ms.HeapInuse, ms.TotalAlloc
	var peak uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapInuse)
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	res, err := s.Put(t.Context(), "big", &gen{seed: seed, size: size}, remote.PutOptions{Size: -1})
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&ms)
	growth := int64(peak) - int64(base)
	t.Logf("256 MiB upload: peak HeapInuse %d MiB above the start (%d MiB at start), %d MiB allocated in total",
		growth>>20, base>>20, (ms.TotalAlloc-baseAlloc)>>20)
	if growth >= 32<<20 {
		t.Errorf("heap grew by %d MiB during a streaming upload, want < 32 MiB", growth>>20)
	}
	want := genHash(seed, size)
	if res.Size != size || res.XXH64 != want {
		t.Errorf("PutResult %+v, want size %d xxh64 %016x", res, size, want)
	}
	rc, info, err := s.Get(t.Context(), "big", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	h := xxhash.New()
	if n, err := io.Copy(h, rc); err != nil || n != size {
		t.Fatalf("download: %d bytes, %v", n, err)
	}
	if h.Sum64() != want || info.Size != size {
		t.Errorf("downloaded xxh64 %016x size %d, want %016x %d", h.Sum64(), info.Size, want, size)
	}
}

// TestHeavyPutFileMemory: a 128 MiB file goes up in sections of the file,
// without part buffers: the heap grows by far less than one part per
// slot (measured as in TestHeavyPutMemory).
func TestHeavyPutFileMemory(t *testing.T) {
	testutil.Heavy(t)
	s := newTestStore(t, func(c *Config) {
		c.PartSize = 8 << 20
		c.Concurrency = 4
	})
	const size = 128 << 20
	path := t.TempDir() + "/body"
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, &gen{seed: 9, size: size}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapInuse)
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	res, err := s.Put(t.Context(), "file", f, remote.PutOptions{Size: size})
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	growth := int64(peak) - int64(base)
	t.Logf("128 MiB file upload: peak HeapInuse %d MiB above the start", growth>>20)
	if growth >= 8<<20 {
		t.Errorf("heap grew by %d MiB uploading a file, want < 8 MiB (no part buffers)", growth>>20)
	}
	if res.XXH64 != genHash(9, size) {
		t.Errorf("PutResult.XXH64 %016x, want %016x", res.XXH64, genHash(9, size))
	}
}
