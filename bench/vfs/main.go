// Command vfs measures the bop VFS in primary mode against plain SQLite
// (the default VFS) in the same run: WAL mode, synchronous=NORMAL, through
// database/sql and the ncruces driver.
//
//	go run ./bench/vfs -workload W1    200,000 rows (id, k, 100-char text) in 1,000-row transactions, with an index on k
//	go run ./bench/vfs -workload W2    10,000 autocommit inserts
//	go run ./bench/vfs -workload R1    200,000 random point selects
//	go run ./bench/vfs -workload R2    50 full scans
//
// Each variant runs in its own child process (bench/harness), >= 10
// interleaved repetitions, timing wall and process CPU. The read workloads
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
	"strings"
	"syscall"
	"time"

	"github.com/bopstore/bop/bench/harness"
	bop "github.com/bopstore/bop/vfs"
	_ "github.com/ncruces/go-sqlite3/driver"
)

const (
	rows      = 200_000
	batch     = 1_000
	w2Inserts = 10_000
	r1Selects = 200_000
	r2Scans   = 50
)

var workload = flag.String("workload", "W1", "W1, W2, R1 or R2")

func main() {
	// Parse our flag before the harness does (it re-parses the same
	// command line, children included).
	flag.CommandLine.Init(os.Args[0], flag.ContinueOnError)
	flag.CommandLine.SetOutput(io.Discard)
	flag.CommandLine.Parse(os.Args[1:])
	flag.CommandLine.Init(os.Args[0], flag.ExitOnError)
	flag.CommandLine.SetOutput(os.Stderr)

	w := strings.ToUpper(*workload)
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
	harness.Main(title, []harness.Variant{
		{Name: "plain-" + w, Baseline: true, Run: func(dir string) (map[string]float64, error) { return measure(run, dir, false) }},
		{Name: "bop-" + w, Run: func(dir string) (map[string]float64, error) { return measure(run, dir, true) }},
	})
}

// The harness times the whole child process. Each workload also reports
// the wall and CPU time of its work alone (work_s, work_cpu_s): from after
// the database is open to before it is closed, so that process start,
// SQLite's initialisation and bop's one-time open cost are visible apart.
var workStart, workEnd struct {
	wall time.Time
	cpu  time.Duration
}

func startWork() { workStart.wall, workStart.cpu = time.Now(), cpuTime() }
func endWork()   { workEnd.wall, workEnd.cpu = time.Now(), cpuTime() }

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func measure(run func(string, bool) error, dir string, useBop bool) (map[string]float64, error) {
	if err := run(dir, useBop); err != nil {
		return nil, err
	}
	return map[string]float64{
		"work_s":     workEnd.wall.Sub(workStart.wall).Seconds(),
		"work_cpu_s": (workEnd.cpu - workStart.cpu).Seconds(),
	}, nil
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
		return w2, "vfs W2: 10,000 autocommit inserts (bop vs plain SQLite)"
	case "R1":
		return r1, "vfs R1: 200,000 random point selects (bop vs plain SQLite)"
	case "R2":
		return r2, "vfs R2: 50 full scans of 200,000 rows (bop vs plain SQLite)"
	}
	return nil, ""
}

// open opens path with WAL mode and synchronous=NORMAL, through bop or the
// default VFS, with one connection.
func open(path string, useBop bool) (*sql.DB, error) {
	dsn := "file:" + path + "?_pragma=journal_mode(wal)&_pragma=synchronous(normal)"
	if useBop {
		if _, err := bop.Register("bop", bop.Config{}); err != nil {
			return nil, err
		}
		dsn += "&vfs=bop"
	}
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	return db, db.Ping()
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
	db, err := open(filepath.Join(dir, "w1.db"), useBop)
	if err != nil {
		return err
	}
	startWork()
	if err := load(db); err != nil {
		return err
	}
	endWork()
	return db.Close()
}

func w2(dir string, useBop bool) error {
	db, err := open(filepath.Join(dir, "w2.db"), useBop)
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
	for i := 0; i < w2Inserts; i++ {
		if _, err := st.Exec(i, text); err != nil {
			return err
		}
	}
	st.Close()
	endWork()
	return db.Close()
}

func fixture(useBop bool) string {
	name := "plain.db"
	if useBop {
		name = "bop.db"
	}
	return filepath.Join(os.Getenv("BOP_BENCH_FIXTURES"), name)
}

func r1(_ string, useBop bool) error {
	db, err := open(fixture(useBop), useBop)
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
	return db.Close()
}

func r2(_ string, useBop bool) error {
	db, err := open(fixture(useBop), useBop)
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
	return db.Close()
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
