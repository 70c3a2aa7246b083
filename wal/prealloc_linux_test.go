package wal_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/bopstore/bop/wal"
)

// Segment space is reserved ahead of the appends (fallocate with
// KEEP_SIZE), and the file's size still ends at the last record: a reopen
// finds exactly the records appended, no zero tail to mistake for one.
func TestSpoolPreallocationKeepsSize(t *testing.T) {
	const ps = 4096
	dir := t.TempDir()
	sp := openSpool(t, dir, wal.SpoolOptions{BufferBytes: 64 << 10})
	var last uint64
	for i := 0; i < 40; i++ {
		last = appendRec(t, sp, ps, 100, uint32(1+i%50), uint32(60+i%30))
	}
	if err := sp.Sync(); err != nil {
		t.Fatal(err)
	}
	want := sp.Status().Bytes
	names, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(names) != 1 {
		t.Fatalf("segments %v", names)
	}
	fi, err := os.Stat(names[0])
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != want {
		t.Fatalf("segment file is %d bytes, the spool holds %d", fi.Size(), want)
	}
	if blocks := fi.Sys().(*syscall.Stat_t).Blocks * 512; blocks < 4<<20 {
		t.Logf("segment has %d bytes allocated for %d of data: no preallocation on this file system", blocks, fi.Size())
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	sp = openSpool(t, dir, wal.SpoolOptions{})
	defer sp.Close()
	if st := sp.Status(); st.LastTxid != last || st.Bytes != want {
		t.Fatalf("after reopen: last %d bytes %d, want %d and %d", st.LastTxid, st.Bytes, last, want)
	}
	next := appendRec(t, sp, ps, 100, 7)
	if next != last+1 {
		t.Fatalf("next txid %d", next)
	}
}
