// Package harness runs bop's benchmarks the way the project measures them:
// each variant (the plain-SQLite or plain-read baseline, and bop) runs as its
// own child process, the variants are interleaved over at least 10
// repetitions, and every run's wall time and process CPU time (user+system,
// from getrusage of the child) are recorded. The report gives the median and
// the spread of each variant and the ratio of medians against the baseline.
//
// A benchmark program calls Main with its variants. Run without arguments
// it is the parent: it re-executes itself once per (repetition, variant)
// with BOP_BENCH_CHILD set, and the child runs exactly one variant and
// exits. The child measures nothing itself except what it reports through
// Report (for example bytes moved), so setup cost that should not count
// can be excluded by doing it in Setup, which the parent times separately.
package harness

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Variant is one thing to measure.
type Variant struct {
	Name string
	// Baseline marks the variant that ratios are taken against. Exactly one
	// variant of a Main call must be the baseline.
	Baseline bool
	// Run performs the measured work in the child process. dir is a fresh
	// scratch directory for this run. Anything Run returns in extra is
	// reported per run (e.g. "MB/s"), median over repetitions.
	Run func(dir string) (extra map[string]float64, err error)

	// exe and child, when set (-against), run the variant child as
	// another build of the program instead of this one.
	exe, child string
}

// Sample is one child run.
type Sample struct {
	Variant string             `json:"variant"`
	Rep     int                `json:"rep"`
	Wall    time.Duration      `json:"wall_ns"`
	CPU     time.Duration      `json:"cpu_ns"` // user + system of the child
	MaxRSS  int64              `json:"max_rss_kb"`
	Extra   map[string]float64 `json:"extra,omitempty"`
}

const childEnv = "BOP_BENCH_CHILD"

// The harness's flags, on the program's command line with its own: -reps N
// (default 10; reported numbers need at least 10), -only name,name, -dir
// for scratch space, -json file to save raw samples, -against another
// build of the same program (each non-baseline variant also runs as that
// build's, named "<variant>@against", interleaved with the rest: before
// and after a change in one table).
var flags = struct {
	reps                     *int
	only, dir, json, against *string
}{
	reps:    flag.Int("reps", 10, "interleaved repetitions (at least 10 for reported numbers)"),
	only:    flag.String("only", "", "comma-separated variant names to run (baseline always runs)"),
	dir:     flag.String("dir", "", "scratch directory (default: a temp dir)"),
	json:    flag.String("json", "", "write raw samples as JSON to this file"),
	against: flag.String("against", "", "another build of this program: its variants run too, as <variant>@against"),
}

// ParseFlags parses the command line: the harness's flags and the
// program's own (registered on the flag package's command line before the
// call). A program whose variants depend on its flags calls it before
// Main; Main calls it otherwise. Children parse the same command line.
func ParseFlags() {
	if !flag.Parsed() {
		flag.Parse()
	}
}

// Main is the entry point of a benchmark program: in a child (childEnv
// set) it runs one variant; otherwise it runs every selected variant -reps
// times, interleaved, each in its own child process, and prints the table
// (and, when the children time their workload apart, PhaseTable's).
func Main(title string, variants []Variant) {
	if name := os.Getenv(childEnv); name != "" {
		os.Exit(runChild(name, variants))
	}
	ParseFlags()
	reps, only, dir, jsonOut := flags.reps, flags.only, flags.dir, flags.json

	if err := validate(variants); err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		os.Exit(2)
	}
	selected := selectVariants(variants, *only)
	if *flags.against != "" {
		selected = withAgainst(selected, *flags.against)
	}
	scratch := *dir
	if scratch == "" {
		d, err := os.MkdirTemp("", "bop-bench-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "harness:", err)
			os.Exit(1)
		}
		defer os.RemoveAll(d)
		scratch = d
	}
	samples, err := RunParent(scratch, selected, *reps, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		os.Exit(1)
	}
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(samples, "", "  ")
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "harness:", err)
		}
	}
	if os.Getenv("BOP_BENCH_NOFSYNC") == "1" {
		title += ", fsync and fdatasync switched off (BOP_BENCH_NOFSYNC=1: an experiment, not a result)"
	}
	fmt.Printf("## %s\n\n", title)
	fmt.Printf("`%s`, %d interleaved repetitions, %s\n\n", strings.Join(os.Args, " "), *reps, time.Now().UTC().Format("2006-01-02"))
	fmt.Print(Table(selected, samples))
	if t := PhaseTable(selected, samples, "work_s", "work_cpu_s"); t != "" {
		fmt.Printf("\nThe workload alone (`work_s`, `work_cpu_s`, as the children time it):\n\n%s", t)
	}
}

func validate(variants []Variant) error {
	n := 0
	seen := map[string]bool{}
	for _, v := range variants {
		if v.Baseline {
			n++
		}
		if v.Name == "" || strings.ContainsAny(v.Name, ", ") || seen[v.Name] {
			return fmt.Errorf("bad or duplicate variant name %q", v.Name)
		}
		seen[v.Name] = true
	}
	if n != 1 {
		return fmt.Errorf("want exactly one baseline variant, have %d", n)
	}
	return nil
}

func selectVariants(variants []Variant, only string) []Variant {
	if only == "" {
		return variants
	}
	want := map[string]bool{}
	for _, n := range strings.Split(only, ",") {
		want[n] = true
	}
	var out []Variant
	for _, v := range variants {
		if v.Baseline || want[v.Name] {
			out = append(out, v)
		}
	}
	return out
}

// withAgainst adds, after each non-baseline variant, the same variant run
// as the build at exe.
func withAgainst(variants []Variant, exe string) []Variant {
	var out []Variant
	for _, v := range variants {
		out = append(out, v)
		if !v.Baseline {
			out = append(out, Variant{Name: v.Name + "@against", exe: exe, child: v.Name})
		}
	}
	return out
}

func runChild(name string, variants []Variant) int {
	for _, v := range variants {
		if v.Name != name {
			continue
		}
		if os.Getenv("BOP_BENCH_NOFSYNC") == "1" {
			if err := disableFsync(); err != nil {
				fmt.Fprintf(os.Stderr, "variant %s: %v\n", name, err)
				return 1
			}
		}
		dir := os.Getenv("BOP_BENCH_DIR")
		extra, err := v.Run(dir)
		if err != nil {
			fmt.Fprintf(os.Stderr, "variant %s: %v\n", name, err)
			return 1
		}
		b, _ := json.Marshal(extra)
		// The parent reads the last line of stdout.
		fmt.Printf("\nBOP_BENCH_EXTRA %s\n", b)
		return 0
	}
	fmt.Fprintf(os.Stderr, "unknown variant %q\n", name)
	return 2
}

// RunParent runs every variant reps times, interleaved: repetition r runs
// the variants in an order rotated by r so no variant always runs first.
func RunParent(scratch string, variants []Variant, reps int, log io.Writer) ([]Sample, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var samples []Sample
	for r := 0; r < reps; r++ {
		for i := range variants {
			v := variants[(i+r)%len(variants)]
			dir, err := os.MkdirTemp(scratch, v.Name+"-")
			if err != nil {
				return nil, err
			}
			vexe, child := exe, v.Name
			if v.exe != "" {
				vexe, child = v.exe, v.child
			}
			s, err := runOne(vexe, child, dir)
			s.Variant = v.Name
			os.RemoveAll(dir)
			if err != nil {
				return nil, fmt.Errorf("rep %d variant %s: %w", r, v.Name, err)
			}
			s.Rep = r
			samples = append(samples, s)
			if log != nil {
				fmt.Fprintf(log, "rep %2d %-24s wall=%-12v cpu=%-12v rss=%dMB %v\n", r, v.Name,
					s.Wall.Round(time.Millisecond), s.CPU.Round(time.Millisecond), s.MaxRSS/1024, fmtExtra(s.Extra))
			}
		}
	}
	return samples, nil
}

func runOne(exe, name, dir string) (Sample, error) {
	cmd := exec.Command(exe, childArgs(os.Args[1:])...)
	cmd.Env = append(os.Environ(), childEnv+"="+name, "BOP_BENCH_DIR="+dir)
	var out strings.Builder
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return Sample{}, fmt.Errorf("%w (output: %s)", err, tail(out.String(), 2000))
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return Sample{}, fmt.Errorf("no rusage for child")
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	s := Sample{Variant: name, Wall: wall, CPU: cpu, MaxRSS: ru.Maxrss}
	for _, line := range strings.Split(out.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, "BOP_BENCH_EXTRA "); ok {
			if err := json.Unmarshal([]byte(rest), &s.Extra); err != nil {
				return Sample{}, fmt.Errorf("bad extra line %q: %w", rest, err)
			}
		}
	}
	return s, nil
}

// childArgs is the command line of a child: the parent's without
// -against, which an older build (the one it names) may not know.
func childArgs(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		switch name := strings.TrimLeft(a, "-"); {
		case !strings.HasPrefix(a, "-"):
		case name == "against":
			i++ // and its value
			continue
		case strings.HasPrefix(name, "against="):
			continue
		}
		out = append(out, a)
	}
	return out
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func fmtExtra(m map[string]float64) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%.4g ", k, m[k])
	}
	return b.String()
}

// Stats summarises a series: median, min, max and the interquartile range.
type Stats struct {
	N                int
	Median, Min, Max float64
	P25, P75         float64
}

// Summarise computes Stats of xs (not modified).
func Summarise(xs []float64) Stats {
	if len(xs) == 0 {
		return Stats{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	q := func(p float64) float64 {
		pos := p * float64(len(s)-1)
		lo := int(math.Floor(pos))
		hi := int(math.Ceil(pos))
		return s[lo] + (s[hi]-s[lo])*(pos-float64(lo))
	}
	return Stats{N: len(s), Median: q(0.5), Min: s[0], Max: s[len(s)-1], P25: q(0.25), P75: q(0.75)}
}

// Table renders the samples as a markdown table: per variant, the median
// wall and CPU time with their spread (min-max and IQR), max RSS, the ratio
// of the baseline's median to the variant's (higher is better: 1.00 = as
// fast as the baseline, 0.90 = 10% slower), and the medians of extras.
func Table(variants []Variant, samples []Sample) string {
	by := map[string][]Sample{}
	for _, s := range samples {
		by[s.Variant] = append(by[s.Variant], s)
	}
	var base string
	for _, v := range variants {
		if v.Baseline {
			base = v.Name
		}
	}
	stat := func(name string, f func(Sample) float64) Stats {
		var xs []float64
		for _, s := range by[name] {
			xs = append(xs, f(s))
		}
		return Summarise(xs)
	}
	wall := func(s Sample) float64 { return s.Wall.Seconds() }
	cpu := func(s Sample) float64 { return s.CPU.Seconds() }
	bw, bc := stat(base, wall), stat(base, cpu)

	var b strings.Builder
	b.WriteString("| variant | n | wall median (min–max, IQR) | CPU median (min–max, IQR) | speed vs baseline: wall | CPU | max RSS | extras (median) |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, v := range variants {
		w, c := stat(v.Name, wall), stat(v.Name, cpu)
		rss := stat(v.Name, func(s Sample) float64 { return float64(s.MaxRSS) / 1024 })
		extras := map[string][]float64{}
		for _, s := range by[v.Name] {
			for k, x := range s.Extra {
				extras[k] = append(extras[k], x)
			}
		}
		med := map[string]float64{}
		for k, xs := range extras {
			med[k] = Summarise(xs).Median
		}
		fmt.Fprintf(&b, "| %s | %d | %.3fs (%.3f–%.3f, %.3f) | %.3fs (%.3f–%.3f, %.3f) | %.2f | %.2f | %.0f MB | %s|\n",
			v.Name, w.N, w.Median, w.Min, w.Max, w.P75-w.P25, c.Median, c.Min, c.Max, c.P75-c.P25,
			ratio(bw.Median, w.Median), ratio(bc.Median, c.Median), rss.Median, fmtExtra(med))
	}
	return b.String()
}

// PhaseTable renders one phase of each run, timed by the child itself
// and reported as two extras (seconds of wall and of CPU time): per
// variant, the medians with their IQR and the baseline's median over the
// variant's, to three decimals. It is "" unless the baseline reported both.
func PhaseTable(variants []Variant, samples []Sample, wallKey, cpuKey string) string {
	by := map[string][2][]float64{}
	for _, s := range samples {
		w, wok := s.Extra[wallKey]
		c, cok := s.Extra[cpuKey]
		if !wok || !cok {
			continue
		}
		xs := by[s.Variant]
		xs[0], xs[1] = append(xs[0], w), append(xs[1], c)
		by[s.Variant] = xs
	}
	var base [2]Stats
	for _, v := range variants {
		if v.Baseline {
			base = [2]Stats{Summarise(by[v.Name][0]), Summarise(by[v.Name][1])}
		}
	}
	if base[0].N == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| variant | n | %s median (IQR) | %s median (IQR) | speed vs baseline: wall | CPU |\n", wallKey, cpuKey)
	b.WriteString("|---|---|---|---|---|---|\n")
	for _, v := range variants {
		xs, ok := by[v.Name]
		if !ok {
			continue
		}
		w, c := Summarise(xs[0]), Summarise(xs[1])
		fmt.Fprintf(&b, "| %s | %d | %.4fs (%.4f) | %.4fs (%.4f) | %.3f | %.3f |\n",
			v.Name, w.N, w.Median, w.P75-w.P25, c.Median, c.P75-c.P25,
			ratio(base[0].Median, w.Median), ratio(base[1].Median, c.Median))
	}
	return b.String()
}

func ratio(base, x float64) float64 {
	if x == 0 {
		return 0
	}
	return base / x
}
