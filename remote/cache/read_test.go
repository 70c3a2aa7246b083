package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/bopstore/bop/delta"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fault"
)

// Seed review finding 9: a whole 64 MiB chunk was fetched for one page.
// Through the cache a page frame of a 64 MiB base object costs one GET of
// at most two blocks, and nothing once cached; two adjacent missing blocks
// cost one GET.
func TestPageReadFetchesOnlyItsBlocks(t *testing.T) {
	const pageSize, pages = 4096, 16384 // 64 MiB, a default chunk
	m, _ := newMetered(t)
	key := objKey(t, 1)
	size := putBase(t, m, key, 1, pages, pageSize)
	if size < 64<<20 {
		t.Fatalf("object of %d bytes, want a 64 MiB chunk", size)
	}
	c := newCache(t, m, Config{})
	const B = DefaultBlockSize
	frame := delta.FrameSize(pageSize)

	// A frame inside one block, and one that straddles two.
	// (Far apart, so that neither's blocks hold the other.)
	inside, straddle := uint32(0), uint32(0)
	for i := uint32(9000); inside == 0; i++ {
		if off := delta.FrameOffset(pageSize, i); off/B == (off+frame-1)/B {
			inside = i
		}
	}
	for i := uint32(12000); straddle == 0; i++ {
		if off := delta.FrameOffset(pageSize, i); off/B != (off+frame-1)/B {
			straddle = i
		}
	}
	for _, tc := range []struct {
		index  uint32
		blocks int64
	}{{inside, 1}, {straddle, 2}} {
		m.Reset()
		readFrame(t, c, key, 1, tc.index, pageSize)
		st := m.Stats()
		if st.Get.Requests != 1 || st.Get.BytesOut != tc.blocks*B || st.Head.Requests != 0 {
			t.Errorf("frame %d: %d GETs of %d bytes, %d HEADs; want 1 GET of %d bytes (%d block(s)), no HEAD",
				tc.index, st.Get.Requests, st.Get.BytesOut, st.Head.Requests, tc.blocks*B, tc.blocks)
		}
		m.Reset()
		readFrame(t, c, key, 1, tc.index, pageSize)
		if r, b := gets(m); r != 0 || b != 0 {
			t.Errorf("frame %d again: %d GETs, %d bytes; want none", tc.index, r, b)
		}
	}

	// Two adjacent missing blocks (k, k+1) in one read: one GET of both.
	k := int64(700)
	m.Reset()
	mustReadFrom(t, c, key, k*B+B-100, 200)
	if r, b := gets(m); r != 1 || b != 2*B {
		t.Errorf("read across blocks %d,%d: %d GETs of %d bytes; want 1 GET of %d", k, k+1, r, b, 2*B)
	}
	if st := c.Stats(); st.BytesFetched >= size/8 {
		t.Errorf("fetched %d bytes of a %d-byte object for a few pages", st.BytesFetched, size)
	}
}

// mustReadFrom reads n bytes of a base object at off, checking only that
// the read succeeds in full.
func mustReadFrom(t *testing.T, c *Cache, key string, off, n int64) []byte {
	t.Helper()
	p := make([]byte, n)
	if got, err := c.ReadAt(t.Context(), key, p, off); err != nil || int64(got) != n {
		t.Fatalf("ReadAt(%d, %d) = %d, %v", off, n, got, err)
	}
	return p
}

// Seed review finding 7: each delta was downloaded twice per lookup. A
// page object opened through the cache (delta.Open: header, then
// directory with trailer) and read page by page costs one GET per
// missing run, and a lookup of a page in an already-fetched block none.
func TestDeltaObjectThroughCache(t *testing.T) {
	const pageSize, pages = 4096, 16384
	m, _ := newMetered(t)
	key := objKey(t, 2)
	size := putBase(t, m, key, 16385, pages, pageSize) // chunk 1: pages 16385..
	c := newCache(t, m, Config{})
	m.Reset()
	obj, err := delta.Open(c.ReaderAt(t.Context(), key), size)
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := gets(m); r != 2 {
		t.Errorf("Open: %d GETs; want 2 (the header's block, and the directory's run in one)", r)
	}
	const B = DefaultBlockSize
	dirBlocks := (size-1)/B - delta.DirOffset(pageSize, pages)/B + 1
	if _, b := gets(m); b != (1+dirBlocks)*B-(B-size%B) {
		t.Errorf("Open fetched %d bytes; want the header block and %d directory blocks", b, dirBlocks)
	}
	pgno := uint32(16385 + 5000)
	for round := range 2 {
		m.Reset()
		page, err := obj.ReadPage(pgno, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(page, pageBytes(pgno, pageSize)) {
			t.Fatal("wrong page")
		}
		want := int64(1 - round)
		if r, _ := gets(m); r != want {
			t.Errorf("ReadPage %d, round %d: %d GETs; want %d", pgno, round, r, want)
		}
	}
	// The next page starts in the block the last one ended in: no GET,
	// unless it runs into a block not fetched yet (then one).
	m.Reset()
	if _, err := obj.ReadPage(pgno+1, nil); err != nil {
		t.Fatal(err)
	}
	frame := delta.FrameSize(pageSize)
	lastBlock := func(i uint32) int64 { return (delta.FrameOffset(pageSize, i) + frame - 1) / B }
	want := int64(0)
	if lastBlock(5001) > lastBlock(5000) {
		want = 1
	}
	if r, _ := gets(m); r != want {
		t.Errorf("ReadPage of the neighbour: %d GETs; want %d", r, want)
	}
}

// Missing runs are coalesced, but never across a cached block: the cached
// block is served from disk and each missing run around it is one GET.
func TestMissingRunsCoalesce(t *testing.T) {
	const B = 4 << 10
	m, _ := newMetered(t)
	key := objKey(t, 3)
	putPattern(t, m, key, 3, 64*B)
	c := newCache(t, m, Config{BlockSize: B, ReadAhead: -1})
	mustRead(t, c, key, 3, 11*B+10, 10) // block 11
	mustRead(t, c, key, 3, 22*B+10, 10) // block 22
	m.Reset()
	mustRead(t, c, key, 3, 10*B, 3*B) // blocks 10, 11 (cached), 12
	if r, b := gets(m); r != 2 || b != 2*B {
		t.Errorf("blocks 10-12 with 11 cached: %d GETs, %d bytes; want 2 GETs of one block each", r, b)
	}
	m.Reset()
	mustRead(t, c, key, 3, 20*B+1, 6*B-2) // blocks 20-25, 22 cached
	if r, b := gets(m); r != 2 || b != 5*B {
		t.Errorf("blocks 20-25 with 22 cached: %d GETs, %d bytes; want 2 GETs of 5 blocks", r, b)
	}
	m.Reset()
	mustRead(t, c, key, 3, 30*B, 8*B) // 8 missing blocks
	if r, b := gets(m); r != 1 || b != 8*B {
		t.Errorf("8 missing blocks: %d GETs, %d bytes; want 1 GET of 8 blocks", r, b)
	}
	// The object's last block is short; a read past the end gets it and
	// io.EOF, and a read at the end costs nothing once the size is known.
	m.Reset()
	p := make([]byte, 2*B)
	n, err := c.ReadAt(t.Context(), key, p, 63*B)
	if n != B || err != io.EOF || !bytes.Equal(p[:n], patternBytes(3, 63*B, B)) {
		t.Errorf("read past the end: %d, %v; want %d, io.EOF", n, err, B)
	}
	for _, off := range []int64{64 * B, 64*B + 1, 1 << 40} {
		if n, err := c.ReadAt(t.Context(), key, p, off); n != 0 || err != io.EOF {
			t.Errorf("ReadAt at %d, past the end: %d, %v; want 0, io.EOF", off, n, err)
		}
	}
	if r, _ := gets(m); r != 1 {
		t.Errorf("reads at and past the end: %d GETs; want only the one of the last block", r)
	}
	if _, err := c.ReadAt(t.Context(), key, p, -1); !errors.Is(err, remote.ErrInvalidRange) {
		t.Errorf("ReadAt at -1: %v; want ErrInvalidRange", err)
	}
}

// Sequential reads (each starting where the last ended) trigger read-ahead:
// far fewer GETs than blocks, every byte fetched once. Random reads never
// fetch more than the blocks they touch.
func TestReadAhead(t *testing.T) {
	const B, RA, size = 16 << 10, 256 << 10, 4 << 20
	m, _ := newMetered(t)
	seqKey, rndKey, twoKey := objKey(t, 4), objKey(t, 5), objKey(t, 6)
	for i, k := range []string{seqKey, rndKey, twoKey} {
		putPattern(t, m, k, uint64(40+i), size)
	}
	c := newCache(t, m, Config{BlockSize: B, ReadAhead: RA})

	t.Run("sequential", func(t *testing.T) {
		m.Reset()
		for off := int64(0); off < size; off += 4112 {
			mustRead(t, c, seqKey, 40, off, min(4112, size-off))
		}
		blocks := int64(size / B)
		r, b := gets(m)
		if maxGets := 2 + blocks/(RA/B); r > maxGets {
			t.Errorf("sequential scan of %d blocks: %d GETs; want at most %d", blocks, r, maxGets)
		}
		if b != size {
			t.Errorf("sequential scan fetched %d bytes; want each byte once (%d)", b, size)
		}
	})

	t.Run("random", func(t *testing.T) {
		m.Reset()
		rng := rand.New(rand.NewPCG(1, 2))
		cached := map[int64]bool{}
		var wantGets, wantBytes int64
		for range 150 {
			// Reads of 4000 bytes at 4096k+17: no read starts where
			// another ended, so none looks sequential.
			off := int64(rng.IntN(size/4096-1))*4096 + 17
			first, last := off/B, (off+4000-1)/B
			missing := false
			for i := first; i <= last; i++ {
				if !cached[i] {
					missing = true
					cached[i] = true
					wantBytes += B
				}
			}
			if missing {
				wantGets++
			}
			mustRead(t, c, rndKey, 41, off, 4000)
		}
		if r, b := gets(m); r != wantGets || b != wantBytes {
			t.Errorf("random reads: %d GETs of %d bytes; want %d GETs of %d (only the blocks touched)", r, b, wantGets, wantBytes)
		}
	})

	t.Run("two interleaved streams", func(t *testing.T) {
		m.Reset()
		half := int64(size / 2)
		for off := int64(0); off < half; off += 4096 {
			mustRead(t, c, twoKey, 42, off, 4096)
			mustRead(t, c, twoKey, 42, half+off, 4096)
		}
		if r, _ := gets(m); r > 2*(2+half/RA) {
			t.Errorf("two interleaved scans: %d GETs; want about %d", r, 2*half/RA)
		}
	})
}

// A Get body streams from the cache with read-ahead up to its range's end,
// bounded memory, and the ObjectInfo of the whole object; a second Get of
// the range costs nothing; a small range of a large object fetches only
// its blocks.
func TestGetStreams(t *testing.T) {
	const B, RA, size = 64 << 10, 1 << 20, 8<<20 + 123
	m, fs := newMetered(t)
	key := objKey(t, 7)
	putPattern(t, m, key, 7, size)
	want, err := fs.Head(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	c := newCache(t, m, Config{BlockSize: B, ReadAhead: RA})

	m.Reset()
	rc, info, err := c.Get(t.Context(), key, 5<<20+7, 100)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, patternBytes(7, 5<<20+7, 100)) {
		t.Fatalf("small range: %d bytes, %v", len(got), err)
	}
	if info.Size != size || info.ETag != want.ETag || info.Key != key {
		t.Errorf("ObjectInfo %+v; want size %d, ETag %q", info, size, want.ETag)
	}
	if r, b := gets(m); r != 1 || b != B {
		t.Errorf("100 bytes of an 8 MiB object: %d GETs, %d bytes; want 1 GET of one block", r, b)
	}

	for round := range 2 {
		m.Reset()
		rc, info, err := c.Get(t.Context(), key, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		h := xxhash.New()
		n, err := io.CopyBuffer(h, rc, make([]byte, 32<<10))
		rc.Close()
		if err != nil || n != size || h.Sum64() != xxhash.Sum64(patternBytes(7, 0, size)) {
			t.Fatalf("round %d: whole object: %d bytes, %v, or wrong content", round, n, err)
		}
		if info.Size != size || info.ETag != want.ETag {
			t.Errorf("round %d: ObjectInfo %+v", round, info)
		}
		r, _ := gets(m)
		if round == 0 && (r < 2 || r > 2+size/RA) {
			t.Errorf("whole 8 MiB object: %d GETs; want about %d (read-ahead runs)", r, size/RA)
		}
		if round == 1 && r != 0 {
			t.Errorf("second Get: %d GETs; want 0", r)
		}
	}
	if st := m.Stats(); st.Head.Requests != 0 {
		t.Errorf("%d HEADs; metadata comes from the GETs", st.Head.Requests)
	}
}

// Head asks the inner store once per key; a key already read needs no
// Head at all.
func TestHeadOnce(t *testing.T) {
	m, fs := newMetered(t)
	a, b := objKey(t, 8), objKey(t, 9)
	putPattern(t, m, a, 8, 1000)
	putPattern(t, m, b, 9, 100000)
	c := newCache(t, m, Config{})
	m.Reset()
	for range 3 {
		info, err := c.Head(t.Context(), a)
		want, _ := fs.Head(t.Context(), a)
		if err != nil || info.Size != 1000 || info.ETag != want.ETag || !info.ModTime.Equal(want.ModTime) {
			t.Fatalf("Head = %+v, %v; want %+v", info, err, want)
		}
	}
	mustRead(t, c, b, 9, 50000, 10)
	if info, err := c.Head(t.Context(), b); err != nil || info.Size != 100000 {
		t.Fatalf("Head = %+v, %v", info, err)
	}
	if st := m.Stats(); st.Head.Requests != 1 {
		t.Errorf("%d HEADs; want 1", st.Head.Requests)
	}
	if _, err := c.Head(t.Context(), objKey(t, 99)); !errors.Is(err, remote.ErrNotFound) {
		t.Errorf("Head of a missing key: %v", err)
	}
}

// Keys that are not cacheable (head, log, pins) go straight through: every
// read is a request, and nothing lands on disk.
func TestPassThrough(t *testing.T) {
	m, _ := newMetered(t)
	head := testLayout.Head()
	putPattern(t, m, head, 10, 300)
	c := newCache(t, m, Config{})
	m.Reset()
	for range 2 {
		mustRead(t, c, head, 10, 0, 300)
		rc, _, err := c.Get(t.Context(), head, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		rc.Close()
		if _, err := c.Head(t.Context(), head); err != nil {
			t.Fatal(err)
		}
	}
	if st := m.Stats(); st.Get.Requests != 4 || st.Head.Requests != 2 {
		t.Errorf("%d GETs, %d HEADs; want every call passed through (4, 2)", st.Get.Requests, st.Head.Requests)
	}
	p := make([]byte, 500)
	if n, err := c.ReadAt(t.Context(), head, p, 0); n != 300 || err != io.EOF {
		t.Errorf("ReadAt past the end: %d, %v; want 300, io.EOF", n, err)
	}
	if n, err := c.ReadAt(t.Context(), head, p, 301); n != 0 || err != io.EOF {
		t.Errorf("ReadAt past the end: %d, %v; want 0, io.EOF", n, err)
	}
	if st := c.Stats(); st.Entries != 0 || st.Objects != 0 {
		t.Errorf("cached %d blocks, %d objects of a pass-through key", st.Entries, st.Objects)
	}
	checkAccounting(t, c)
}

// Delete through the cache drops the key's blocks and files; a Put through
// the cache hides nothing cached before it.
func TestDeleteAndPutInvalidate(t *testing.T) {
	m, _ := newMetered(t)
	key := objKey(t, 11)
	putPattern(t, m, key, 11, 300<<10)
	c := newCache(t, m, Config{})
	mustRead(t, c, key, 11, 0, 300<<10)
	if st := c.Stats(); st.Entries != 5 {
		t.Fatalf("%d entries; want 5", st.Entries)
	}
	if err := c.Delete(t.Context(), key); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.Entries != 0 || st.UsedBytes != 0 {
		t.Errorf("after Delete: %d entries, %d bytes", st.Entries, st.UsedBytes)
	}
	checkAccounting(t, c)
	if _, err := c.ReadAt(t.Context(), key, make([]byte, 10), 0); !errors.Is(err, remote.ErrNotFound) {
		t.Errorf("read after Delete: %v; want ErrNotFound", err)
	}
	if _, _, err := c.Get(t.Context(), key, 0, -1); !errors.Is(err, remote.ErrNotFound) {
		t.Errorf("Get after Delete: %v; want ErrNotFound", err)
	}
	if _, err := c.Head(t.Context(), key); !errors.Is(err, remote.ErrNotFound) {
		t.Errorf("Head after Delete: %v; want ErrNotFound", err)
	}

	putPattern(t, c, key, 12, 100<<10)
	mustRead(t, c, key, 12, 0, 100<<10)
	putPattern(t, c, key, 13, 90<<10)
	mustRead(t, c, key, 13, 0, 90<<10)
	if info, err := c.Head(t.Context(), key); err != nil || info.Size != 90<<10 {
		t.Errorf("Head after replacing Put: %+v, %v", info, err)
	}
	checkAccounting(t, c)
}

// An object replaced behind the cache's back (which the contract rules
// out, but a cache must not turn into wrong data): a read that needs a
// block of the new version drops every block of the old one and starts
// over, so one read never mixes versions.
func TestReplacedBehindTheBack(t *testing.T) {
	const B = 4 << 10
	m, fs := newMetered(t)
	key := objKey(t, 12)
	putPattern(t, fs, key, 20, 32*B)
	c := newCache(t, m, Config{BlockSize: B, ReadAhead: -1})
	mustRead(t, c, key, 20, 0, B) // block 0 of version 20
	putPattern(t, fs, key, 21, 32*B)
	// Blocks 0 (cached, old) and 1 (missing): the GET of block 1 shows
	// the new ETag, so the read starts over and returns the new version.
	mustRead(t, c, key, 21, 0, 2*B)
	mustRead(t, c, key, 21, 0, 32*B)

	// A Get body pinned to one version fails rather than switch.
	rc, _, err := c.Get(t.Context(), key, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	putPattern(t, fs, key, 22, 32*B)
	c.invalidate(key) // as if evicted: the body must fetch again
	_, err = io.ReadAll(rc)
	if !errors.Is(err, errChanged) {
		t.Errorf("body read across a replacement: %v; want errChanged", err)
	}
	checkAccounting(t, c)
}

// Truncated or failing bodies from the inner store are errors, never
// cached data; the next read fetches again and succeeds.
func TestInnerFaults(t *testing.T) {
	const B = 4 << 10
	m, _ := newMetered(t)
	key := objKey(t, 13)
	putPattern(t, m, key, 30, 16*B)
	c := newCache(t, m, Config{BlockSize: B, ReadAhead: -1})
	for _, kind := range []fault.Kind{fault.TruncateEOF, fault.TruncateError} {
		m.Inject(fault.Fault{Kind: kind, Op: fault.OpGet, Nth: 1, Keep: B + 100})
		p := make([]byte, 3*B)
		n, err := c.ReadAt(t.Context(), key, p, 4*B)
		if err == nil {
			t.Fatalf("%v: read of a cut body succeeded", kind)
		}
		if !bytes.Equal(p[:n], patternBytes(30, 4*B, int64(n))) {
			t.Fatalf("%v: the %d bytes before the error are wrong", kind, n)
		}
		mustRead(t, c, key, 30, 4*B, 3*B)
		checkAccounting(t, c)
		c.invalidate(key)
	}
	m.Inject(fault.Fault{Kind: fault.Fail, Op: fault.OpGet, Nth: 1})
	if _, err := c.ReadAt(t.Context(), key, make([]byte, 10), 0); !errors.Is(err, fault.ErrInjected) {
		t.Errorf("failed GET: %v; want the injected error", err)
	}
	mustRead(t, c, key, 30, 0, 10)
}

// A reader waiting for another's fetch gives up with its own ctx; a fetch
// whose own caller gave up does not fail the readers waiting on it.
func TestWaitersAndCancellation(t *testing.T) {
	const B = 4 << 10
	m, _ := newMetered(t)
	key := objKey(t, 14)
	putPattern(t, m, key, 31, 16*B)
	c := newCache(t, m, Config{BlockSize: B, ReadAhead: -1})
	// The fetch must still be in flight when the fetcher is cancelled,
	// however slow the machine: its GET waits 10 s, or until cancelled.
	m.SetLatency(fault.OpGet, 10*time.Second)

	fetcherCtx, cancelFetcher := context.WithCancel(t.Context())
	fetcherDone := make(chan error, 1)
	go func() {
		_, err := c.ReadAt(fetcherCtx, key, make([]byte, 100), 0)
		fetcherDone <- err
	}()
	waitFetching(t, c, key, 0)

	// A waiter with a short deadline returns with it.
	short, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := c.ReadAt(short, key, make([]byte, 100), 50); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiter: %v; want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("waiter returned after %v, not at its deadline", d)
	}

	// A patient waiter survives the fetcher's cancellation.
	waiterDone := make(chan error, 1)
	go func() {
		p := make([]byte, 100)
		_, err := c.ReadAt(t.Context(), key, p, 200)
		if err == nil && !bytes.Equal(p, patternBytes(31, 200, 100)) {
			err = errors.New("wrong bytes")
		}
		waiterDone <- err
	}()
	time.Sleep(20 * time.Millisecond)
	// Latency is taken when a call starts: the cancelled GET keeps its
	// 10 s (and ends by the cancel), the waiter's own fetch is quick.
	m.SetLatency(fault.OpGet, 0)
	cancelFetcher()
	if err := <-fetcherDone; !errors.Is(err, context.Canceled) {
		t.Errorf("fetcher: %v; want Canceled", err)
	}
	if err := <-waiterDone; err != nil {
		t.Errorf("waiter after the fetcher was cancelled: %v", err)
	}
	checkAccounting(t, c)
}

// waitFetching waits until block idx of key is being fetched.
func waitFetching(t *testing.T, c *Cache, key string, idx int64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		c.mu.Lock()
		o := c.objects[key]
		busy := o != nil && o.fetching[idx] != nil
		c.mu.Unlock()
		if busy {
			return
		}
	}
	t.Fatal("the fetch never started")
}
