// Command cache measures ranged page reads through the disk cache tier
// (remote/cache) against direct reads of the same bytes from a local file
// (os.File.ReadAt, the baseline), in the same run, with bench/harness:
// >= 10 interleaved repetitions, process CPU time and wall time.
//
//	go run ./bench/cache                               hits (the default)
//	BOP_CACHE_BENCH_MODE=miss go run ./bench/cache     cold random reads
//	BOP_CACHE_BENCH_MODE=scan go run ./bench/cache     cold sequential scan
//
// The object is a 64 MiB base object (16384 pages of 4 KiB, the default
// chunk) in an fsstore directory; every read is one page frame (16 + 4096
// bytes) at a page chosen by a seeded generator, the same sequence in
// every variant.
//
//   - hit: BOP_CACHE_BENCH_READS (400000) random frames. "pread" reads
//     them from the object's file; "cache-hit" through a Cache whose
//     directory the parent filled beforehand (the child opens it: New
//     loads ~1000 block headers, which counts).
//   - miss: one random frame in each of the object's 1025 blocks, in random
//     order, on a cold cache: "cache-miss-fs" over fsstore (each read a
//     ranged GET of one 64 KiB block plus writing its block file),
//     "fsstore-get" a plain fsstore Get of the frame per read (no cache).
//     With BOP_S3_ENDPOINT (and BOP_S3_BUCKET, BOP_S3_ACCESS_KEY,
//     BOP_S3_SECRET_KEY; loopback only) also "cache-miss-s3" and "s3-get".
//   - scan: every frame in order, cold: "cache-scan-fs" (read-ahead) and
//     "fsstore-get".
//
// The extra columns: ns per read inside the read loop (setup excluded),
// and the GETs the cache sent.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/bopstore/bop/bench/harness"
	"github.com/bopstore/bop/delta"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/cache"
	"github.com/bopstore/bop/remote/fsstore"
	"github.com/bopstore/bop/remote/s3store"
)

const (
	pageSize   = 4096
	pages      = 16384
	fixtureEnv = "BOP_CACHE_BENCH_FIXTURE"
	childEnv   = "BOP_BENCH_CHILD"
)

var key = func() string {
	l, err := remote.NewLayout("", "bench")
	if err != nil {
		panic(err)
	}
	k, err := l.Object("base", 1, 0xb0b)
	if err != nil {
		panic(err)
	}
	return k
}()

func frameSize() int64 { return delta.FrameSize(pageSize) }

func main() {
	mode := os.Getenv("BOP_CACHE_BENCH_MODE")
	if mode == "" {
		mode = "hit"
	}
	if os.Getenv(childEnv) == "" {
		dir, cleanup, err := fixture()
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench/cache:", err)
			os.Exit(1)
		}
		os.Setenv(fixtureEnv, dir)
		defer cleanup()
	}
	var title string
	var variants []harness.Variant
	switch mode {
	case "hit":
		title = "remote/cache: random 4 KiB page-frame reads, all cache hits, vs pread"
		offs := randomFrames(envInt("BOP_CACHE_BENCH_READS", 400_000))
		variants = []harness.Variant{
			{Name: "pread", Baseline: true, Run: preadVariant(offs)},
			{Name: "cache-hit", Run: cacheVariant(offs, "warm", openFS, true)},
		}
	case "miss":
		title = "remote/cache: cold random page-frame reads (one per 64 KiB block), vs pread"
		offs := oneFramePerBlock()
		variants = []harness.Variant{
			{Name: "pread", Baseline: true, Run: preadVariant(offs)},
			{Name: "cache-miss-fs", Run: cacheVariant(offs, "", openFS, false)},
			{Name: "fsstore-get", Run: getVariant(offs, openFS)},
		}
		if os.Getenv("BOP_S3_ENDPOINT") != "" {
			variants = append(variants,
				harness.Variant{Name: "cache-miss-s3", Run: cacheVariant(offs, "", openS3, false)},
				harness.Variant{Name: "s3-get", Run: getVariant(offs, openS3)})
		}
	case "scan":
		title = "remote/cache: cold sequential scan of a 64 MiB object frame by frame, vs pread"
		offs := make([]int64, pages)
		for i := range offs {
			offs[i] = delta.FrameOffset(pageSize, uint32(i))
		}
		variants = []harness.Variant{
			{Name: "pread", Baseline: true, Run: preadVariant(offs)},
			{Name: "cache-scan-fs", Run: cacheVariant(offs, "", openFS, false)},
			{Name: "fsstore-get", Run: getVariant(offs, openFS)},
		}
	default:
		fmt.Fprintf(os.Stderr, "bench/cache: BOP_CACHE_BENCH_MODE=%q: want hit, miss or scan\n", mode)
		os.Exit(2)
	}
	harness.Main(title, variants)
}

// fixture builds, in the parent, the store with the object and a cache
// directory holding all of it (for the hit variant), or reuses the
// directory named by BOP_CACHE_BENCH_FIXTURE.
func fixture() (string, func(), error) {
	if dir := os.Getenv(fixtureEnv); dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "warm", "blocks")); err == nil {
			return dir, func() {}, nil
		}
		return "", nil, fmt.Errorf("%s=%s holds no fixture", fixtureEnv, dir)
	}
	dir, err := os.MkdirTemp("", "bop-cache-bench-")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	fail := func(err error) (string, func(), error) { cleanup(); return "", nil, err }
	fs, err := fsstore.New(filepath.Join(dir, "store"))
	if err != nil {
		return fail(err)
	}
	defer fs.Close()
	ctx := context.Background()
	if err := putObject(ctx, fs); err != nil {
		return fail(err)
	}
	c, err := cache.New(fs, cache.Config{Dir: filepath.Join(dir, "warm")})
	if err != nil {
		return fail(err)
	}
	rc, _, err := c.Get(ctx, key, 0, -1)
	if err == nil {
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
	}
	if cerr := c.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fail(err)
	}
	if os.Getenv("BOP_S3_ENDPOINT") != "" {
		s3, err := openS3(dir)
		if err != nil {
			return fail(err)
		}
		if err := putObject(ctx, s3); err != nil {
			return fail(err)
		}
	}
	return dir, cleanup, nil
}

// putObject streams the base object into s.
func putObject(ctx context.Context, s remote.Store) error {
	pr, pw := io.Pipe()
	go func() {
		enc, err := delta.NewEncoder(pw, delta.Header{Kind: delta.KindBase, PageSize: pageSize, ObjectID: 1, MinTxid: 1, MaxTxid: 1, FirstPgno: 1, PageCount: pages})
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		page := make([]byte, pageSize)
		for i := range uint32(pages) {
			fillPage(i+1, page)
			if err := enc.Add(i+1, page); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		_, err = enc.Close()
		pw.CloseWithError(err)
	}()
	size := delta.ObjectSize(pageSize, pages)
	_, err := s.Put(ctx, key, pr, remote.PutOptions{Size: size})
	return err
}

func fillPage(pgno uint32, b []byte) {
	x := uint64(pgno)*0x9e3779b97f4a7c15 + 1
	for i := 0; i+8 <= len(b); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		for j := range 8 {
			b[i+j] = byte(x >> (8 * j))
		}
	}
}

func randomFrames(n int) []int64 {
	rng := rand.New(rand.NewPCG(42, 7))
	offs := make([]int64, n)
	for i := range offs {
		offs[i] = delta.FrameOffset(pageSize, uint32(rng.IntN(pages)))
	}
	return offs
}

// oneFramePerBlock returns, for each 64 KiB block of the object's frames,
// the offset of one frame that starts in it, in random order.
func oneFramePerBlock() []int64 {
	const B = cache.DefaultBlockSize
	var offs []int64
	last := int64(-1)
	for i := range uint32(pages) {
		off := delta.FrameOffset(pageSize, i)
		if off/B != last && (off+frameSize()-1)/B == off/B {
			offs = append(offs, off)
			last = off / B
		}
	}
	rng := rand.New(rand.NewPCG(42, 8))
	rng.Shuffle(len(offs), func(i, j int) { offs[i], offs[j] = offs[j], offs[i] })
	return offs
}

// check verifies a frame read at off (so no variant can be fast by being
// wrong); it runs outside the timed loop for the last frame only, and
// inside it costs every variant the same.
func check(frame []byte, off int64) error {
	index := uint32((off - delta.FrameOffset(pageSize, 0)) / frameSize())
	page, _, err := delta.DecodeFrame(frame, index+1, pageSize)
	if err != nil {
		return err
	}
	want := make([]byte, pageSize)
	fillPage(index+1, want)
	if !bytes.Equal(page, want) {
		return errors.New("wrong page")
	}
	return nil
}

func result(d time.Duration, n int, extra map[string]float64) map[string]float64 {
	if extra == nil {
		extra = map[string]float64{}
	}
	extra["ns/read"] = float64(d.Nanoseconds()) / float64(n)
	return extra
}

func preadVariant(offs []int64) func(string) (map[string]float64, error) {
	return func(string) (map[string]float64, error) {
		dir := os.Getenv(fixtureEnv)
		f, err := os.Open(filepath.Join(dir, "store", filepath.FromSlash(key)))
		if err != nil {
			return nil, err
		}
		defer f.Close()
		frame := make([]byte, frameSize())
		start := time.Now()
		for _, off := range offs {
			if _, err := f.ReadAt(frame, off); err != nil {
				return nil, err
			}
		}
		d := time.Since(start)
		return result(d, len(offs), nil), check(frame, offs[len(offs)-1])
	}
}

type opener func(fixture string) (remote.Store, error)

func openFS(fixture string) (remote.Store, error) {
	return fsstore.New(filepath.Join(fixture, "store"))
}

func openS3(string) (remote.Store, error) {
	endpoint := os.Getenv("BOP_S3_ENDPOINT")
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(u.Hostname()); u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("BOP_S3_ENDPOINT=%q: loopback only", endpoint)
	}
	prefix := os.Getenv("BOP_CACHE_BENCH_S3_PREFIX")
	if prefix == "" {
		prefix = "bench-cache"
	}
	return s3store.New(context.Background(), s3store.Config{
		Bucket: os.Getenv("BOP_S3_BUCKET"), Prefix: prefix, Endpoint: endpoint,
		Region: os.Getenv("BOP_S3_REGION"), PathStyle: true, DisableIMDS: true,
		AccessKey: os.Getenv("BOP_S3_ACCESS_KEY"), SecretKey: os.Getenv("BOP_S3_SECRET_KEY"),
	})
}

// cacheVariant reads through a Cache over the store open returns. warm
// names the fixture's filled cache directory; "" means a cold cache in
// the run's scratch directory. allHits makes a miss an error.
func cacheVariant(offs []int64, warm string, open opener, allHits bool) func(string) (map[string]float64, error) {
	return func(scratch string) (map[string]float64, error) {
		fix := os.Getenv(fixtureEnv)
		inner, err := open(fix)
		if err != nil {
			return nil, err
		}
		dir := filepath.Join(scratch, "cache")
		if warm != "" {
			dir = filepath.Join(fix, warm)
		}
		c, err := cache.New(inner, cache.Config{Dir: dir})
		if err != nil {
			return nil, err
		}
		defer c.Close()
		ctx := context.Background()
		frame := make([]byte, frameSize())
		start := time.Now()
		for _, off := range offs {
			if _, err := c.ReadAt(ctx, key, frame, off); err != nil {
				return nil, err
			}
		}
		d := time.Since(start)
		st := c.Stats()
		if allHits && st.Misses != 0 {
			return nil, fmt.Errorf("%d misses in the hit benchmark", st.Misses)
		}
		return result(d, len(offs), map[string]float64{"GETs": float64(st.Requests), "hits": float64(st.Hits)}), check(frame, offs[len(offs)-1])
	}
}

// getVariant reads each frame with its own Get from the store (no cache).
func getVariant(offs []int64, open opener) func(string) (map[string]float64, error) {
	return func(string) (map[string]float64, error) {
		inner, err := open(os.Getenv(fixtureEnv))
		if err != nil {
			return nil, err
		}
		ctx := context.Background()
		frame := make([]byte, frameSize())
		start := time.Now()
		for _, off := range offs {
			rc, _, err := inner.Get(ctx, key, off, frameSize())
			if err != nil {
				return nil, err
			}
			_, err = io.ReadFull(rc, frame)
			rc.Close()
			if err != nil {
				return nil, err
			}
		}
		d := time.Since(start)
		return result(d, len(offs), map[string]float64{"GETs": float64(len(offs))}), check(frame, offs[len(offs)-1])
	}
}

func envInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			return n
		}
	}
	return def
}
