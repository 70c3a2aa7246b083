// Command publish measures the checkpoint publisher and restore.
//
//	go run ./bench/publish                                 publish (default)
//	BOP_PUBLISH_BENCH_OP=restore go run ./bench/publish    restore vs plain GET
//
// publish: every variant builds a spool holding BOP_PUBLISH_BENCH_MB (1024)
// MiB of changed pages (64 transactions of distinct pages, real random
// bytes); "spool-only" stops there (the baseline: its wall, CPU and RSS are
// the set-up cost), "publish-fs" and "publish-s3" then publish it all (one
// PublishNow: four jobs of 256 MiB, Policy.MaxJobPages) to the fs store or
// to loopback versitygw; "adopt-fs" builds one image record of that size
// instead (an adopted database) and publishes it as base objects. Extras, measured
// around the publish alone: MB/s, CPU seconds per GB of changed pages
// (getrusage of the process: the fs store's writes count, versitygw's
// work does not), the RSS growth during the publish (peak RSS reset with
// /proc/self/clear_refs before, VmHWM after, minus VmRSS before), then the
// requests of 50 small publishes that follow (PUTs, GETs, LISTs per
// publish, through the metering wrapper).
//
// restore: the parent publishes a database once (an adopted image of
// BOP_PUBLISH_BENCH_MB MiB as base objects, then 20 publishes of deltas
// each changing 1% of the pages) to the fs store and to versitygw.
// "get-*" fetch every object of the newest boundary whole with 8 parallel
// GETs and write them to a file (the same bytes, no verification, no page
// map); "restore-*" run checkpoint.Restore (8 parallel GETs, each object
// it uses streamed once, every frame verified). "range-*" are a reference between the
// two: the same objects fetched with 2 MiB ranged GETs and written, with
// no page map and no verification. MB/s is database bytes per second for
// restore and object bytes per second for get and range.
//
// Knobs: BOP_PUBLISH_BENCH_DELTAS (20: delta publishes in the restore
// database), BOP_PUBLISH_BENCH_MAXREAD and BOP_PUBLISH_BENCH_PARALLEL
// (restore options), BOP_PUBLISH_BENCH_CPUPROFILE (a CPU profile per
// restore variant, for investigation), BOP_PUBLISH_BENCH_GET_LATENCY (a
// duration added before every GET of the restore variants, get and
// range included: a distant store's time to first byte).
//
// Without BOP_S3_ENDPOINT it starts versitygw (.tools/bin/versitygw) on
// 127.0.0.1 and stops it at the end.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bopstore/bop/bench/harness"
	"github.com/bopstore/bop/checkpoint"
	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fault"
	"github.com/bopstore/bop/remote/fsstore"
	"github.com/bopstore/bop/remote/s3store"
	"github.com/bopstore/bop/wal"
)

const (
	childEnv   = "BOP_BENCH_CHILD"
	harnessEnv = "BOP_PUBLISH_BENCH_HARNESS"
	pageSize   = 4096
)

var layout = remote.Layout{Tenant: "default", DB: "bench"}

func megabytes() int {
	if v := os.Getenv("BOP_PUBLISH_BENCH_MB"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n >= 16 && n <= 16384 {
			return n
		}
	}
	return 1024
}

// fill writes pseudo-random bytes (xorshift) seeded by seed.
func fill(b []byte, seed uint64) {
	x := seed*0x9e3779b97f4a7c15 | 1
	for i := 0; i+8 <= len(b); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		for j := range 8 {
			b[i+j] = byte(x >> (8 * j))
		}
	}
}

// buildSpool appends mb MiB of distinct changed pages in 64 transactions
// (or one image record) and confirms them.
func buildSpool(dir string, mb int, image bool) (*wal.Spool, error) {
	sp, err := wal.OpenSpool(filepath.Join(dir, "spool"), wal.SpoolOptions{})
	if err != nil {
		return nil, err
	}
	total := uint32(mb) << 20 / pageSize
	txns := uint32(64)
	if image {
		txns = 1
	}
	per := total / txns
	page := make([]byte, pageSize)
	for t := uint32(0); t < txns; t++ {
		kind := wal.KindDirect
		if image {
			kind = wal.KindImage
		}
		db := (t + 1) * per
		a, err := sp.Begin(wal.RecordHeader{Kind: kind, PageSize: pageSize, DBPages: db, NPages: per})
		if err != nil {
			return nil, err
		}
		for p := t*per + 1; p <= db; p++ {
			fill(page, uint64(p)<<20|uint64(t))
			if p == 1 {
				sqliteHeader(page, total)
			}
			if err := a.Add(p, page); err != nil {
				return nil, err
			}
		}
		if _, err := a.Commit(); err != nil {
			return nil, err
		}
	}
	if err := sp.Sync(); err != nil {
		return nil, err
	}
	return sp, sp.SetConfirmed(sp.Status().LastTxid)
}

// sqliteHeader makes page 1 look like a database header (restore checks it).
func sqliteHeader(p []byte, dbPages uint32) {
	copy(p, "SQLite format 3\x00")
	p[16], p[17] = pageSize>>8, pageSize&0xff
	for i := 18; i < 100; i++ {
		p[i] = 0
	}
	putU32(p[28:], dbPages)
}

func putU32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
}

type syncer struct{ sp *wal.Spool }

func (s syncer) SyncForPublish() (uint64, error) {
	if err := s.sp.Sync(); err != nil {
		return 0, err
	}
	if last := s.sp.Status().SyncedTxid; last > s.sp.Confirmed() {
		if err := s.sp.SetConfirmed(last); err != nil {
			return 0, err
		}
	}
	return s.sp.Confirmed(), nil
}

// node is a catalog, writer and publisher over a spool.
type node struct {
	sp  *wal.Spool
	cat *manifest.Catalog
	pub *checkpoint.Publisher
}

func newNode(dir string, store remote.Store, sp *wal.Spool, chunkPages uint32) (*node, error) {
	cat, err := manifest.Open(filepath.Join(dir, "catalog.db"), manifest.Options{Layout: layout, PageSize: pageSize, ChunkPages: chunkPages})
	if err != nil {
		return nil, err
	}
	w, err := manifest.NewWriter(store, layout, cat, manifest.NewWriterID("bench"), manifest.WriterOptions{SnapshotEvery: 1 << 30, SnapshotBytes: 1 << 40})
	if err != nil {
		return nil, err
	}
	pub, err := checkpoint.New(checkpoint.Config{Store: store, Catalog: cat, Writer: w, Spool: sp, Capture: syncer{sp},
		StagingDir: filepath.Join(dir, "staging"), NoLoop: true, ForceTakeover: true})
	if err != nil {
		return nil, err
	}
	return &node{sp: sp, cat: cat, pub: pub}, nil
}

func (n *node) close() {
	n.pub.Close(context.Background())
	n.cat.Close()
	n.sp.Close()
}

// procStatus reads a kB field of /proc/self/status.
func procStatus(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			v, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return v
		}
	}
	return 0
}

func cpuNow() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// withGetLatency adds BOP_PUBLISH_BENCH_GET_LATENCY (a duration, say
// 20ms) before every GET of store, as a distant object store's time to
// first byte: restore's GETs against the plain GET's on a store where each
// one costs a round trip.
func withGetLatency(store remote.Store) (remote.Store, error) {
	v := os.Getenv("BOP_PUBLISH_BENCH_GET_LATENCY")
	if v == "" {
		return store, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return nil, fmt.Errorf("BOP_PUBLISH_BENCH_GET_LATENCY: %w", err)
	}
	return fault.New(store, fault.Config{Latency: map[fault.Op]time.Duration{fault.OpGet: d}}), nil
}

func openStore(ctx context.Context, kind, dir, prefix string) (remote.Store, error) {
	switch kind {
	case "fs":
		return fsstore.New(dir)
	case "s3":
		return s3store.New(ctx, s3store.Config{Bucket: os.Getenv("BOP_S3_BUCKET"), Prefix: prefix,
			Endpoint: os.Getenv("BOP_S3_ENDPOINT"), Region: "us-east-1", PathStyle: true,
			AccessKey: os.Getenv("BOP_S3_ACCESS_KEY"), SecretKey: os.Getenv("BOP_S3_SECRET_KEY"), DisableIMDS: true})
	}
	return nil, fmt.Errorf("store kind %q", kind)
}

func publishVariant(name, kind string, image, baseline bool) harness.Variant {
	return harness.Variant{Name: name, Baseline: baseline, Run: func(dir string) (map[string]float64, error) {
		ctx := context.Background()
		mb := megabytes()
		sp, err := buildSpool(dir, mb, image)
		if err != nil {
			return nil, err
		}
		if kind == "" {
			return nil, sp.Close()
		}
		prefix := os.Getenv("BOP_PUBLISH_BENCH_PREFIX") + "/" + filepath.Base(dir)
		inner, err := openStore(ctx, kind, filepath.Join(dir, "store"), prefix)
		if err != nil {
			return nil, err
		}
		store := &countingStore{Store: inner}
		n, err := newNode(dir, store, sp, manifest.DefaultChunkPages)
		if err != nil {
			return nil, err
		}
		defer n.close()
		rssBefore := procStatus("VmRSS")
		os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) // reset VmHWM
		cpu0, t0 := cpuNow(), time.Now()
		txid, err := n.pub.PublishNow(ctx)
		wall, cpu := time.Since(t0), cpuNow()-cpu0
		if err != nil {
			return nil, err
		}
		peak := procStatus("VmHWM")
		if txid != sp.Status().LastTxid {
			return nil, fmt.Errorf("published %d of %d", txid, sp.Status().LastTxid)
		}
		gb := float64(mb) / 1024
		out := map[string]float64{
			"MB/s":           float64(mb) * (1 << 20) / 1e6 / wall.Seconds(),
			"cpu_s_per_GB":   cpu.Seconds() / gb,
			"rss_growth_MiB": float64(peak-rssBefore) / 1024,
		}
		// Small publishes: requests per publish.
		store.reset()
		const small = 50
		page := make([]byte, pageSize)
		dbPages := uint32(mb) << 20 / pageSize
		for i := range small {
			a, err := sp.Begin(wal.RecordHeader{Kind: wal.KindDirect, PageSize: pageSize, DBPages: dbPages, NPages: 3})
			if err != nil {
				return nil, err
			}
			for k, p := range []uint32{1, 2 + uint32(i*7)%(dbPages-2), dbPages} {
				fill(page, uint64(i*3+k))
				if p == 1 {
					sqliteHeader(page, dbPages)
				}
				if err := a.Add(p, page); err != nil {
					return nil, err
				}
			}
			if _, err := a.Commit(); err != nil {
				return nil, err
			}
			if _, err := n.pub.PublishNow(ctx); err != nil {
				return nil, err
			}
		}
		out["puts/publish"] = float64(store.puts.Load()) / small
		out["gets/publish"] = float64(store.gets.Load()) / small
		out["lists"] = float64(store.lists.Load())
		if kind == "s3" {
			inner.(*s3store.Store).List(ctx, "", func(info remote.ObjectInfo) error { return inner.Delete(ctx, info.Key) })
		}
		return out, nil
	}}
}

// countingStore counts requests. Unlike remote/fault it hands bodies to
// the store unchanged, so a file body keeps its io.ReaderAt and io.Seeker
// and s3store sends it in sections without part buffers, as it does in
// production.
type countingStore struct {
	remote.Store
	puts, gets, lists atomic.Int64
}

func (c *countingStore) reset() { c.puts.Store(0); c.gets.Store(0); c.lists.Store(0) }

func (c *countingStore) Put(ctx context.Context, key string, r io.Reader, o remote.PutOptions) (remote.PutResult, error) {
	c.puts.Add(1)
	return c.Store.Put(ctx, key, r, o)
}

func (c *countingStore) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, remote.ObjectInfo, error) {
	c.gets.Add(1)
	return c.Store.Get(ctx, key, off, n)
}

func (c *countingStore) Head(ctx context.Context, key string) (remote.ObjectInfo, error) {
	c.gets.Add(1)
	return c.Store.Head(ctx, key)
}

func (c *countingStore) List(ctx context.Context, prefix string, fn func(remote.ObjectInfo) error) error {
	c.lists.Add(1)
	return c.Store.List(ctx, prefix, fn)
}

// prepareRestore publishes the restore benchmark's database into the fs
// store at dir/store and to S3 under prefix, and leaves the catalog at
// dir/catalog.db.
func prepareRestore(dir, prefix string) error {
	ctx := context.Background()
	mb := megabytes()
	for _, kind := range []string{"fs", "s3"} {
		sub := filepath.Join(dir, kind)
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return err
		}
		sp, err := buildSpool(sub, mb, true)
		if err != nil {
			return err
		}
		store, err := openStore(ctx, kind, filepath.Join(sub, "store"), prefix)
		if err != nil {
			return err
		}
		n, err := newNode(sub, store, sp, manifest.DefaultChunkPages)
		if err != nil {
			return err
		}
		if _, err := n.pub.PublishNow(ctx); err != nil {
			return err
		}
		total := uint32(mb) << 20 / pageSize
		page := make([]byte, pageSize)
		deltas := 20
		if v := os.Getenv("BOP_PUBLISH_BENCH_DELTAS"); v != "" {
			deltas, _ = strconv.Atoi(v)
		}
		for r := range deltas {
			per := total / 100
			a, err := sp.Begin(wal.RecordHeader{Kind: wal.KindDirect, PageSize: pageSize, DBPages: total, NPages: per})
			if err != nil {
				return err
			}
			for i := uint32(0); i < per; i++ {
				// Distinct pages: i*97 < total-1 for i < total/100.
				p := 2 + (i*97+uint32(r)*13)%(total-1)
				fill(page, uint64(p)*31+uint64(r))
				if err := a.Add(p, page); err != nil {
					return err
				}
			}
			if _, err := a.Commit(); err != nil {
				return err
			}
			if _, err := n.pub.PublishNow(ctx); err != nil {
				return err
			}
		}
		n.close()
	}
	return nil
}

func deltasEnv() string {
	if v := os.Getenv("BOP_PUBLISH_BENCH_DELTAS"); v != "" {
		return v
	}
	return "20"
}

func restoreVariant(name, kind string, plain, baseline bool) harness.Variant {
	return harness.Variant{Name: name, Baseline: baseline, Run: func(dir string) (map[string]float64, error) {
		ctx := context.Background()
		src := filepath.Join(os.Getenv("BOP_PUBLISH_BENCH_DATA"), kind)
		store, err := openStore(ctx, kind, filepath.Join(src, "store"), os.Getenv("BOP_PUBLISH_BENCH_PREFIX"))
		if err != nil {
			return nil, err
		}
		if store, err = withGetLatency(store); err != nil {
			return nil, err
		}
		cat, err := manifest.Open(filepath.Join(src, "catalog.db"), manifest.Options{})
		if err != nil {
			return nil, err
		}
		defer cat.Close()
		out := filepath.Join(dir, "restored.db")
		if pf := os.Getenv("BOP_PUBLISH_BENCH_CPUPROFILE"); pf != "" {
			f, err := os.Create(pf + "-" + name)
			if err == nil {
				pprof.StartCPUProfile(f)
				defer pprof.StopCPUProfile()
			}
		}
		t0 := time.Now()
		var n, gets, fetched int64
		if plain {
			n, err = plainGet(ctx, store, cat.Snapshot().Objects(), out)
		} else {
			var res checkpoint.RestoreResult
			var maxRead int64
			if v := os.Getenv("BOP_PUBLISH_BENCH_MAXREAD"); v != "" {
				maxRead, _ = strconv.ParseInt(v, 10, 64)
			}
			par, _ := strconv.Atoi(os.Getenv("BOP_PUBLISH_BENCH_PARALLEL"))
			res, err = checkpoint.Restore(ctx, checkpoint.RestoreOptions{Store: store, Catalog: cat, Path: out, MaxRead: maxRead,
				Parallel: par})
			n = res.Size
			gets = res.Gets
			fetched = res.GetBytes
		}
		if err != nil {
			return nil, err
		}
		extra := map[string]float64{"MB/s": float64(n) / 1e6 / time.Since(t0).Seconds()}
		if !plain {
			extra["gets"] = float64(gets)
			extra["fetched_MB"] = float64(fetched) / 1e6
		}
		return extra, nil
	}}
}

// plainGet fetches every object whole, 8 at a time, into one file.
func plainGet(ctx context.Context, store remote.Store, objs []*manifest.ObjectRef, path string) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var off int64
	offs := make([]int64, len(objs))
	for i, o := range objs {
		offs[i] = off
		off += o.Size
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(objs))
	next := make(chan int, len(objs))
	for i := range objs {
		next <- i
	}
	close(next)
	for range 8 {
		wg.Go(func() {
			buf := make([]byte, 1<<20)
			for i := range next {
				rc, _, err := store.Get(ctx, objs[i].Key, 0, -1)
				if err != nil {
					errs <- err
					return
				}
				w := io.NewOffsetWriter(f, offs[i])
				_, err = io.CopyBuffer(w, rc, buf)
				rc.Close()
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return off, f.Sync()
}

func main() {
	op := os.Getenv("BOP_PUBLISH_BENCH_OP")
	if op == "" {
		op = "publish"
	}
	var variants []harness.Variant
	var title string
	switch op {
	case "publish":
		title = fmt.Sprintf("checkpoint publish: %d MiB of changed pages, one PublishNow", megabytes())
		variants = []harness.Variant{
			publishVariant("spool-only", "", false, true),
			publishVariant("publish-fs", "fs", false, false),
			publishVariant("publish-s3", "s3", false, false),
			publishVariant("adopt-fs", "fs", true, false),
		}
	case "restore":
		title = fmt.Sprintf("checkpoint restore of a %d MiB database (%s delta publishes) vs plain GET of its objects", megabytes(), deltasEnv())
		variants = []harness.Variant{
			restoreVariant("get-fs", "fs", true, true),
			restoreVariant("restore-fs", "fs", false, false),
			restoreVariant("get-s3", "s3", true, false),
			restoreVariant("restore-s3", "s3", false, false),
			rangeVariant("range-fs", "fs", 2<<20, false),
			rangeVariant("range-s3", "s3", 2<<20, false),
		}
	default:
		fmt.Fprintf(os.Stderr, "BOP_PUBLISH_BENCH_OP=%q: want publish or restore\n", op)
		os.Exit(2)
	}
	if os.Getenv(childEnv) != "" || os.Getenv(harnessEnv) == "1" {
		harness.Main(title, variants)
		return
	}
	os.Exit(parent(op, title))
}

// parent starts versitygw if needed, prepares data, runs the harness in a
// child (harness.Main exits on failure) and cleans up.
func parent(op, title string) int {
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	if os.Getenv("BOP_S3_ENDPOINT") == "" {
		stop, err := startVersitygw()
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench/publish:", err)
			return 1
		}
		defer stop()
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	os.Setenv("BOP_PUBLISH_BENCH_PREFIX", "bench-publish/"+hex.EncodeToString(rnd[:]))
	if op == "restore" {
		data, err := os.MkdirTemp("", "bop-bench-restore-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench/publish:", err)
			return 1
		}
		defer os.RemoveAll(data)
		fmt.Fprintf(os.Stderr, "bench/publish: publishing the %d MiB restore database to fs and s3\n", megabytes())
		if err := prepareRestore(data, os.Getenv("BOP_PUBLISH_BENCH_PREFIX")); err != nil {
			fmt.Fprintln(os.Stderr, "bench/publish: prepare:", err)
			return 1
		}
		os.Setenv("BOP_PUBLISH_BENCH_DATA", data)
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/publish:", err)
		return 1
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Env = append(os.Environ(), harnessEnv+"=1")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/publish: harness:", err)
		return 1
	}
	return 0
}

// startVersitygw runs versitygw on a free loopback port with a temporary
// posix root and sets the BOP_S3_* variables; stop kills it by PID and
// removes its data. (As in bench/s3.)
func startVersitygw() (stop func(), err error) {
	bin := os.Getenv("BOP_VERSITYGW")
	if bin == "" {
		bin = filepath.Join(".tools", "bin", "versitygw")
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("versitygw not found at %s (run ./scripts/test.sh once to install it, or set BOP_VERSITYGW or BOP_S3_ENDPOINT): %w", bin, err)
	}
	data, err := os.MkdirTemp("", "bop-bench-versitygw-")
	if err != nil {
		return nil, err
	}
	const bucket = "bop-bench"
	if err := os.MkdirAll(filepath.Join(data, "gw", bucket), 0o755); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(data, "meta"), 0o755); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	access, secret := "bop-bench-access", "bop-bench-secret-"+strconv.FormatInt(time.Now().UnixNano(), 36)
	logf, err := os.Create(filepath.Join(data, "versitygw.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--port", addr, "--health", "/health", "--quiet",
		"posix", "--sidecar", filepath.Join(data, "meta"), filepath.Join(data, "gw"))
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+access, "ROOT_SECRET_KEY="+secret)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop = func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
		os.RemoveAll(data)
	}
	endpoint := "http://" + addr
	for i := 0; ; i++ {
		resp, err := http.Get(endpoint + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if i == 100 {
			stop()
			return nil, fmt.Errorf("versitygw at %s did not become healthy", endpoint)
		}
		time.Sleep(100 * time.Millisecond)
	}
	os.Setenv("BOP_S3_ENDPOINT", endpoint)
	os.Setenv("BOP_S3_REGION", "us-east-1")
	os.Setenv("BOP_S3_BUCKET", bucket)
	os.Setenv("BOP_S3_ACCESS_KEY", access)
	os.Setenv("BOP_S3_SECRET_KEY", secret)
	return stop, nil
}

// rangeVariant is a reference point between get and restore: the same
// objects fetched with 2 MiB ranged GETs (8 in parallel) and written to a
// file, without verification or a page map.
func rangeVariant(name, kind string, size int64, discard bool) harness.Variant {
	return harness.Variant{Name: name, Run: func(dir string) (map[string]float64, error) {
		ctx := context.Background()
		src := filepath.Join(os.Getenv("BOP_PUBLISH_BENCH_DATA"), kind)
		store, err := openStore(ctx, kind, filepath.Join(src, "store"), os.Getenv("BOP_PUBLISH_BENCH_PREFIX"))
		if err != nil {
			return nil, err
		}
		if store, err = withGetLatency(store); err != nil {
			return nil, err
		}
		cat, err := manifest.Open(filepath.Join(src, "catalog.db"), manifest.Options{})
		if err != nil {
			return nil, err
		}
		defer cat.Close()
		f, _ := os.Create(filepath.Join(dir, "out"))
		defer f.Close()
		type job struct {
			key          string
			off, n, woff int64
		}
		jobs := make(chan job, 64)
		var total int64
		go func() {
			var woff int64
			for _, o := range cat.Snapshot().Objects() {
				for off := int64(0); off < o.Size; off += size {
					n := min(size, o.Size-off)
					jobs <- job{o.Key, off, n, woff}
					woff += n
				}
			}
			total = woff
			close(jobs)
		}()
		t0 := time.Now()
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				buf := make([]byte, size)
				for j := range jobs {
					rc, _, err := store.Get(ctx, j.key, j.off, j.n)
					if err != nil {
						panic(err)
					}
					io.ReadFull(rc, buf[:j.n])
					rc.Close()
					if !discard {
						f.WriteAt(buf[:j.n], j.woff)
					}
				}
			})
		}
		wg.Wait()
		if !discard {
			f.Sync()
		}
		return map[string]float64{"MB/s": float64(total) / 1e6 / time.Since(t0).Seconds()}, nil
	}}
}
