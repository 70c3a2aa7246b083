// Command capture measures what WAL capture and the spool cost SQLite:
// the same workload through the pass-through test VFS wrapper (baseline),
// through the wrapper with wal.Capture and a wal.Spool, and through
// ncruces' plain VFS for reference.
//
//	go run ./bench/capture                      # bulk insert: 200,000 rows of ~120 bytes, 1,000-row transactions
//	go run ./bench/capture -workload=insert-index  # the same with a secondary index on a random column
//	go run ./bench/capture -workload=autocommit # 10,000 autocommit inserts of one row (bench/vfs W2)
//	go run ./bench/capture -workload=read       # 200,000 point selects on such a table
//
// WAL mode, synchronous=NORMAL. The spool buffers appends as the VFS's
// does (wal.SpoolOptions.BufferBytes, -buffer=0 to write each record at
// its commit); -coalesce=N merges small transactions into shared records
// (wal.CaptureOptions.Coalesce). See bench/RESULTS-capture.md.
package main

import (
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"

	_ "github.com/ncruces/go-sqlite3/driver"

	"github.com/bopstore/bop/bench/harness"
	"github.com/bopstore/bop/internal/vfstest"
	"github.com/bopstore/bop/wal"
)

const (
	rows        = 200_000
	batch       = 1_000
	reads       = 200_000
	autocommits = 10_000
	readDBEnv   = "BOP_BENCH_CAPTURE_READ_DB"
)

// workload is parsed by the harness's flag.Parse in the parent; children
// (which the harness runs without parsing flags) read it from os.Args.
var (
	workloadFlag = flag.String("workload", "insert", "insert, insert-index, autocommit or read")
	bufferFlag   = flag.Int("buffer", 256<<10, "the spool's SpoolOptions.BufferBytes (the VFS's: 256 KiB)")
	coalesceFlag = flag.Int("coalesce", 0, "CaptureOptions.Coalesce: bytes of small transactions merged into one record (0: off)")
)

// arg returns the value of -name=value from the command line (children
// do not parse flags), or def.
func arg(name, def string) string {
	for _, a := range os.Args[1:] {
		if v, ok := strings.CutPrefix(a, "-"+name+"="); ok {
			return v
		}
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return def
}

func workload() string { return arg("workload", *workloadFlag) }

func intArg(name string, def int) int {
	n, err := strconv.Atoi(arg(name, strconv.Itoa(def)))
	if err != nil {
		fmt.Fprintf(os.Stderr, "bad -%s: %v\n", name, err)
		os.Exit(2)
	}
	return n
}

func main() {
	for _, a := range os.Args[1:] {
		if file, ok := strings.CutPrefix(a, "-paired="); ok {
			if err := paired(file); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			return
		}
	}
	w := workload()
	switch w {
	case "insert", "insert-index", "autocommit", "read":
	default:
		fmt.Fprintf(os.Stderr, "unknown workload %q\n", w)
		os.Exit(2)
	}
	if w == "read" && os.Getenv("BOP_BENCH_CHILD") == "" {
		// The table the reads run on is built once, by the parent, outside
		// any measurement; each run copies it.
		path, err := buildReadDB()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer os.RemoveAll(filepath.Dir(path))
		os.Setenv(readDBEnv, path)
	}
	title := map[string]string{
		"insert":       "WAL capture + spool: bulk insert (200,000 rows of ~120 bytes, 1,000-row transactions, WAL, synchronous=NORMAL)",
		"insert-index": "WAL capture + spool: bulk insert with a secondary index on a random column (same rows)",
		"autocommit":   "WAL capture + spool: 10,000 autocommit inserts of one row (WAL, synchronous=NORMAL)",
		"read":         "WAL capture + spool: 200,000 point selects by primary key",
	}[w]
	harness.Main(title, []harness.Variant{
		{Name: "passthrough", Baseline: true, Run: func(dir string) (map[string]float64, error) { return run(dir, w, false, "passthrough") }},
		{Name: "capture", Run: func(dir string) (map[string]float64, error) { return run(dir, w, true, "capture") }},
		{Name: "plain-vfs", Run: func(dir string) (map[string]float64, error) { return run(dir, w, false, "") }},
	})
}

// run performs one measured run. vfsName "" is ncruces' default VFS.
// BOP_BENCH_CPUPROFILE=file writes a CPU profile of the run (use it on a
// child run directly: BOP_BENCH_CHILD=capture BOP_BENCH_DIR=dir prog).
func run(dir, w string, capture bool, vfsName string) (map[string]float64, error) {
	if prof := os.Getenv("BOP_BENCH_CPUPROFILE"); prof != "" {
		f, err := os.Create(prof)
		if err != nil {
			return nil, err
		}
		pprof.StartCPUProfile(f)
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	path := filepath.Join(dir, "bench.db")
	var c *wal.Capture
	var sp *wal.Spool
	if vfsName != "" {
		v := vfstest.New(nil)
		v.Register(vfsName)
		if capture {
			var err error
			if sp, err = wal.OpenSpool(filepath.Join(dir, "spool"), wal.SpoolOptions{BufferBytes: intArg("buffer", *bufferFlag)}); err != nil {
				return nil, err
			}
			if c, err = wal.NewCapture(sp, wal.CaptureOptions{Coalesce: intArg("coalesce", *coalesceFlag)}); err != nil {
				return nil, err
			}
			v.Attach(path, c)
		}
	}
	if w == "read" {
		if err := copyFile(os.Getenv(readDBEnv), path); err != nil {
			return nil, err
		}
	}
	q := url.Values{}
	if vfsName != "" {
		q.Set("vfs", vfsName)
	}
	q.Add("_pragma", "journal_mode(wal)")
	q.Add("_pragma", "synchronous(normal)")
	db, err := sql.Open("sqlite3", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	switch w {
	case "read":
		err = readWorkload(db)
	case "autocommit":
		err = autocommitWorkload(db)
	default:
		err = insertWorkload(db, w == "insert-index")
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	extra := map[string]float64{}
	if c != nil {
		if err := c.Err(); err != nil {
			return nil, err
		}
		st := c.Stats()
		ss := sp.Status()
		if os.Getenv("BOP_BENCH_STATS") != "" {
			fmt.Fprintf(os.Stderr, "capture stats: %+v\nspool: %+v\n", st, ss)
		}
		if err := c.Flush(); err != nil {
			return nil, err
		}
		extra["txns"] = float64(st.Commits + st.DirectTxns)
		extra["records"] = float64(sp.Status().LastTxid)
		extra["spool_MB"] = float64(ss.Bytes) / (1 << 20)
		c.Close()
		sp.Close()
	}
	return extra, nil
}

func insertWorkload(db *sql.DB, index bool) error {
	if _, err := db.Exec("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, n INTEGER, payload BLOB)"); err != nil {
		return err
	}
	if index {
		if _, err := db.Exec("CREATE INDEX tn ON t(n)"); err != nil {
			return err
		}
	}
	payload := []byte(strings.Repeat("p", 88))
	for b := 0; b < rows/batch; b++ {
		tx, err := db.Begin()
		if err != nil {
			return err
		}
		st, err := tx.Prepare("INSERT INTO t(name, n, payload) VALUES (?, ?, ?)")
		if err != nil {
			return err
		}
		for i := 0; i < batch; i++ {
			k := b*batch + i
			// ~120 bytes per row: 13-byte name, an integer, 88 bytes.
			if _, err := st.Exec(fmt.Sprintf("name-%08d", k), k*7919%rows, payload); err != nil {
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

// autocommitWorkload is bench/vfs W2: one-row transactions, each its own
// commit (one WAL frame, one spool record).
func autocommitWorkload(db *sql.DB) error {
	if _, err := db.Exec("CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v TEXT)"); err != nil {
		return err
	}
	st, err := db.Prepare("INSERT INTO t(k, v) VALUES (?, ?)")
	if err != nil {
		return err
	}
	defer st.Close()
	text := strings.Repeat("0123456789", 10)
	for i := 0; i < autocommits; i++ {
		if _, err := st.Exec(i, text); err != nil {
			return err
		}
	}
	return nil
}

func readWorkload(db *sql.DB) error {
	st, err := db.Prepare("SELECT name, payload FROM t WHERE id = ?")
	if err != nil {
		return err
	}
	defer st.Close()
	r := rand.New(rand.NewPCG(1, 2))
	var name string
	var payload []byte
	for i := 0; i < reads; i++ {
		if err := st.QueryRow(r.IntN(rows)+1).Scan(&name, &payload); err != nil {
			return err
		}
	}
	return nil
}

func buildReadDB() (string, error) {
	dir, err := os.MkdirTemp("", "bop-bench-capture-read-")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "read.db")
	db, err := sql.Open("sqlite3", "file:"+path+"?_pragma=journal_mode(wal)&_pragma=synchronous(normal)")
	if err != nil {
		return "", err
	}
	db.SetMaxOpenConns(1)
	if err := insertWorkload(db, false); err != nil {
		return "", err
	}
	if _, err := db.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		return "", err
	}
	return path, db.Close()
}

// paired reads the raw samples a run saved with -json and prints, per
// variant, the median and interquartile range of the ratio to the
// baseline within the same repetition. The variants of one repetition run
// back to back, so the ratio cancels much of a shared machine's drift.
func paired(file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var samples []harness.Sample
	if err := json.Unmarshal(b, &samples); err != nil {
		return err
	}
	by := map[int]map[string]harness.Sample{}
	var names []string
	for _, s := range samples {
		if by[s.Rep] == nil {
			by[s.Rep] = map[string]harness.Sample{}
		}
		by[s.Rep][s.Variant] = s
		if !slices.Contains(names, s.Variant) {
			names = append(names, s.Variant)
		}
	}
	fmt.Println("| variant | reps | CPU / baseline CPU, same repetition: median (IQR) | wall / baseline wall: median (IQR) |")
	fmt.Println("|---|---|---|---|")
	for _, n := range names {
		if n == "passthrough" {
			continue
		}
		var cpu, wall []float64
		for _, r := range by {
			v, ok1 := r[n]
			base, ok2 := r["passthrough"]
			if ok1 && ok2 {
				cpu = append(cpu, float64(v.CPU)/float64(base.CPU))
				wall = append(wall, float64(v.Wall)/float64(base.Wall))
			}
		}
		c, w := harness.Summarise(cpu), harness.Summarise(wall)
		fmt.Printf("| %s | %d | %.3f (%.3f–%.3f) | %.3f (%.3f–%.3f) |\n", n, c.N, c.Median, c.P25, c.P75, w.Median, w.P25, w.P75)
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
