// Command vfs measures the bop VFS in primary mode against plain SQLite
// (the default VFS) in the same run: WAL mode, synchronous=NORMAL, through
// database/sql and the ncruces driver.
//
//	go run ./bench/vfs -workload W1    200,000 rows (id, k, 100-char text) in 1,000-row transactions, with an index on k
//	go run ./bench/vfs -workload W2    10,000 autocommit inserts (-inserts N: other counts)
//	go run ./bench/vfs -workload R1    200,000 random point selects
//	go run ./bench/vfs -workload R2    50 full scans
//	go run ./bench/vfs -workload W1 -nopub   also bop with publishing deferred to close
//
// Each variant runs in its own child process (bench/harness), >= 10
// interleaved repetitions, timing wall and process CPU. The bop variant
// uses a zero Config: async durability, publishing every second to the
// embedded fs store next to the database; its extras report the publish
// lag (age of the oldest unpublished transaction) sampled from
// VFS.Status every 50 ms during the workload: lag_p99_s, lag_max_s. The read workloads
// run on a 200,000-row database built once by the parent (not timed): a
// plain copy and a bop copy (adopted), which the children open in place.
package main

import (
	"database/sql"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bopstore/bop/bench/harness"
	bop "github.com/bopstore/bop/vfs"
	_ "github.com/ncruces/go-sqlite3/driver"
)

const (
	rows      = 200_000
	batch     = 1_000
	r1Selects = 200_000
	r2Scans   = 50
)

var (
	workload = flag.String("workload", "W1", "W1, W2, R1 or R2")
	// A third variant, bop-nopub: publishing only at close (interval of an
	// hour, no early publish), to tell capture's cost from publishing's.
	noPub = flag.Bool("nopub", false, "also run bop with publishing deferred to close")
	// W2 as the issue defines it is 10,000 inserts; more shows how bop's
	// fixed cost per process (a new database's local state, catalog and
	// takeover at open; the final publish and release at close) amortizes.
	w2Inserts = flag.Int("inserts", 10_000, "W2's number of autocommit inserts")
)

func main() {
	// The variants depend on our flags.
	harness.ParseFlags()

	w := strings.ToUpper(*workload)
	if *w2Inserts < 1 {
		fail(fmt.Errorf("-inserts %d: at least 1", *w2Inserts))
	}
	if os.Getenv("BOP_BENCH_CHILD") == "" && (w == "R1" || w == "R2") {
		dir, err := os.MkdirTemp("", "bop-bench-vfs-fixture-")
		if err != nil {
			fail(err)
		}
		defer os.RemoveAll(dir)
		if err := buildFixtures(dir); err != nil {
			fail(err)
		}
		os.Setenv("BOP_BENCH_FIXTURES", dir)
	}
	run, title := workloads(w)
	if run == nil {
		fail(fmt.Errorf("unknown workload %q", *workload))
	}
	variants := []harness.Variant{
		{Name: "plain-" + w, Baseline: true, Run: func(dir string) (map[string]float64, error) { return measure(run, dir, false) }},
		{Name: "bop-" + w, Run: func(dir string) (map[string]float64, error) { return measure(run, dir, true) }},
	}
	if *noPub {
		variants = append(variants, harness.Variant{Name: "bop-nopub-" + w, Run: func(dir string) (map[string]float64, error) {
			bopConfig = bop.Config{CheckpointInterval: time.Hour, PublishBytes: -1}
			return measure(run, dir, true)
		}})
	}
	harness.Main(title, variants)
}

// The harness times the whole child process. Each workload also reports
// the wall and CPU time of its work alone (work_s, work_cpu_s): from after
// the database is open to before it is closed, so that process start,
// SQLite's initialisation and bop's one-time open cost are visible apart.
var workStart, workEnd struct {
	wall time.Time
	cpu  time.Duration
}

var stopWorkProfile = func() {}

// record writes what start records, until the returned stop, into
// prefix-<variant>-<pid>.<ext>: a CPU profile (startProfile) or a runtime
// execution trace (startTrace: where the workload's goroutine waits, go
// tool trace -pprof=syscall or -pprof=sync, which a CPU profile does not
// show).
func record(prefix, ext string, start func(io.Writer) error, end func()) (stop func(), err error) {
	f, err := os.Create(fmt.Sprintf("%s-%s-%d.%s", prefix, os.Getenv("BOP_BENCH_CHILD"), os.Getpid(), ext))
	if err != nil {
		return nil, err
	}
	if err := start(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { end(); f.Close() }, nil
}

func writeAllocProfile(prefix string) {
	f, err := os.Create(fmt.Sprintf("%s-%s-%d.alloc", prefix, os.Getenv("BOP_BENCH_CHILD"), os.Getpid()))
	if err != nil {
		return
	}
	defer f.Close()
	runtime.GC() // the profile shows allocations as of the last collection
	pprof.Lookup("allocs").WriteTo(f, 0)
}

func startProfile(prefix string) (func(), error) {
	return record(prefix, "prof", pprof.StartCPUProfile, pprof.StopCPUProfile)
}

func startTrace(prefix string) (func(), error) {
	return record(prefix, "trace", trace.Start, trace.Stop)
}

func startWork() {
	if prefix := os.Getenv("BOP_BENCH_CPUPROFILE_WORK"); prefix != "" {
		if stop, err := startProfile(prefix); err == nil {
			stopWorkProfile = stop
		}
	} else if prefix := os.Getenv("BOP_BENCH_TRACE_WORK"); prefix != "" {
		if stop, err := startTrace(prefix); err == nil {
			stopWorkProfile = stop
		}
	}
	workStart.wall, workStart.cpu = time.Now(), cpuTime()
	if bopVFS != nil {
		lagSampler.start(bopVFS, bopPath)
	}
}

func endWork() {
	workEnd.wall, workEnd.cpu = time.Now(), cpuTime()
	stopWorkProfile()
	lagSampler.stop()
}

// The publish lag, sampled from VFS.Status (what PRAGMA bop_status
// returns) every 50 ms while the workload runs: the age of the oldest
// transaction not yet published.
var (
	bopConfig  bop.Config // zero: the default (async, publishing every second)
	bopVFS     *bop.VFS
	bopPath    string
	lagSampler sampler
)

type sampler struct {
	done    chan struct{}
	wg      sync.WaitGroup
	lags    []float64
	lastErr string
}

func (s *sampler) start(v *bop.VFS, path string) {
	s.done = make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.done:
				return
			case <-t.C:
			}
			st, err := v.Status(path)
			if err != nil {
				continue
			}
			s.lags = append(s.lags, st.LagSeconds)
			if st.PublishError != "" {
				s.lastErr = st.PublishError
			}
		}
	}()
}

func (s *sampler) stop() {
	if s.done == nil {
		return
	}
	close(s.done)
	s.wg.Wait()
	s.done = nil
}

// extras are the lag's p99 and maximum over the samples.
func (s *sampler) extras(m map[string]float64) {
	if len(s.lags) == 0 {
		return
	}
	sorted := append([]float64(nil), s.lags...)
	sort.Float64s(sorted)
	m["lag_p99_s"] = sorted[(len(sorted)*99)/100]
	m["lag_max_s"] = sorted[len(sorted)-1]
	m["lag_samples"] = float64(len(sorted))
	if s.lastErr != "" {
		fmt.Fprintln(os.Stderr, "bench/vfs: publish error seen:", s.lastErr)
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BOP_BENCH_CPUPROFILE=prefix writes a CPU profile of each child (the
// whole run: open, work, close) to prefix-<variant>-<pid>.prof;
// BOP_BENCH_CPUPROFILE_WORK=prefix one of the work alone;
// BOP_BENCH_ALLOCPROFILE=prefix the allocations of the whole run (every
// 4 KiB allocated sampled) to prefix-<variant>-<pid>.alloc (go tool pprof
// -sample_index=alloc_space): what makes the garbage collector run.
func measure(run func(string, bool) error, dir string, useBop bool) (map[string]float64, error) {
	if prefix := os.Getenv("BOP_BENCH_ALLOCPROFILE"); prefix != "" {
		runtime.MemProfileRate = 4096
		defer writeAllocProfile(prefix)
	}
	if prefix := os.Getenv("BOP_BENCH_CPUPROFILE"); prefix != "" {
		stop, err := startProfile(prefix)
		if err != nil {
			return nil, err
		}
		defer stop()
	}
	if err := run(dir, useBop); err != nil {
		return nil, err
	}
	m := map[string]float64{
		"work_s":     workEnd.wall.Sub(workStart.wall).Seconds(),
		"work_cpu_s": (workEnd.cpu - workStart.cpu).Seconds(),
	}
	m["open_s"], m["close_s"] = openTime.Seconds(), closeTime.Seconds()
	m["open_cpu_s"], m["close_cpu_s"] = openCPU.Seconds(), closeCPU.Seconds()
	lagSampler.extras(m)
	// What the process allocated and how often it collected garbage: in
	// a run this short, each collection is a visible share of the CPU.
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m["alloc_mb"] = float64(ms.TotalAlloc) / (1 << 20)
	m["gc_cycles"] = float64(ms.NumGC)
	return m, nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench/vfs:", err)
	os.Exit(1)
}

func workloads(w string) (func(dir string, useBop bool) error, string) {
	switch w {
	case "W1":
		return w1, "vfs W1: 200,000 rows in 1,000-row transactions, indexed (bop vs plain SQLite)"
	case "W2":
		return w2, fmt.Sprintf("vfs W2: %s autocommit inserts (bop vs plain SQLite)", thousands(*w2Inserts))
	case "R1":
		return r1, "vfs R1: 200,000 random point selects (bop vs plain SQLite)"
	case "R2":
		return r2, "vfs R2: 50 full scans of 200,000 rows (bop vs plain SQLite)"
	}
	return nil, ""
}

// thousands formats n as the titles write counts: 10,000.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// open opens path with WAL mode and synchronous=NORMAL, through bop or the
// default VFS, with one connection.
func open(path string, useBop bool) (*sql.DB, error) {
	dsn := "file:" + path + "?_pragma=journal_mode(wal)&_pragma=synchronous(normal)"
	if useBop {
		// The zero Config: async durability, publishing every second to
		// the embedded store (a local directory, fsstore) next to the file.
		v, err := bop.Register("bop", bopConfig)
		if err != nil {
			return nil, err
		}
		bopVFS, bopPath = v, path
		dsn += "&vfs=bop"
	}
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	return db, db.Ping()
}

// open_s and close_s: the open (through the first statement: bop takes
// the writer role there) and the close (bop's final publish and release
// record); open_cpu_s and close_cpu_s: the process CPU time of each.
var openTime, closeTime, openCPU, closeCPU time.Duration

func timedOpen(path string, useBop bool) (*sql.DB, error) {
	start, cpu := time.Now(), cpuTime()
	db, err := open(path, useBop)
	openTime, openCPU = time.Since(start), cpuTime()-cpu
	return db, err
}

func timedClose(db *sql.DB) error {
	start, cpu := time.Now(), cpuTime()
	err := db.Close()
	closeTime, closeCPU = time.Since(start), cpuTime()-cpu
	return err
}

var text = strings.Repeat("0123456789", 10) // 100 characters

func load(db *sql.DB) error {
	if _, err := db.Exec("CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v TEXT); CREATE INDEX t_k ON t(k)"); err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < rows; i += batch {
		tx, err := db.Begin()
		if err != nil {
			return err
		}
		st, err := tx.Prepare("INSERT INTO t(id, k, v) VALUES (?, ?, ?)")
		if err != nil {
			return err
		}
		for j := i; j < i+batch; j++ {
			if _, err := st.Exec(j+1, rng.Int64N(1_000_000), text); err != nil {
				return err
			}
		}
		st.Close()
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

func w1(dir string, useBop bool) error {
	db, err := timedOpen(filepath.Join(dir, "w1.db"), useBop)
	if err != nil {
		return err
	}
	startWork()
	if err := load(db); err != nil {
		return err
	}
	endWork()
	return timedClose(db)
}

func w2(dir string, useBop bool) error {
	db, err := timedOpen(filepath.Join(dir, "w2.db"), useBop)
	if err != nil {
		return err
	}
	startWork()
	if _, err := db.Exec("CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v TEXT)"); err != nil {
		return err
	}
	st, err := db.Prepare("INSERT INTO t(k, v) VALUES (?, ?)")
	if err != nil {
		return err
	}
	for i := 0; i < *w2Inserts; i++ {
		if _, err := st.Exec(i, text); err != nil {
			return err
		}
	}
	st.Close()
	endWork()
	return timedClose(db)
}

func fixture(useBop bool) string {
	name := "plain.db"
	if useBop {
		name = "bop.db"
	}
	return filepath.Join(os.Getenv("BOP_BENCH_FIXTURES"), name)
}

func r1(_ string, useBop bool) error {
	db, err := timedOpen(fixture(useBop), useBop)
	if err != nil {
		return err
	}
	startWork()
	st, err := db.Prepare("SELECT k, v FROM t WHERE id = ?")
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var k int64
	var v string
	for i := 0; i < r1Selects; i++ {
		if err := st.QueryRow(1+rng.IntN(rows)).Scan(&k, &v); err != nil {
			return err
		}
	}
	st.Close()
	endWork()
	return timedClose(db)
}

func r2(_ string, useBop bool) error {
	db, err := timedOpen(fixture(useBop), useBop)
	if err != nil {
		return err
	}
	startWork()
	for i := 0; i < r2Scans; i++ {
		var n, sum int64
		if err := db.QueryRow("SELECT count(*), sum(length(v) + k) FROM t").Scan(&n, &sum); err != nil {
			return err
		}
		if n != rows {
			return fmt.Errorf("scan saw %d rows", n)
		}
	}
	endWork()
	return timedClose(db)
}

// buildFixtures creates the read workloads' database once: plain.db with
// stock SQLite, and bop.db, a copy adopted through bop (so it has its bop
// state and is opened the way a user's database is).
func buildFixtures(dir string) error {
	plain := filepath.Join(dir, "plain.db")
	db, err := open(plain, false)
	if err != nil {
		return err
	}
	if err := load(db); err != nil {
		return err
	}
	if err := db.Close(); err != nil {
		return err
	}
	b, err := os.ReadFile(plain)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "bop.db"), b, 0o644); err != nil {
		return err
	}
	v, err := bop.Register("bop-fixture", bop.Config{})
	if err != nil {
		return err
	}
	defer v.Close()
	adopted, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "bop.db")+"?vfs=bop-fixture")
	if err != nil {
		return err
	}
	if _, err := adopted.Exec("SELECT count(*) FROM t"); err != nil {
		return err
	}
	return adopted.Close()
}
