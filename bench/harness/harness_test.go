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
