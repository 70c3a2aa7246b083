package wal_test

import (
	"testing"

	"github.com/bopstore/bop/wal"
)

// BenchmarkSpoolScan is the publisher's read pattern over a spool of
// one-page records (bench/vfs W2): the headers (Records), the page set
// (Newest: headers and directories) and every page (PagesIn).
func BenchmarkSpoolScan(b *testing.B) {
	const n, ps = 10_000, 4096
	sp, err := wal.OpenSpool(b.TempDir(), wal.SpoolOptions{BufferBytes: 256 << 10})
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	data := make([]byte, ps)
	for i := 0; i < n; i++ {
		a, err := sp.Begin(wal.RecordHeader{Kind: wal.KindDirect, PageSize: ps, DBPages: 100, NPages: 1})
		if err != nil {
			b.Fatal(err)
		}
		data[0] = byte(i)
		if err := a.Add(uint32(1+i%100), data); err != nil {
			b.Fatal(err)
		}
		if _, err := a.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	if err := sp.Sync(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(n * ps)
	b.ResetTimer()
	for b.Loop() {
		var pages uint64
		for rec, err := range sp.Records(1, n) {
			if err != nil {
				b.Fatal(err)
			}
			pages += uint64(rec.NPages)
		}
		set, err := sp.Newest(1, n)
		if err != nil {
			b.Fatal(err)
		}
		for _, err := range set.Pages() {
			if err != nil {
				b.Fatal(err)
			}
		}
		set.Close()
		if pages != n {
			b.Fatalf("%d pages", pages)
		}
	}
}
