package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fault"
)

// Many goroutines read overlapping ranges of several objects at once
// (slow GETs, so fetches overlap): every read returns the right bytes,
// and every block is fetched exactly once (singleflight).
func TestConcurrentReadersSingleflight(t *testing.T) {
	const B = 4 << 10
	m, _ := newMetered(t)
	sizes := []int64{64 * B, 48*B + 100, 32 * B, 5}
	keys := make([]string, len(sizes))
	for i := range keys {
		keys[i] = objKey(t, uint64(50+i))
		putPattern(t, m, keys[i], uint64(50+i), sizes[i])
	}
	c := newCache(t, m, Config{BlockSize: B, ReadAhead: -1, MaxBytes: 1 << 30})
	m.Reset()
	m.SetLatency(fault.OpGet, 2*time.Millisecond)

	const readers, reads = 16, 60
	type read struct {
		obj     int
		off, n  int64
		wantErr bool
	}
	plans := make([][]read, readers)
	touched := map[[2]int64]int64{} // (object, block) -> block length
	for g := range plans {
		rng := rand.New(rand.NewPCG(uint64(g), 99))
		for range reads {
			i := rng.IntN(len(sizes))
			off := rng.Int64N(sizes[i])
			n := min(rng.Int64N(3*B)+1, sizes[i]-off)
			plans[g] = append(plans[g], read{obj: i, off: off, n: n})
			for b := off / B; b <= (off+n-1)/B; b++ {
				touched[[2]int64{int64(i), b}] = min(B, sizes[i]-b*B)
			}
		}
	}
	var wantBytes int64
	for _, n := range touched {
		wantBytes += n
	}

	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for g := range readers {
		wg.Go(func() {
			for _, r := range plans[g] {
				p := make([]byte, r.n)
				if n, err := c.ReadAt(t.Context(), keys[r.obj], p, r.off); err != nil || int64(n) != r.n {
					errs <- fmt.Errorf("read %d@%d of object %d: %d, %v", r.n, r.off, r.obj, n, err)
					return
				}
				if !bytes.Equal(p, patternBytes(uint64(50+r.obj), r.off, r.n)) {
					errs <- fmt.Errorf("read %d@%d of object %d: wrong bytes", r.n, r.off, r.obj)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := c.Stats()
	if _, b := gets(m); b != wantBytes || st.Misses != int64(len(touched)) {
		t.Errorf("fetched %d bytes as %d block misses; want each of the %d blocks touched once (%d bytes)", b, st.Misses, len(touched), wantBytes)
	}
	if r, _ := gets(m); r > int64(len(touched)) {
		t.Errorf("%d GETs for %d blocks", r, len(touched))
	}
	checkAccounting(t, c)
}

// Readers, writers, deleters, pinners and Get bodies at once, with a quota
// and a descriptor cache small enough that eviction and descriptor churn
// race with every read (run it under -race). Stable keys always read
// right; keys being replaced always read as one whole version.
func TestConcurrentMixed(t *testing.T) {
	const B = 4 << 10
	m, _ := newMetered(t)
	c := newCache(t, m, Config{BlockSize: B, ReadAhead: 8 * B, MaxBytes: 24 * B, MaxOpenFiles: 3})
	stable := []string{objKey(t, 60), objKey(t, 61), objKey(t, 62)}
	for i, k := range stable {
		putPattern(t, m, k, uint64(60+i), int64(20+i*5)*B+int64(i))
	}
	moving := objKey(t, 70) // replaced through the cache with seeds 100+
	const movingSize = 12*B + 3
	putPattern(t, c, moving, 100, movingSize)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	report := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	var readers sync.WaitGroup
	for g := range 6 {
		readers.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for i := 0; i < 150; i++ {
				k := rng.IntN(len(stable))
				size := int64(20+k*5)*B + int64(k)
				off := rng.Int64N(size)
				n := min(rng.Int64N(4*B)+1, size-off)
				if rng.IntN(4) == 0 {
					off, n = int64(i%20)*B, B // sequential-ish: read-ahead
				}
				p := make([]byte, n)
				if got, err := c.ReadAt(ctx, stable[k], p, off); err != nil || int64(got) != n {
					report(fmt.Errorf("stable read: %d, %v", got, err))
					return
				}
				if !bytes.Equal(p, patternBytes(uint64(60+k), off, n)) {
					report(fmt.Errorf("stable read of %d@%d: wrong bytes", n, off))
					return
				}
			}
		})
	}
	// Readers of the moving key: whole-object Gets must be one version.
	var wholeReads atomic.Int64
	for g := range 2 {
		wg.Go(func() {
			// Each reader ends after the writer has stopped and it has
			// read at least one whole version.
			mine := 0
			for {
				select {
				case <-stop:
					if mine > 0 {
						return
					}
				case <-ctx.Done():
					report(fmt.Errorf("moving reader %d: no whole read before the deadline", g))
					return
				default:
				}
				rc, info, err := c.Get(ctx, moving, 0, -1)
				if errors.Is(err, remote.ErrNotFound) {
					continue
				}
				if err != nil {
					report(fmt.Errorf("moving Get: %v", err))
					return
				}
				b, err := io.ReadAll(rc)
				rc.Close()
				if errors.Is(err, errChanged) || errors.Is(err, remote.ErrNotFound) {
					continue // replaced or deleted while read: refused, fine
				}
				if err != nil || int64(len(b)) != info.Size {
					report(fmt.Errorf("moving body (reader %d): %d bytes of %d, %v", g, len(b), info.Size, err))
					return
				}
				if !isSomeVersion(b) {
					report(errors.New("moving body mixes versions"))
					return
				}
				wholeReads.Add(1)
				mine++
			}
		})
	}
	// A writer replacing and deleting the moving key, a pinner, a Stats
	// poller.
	wg.Go(func() {
		for seed := uint64(101); ; seed++ {
			select {
			case <-stop:
				// End with the key present, for the readers' last read.
				if _, err := c.Put(ctx, moving, &pattern{seed: seed, size: movingSize}, remote.PutOptions{Size: movingSize}); err != nil {
					report(err)
				}
				return
			default:
			}
			if seed%5 == 0 {
				if err := c.Delete(ctx, moving); err != nil {
					report(err)
					return
				}
				continue
			}
			if _, err := c.Put(ctx, moving, &pattern{seed: seed, size: movingSize}, remote.PutOptions{Size: movingSize}); err != nil {
				report(err)
				return
			}
			// Leave the readers a window to read a version whole (a
			// reader overtaken by every Put proves nothing).
			time.Sleep(time.Duration(seed%4) * 10 * time.Millisecond)
		}
	})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := stable[i%len(stable)]
			c.Pin(k)
			time.Sleep(time.Millisecond)
			c.Unpin(k)
			if st := c.Stats(); st.UsedBytes > c.cfg.MaxBytes {
				report(fmt.Errorf("used %d > MaxBytes %d", st.UsedBytes, c.cfg.MaxBytes))
			}
		}
	})
	// The open-ended goroutines run as long as the stable readers do.
	readers.Wait()
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if st := c.Stats(); st.Corrupt != 0 || st.FileErrors != 0 {
		t.Errorf("%d blocks counted corrupt, %d file errors: nothing was damaged", st.Corrupt, st.FileErrors)
	}
	if st := c.Stats(); st.Evictions == 0 || st.Hits == 0 || wholeReads.Load() == 0 || st.OpenFiles > 3 {
		t.Errorf("%d evictions, %d hits, %d whole reads of the moving key, %d open files: the test raced nothing, or kept too many files open",
			st.Evictions, st.Hits, wholeReads.Load(), st.OpenFiles)
	}
	t.Logf("%d whole reads of the moving key; %+v", wholeReads.Load(), c.Stats())
	checkAccounting(t, c)
}

// isSomeVersion reports whether b is the whole content of one version of
// the moving object (seeds 100 and up).
func isSomeVersion(b []byte) bool {
	if len(b) < 8 {
		return false
	}
	for seed := uint64(100); seed < 100_000; seed++ {
		var w [8]byte
		fillPattern(seed, 0, w[:])
		if bytes.Equal(w[:], b[:8]) {
			return bytes.Equal(b, patternBytes(seed, 0, int64(len(b))))
		}
	}
	return false
}
