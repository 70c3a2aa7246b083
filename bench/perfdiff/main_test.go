package main

import (
	"strings"
	"testing"
)

const sample = `bv 22071 56132.776616:      50000 cpu-clock:ppp: 
	ffffffff81584cb5 copy_folio_from_iter_atomic+0x5 ([kernel.kallsyms])
	5c10e0 github.com/ncruces/go-sqlite3/vfs.vfsWrite+0x20 (/tmp/bv)
	5c10f0 github.com/bopstore/bop/vfs.(*walFile).WriteAt+0x1f (/tmp/bv)

bv 22071 56132.776666:      50000 cpu-clock:ppp: 
	5c2000 github.com/ncruces/go-sqlite3-wasm/v6.(*Module)._walChecksumBytes+0x10 (/tmp/bv)
	5c10e0 github.com/ncruces/go-sqlite3/vfs.vfsWrite+0x20 (/tmp/bv)
`

func TestParse(t *testing.T) {
	s, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != 2 || len(s[0]) != 3 || len(s[1]) != 2 {
		t.Fatalf("stacks %q", s)
	}
	if s[0][2] != "github.com/bopstore/bop/vfs.(*walFile).WriteAt" {
		t.Errorf("symbol %q", s[0][2])
	}
	if got := category(s[0][0]); got != "kernel" {
		t.Errorf("category of %q: %q", s[0][0], got)
	}
	if got := category(s[1][0]); got != "SQLite (compiled to Go)" {
		t.Errorf("category of %q: %q", s[1][0], got)
	}
	c := count([2][]stack{s, s[:1]}, func(st stack) []string { return st[len(st)-1:] })
	if c[0]["github.com/ncruces/go-sqlite3/vfs.vfsWrite"] != 1 || c[1]["github.com/ncruces/go-sqlite3/vfs.vfsWrite"] != 0 {
		t.Errorf("counts %v", c)
	}
}
