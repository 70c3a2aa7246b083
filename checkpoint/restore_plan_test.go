package checkpoint

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bopstore/bop/delta"
	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote"
)

// regionPages: two regions per worker, never fewer pages than the minimum
// bytes hold, never more than the database, never zero.
func TestRestoreRegionPages(t *testing.T) {
	const ps = 4096
	cases := []struct {
		db      uint32
		workers int
		min     int64
		want    uint32
	}{
		{db: 262144, workers: 8, min: 8 << 20, want: 16384}, // 1 GiB: 16 regions of 64 MiB
		{db: 262145, workers: 8, min: 8 << 20, want: 16385}, // rounded up: still 16
		{db: 25600, workers: 8, min: 8 << 20, want: 2048},   // 100 MiB: 8 MiB regions
		{db: 100, workers: 8, min: 8 << 20, want: 100},      // smaller than one minimum: one region
		{db: 100, workers: 0, min: 0, want: 50},             // no workers: as one
		{db: 100, workers: 8, min: 1 << 62, want: 100},      // a huge minimum: one region
		{db: 0, workers: 8, min: 8 << 20, want: 1},          // empty: never zero
		{db: 1<<32 - 1, workers: 1, min: 0, want: 1 << 31},  // no overflow at the largest
	}
	for _, c := range cases {
		if got := regionPages(c.db, ps, c.workers, c.min); got != c.want {
			t.Errorf("regionPages(%d pages, %d workers, min %d) = %d, want %d", c.db, c.workers, c.min, got, c.want)
		}
	}
}

// plan, for region sizes from one page to the whole database: every page
// that resolves to an object lies in a piece of its own region for that
// object, a piece's ends are frames its region's pages use (so pieces of
// one object never overlap), bases and deltas are apart, and only a base
// piece covering 7/8 of its object is fetched whole.
func TestRestorePlanRegions(t *testing.T) {
	s, boundaries := deltaHeavy(t, fsStore(t))
	for _, b := range boundaries {
		snap, err := s.cat.SnapshotAt(b)
		must(t, err)
		for _, size := range []uint32{1, 3, 8, 16, 1000} {
			rs := &restorer{snap: snap, ps: snap.PageSize(), fs: delta.FrameSize(snap.PageSize()), db: snap.DBPages()}
			objs, regions, zeros, err := rs.plan(size)
			must(t, err)
			if want := (snap.DBPages() + size - 1) / size; len(regions) != int(want) {
				t.Fatalf("size %d: %d regions for %d pages", size, len(regions), snap.DBPages())
			}
			// The model: per region and object, the frames its pages use.
			type key struct {
				region int
				id     uint64
			}
			used := map[key][2]uint32{}
			var inObjects int64
			var wantZeros uint32
			for p := uint32(1); p <= snap.DBPages(); p++ {
				loc, err := snap.Resolve(p)
				must(t, err)
				if loc.Kind != manifest.InObject {
					wantZeros++
					continue
				}
				inObjects++
				k := key{int((p - 1) / size), loc.Object.ID}
				sp, ok := used[k]
				if !ok {
					sp = [2]uint32{loc.Frame, loc.Frame}
				}
				used[k] = [2]uint32{min(sp[0], loc.Frame), max(sp[1], loc.Frame)}
			}
			if zeros != wantZeros {
				t.Fatalf("size %d: %d zero pages, want %d", size, zeros, wantZeros)
			}
			var pages int64
			for _, o := range objs {
				pages += o.pages
			}
			if pages != inObjects {
				t.Fatalf("size %d: objects count %d pages, the boundary reads %d from objects", size, pages, inObjects)
			}
			seen := 0
			for i, r := range regions {
				if r.lo != uint32(i)*size+1 || r.hi != min(r.lo+size-1, snap.DBPages()) {
					t.Fatalf("size %d: region %d is pages %d..%d", size, i, r.lo, r.hi)
				}
				for kind, list := range [][]piece{r.bases, r.deltas} {
					for _, p := range list {
						if p.plan.base() != (kind == 0) {
							t.Fatalf("size %d, region %d: %s among the wrong kind", size, i, p.plan.obj.Key)
						}
						sp, ok := used[key{i, p.plan.obj.ID}]
						if !ok || sp != [2]uint32{p.first, p.last} {
							t.Fatalf("size %d, region %d: piece %s frames %d..%d, its pages use %v (%v)",
								size, i, p.plan.obj.Key, p.first, p.last, sp, ok)
						}
						whole := p.plan.base() && p.frames()*8 >= int64(p.plan.obj.PageCount)*7
						if p.whole != whole {
							t.Fatalf("size %d, region %d: piece %s frames %d..%d of %d: whole %v", size, i,
								p.plan.obj.Key, p.first, p.last, p.plan.obj.PageCount, p.whole)
						}
						seen++
					}
				}
			}
			if seen != len(used) {
				t.Fatalf("size %d: %d pieces for %d (region, object) pairs", size, seen, len(used))
			}
		}
	}
}

// manyDeltas publishes a small image and then 45 deltas over it, each
// with a page of its own and two random ones (rewriting pages of earlier
// deltas), with a shrink and a regrowth early on so that some pages read
// as zeros: the newest boundary reads from every delta, more per region
// than one merge reads at once (maxMerge) with default buffers. It
// returns every fifth boundary and the last.
func manyDeltas(t *testing.T, store remote.Store) (*synth, []uint64) {
	s := newSynth(t, store, synthOpts{chunkPages: 16, seed: 63, keep: true})
	p := s.publisher(nil)
	s.commit(80, nil, true)
	boundaries := []uint64{publishNow(t, p)}
	for i := range uint32(45) {
		db := uint32(80)
		if i == 8 {
			db = 30
		}
		pages := []uint32{i + 2, 1 + uint32(s.rng.IntN(int(db))), 1 + uint32(s.rng.IntN(int(db)))}
		s.commit(db, pages, false)
		b := publishNow(t, p)
		if i%5 == 4 || i == 44 {
			boundaries = append(boundaries, b)
		}
	}
	return s, boundaries
}

// Phase 2's merges: deltas merged one at a time (a buffer of one frame),
// three at a time (three frames), and more than maxMerge of them with
// default buffers, by one, three and eight workers: every boundary
// restores byte for byte, on the fs store and on versitygw.
func TestRestoreMergesManyDeltas(t *testing.T) {
	stores(t, func(t *testing.T, store remote.Store) {
		s, boundaries := manyDeltas(t, store)
		fs := delta.FrameSize(4096)
		for _, b := range boundaries {
			for _, maxRead := range []int64{fs, 3 * fs, 0} {
				for _, par := range []int{1, 3, 8} {
					path := filepath.Join(t.TempDir(), "r.db")
					_, err := Restore(context.Background(), RestoreOptions{Store: s.store, Catalog: s.cat, Txid: b, Path: path,
						Parallel: par, MaxRead: maxRead})
					must(t, err)
					got, _ := os.ReadFile(path)
					sameBytes(t, "merged deltas", got, s.byTxid[b], 4096)
				}
			}
		}
		// With default buffers the newest boundary's one region reads
		// more deltas than one merge takes.
		snap := s.cat.Snapshot()
		deltas := 0
		for k := range spans(t, snap) {
			for _, o := range snap.Objects() {
				if o.Key == k && o.Kind != manifest.ObjectBase {
					deltas++
				}
			}
		}
		if deltas <= maxMerge {
			t.Fatalf("the newest boundary uses %d deltas: want more than %d", deltas, maxMerge)
		}
	})
}

// cancelOnDelta cancels a context at the first GET of a delta object.
type cancelOnDelta struct {
	remote.Store
	deltas map[string]bool
	cancel context.CancelFunc
}

func (c *cancelOnDelta) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, remote.ObjectInfo, error) {
	if c.deltas[key] {
		c.cancel()
	}
	return c.Store.Get(ctx, key, off, n)
}

// A restore cancelled while it merges deltas returns the context's error
// and leaves no file.
func TestRestoreCancelledInMerge(t *testing.T) {
	s, _ := manyDeltas(t, fsStore(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := &cancelOnDelta{Store: s.store, deltas: map[string]bool{}, cancel: cancel}
	for _, o := range s.cat.Snapshot().Objects() {
		if o.Kind != manifest.ObjectBase {
			c.deltas[o.Key] = true
		}
	}
	dir := t.TempDir()
	_, err := Restore(ctx, RestoreOptions{Store: c, Catalog: s.cat, Path: filepath.Join(dir, "r.db")})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("restore cancelled in phase 2: %v", err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("a cancelled restore left %d files, %s first", len(left), left[0].Name())
	}
}

// connLimited lets at most cap(sem) GET bodies be open at once: a Get
// waits for a slot, as an HTTP client with MaxConnsPerHost waits for a
// connection. It records the most bodies ever open.
type connLimited struct {
	remote.Store
	sem      chan struct{}
	mu       sync.Mutex
	open, hi int
}

type limitedBody struct {
	io.ReadCloser
	once sync.Once
	c    *connLimited
}

func (b *limitedBody) Close() error {
	b.once.Do(func() {
		b.c.mu.Lock()
		b.c.open--
		b.c.mu.Unlock()
		<-b.c.sem
	})
	return b.ReadCloser.Close()
}

func (c *connLimited) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, remote.ObjectInfo, error) {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, remote.ObjectInfo{}, ctx.Err()
	}
	rc, info, err := c.Store.Get(ctx, key, off, n)
	if err != nil {
		<-c.sem
		return nil, info, err
	}
	c.mu.Lock()
	c.open++
	c.hi = max(c.hi, c.open)
	c.mu.Unlock()
	return &limitedBody{ReadCloser: rc, c: c}, info, nil
}

// wideDeltas publishes a 600-page image and 40 deltas of 12 random pages
// each: with reads of 32 frames the database is 5 regions, each reading
// from most of the deltas, so that merges of several workers run at once.
func wideDeltas(t *testing.T, store remote.Store) *synth {
	s := newSynth(t, store, synthOpts{chunkPages: 64, seed: 64, keep: true})
	p := s.publisher(nil)
	s.commit(600, nil, true)
	publishNow(t, p)
	for range 40 {
		var pages []uint32
		for range 12 {
			pages = append(pages, 1+uint32(s.rng.IntN(600)))
		}
		s.commit(600, pages, false)
		publishNow(t, p)
	}
	return s
}

// MaxGets bounds the bodies open at once, and a store that can open no
// more than MaxGets does not stall a restore (merges take their bodies
// all at once or wait holding none): 1, 4 and 31 bodies, by 3 and 8
// workers merging deltas at once. By default a merge opens many at once,
// never more than the default bound.
func TestRestoreBoundedGets(t *testing.T) {
	s := wideDeltas(t, fsStore(t))
	fs := delta.FrameSize(4096)
	for _, k := range []int{1, 4, 31} {
		for _, par := range []int{3, 8} {
			c := &connLimited{Store: s.store, sem: make(chan struct{}, k)}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			path := filepath.Join(t.TempDir(), "r.db")
			_, err := Restore(ctx, RestoreOptions{Store: c, Catalog: s.cat, Path: path, Parallel: par, MaxGets: k, MaxRead: 32 * fs})
			cancel()
			if err != nil {
				t.Fatalf("MaxGets %d, %d workers, a store of %d connections: %v", k, par, k, err)
			}
			got, _ := os.ReadFile(path)
			sameBytes(t, "bounded GETs", got, s.model, 4096)
			if c.hi > k {
				t.Fatalf("MaxGets %d: %d bodies open at once", k, c.hi)
			}
		}
	}
	c := &connLimited{Store: s.store, sem: make(chan struct{}, 1000)}
	_, err := Restore(context.Background(), RestoreOptions{Store: c, Catalog: s.cat, Path: filepath.Join(t.TempDir(), "r.db"), MaxRead: 32 * fs})
	must(t, err)
	if c.hi <= 32 || c.hi > defaultMaxGets {
		t.Fatalf("default MaxGets: %d bodies open at once, want 33..%d", c.hi, defaultMaxGets)
	}
}

// A MaxRead too large to allocate, or to multiply, is capped (and never
// larger than the database), and the restore is right.
func TestRestoreHugeMaxRead(t *testing.T) {
	s, boundaries := manyDeltas(t, fsStore(t))
	newest := boundaries[len(boundaries)-1]
	for _, maxRead := range []int64{1 << 40, 1 << 61, 1<<63 - 1} {
		path := filepath.Join(t.TempDir(), "r.db")
		_, err := Restore(context.Background(), RestoreOptions{Store: s.store, Catalog: s.cat, Path: path, MaxRead: maxRead})
		must(t, err)
		got, _ := os.ReadFile(path)
		sameBytes(t, "huge MaxRead", got, s.byTxid[newest], 4096)
	}
}
