package wal_test

import (
	"bytes"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/bopstore/bop/wal"
)

// segSizeOnDisk is the size of the spool's only segment file as the OS
// sees it (what a crash of the process would leave).
func segSizeOnDisk(t *testing.T, dir string) int64 {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(names) != 1 {
		t.Fatalf("segments %v", names)
	}
	fi, err := os.Stat(names[0])
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// With BufferBytes, committed records stay in memory until the spool
// syncs or reads: one write call for many records. Reads never go around
// the buffer, an aborted record is dropped from it, a record larger than
// the buffer goes straight to the file, and Close writes the rest out.
func TestSpoolBufferedAppends(t *testing.T) {
	const ps = 512
	dir := t.TempDir()
	sp := openSpool(t, dir, wal.SpoolOptions{BufferBytes: 8 << 10})
	txids := []uint64{appendRec(t, sp, ps, 10, 1)}
	if err := sp.Sync(); err != nil {
		t.Fatal(err)
	}
	empty := segSizeOnDisk(t, dir)
	for i := 1; i < 5; i++ {
		txids = append(txids, appendRec(t, sp, ps, 10, uint32(1+i)))
	}
	if got := segSizeOnDisk(t, dir); got != empty {
		t.Fatalf("the segment file grew to %d bytes before any sync: records are not buffered", got)
	}
	// A read sees the buffered records (it writes them out first).
	if h, err := sp.Header(txids[2]); err != nil || h.Txid != txids[2] {
		t.Fatalf("header of a buffered record: %+v, %v", h, err)
	}
	if got := segSizeOnDisk(t, dir); got == empty {
		t.Fatal("a read did not write the buffer out")
	}
	afterRead := segSizeOnDisk(t, dir)

	// An aborted record leaves nothing behind.
	a, err := sp.Begin(wal.RecordHeader{Kind: wal.KindDirect, PageSize: ps, DBPages: 10, NPages: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Add(7, page(ps, 7, 99)); err != nil {
		t.Fatal(err)
	}
	a.Abort()
	next := appendRec(t, sp, ps, 10, 8)
	if next != txids[len(txids)-1]+1 {
		t.Fatalf("txid %d after an abort, want %d", next, txids[len(txids)-1]+1)
	}
	txids = append(txids, next)

	// A run of pages larger than the buffer goes straight to the file.
	a, err = sp.Begin(wal.RecordHeader{Kind: wal.KindDirect, PageSize: ps, DBPages: 40, NPages: 18})
	if err != nil {
		t.Fatal(err)
	}
	var pgnos []uint32
	var run []byte
	for i := 0; i < 18; i++ {
		pgnos = append(pgnos, uint32(20+i))
		run = append(run, page(ps, uint32(20+i), a.Txid())...)
	}
	if err := a.AddRun(pgnos, run); err != nil {
		t.Fatal(err)
	}
	if got := segSizeOnDisk(t, dir); got < afterRead+int64(len(run)) {
		t.Fatalf("segment is %d bytes after a run bigger than the buffer (was %d)", got, afterRead)
	}
	big, err := a.Commit()
	if err != nil {
		t.Fatal(err)
	}
	txids = append(txids, big)
	txids = append(txids, appendRec(t, sp, ps, 40, 3))
	checkRecords := func(sp *wal.Spool) {
		t.Helper()
		i := 0
		for rec, err := range sp.Records(txids[0], txids[len(txids)-1]) {
			if err != nil {
				t.Fatal(err)
			}
			if rec.Txid != txids[i] {
				t.Fatalf("record %d has txid %d, want %d", i, rec.Txid, txids[i])
			}
			for p, err := range rec.Pages() {
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(p.Data, page(ps, p.Pgno, rec.Txid)) {
					t.Fatalf("txid %d page %d: wrong bytes", rec.Txid, p.Pgno)
				}
			}
			i++
		}
		if i != len(txids) {
			t.Fatalf("%d records, want %d", i, len(txids))
		}
	}
	checkRecords(sp)
	txids = append(txids, appendRec(t, sp, ps, 40, 4)) // buffered at Close
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	sp = openSpool(t, dir, wal.SpoolOptions{})
	defer sp.Close()
	checkRecords(sp)
}

// A buffered record whose write fails when the buffer goes out is gone:
// the spool must not count it as synced. The failure is sticky: Sync
// fails, the spool stops, and nothing is appended after the hole.
func TestSpoolBufferedWriteFailureIsSticky(t *testing.T) {
	const ps = 512
	var fail atomic.Bool
	dir := t.TempDir()
	sp := openSpool(t, dir, wal.SpoolOptions{BufferBytes: 64 << 10, FS: faultFS{suffix: ".seg", op: "write", fail: &fail}})
	defer sp.Close()
	first := appendRec(t, sp, ps, 10, 1)
	if err := sp.Sync(); err != nil {
		t.Fatal(err)
	}
	lost := appendRec(t, sp, ps, 10, 2) // buffered
	// A read writes the buffer out first: that write fails.
	fail.Store(true)
	if _, err := sp.Header(lost); err == nil {
		t.Fatal("reading a record whose bytes could not be written succeeded")
	}
	fail.Store(false)
	if err := sp.Sync(); err == nil {
		t.Fatal("Sync succeeded after a lost buffered write")
	}
	if sp.Status().Err == nil {
		t.Fatal("the spool did not stop")
	}
	if _, err := sp.Begin(wal.RecordHeader{Kind: wal.KindDirect, PageSize: ps, DBPages: 10, NPages: 1}); err == nil {
		t.Fatal("an append succeeded after the spool stopped")
	}
	if st := sp.Status(); st.SyncedTxid != first {
		t.Fatalf("synced %d, want %d", st.SyncedTxid, first)
	}
}

// Capture through a buffered spool: the same transactions as through an
// unbuffered one, replaying to the database, with records written out at
// each WAL sync and checkpoint.
func TestCaptureBufferedSpool(t *testing.T) {
	for _, buf := range []int{700, 64 << 10} {
		e := newEnv(t, t.TempDir(), nil, "", nil)
		e.sopts.BufferBytes = buf
		e.mustOpenCapture()
		db := e.openDB(true, "journal_mode(wal)", "synchronous(normal)", "wal_autocheckpoint(50)")
		db.SetMaxOpenConns(1)
		mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
		for i := 0; i < 300; i++ {
			mustExec(t, db, "INSERT INTO t(v) VALUES (randomblob(?))", 100+i*7%3000)
		}
		st := e.cap.Stats()
		if st.Headers < 2 {
			t.Fatalf("buffer %d: %d WAL generations: the test needs checkpoints and restarts", buf, st.Headers)
		}
		if got := countWALRecords(t, e.spool); uint64(got) != st.Commits {
			t.Fatalf("buffer %d: %d WAL records for %d commits", buf, got, st.Commits)
		}
		e.checkReplay(db, "buffered spool")
		db.Close()
		e.closeCapture()
	}
}

// Coalescing (CaptureOptions.Coalesce): small autocommit transactions
// share spool records between WAL syncs; the spool still replays to the
// database (also across shrinks: auto_vacuum frees pages at every
// commit), no WAL commit frame is spooled twice, nothing is appended
// before Flush or a sync, and with synchronous=FULL (a WAL sync per
// commit) every transaction keeps its own record.
func TestCaptureCoalesced(t *testing.T) {
	for _, syncMode := range []string{"normal", "full"} {
		e := newEnv(t, t.TempDir(), nil, "", nil)
		e.sopts.BufferBytes = 64 << 10
		e.copts.Coalesce = 256 << 10
		e.mustOpenCapture()
		db := e.openDB(true, "auto_vacuum(full)", "journal_mode(wal)", "synchronous("+syncMode+")", "wal_autocheckpoint(60)")
		db.SetMaxOpenConns(1)
		mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
		for i := 0; i < 400; i++ {
			switch {
			case i%50 == 49:
				mustExec(t, db, "DELETE FROM t WHERE id % 3 = 0") // the file shrinks
			case i%7 == 0:
				mustExec(t, db, "INSERT INTO t(v) VALUES (randomblob(5000))") // overflow pages at the end
			case i%7 == 1:
				// A small transaction that cuts the file below the pages
				// the one before it wrote (in the same group).
				mustExec(t, db, "DELETE FROM t WHERE id = (SELECT max(id) FROM t)")
			default:
				mustExec(t, db, "INSERT INTO t(v) VALUES (randomblob(?))", 50+i%200)
			}
		}
		before := e.spool.Status().LastTxid
		mustExec(t, db, "INSERT INTO t(v) VALUES (x'01')")
		if syncMode == "normal" {
			if after := e.spool.Status().LastTxid; after != before {
				t.Fatalf("a small commit was appended at once (txid %d -> %d): not coalesced", before, after)
			}
			if err := e.cap.Flush(); err != nil {
				t.Fatal(err)
			}
			if after := e.spool.Status().LastTxid; after != before+1 {
				t.Fatalf("Flush appended txids %d..%d, want one record", before+1, after)
			}
		}
		st := e.cap.Stats()
		records := countWALRecords(t, e.spool)
		t.Logf("synchronous=%s: %d commits in %d records (%d coalesced), %d WAL generations", syncMode, st.Commits, records, st.Coalesced, st.Headers)
		if syncMode == "normal" && (st.Coalesced == 0 || uint64(records) >= st.Commits) {
			t.Fatalf("nothing coalesced: %d commits, %d records", st.Commits, records)
		}
		if syncMode == "full" && (st.Coalesced != 0 || uint64(records) != st.Commits) {
			t.Fatalf("synchronous=full: %d commits in %d records (%d coalesced): every commit syncs the WAL, so each must have its own", st.Commits, records, st.Coalesced)
		}
		checkUniqueIdentities(t, e.spool)
		shrinks, prev := 0, uint32(0)
		ss := e.spool.Status()
		for rec, err := range e.spool.Records(ss.FirstTxid, ss.LastTxid) {
			if err != nil {
				t.Fatal(err)
			}
			if rec.DBPages < prev {
				shrinks++
			}
			prev = rec.DBPages
		}
		if shrinks == 0 {
			t.Fatal("the database never shrank: the test does not cover pages cut from a group")
		}
		e.checkReplay(db, "coalesced, synchronous="+syncMode)
		// Reopen: reconciliation agrees with what was spooled.
		db.Close()
		e.closeCapture()
		e.mustOpenCapture()
		db = e.openDB(true, "journal_mode(wal)")
		mustExec(t, db, "INSERT INTO t(v) VALUES (x'02')")
		e.checkReplay(db, "coalesced, after reopening")
		db.Close()
		e.closeCapture()
	}
}
