// Command openclose measures bop's fixed cost per process: opening a new
// database (local state, catalog, store probe, takeover), three
// autocommit inserts, and closing it (final publish, release record),
// against plain SQLite doing the same. Each child runs the cycle -cycles
// times on fresh databases (the first cycle also pays the process's
// one-time setup) and reports the medians of the open and close times;
// the harness reports the child's wall and CPU time.
//
//	go run ./bench/openclose -reps 10
//
// The bop variant uses a zero vfs.Config, as bench/vfs does: async
// durability, publishing every second to the embedded store next to the
// database.
package main

import (
	"database/sql"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"github.com/bopstore/bop/bench/harness"
	bop "github.com/bopstore/bop/vfs"
	_ "github.com/ncruces/go-sqlite3/driver"
)

var cycles = flag.Int("cycles", 20, "open/insert/close cycles per child")

func main() {
	harness.ParseFlags() // the title shows -cycles
	harness.Main(fmt.Sprintf("openclose: %d cycles of open, 3 autocommit inserts, close (bop vs plain SQLite)", *cycles), []harness.Variant{
		{Name: "plain-OC", Baseline: true, Run: func(dir string) (map[string]float64, error) { return run(dir, false) }},
		{Name: "bop-OC", Run: func(dir string) (map[string]float64, error) { return run(dir, true) }},
	})
}

// BOP_BENCH_CPUPROFILE=prefix writes a CPU profile of each child's
// cycles to prefix-<variant>-<pid>.prof.
func run(dir string, useBop bool) (map[string]float64, error) {
	if prefix := os.Getenv("BOP_BENCH_CPUPROFILE"); prefix != "" {
		f, err := os.Create(fmt.Sprintf("%s-%s-%d.prof", prefix, os.Getenv("BOP_BENCH_CHILD"), os.Getpid()))
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		defer pprof.StopCPUProfile()
	}
	dsnExtra := ""
	if useBop {
		if _, err := bop.Register("bop", bop.Config{}); err != nil {
			return nil, err
		}
		dsnExtra = "&vfs=bop"
	}
	var opens, closes []float64
	for i := 0; i < *cycles; i++ {
		path := filepath.Join(dir, fmt.Sprintf("oc%d.db", i))
		start := time.Now()
		db, err := sql.Open("sqlite3", "file:"+path+"?_pragma=journal_mode(wal)&_pragma=synchronous(normal)"+dsnExtra)
		if err != nil {
			return nil, err
		}
		db.SetMaxOpenConns(1)
		if err := db.Ping(); err != nil {
			return nil, err
		}
		opens = append(opens, time.Since(start).Seconds())
		if _, err := db.Exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"); err != nil {
			return nil, err
		}
		for j := 0; j < 3; j++ {
			if _, err := db.Exec("INSERT INTO t(v) VALUES (?)", "row"); err != nil {
				return nil, err
			}
		}
		start = time.Now()
		if err := db.Close(); err != nil {
			return nil, err
		}
		closes = append(closes, time.Since(start).Seconds())
	}
	return map[string]float64{"open_s": harness.Summarise(opens).Median, "close_s": harness.Summarise(closes).Median}, nil
}
