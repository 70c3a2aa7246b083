package harness

import (
	"slices"
	"testing"
)

func TestChildArgs(t *testing.T) {
	cases := []struct{ in, want []string }{
		{[]string{"-workload", "W2", "-against", "/tmp/old", "-reps", "20"}, []string{"-workload", "W2", "-reps", "20"}},
		{[]string{"--against=/tmp/old", "-nopub"}, []string{"-nopub"}},
		{[]string{"-against", "/tmp/old"}, nil},
		{[]string{"-nopub", "--", "-against", "x"}, []string{"-nopub", "--", "-against", "x"}},
		{[]string{"-workload", "against"}, []string{"-workload", "against"}},
	}
	for _, c := range cases {
		if got := childArgs(c.in); !slices.Equal(got, c.want) {
			t.Errorf("childArgs(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestWithAgainst(t *testing.T) {
	vs := withAgainst([]Variant{{Name: "plain", Baseline: true}, {Name: "bop"}}, "/tmp/old")
	var names []string
	for _, v := range vs {
		names = append(names, v.Name)
	}
	if want := []string{"plain", "bop", "bop@against"}; !slices.Equal(names, want) {
		t.Fatalf("variants %q, want %q", names, want)
	}
	if v := vs[2]; v.exe != "/tmp/old" || v.child != "bop" || v.Baseline {
		t.Fatalf("against variant %+v", v)
	}
}

func TestPhaseTable(t *testing.T) {
	vs := []Variant{{Name: "plain", Baseline: true}, {Name: "bop"}, {Name: "other"}}
	var samples []Sample
	// plain's work: 1.0, 2.0, 3.0 s of wall and 0.5, 1.0, 1.5 s of CPU
	// (medians 2.0 and 1.0); bop's: medians 2.5 and 1.25; "other"
	// reports no phase.
	for i, x := range []float64{1, 3, 2} {
		samples = append(samples,
			Sample{Variant: "plain", Extra: map[string]float64{"work_s": x, "work_cpu_s": x / 2}},
			Sample{Variant: "bop", Extra: map[string]float64{"work_s": x * 1.25, "work_cpu_s": x * 1.25 / 2}},
			Sample{Variant: "other", Rep: i})
	}
	got := PhaseTable(vs, samples, "work_s", "work_cpu_s")
	want := "| variant | n | work_s median (IQR) | work_cpu_s median (IQR) | speed vs baseline: wall | CPU |\n" +
		"|---|---|---|---|---|---|\n" +
		"| plain | 3 | 2.0000s (1.0000) | 1.0000s (0.5000) | 1.000 | 1.000 |\n" +
		"| bop | 3 | 2.5000s (1.2500) | 1.2500s (0.6250) | 0.800 | 0.800 |\n"
	if got != want {
		t.Fatalf("PhaseTable:\n%s\nwant:\n%s", got, want)
	}
	// No phase from the baseline: no table.
	if got := PhaseTable(vs, samples[2:3], "work_s", "work_cpu_s"); got != "" {
		t.Fatalf("PhaseTable without the baseline's phase = %q, want \"\"", got)
	}
}
