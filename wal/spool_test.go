package wal_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bopstore/bop/wal"
)

// page makes a recognisable page: pgno and version in every 8 bytes.
func page(ps int, pgno uint32, version uint64) []byte {
	b := make([]byte, ps)
	for i := 0; i+8 <= ps; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], uint64(pgno)<<40|version<<8|uint64(i/8%256))
	}
	return b
}

// appendRec appends a direct record with the given pages (version = txid).
func appendRec(t testing.TB, sp *wal.Spool, ps int, dbPages uint32, pgnos ...uint32) uint64 {
	t.Helper()
	return appendHdr(t, sp, wal.RecordHeader{Kind: wal.KindDirect, PageSize: uint32(ps), DBPages: dbPages}, pgnos...)
}

// appendHdr appends a record with header h (NPages set from pgnos) and
// the given pages (version = txid).
func appendHdr(t testing.TB, sp *wal.Spool, h wal.RecordHeader, pgnos ...uint32) uint64 {
	t.Helper()
	h.NPages = uint32(len(pgnos))
	ps := int(h.PageSize)
	a, err := sp.Begin(h)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pgnos {
		if err := a.Add(p, page(ps, p, a.Txid())); err != nil {
			t.Fatal(err)
		}
	}
	txid, err := a.Commit()
	if err != nil {
		t.Fatal(err)
	}
	return txid
}

func openSpool(t testing.TB, dir string, opts wal.SpoolOptions) *wal.Spool {
	t.Helper()
	sp, err := wal.OpenSpool(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

func confirmAll(t testing.TB, sp *wal.Spool) {
	t.Helper()
	if err := sp.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := sp.SetConfirmed(sp.Status().LastTxid); err != nil {
		t.Fatal(err)
	}
}

func TestSpoolAppendAndIterate(t *testing.T) {
	dir := t.TempDir()
	sp := openSpool(t, dir, wal.SpoolOptions{SegmentBytes: 4000})
	defer sp.Close()
	const ps = 1024
	appendRec(t, sp, ps, 10, 1, 2, 3, 10) // 1
	appendRec(t, sp, ps, 10, 2, 5)        // 2
	appendRec(t, sp, ps, 4, 1)            // 3: shrinks to 4 pages: 5 and 10 are gone
	appendRec(t, sp, ps, 12, 12, 11, 6)   // 4: grows again
	appendRec(t, sp, ps, 12, 3)           // 5
	st := sp.Status()
	if st.FirstTxid != 1 || st.LastTxid != 5 {
		t.Fatalf("status %+v", st)
	}
	// Every version, in order.
	var got []string
	for rec, err := range sp.Records(1, 5) {
		if err != nil {
			t.Fatal(err)
		}
		for pg, err := range rec.Pages() {
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(pg.Data, page(ps, pg.Pgno, rec.Txid)) {
				t.Fatalf("txid %d page %d: wrong bytes", rec.Txid, pg.Pgno)
			}
			got = append(got, fmt.Sprintf("%d:%d", rec.Txid, pg.Pgno))
		}
	}
	if s := strings.Join(got, " "); s != "1:1 1:2 1:3 1:10 2:2 2:5 3:1 4:12 4:11 4:6 5:3" {
		t.Fatalf("versions: %s", s)
	}
	// Newest per page as of txid 5: truncated pages stay dropped.
	ps5, err := sp.Newest(1, 5)
	if err != nil {
		t.Fatal(err)
	}
	got = got[:0]
	for pg, err := range ps5.Pages() {
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(pg.Data, page(ps, pg.Pgno, pg.Txid)) {
			t.Fatalf("page %d: wrong bytes", pg.Pgno)
		}
		got = append(got, fmt.Sprintf("%d@%d", pg.Pgno, pg.Txid))
	}
	ps5.Close()
	if s := strings.Join(got, " "); s != "1@3 2@2 3@5 6@4 11@4 12@4" || ps5.DBPages != 12 {
		t.Fatalf("newest: %s (db pages %d)", s, ps5.DBPages)
	}
	// A range inside.
	ps2, err := sp.Newest(2, 3)
	if err != nil {
		t.Fatal(err)
	}
	if ps2.Len() != 2 || ps2.DBPages != 4 {
		t.Fatalf("newest 2..3: %d pages, db %d", ps2.Len(), ps2.DBPages)
	}
	ps2.Close()
	if _, err := sp.Newest(0, 3); !errors.Is(err, wal.ErrRange) {
		t.Fatalf("range from 0: %v", err)
	}
	if _, err := sp.Newest(3, 6); !errors.Is(err, wal.ErrRange) {
		t.Fatalf("range past the end: %v", err)
	}
	// Several segments were used.
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) < 2 {
		t.Fatalf("%d segments", len(segs))
	}
}

func TestSpoolPageSizeChange(t *testing.T) {
	sp := openSpool(t, t.TempDir(), wal.SpoolOptions{})
	defer sp.Close()
	appendRec(t, sp, 1024, 8, 1, 2, 8)
	appendRec(t, sp, 2048, 4, 1, 2, 3, 4)
	appendRec(t, sp, 2048, 4, 2)
	ps, err := sp.Newest(1, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	if !ps.PageSizeChanged || ps.PageSize != 2048 || ps.Len() != 4 {
		t.Fatalf("changed=%v size=%d len=%d", ps.PageSizeChanged, ps.PageSize, ps.Len())
	}
}

func TestSpoolReopenAndTruncate(t *testing.T) {
	dir := t.TempDir()
	sp := openSpool(t, dir, wal.SpoolOptions{SegmentBytes: 8000})
	const ps = 1024
	for i := 0; i < 20; i++ {
		appendRec(t, sp, ps, 30, uint32(i%30+1), 30)
	}
	if err := sp.Truncate(5); err == nil {
		t.Fatal("truncated unconfirmed records")
	}
	confirmAll(t, sp)
	release, err := sp.Lease(8, 12, "checkpoint job 7")
	if err != nil {
		t.Fatal(err)
	}
	err = sp.Truncate(10)
	if !errors.Is(err, wal.ErrLeased) || !strings.Contains(err.Error(), "checkpoint job 7") {
		t.Fatalf("truncate under a lease: %v", err)
	}
	if err := sp.Truncate(7); err != nil {
		t.Fatalf("truncate below the lease: %v", err)
	}
	release()
	if err := sp.Truncate(10); err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Lease(5, 12, "late"); !errors.Is(err, wal.ErrRange) {
		t.Fatalf("lease of truncated txids: %v", err)
	}
	bytesBefore := sp.Status().Bytes
	sp.Close()

	sp = openSpool(t, dir, wal.SpoolOptions{SegmentBytes: 8000})
	st := sp.Status()
	if st.FirstTxid != 11 || st.LastTxid != 20 || st.ConfirmedTxid != 20 || st.Bytes != bytesBefore {
		t.Fatalf("after reopen: %+v (bytes before %d)", st, bytesBefore)
	}
	for rec, err := range sp.Records(11, 20) {
		if err != nil {
			t.Fatal(err)
		}
		for pg, err := range rec.Pages() {
			if err != nil || !bytes.Equal(pg.Data, page(ps, pg.Pgno, rec.Txid)) {
				t.Fatalf("txid %d: %v", rec.Txid, err)
			}
		}
	}
	// Truncate everything: txids continue, and the last header survives.
	if err := sp.Truncate(20); err != nil {
		t.Fatal(err)
	}
	if segs, _ := filepath.Glob(filepath.Join(dir, "*.seg")); len(segs) != 0 {
		t.Fatalf("segments left: %v", segs)
	}
	sp.Close()
	sp = openSpool(t, dir, wal.SpoolOptions{})
	defer sp.Close()
	if h, ok := sp.LastHeader(); !ok || h.Txid != 20 {
		t.Fatalf("last header after truncating everything: %+v %v", h, ok)
	}
	if txid := appendRec(t, sp, ps, 30, 1); txid != 21 {
		t.Fatalf("next txid %d", txid)
	}
}

// A crash mid-append leaves a torn last record: reopening cuts it off.
// Damage at or below the confirmed watermark is corruption instead.
func TestSpoolTornTailVersusCorruption(t *testing.T) {
	const ps = 512
	build := func(t *testing.T) (string, string) {
		dir := t.TempDir()
		sp := openSpool(t, dir, wal.SpoolOptions{})
		for i := 0; i < 5; i++ {
			appendRec(t, sp, ps, 8, 1, 2, 3)
		}
		confirmAll(t, sp) // 1..5 confirmed
		for i := 0; i < 3; i++ {
			appendRec(t, sp, ps, 8, 4, 5)
		}
		sp.Close()
		segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
		return dir, segs[0]
	}
	recSize := int64(64 + 2*ps + 2*16 + 16)
	end5 := int64(32) + 5*int64(64+3*ps+3*16+16)

	t.Run("cut", func(t *testing.T) {
		for _, cut := range []int64{1, 10, 64, 100, recSize - 1} {
			dir, seg := build(t)
			if err := os.Truncate(seg, end5+2*recSize+cut); err != nil {
				t.Fatal(err)
			}
			sp := openSpool(t, dir, wal.SpoolOptions{})
			if st := sp.Status(); st.LastTxid != 7 {
				t.Fatalf("cut %d: last %d", cut, st.LastTxid)
			}
			if txid := appendRec(t, sp, ps, 8, 1); txid != 8 {
				t.Fatalf("next txid %d", txid)
			}
			sp.Close()
		}
	})
	t.Run("hole in an unconfirmed page", func(t *testing.T) {
		dir, seg := build(t)
		f, _ := os.OpenFile(seg, os.O_RDWR, 0)
		f.WriteAt(make([]byte, 100), end5+recSize+64+10) // zeros inside txid 7's first page
		f.Close()
		sp := openSpool(t, dir, wal.SpoolOptions{})
		if st := sp.Status(); st.LastTxid != 6 {
			t.Fatalf("last %d, want 6 (7 and 8 cut)", st.LastTxid)
		}
		sp.Close()
	})
	t.Run("confirmed header", func(t *testing.T) {
		dir, seg := build(t)
		flipByte(t, seg, 32+64+3*ps+3*16+16+20) // txid 2's header
		_, err := wal.OpenSpool(dir, wal.SpoolOptions{})
		if !errors.Is(err, wal.ErrCorrupt) || !strings.Contains(err.Error(), seg) || !strings.Contains(err.Error(), "txid 2") {
			t.Fatalf("corrupt confirmed header: %v", err)
		}
	})
	t.Run("confirmed page", func(t *testing.T) {
		dir, seg := build(t)
		flipByte(t, seg, 32+64+3*ps+3*16+16+64+ps+7) // txid 2, page 2
		sp := openSpool(t, dir, wal.SpoolOptions{})
		defer sp.Close()
		var rerr error
		for rec, err := range sp.Records(1, 8) {
			if err != nil {
				t.Fatal(err)
			}
			for _, err := range rec.Pages() {
				if err != nil {
					rerr = err
					break
				}
			}
			if rerr != nil {
				break
			}
		}
		if !errors.Is(rerr, wal.ErrCorrupt) || !strings.Contains(rerr.Error(), seg) || !strings.Contains(rerr.Error(), "txid 2") {
			t.Fatalf("reading a corrupt confirmed page: %v", rerr)
		}
		// And through the newest-version index.
		set, err := sp.Newest(1, 5)
		if err != nil {
			t.Fatal(err)
		}
		defer set.Close()
		rerr = nil
		for _, err := range set.Pages() {
			if err != nil {
				rerr = err
				break
			}
		}
		if rerr != nil {
			t.Fatalf("txid 2's page 2 is superseded by txid 5; reading the set failed: %v", rerr)
		}
	})
	t.Run("confirmed directory", func(t *testing.T) {
		dir, seg := build(t)
		flipByte(t, seg, 32+64+3*ps+5) // txid 1's directory
		_, err := wal.OpenSpool(dir, wal.SpoolOptions{})
		if !errors.Is(err, wal.ErrCorrupt) || !strings.Contains(err.Error(), "txid 1") {
			t.Fatalf("corrupt confirmed directory: %v", err)
		}
	})
}

func flipByte(t testing.TB, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestSpoolNewerVersion(t *testing.T) {
	dir := t.TempDir()
	sp := openSpool(t, dir, wal.SpoolOptions{})
	appendRec(t, sp, 512, 1, 1)
	confirmAll(t, sp)
	sp.Close()
	seg := filepath.Join(dir, "00000000000000000001.seg")
	b, _ := os.ReadFile(seg)
	binary.LittleEndian.PutUint32(b[8:], 2)
	os.WriteFile(seg, b, 0o644)
	_, err := wal.OpenSpool(dir, wal.SpoolOptions{})
	if !errors.Is(err, wal.ErrVersion) || !strings.Contains(err.Error(), seg) {
		t.Fatalf("newer segment version: %v", err)
	}
	binary.LittleEndian.PutUint32(b[8:], 1)
	os.WriteFile(seg, b, 0o644)

	state := filepath.Join(dir, "state")
	s, _ := os.ReadFile(state)
	for off := 0; off < len(s); off += 512 {
		if string(s[off:off+8]) == "bopstate" {
			binary.LittleEndian.PutUint32(s[off+8:], 9)
		}
	}
	os.WriteFile(state, s, 0o644)
	_, err = wal.OpenSpool(dir, wal.SpoolOptions{})
	if !errors.Is(err, wal.ErrVersion) || !strings.Contains(err.Error(), state) {
		t.Fatalf("newer state version: %v", err)
	}
}

// The state file has two slots: a torn write of one leaves the other.
func TestSpoolStateTornWrite(t *testing.T) {
	dir := t.TempDir()
	sp := openSpool(t, dir, wal.SpoolOptions{})
	for i := 0; i < 3; i++ {
		appendRec(t, sp, 512, 1, 1)
		confirmAll(t, sp)
	}
	sp.Close()
	state := filepath.Join(dir, "state")
	s, _ := os.ReadFile(state)
	// The newest slot holds confirmed=3; tear it.
	newest := 0
	if binary.LittleEndian.Uint64(s[512+16:]) > binary.LittleEndian.Uint64(s[16:]) {
		newest = 512
	}
	copy(s[newest+20:], []byte("torn!"))
	os.WriteFile(state, s, 0o644)
	sp = openSpool(t, dir, wal.SpoolOptions{})
	defer sp.Close()
	if c := sp.Status().ConfirmedTxid; c != 2 {
		t.Fatalf("confirmed after a torn state write: %d, want 2 (the previous state)", c)
	}
}

func TestSpoolBackpressure(t *testing.T) {
	dir := t.TempDir()
	const ps = 4096
	sp := openSpool(t, dir, wal.SpoolOptions{MaxBytes: 64 << 10, SegmentBytes: 16 << 10})
	defer sp.Close()
	// One record larger than the whole limit is accepted while below it.
	big := make([]uint32, 40)
	for i := range big {
		big[i] = uint32(i + 1)
	}
	appendRec(t, sp, ps, 40, big...)
	if st := sp.Status(); st.Bytes < 64<<10 || st.Blocked {
		t.Fatalf("after the big record: %+v", st)
	}
	// Now over the limit: the next append waits.
	done := make(chan uint64)
	go func() { done <- appendRec(t, sp, ps, 40, 1) }()
	deadline := time.Now().Add(5 * time.Second)
	for !sp.Status().Blocked {
		if time.Now().After(deadline) {
			t.Fatal("append did not block over the limit")
		}
		time.Sleep(time.Millisecond)
	}
	st := sp.Status()
	if !strings.Contains(st.Reason, "limit") || !strings.Contains(st.Reason, dir) {
		t.Fatalf("blocked reason %q", st.Reason)
	}
	select {
	case <-done:
		t.Fatal("append went through over the limit")
	case <-time.After(50 * time.Millisecond):
	}
	confirmAll(t, sp)
	if err := sp.Truncate(1); err != nil {
		t.Fatal(err)
	}
	select {
	case txid := <-done:
		if txid != 2 {
			t.Fatalf("txid %d", txid)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("append still blocked after truncation")
	}
	if sp.Status().Blocked {
		t.Fatal("still blocked")
	}
}

func TestSpoolBackpressureTimeoutAndClose(t *testing.T) {
	const ps = 4096
	sp := openSpool(t, t.TempDir(), wal.SpoolOptions{MaxBytes: 16 << 10, AppendTimeout: 50 * time.Millisecond})
	appendRec(t, sp, ps, 8, 1, 2, 3, 4, 5)
	start := time.Now()
	_, err := sp.Begin(wal.RecordHeader{Kind: wal.KindDirect, PageSize: ps, DBPages: 8, NPages: 1})
	if !errors.Is(err, wal.ErrSpoolFull) || time.Since(start) < 40*time.Millisecond {
		t.Fatalf("timeout: %v after %v", err, time.Since(start))
	}
	sp.Close()

	sp = openSpool(t, t.TempDir(), wal.SpoolOptions{MaxBytes: 16 << 10})
	appendRec(t, sp, ps, 8, 1, 2, 3, 4, 5)
	errc := make(chan error)
	go func() {
		_, err := sp.Begin(wal.RecordHeader{Kind: wal.KindDirect, PageSize: ps, DBPages: 8, NPages: 1})
		errc <- err
	}()
	for !sp.Status().Blocked {
		time.Sleep(time.Millisecond)
	}
	sp.Close()
	if err := <-errc; !errors.Is(err, wal.ErrClosed) {
		t.Fatalf("close while waiting: %v", err)
	}
}

func TestSpoolAppendValidation(t *testing.T) {
	sp := openSpool(t, t.TempDir(), wal.SpoolOptions{})
	defer sp.Close()
	a, err := sp.Begin(wal.RecordHeader{Kind: wal.KindDirect, PageSize: 512, DBPages: 4, NPages: 2})
	if err != nil {
		t.Fatal(err)
	}
	a.Add(1, page(512, 1, 1))
	a.Add(1, page(512, 1, 1))
	if _, err := a.Commit(); err == nil {
		t.Fatal("a record with one page twice was accepted")
	}
	a, _ = sp.Begin(wal.RecordHeader{Kind: wal.KindDirect, PageSize: 512, DBPages: 4, NPages: 2})
	if err := a.Add(5, page(512, 5, 1)); err == nil {
		t.Fatal("page beyond the database size accepted")
	}
	a.Abort()
	a, _ = sp.Begin(wal.RecordHeader{Kind: wal.KindDirect, PageSize: 512, DBPages: 4, NPages: 2})
	a.Add(1, page(512, 1, 1))
	if _, err := a.Commit(); err == nil {
		t.Fatal("a record short of its declared pages was accepted")
	}
	if st := sp.Status(); st.LastTxid != 0 || st.Err != nil {
		t.Fatalf("after refused appends: %+v", st)
	}
	if txid := appendRec(t, sp, 512, 4, 1, 2); txid != 1 {
		t.Fatalf("txid %d", txid)
	}
	_ = rand.IntN
}

func TestSpoolSetStartAndPagesIn(t *testing.T) {
	dir := t.TempDir()
	sp := openSpool(t, dir, wal.SpoolOptions{})
	if err := sp.SetStart(100); err != nil {
		t.Fatal(err)
	}
	const ps = 512
	if txid := appendRec(t, sp, ps, 20, 1, 2, 3, 4, 10); txid != 101 {
		t.Fatalf("first txid after SetStart(100): %d", txid)
	}
	if err := sp.SetStart(200); err == nil {
		t.Fatal("SetStart on a spool with records")
	}
	appendRec(t, sp, ps, 20, 3, 11)
	sp.Close()
	sp = openSpool(t, dir, wal.SpoolOptions{})
	defer sp.Close()
	if st := sp.Status(); st.FirstTxid != 101 || st.LastTxid != 102 || st.ConfirmedTxid != 100 {
		t.Fatalf("after reopen: %+v", st)
	}
	set, err := sp.Newest(101, 102)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	pgnos := set.Pgnos()
	if fmt.Sprint(pgnos) != "[1 2 3 4 10 11]" {
		t.Fatalf("pgnos %v", pgnos)
	}
	var got []string
	for p, err := range set.PagesIn(pgnos, 2, 10) {
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p.Data, page(ps, p.Pgno, p.Txid)) {
			t.Fatalf("page %d: wrong bytes", p.Pgno)
		}
		got = append(got, fmt.Sprintf("%d@%d", p.Pgno, p.Txid))
	}
	if s := strings.Join(got, " "); s != "2@101 3@102 4@101 10@101" {
		t.Fatalf("PagesIn(2,10): %s", s)
	}
	n := 0
	for _, err := range set.PagesIn(nil, 11, 11) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 1 {
		t.Fatalf("PagesIn(nil, 11, 11): %d pages", n)
	}
}

// Truncate does not fsync the spool's folder after deleting segments, so a
// power loss may bring deleted segments back. They hold only records at or
// below the truncation point the state file recorded: reopening must not
// serve them, must continue the txids, and a later Truncate removes them.
func TestSpoolTruncatedSegmentsComeBack(t *testing.T) {
	const ps = 1024
	saveSegs := func(t *testing.T, dir string) map[string][]byte {
		t.Helper()
		m := map[string][]byte{}
		segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
		for _, p := range segs {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			m[p] = b
		}
		return m
	}
	restore := func(t *testing.T, saved map[string][]byte) (n int) {
		t.Helper()
		for p, b := range saved {
			if _, err := os.Stat(p); err == nil {
				continue
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			n++
		}
		return n
	}
	checkRecords := func(t *testing.T, sp *wal.Spool, from, to uint64) {
		t.Helper()
		want := from
		for rec, err := range sp.Records(from, to) {
			if err != nil {
				t.Fatal(err)
			}
			if rec.Txid != want {
				t.Fatalf("record txid %d, want %d", rec.Txid, want)
			}
			for pg, err := range rec.Pages() {
				if err != nil || !bytes.Equal(pg.Data, page(ps, pg.Pgno, rec.Txid)) {
					t.Fatalf("txid %d page %d: %v", rec.Txid, pg.Pgno, err)
				}
			}
			want++
		}
		if want != to+1 {
			t.Fatalf("records %d..%d, want up to %d", from, want-1, to)
		}
	}

	// truncated makes a spool of 20 confirmed records in several
	// segments, saves the segment files, truncates it to upto and closes
	// it.
	truncated := func(t *testing.T, upto uint64) (string, map[string][]byte) {
		t.Helper()
		dir := t.TempDir()
		sp := openSpool(t, dir, wal.SpoolOptions{SegmentBytes: 8000})
		for i := 0; i < 20; i++ {
			appendRec(t, sp, ps, 30, uint32(i%30+1), 30)
		}
		confirmAll(t, sp)
		saved := saveSegs(t, dir)
		if err := sp.Truncate(upto); err != nil {
			t.Fatal(err)
		}
		sp.Close()
		return dir, saved
	}

	t.Run("later segments follow", func(t *testing.T) {
		dir, saved := truncated(t, 12)
		if restore(t, saved) == 0 {
			t.Fatal("Truncate(12) deleted no segment: the test needs smaller segments")
		}
		sp := openSpool(t, dir, wal.SpoolOptions{SegmentBytes: 8000})
		defer sp.Close()
		if st := sp.Status(); st.FirstTxid != 13 || st.LastTxid != 20 || st.ConfirmedTxid != 20 {
			t.Fatalf("after reopen: %+v", st)
		}
		checkRecords(t, sp, 13, 20)
		// Of the segments starting at or below txid 13, only the last
		// (it holds 13) may remain: the others were deleted at the open.
		segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
		low := 0
		for _, p := range segs {
			first, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(p), ".seg"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			if first <= 13 {
				low++
			}
		}
		if low != 1 {
			t.Fatalf("%d segments start at or below txid 13: %v", low, segs)
		}
		if txid := appendRec(t, sp, ps, 30, 2); txid != 21 {
			t.Fatalf("next txid %d", txid)
		}
	})

	// Only an older segment comes back: it ends below the truncation
	// point, and an append into it would land at a position that implies
	// another txid (records are positional in a segment).
	t.Run("an older segment alone", func(t *testing.T) {
		dir, saved := truncated(t, 20)
		if len(saved) < 2 {
			t.Fatalf("%d segments: the test needs smaller segments", len(saved))
		}
		var oldest string
		for p := range saved {
			if oldest == "" || p < oldest {
				oldest = p
			}
		}
		restore(t, map[string][]byte{oldest: saved[oldest]})
		// Reopened with bigger segments (a larger spool limit makes
		// them), the old segment is not full: appends could go into it.
		sp := openSpool(t, dir, wal.SpoolOptions{SegmentBytes: 1 << 20})
		if txid := appendRec(t, sp, ps, 30, 7); txid != 21 {
			t.Fatalf("next txid %d", txid)
		}
		confirmAll(t, sp)
		checkRecords(t, sp, 21, 21)
		sp.Close()
		sp = openSpool(t, dir, wal.SpoolOptions{SegmentBytes: 1 << 20})
		defer sp.Close()
		if st := sp.Status(); st.FirstTxid != 21 || st.LastTxid != 21 || st.ConfirmedTxid != 21 {
			t.Fatalf("after reopen: %+v", st)
		}
		checkRecords(t, sp, 21, 21)
	})

	t.Run("everything truncated", func(t *testing.T) {
		dir, saved := truncated(t, 20)
		if n := restore(t, saved); n != len(saved) {
			t.Fatalf("%d of %d segments were deleted", n, len(saved))
		}
		sp := openSpool(t, dir, wal.SpoolOptions{SegmentBytes: 8000})
		if segs, _ := filepath.Glob(filepath.Join(dir, "*.seg")); len(segs) != 0 {
			t.Fatalf("segments holding only truncated records kept at the open: %v", segs)
		}
		if h, ok := sp.LastHeader(); !ok || h.Txid != 20 {
			t.Fatalf("last header: %+v %v", h, ok)
		}
		if txid := appendRec(t, sp, ps, 30, 5, 6); txid != 21 {
			t.Fatalf("next txid %d", txid)
		}
		confirmAll(t, sp)
		if st := sp.Status(); st.FirstTxid != 21 || st.LastTxid != 21 {
			t.Fatalf("after the append: %+v", st)
		}
		checkRecords(t, sp, 21, 21)
		sp.Close()
		// Reopened again.
		sp = openSpool(t, dir, wal.SpoolOptions{SegmentBytes: 8000})
		checkRecords(t, sp, 21, 21)
		if err := sp.Truncate(21); err != nil {
			t.Fatal(err)
		}
		if segs, _ := filepath.Glob(filepath.Join(dir, "*.seg")); len(segs) != 0 {
			t.Fatalf("segments left after truncating everything again: %v", segs)
		}
		if st := sp.Status(); st.Bytes != 0 {
			t.Fatalf("bytes after truncating everything: %+v", st)
		}
		sp.Close()
	})
}
