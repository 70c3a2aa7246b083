// Command perfdiff compares where two processes spent their CPU, from
// `perf script` output of `perf record --call-graph fp` (Go keeps frame
// pointers): the baseline (plain SQLite) and a variant (bop). Unlike a Go
// CPU profile it sees every thread and the kernel, so the time of
// syscalls, page faults and fsyncs is attributed too (pprof covered only
// about 60% of a bench child's CPU).
//
//	cd /tmp && for v in plain-W2 bop-nopub-W2; do
//	  d=$(mktemp -d); BOP_BENCH_CHILD=$v BOP_BENCH_DIR=$d \
//	    perf record -F 10000 --call-graph fp -o $v.data /tmp/bv -workload W2 -nopub
//	  perf script -i $v.data > $v.script   # append several runs to one file
//	done
//	go run ./bench/perfdiff plain-W2.script bop-nopub-W2.script
//	go run ./bench/perfdiff -match 'vfs\.vfs[A-Z]|Capture\)' plain-W2.script bop-nopub-W2.script
//
// It prints the samples of each file by where they were spent (the leaf
// frame: kernel, SQLite's compiled code, the Go runtime, ncruces' Go code,
// bop, other Go code), then, for every function matching -match, its
// inclusive samples in both and the difference, largest first. Divide by
// the runs in each file and by the sampling rate for time per run.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
)

var (
	match = flag.String("match", `go-sqlite3/vfs\.vfs[A-Z]|Xsqlite3_step$|\(\*DB\)\.Close$|\(\*connector\)\.Connect$|runtime\.gcBgMarkWorker$|bopstore/bop/(wal|vfs|checkpoint)\.`,
		"regexp of the functions whose inclusive samples are compared")
	top = flag.Int("top", 40, "functions to print")
)

// A stack is one sample's frames, leaf first.
type stack []string

func main() {
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: perfdiff [-match re] [-top n] baseline.script variant.script")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	re, err := regexp.Compile(*match)
	if err != nil {
		fail(fmt.Errorf("-match: %w", err))
	}
	var runs [2][]stack
	for i := range runs {
		if runs[i], err = load(flag.Arg(i)); err != nil {
			fail(err)
		}
	}
	fmt.Printf("samples: %s %d, %s %d\n\n", flag.Arg(0), len(runs[0]), flag.Arg(1), len(runs[1]))
	fmt.Println("| spent in (leaf) | baseline | variant | difference |")
	fmt.Println("|---|---|---|---|")
	printDiff(count(runs, func(s stack) []string { return []string{category(s[0])} }), 0)
	fmt.Printf("\n| function (inclusive) | baseline | variant | difference |\n|---|---|---|---|\n")
	printDiff(count(runs, func(s stack) []string {
		var fs []string
		seen := map[string]bool{}
		for _, f := range s {
			if !seen[f] && re.MatchString(f) {
				seen[f] = true
				fs = append(fs, f)
			}
		}
		return fs
	}), *top)
}

// load reads perf script output: a header line per sample, then one
// indented line per frame ("addr symbol+off (dso)"), then a blank line.
func load(path string) ([]stack, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parse(f)
}

func parse(r io.Reader) ([]stack, error) {
	var out []stack
	var cur stack
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			if len(cur) > 0 {
				out = append(out, cur)
			}
			cur = nil
		case line[0] != ' ' && line[0] != '\t':
			cur = stack{} // a sample's header
		default:
			cur = append(cur, symbol(line))
		}
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out, sc.Err()
}

// symbol returns the function of a frame line: "ffff8150 name+0x1f (dso)".
func symbol(line string) string {
	f := strings.TrimSpace(line)
	if i := strings.IndexByte(f, ' '); i >= 0 {
		f = f[i+1:]
	}
	if i := strings.LastIndex(f, " ("); i >= 0 {
		f = f[:i]
	}
	if i := strings.LastIndex(f, "+0x"); i >= 0 {
		f = f[:i]
	}
	return f
}

// category says where a leaf frame's time went.
func category(leaf string) string {
	switch {
	case strings.Contains(leaf, "go-sqlite3-wasm"):
		return "SQLite (compiled to Go)"
	case strings.HasPrefix(leaf, "runtime.") || strings.HasPrefix(leaf, "internal/runtime"):
		return "Go runtime (memmove, GC, scheduler, syscall entry)"
	case strings.Contains(leaf, "bopstore/bop"):
		return "bop"
	case strings.Contains(leaf, "ncruces/go-sqlite3"):
		return "ncruces (Go)"
	case !strings.ContainsAny(leaf, "/.(") || leaf == "[unknown]":
		return "kernel"
	}
	return "other Go code"
}

type counts [2]map[string]int

func count(runs [2][]stack, keys func(stack) []string) counts {
	var c counts
	for i, r := range runs {
		c[i] = map[string]int{}
		for _, s := range r {
			if len(s) == 0 {
				continue
			}
			for _, k := range keys(s) {
				c[i][k]++
			}
		}
	}
	return c
}

func printDiff(c counts, limit int) {
	seen := map[string]bool{}
	var keys []string
	for _, m := range c {
		for k := range m {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	diff := func(k string) int { return c[1][k] - c[0][k] }
	sort.Slice(keys, func(i, j int) bool {
		if d, e := diff(keys[i]), diff(keys[j]); d != e {
			return d > e
		}
		return keys[i] < keys[j]
	})
	if limit > 0 && len(keys) > limit {
		keys = keys[:limit]
	}
	for _, k := range keys {
		fmt.Printf("| %s | %d | %d | %+d |\n", k, c[0][k], c[1][k], diff(k))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "perfdiff:", err)
	os.Exit(1)
}
