package wal_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bopstore/bop/internal/vfstest"
	"github.com/bopstore/bop/wal"
)

// A checkpoint started by one connection while another connection's commit
// is in progress (commit frame written, outcome not yet known) must neither
// copy the transaction before the spool holds it nor make it final before
// its commit sync succeeded. These tests drive both orders of events.

// waitCkptWaits waits until n checkpoint starts have waited for a commit.
func waitCkptWaits(t testing.TB, c *wal.Capture, n uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.Stats().CkptWaits < n {
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint start waited for the commit in progress: %+v", c.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}

// startCheckpoint runs conn's CheckpointStart on another goroutine, as
// SQLite's checkpointer runs on its own connection.
func startCheckpoint(cn *wal.Conn) <-chan error {
	done := make(chan error, 1)
	go func() {
		err := cn.CheckpointStart()
		cn.CheckpointDone()
		done <- err
	}()
	return done
}

// The reviewer's scenario: conn2's checkpoint starts between the writer's
// commit frame and its commit sync, and the sync fails. SQLite rolls the
// transaction back and writes its next one over the same frames: the
// rolled-back transaction must never have been spooled or confirmed, and
// the next write must not stop capture.
func TestCheckpointBeforeCommitSyncThatFails(t *testing.T) {
	for _, order := range []string{"checkpoint first", "sync first"} {
		t.Run(order, func(t *testing.T) {
			const ps = 512
			s := newSynth(t, ps, wal.CaptureOptions{})
			defer s.close()
			s.begin(ps)
			s.conn.CommitPhaseTwo() // T1 final
			// T2: frames 3..4, commit frame written; the writer has not
			// synced yet.
			s.w.Commit(2, []uint32{1, 2}, [][]byte{pg(ps, 1, 9), pg(ps, 2, 9)})
			s.noErr()

			var ckpt <-chan error
			if order == "checkpoint first" {
				// The checkpoint cannot tell whether the writer is about
				// to sync (T2 not in the wal-index) or will not sync (T2
				// maybe in it): it waits for the writer's next signal.
				ckpt = startCheckpoint(s.conn2)
				waitCkptWaits(t, s.c, 1)
			}
			err := s.conn.Sync(func() error {
				if ckpt == nil {
					// The checkpoint starts while the commit sync runs:
					// T2 is not in the wal-index, it is left provisional
					// without waiting.
					ckpt = startCheckpoint(s.conn2)
				}
				// The checkpoint completes while the sync is running.
				if err := <-ckpt; err != nil {
					t.Errorf("checkpoint: %v", err)
				}
				if c := s.sp.Confirmed(); c != 1 {
					t.Errorf("during the commit sync, confirmed=%d (want 1: T1 only), spool %q", c, s.records())
				}
				return errors.New("EIO")
			})
			if err == nil {
				t.Fatal("sync error not returned")
			}
			if c := s.sp.Confirmed(); c >= 2 {
				t.Fatalf("txid 2, rolled back by SQLite, is confirmed (publishable): confirmed=%d, spool %q", c, s.records())
			}
			s.expect("1:1=1,2=1/2")
			// SQLite's next transaction reuses frame 3.
			s.w.WriteFrame(3, 2, 2, pg(ps, 2, 3), false)
			s.noErr()
			s.conn.CommitPhaseTwo()
			s.expect("1:1=1,2=1/2 2:2=3/2")
			st := s.c.Stats()
			if st.Withdrawn != 1 || st.FinalCkpt != 0 || s.c.Err() != nil {
				t.Fatalf("stats %+v, err %v", st, s.c.Err())
			}
			if want := map[string]uint64{"checkpoint first": 1, "sync first": 0}[order]; st.CkptWaits != want {
				t.Fatalf("checkpoint waits %d, want %d", st.CkptWaits, want)
			}
		})
	}
}

// The same with a commit sync that succeeds: the transaction is spooled
// exactly once (by the sync), confirmed after it, never by the checkpoint.
func TestCheckpointBeforeCommitSyncThatSucceeds(t *testing.T) {
	const ps = 512
	s := newSynth(t, ps, wal.CaptureOptions{})
	defer s.close()
	s.begin(ps)
	s.conn.CommitPhaseTwo()
	s.w.Commit(3, []uint32{1, 3}, [][]byte{pg(ps, 1, 9), pg(ps, 3, 9)})
	// psow=0: the commit frame is padded before the sync; the checkpoint
	// starts while the padding is being written.
	s.w.Append(3, 3, pg(ps, 3, 9))
	ckpt := startCheckpoint(s.conn2)
	waitCkptWaits(t, s.c, 1)
	s.w.Append(3, 3, pg(ps, 3, 9))
	s.noErr()
	if err := s.conn.Sync(func() error {
		if err := <-ckpt; err != nil {
			t.Errorf("checkpoint: %v", err)
		}
		if c := s.sp.Confirmed(); c != 1 {
			t.Errorf("confirmed=%d before the commit sync returned", c)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	s.expect("1:1=1,2=1/2 2:1=9,3=9/3")
	if c, err := s.c.SyncForPublish(); c != 2 || err != nil {
		t.Fatalf("publishable up to txid %d after the commit sync: %v", c, err)
	}
	s.conn.CommitPhaseTwo() // nothing more to do
	s.w.Commit(4, []uint32{4}, [][]byte{pg(ps, 4, 4)})
	s.conn.CommitPhaseTwo()
	s.noErr()
	s.expect("1:1=1,2=1/2 2:1=9,3=9/3 3:4=4/4")
	if st := s.c.Stats(); st.FinalSync != 1 || st.FinalCkpt != 0 || st.Commits != 3 || st.PaddingFrames != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// With synchronous=NORMAL no sync follows the commit frame: the wal-index
// may already hold the transaction when the checkpoint starts, so the
// checkpoint waits for the writer's COMMIT_PHASETWO and the transaction is
// final and confirmed before anything is copied.
func TestCheckpointWaitsForPhaseTwo(t *testing.T) {
	const ps = 512
	s := newSynth(t, ps, wal.CaptureOptions{})
	defer s.close()
	s.begin(ps)
	ckpt := startCheckpoint(s.conn2)
	waitCkptWaits(t, s.c, 1)
	select {
	case err := <-ckpt:
		t.Fatalf("checkpoint went on before the commit showed its outcome: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	s.expect("")
	s.conn.CommitPhaseTwo()
	if err := <-ckpt; err != nil {
		t.Fatal(err)
	}
	if c := s.sp.Confirmed(); c != 1 {
		t.Fatalf("confirmed=%d after the checkpoint start", c)
	}
	if st := s.c.Stats(); st.FinalPhaseTwo != 1 || st.FinalCkpt != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// A commit that never shows an outcome (it failed after its commit frame
// in a way no event reports): the checkpoint is refused after the wait,
// with nothing made final; the commit's later signal still counts.
func TestCheckpointRefusedWhenCommitShowsNothing(t *testing.T) {
	defer wal.SetCheckpointWait(30 * time.Millisecond)()
	const ps = 512
	s := newSynth(t, ps, wal.CaptureOptions{})
	defer s.close()
	s.begin(ps)
	start := time.Now()
	err := s.conn2.CheckpointStart()
	s.conn2.CheckpointDone()
	if !errors.Is(err, wal.ErrCommitPending) {
		t.Fatalf("checkpoint during a silent commit: %v", err)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("refused after %v, before the wait", d)
	}
	s.expect("")
	if s.c.Err() != nil {
		t.Fatal(s.c.Err())
	}
	// The writer's connection closes: its commit returned, so the next
	// checkpoint takes the transaction as committed (as before).
	s.conn.Close()
	if err := s.conn2.CheckpointStart(); err != nil {
		t.Fatal(err)
	}
	s.conn2.CheckpointDone()
	s.expect("1:1=1,2=1/2")
	if st := s.c.Stats(); st.FinalCkpt != 1 || st.CkptWaits != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A checkpoint on the writer's own connection: its commit returned (a
// connection does one thing at a time), so the transaction is final at
// once, without waiting.
func TestCheckpointOnWritersConnection(t *testing.T) {
	const ps = 512
	s := newSynth(t, ps, wal.CaptureOptions{})
	defer s.close()
	s.begin(ps)
	if err := s.conn.CheckpointStart(); err != nil {
		t.Fatal(err)
	}
	s.conn.CheckpointDone()
	s.expect("1:1=1,2=1/2")
	if st := s.c.Stats(); st.FinalCkpt != 1 || st.CkptWaits != 0 || s.sp.Confirmed() != 1 {
		t.Fatalf("stats %+v, confirmed %d", st, s.sp.Confirmed())
	}
}

// Through SQLite: a writer (synchronous=FULL or NORMAL) is held right
// after its commit frame while another connection runs a passive
// checkpoint; the commit sync then succeeds or fails. Every committed
// transaction is spooled exactly once, the failed one never, and the
// replay of the spool matches the database.
func TestCheckpointDuringCommitThroughSQLite(t *testing.T) {
	cases := []struct {
		sync     string
		psow     bool
		failSync bool
	}{
		{"full", true, false},
		{"full", false, false},
		{"full", true, true},
		{"full", false, true},
		{"normal", true, false},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s/psow=%v/failsync=%v", tc.sync, tc.psow, tc.failSync), func(t *testing.T) {
			testCheckpointDuringCommit(t, tc.sync, tc.psow, tc.failSync)
		})
	}
}

func testCheckpointDuringCommit(t *testing.T, syncMode string, psow, failSync bool) {
	ctx := context.Background()
	injected := errors.New("injected fsync failure")

	// The trap fires inside the writer's WAL write of the page of its
	// commit frame (capture holds the transaction as provisional by then):
	// it starts the checkpoint on the other connection and holds the
	// writer until that checkpoint waits for the commit.
	var (
		mu      sync.Mutex
		armed   bool
		hdrConn uint64
		hdrOff  int64 = -1
		fired         = make(chan struct{})
		e       *env
	)
	var ckptConn *sql.Conn
	ckptErr := make(chan error, 1)
	trap := func(ev vfstest.Event) {
		if ev.Kind != vfstest.WALWrite {
			return
		}
		mu.Lock()
		fire := false
		switch {
		case !armed:
		case ev.FrameHeader && ev.Commit != 0:
			hdrConn, hdrOff = ev.Conn, ev.Off
		case ev.Conn == hdrConn && ev.Off == hdrOff+24:
			armed, fire = false, true
		}
		mu.Unlock()
		if !fire {
			return
		}
		before := e.cap.Stats().CkptWaits
		go func() { ckptErr <- passiveCheckpoint(ctx, ckptConn) }()
		waitCkptWaits(t, e.cap, before+1)
		if failSync {
			// The next WAL sync is the writer's commit sync (the
			// checkpointer's own sync came before its CKPT_START).
			e.db.FailWALSyncs(1, injected)
		}
		close(fired)
	}
	v, name := newVFS(t, nil, trap)
	e = newEnv(t, t.TempDir(), v, name, nil)
	e.mustOpenCapture()
	defer e.closeCapture()
	db := e.openDB(psow, "journal_mode(wal)", "synchronous("+syncMode+")", "wal_autocheckpoint(0)", "busy_timeout(10000)")
	defer db.Close()
	db.SetMaxOpenConns(2)
	wc, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cconn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ckptConn = cconn
	mustExec(t, wc, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
	// Committed frames the checkpoint has to copy.
	for i := 0; i < 5; i++ {
		mustExec(t, wc, "INSERT INTO t(v) VALUES (randomblob(300))")
	}
	var n int
	if err := cconn.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 5 {
		t.Fatalf("rows %d, %v", n, err)
	}
	before := e.cap.Stats()
	last := e.spool.Status().LastTxid

	mu.Lock()
	armed = true
	mu.Unlock()
	_, err = wc.ExecContext(ctx, "INSERT INTO t(v) VALUES (randomblob(400))")
	select {
	case <-fired:
	default:
		t.Fatal("the trap did not fire: no commit frame seen")
	}
	if cerr := <-ckptErr; cerr != nil {
		t.Fatalf("checkpoint: %v", cerr)
	}
	after := e.cap.Stats()
	got := e.spool.Status().LastTxid - last
	if failSync {
		if err == nil {
			t.Fatal("commit succeeded although its WAL sync failed")
		}
		if got != 0 || after.Withdrawn != before.Withdrawn+1 || after.Commits != before.Commits {
			t.Fatalf("failed commit: %d records spooled, stats before %+v after %+v", got, before, after)
		}
	} else {
		if err != nil {
			t.Fatal(err)
		}
		if got != 1 || after.Commits != before.Commits+1 || after.Withdrawn != before.Withdrawn {
			t.Fatalf("commit: %d records spooled, stats before %+v after %+v", got, before, after)
		}
	}
	if after.FinalCkpt != before.FinalCkpt {
		t.Fatalf("a checkpoint made the other connection's commit final: before %+v after %+v", before, after)
	}
	// The writer goes on (after a failed commit, over the same frames).
	for i := 0; i < 3; i++ {
		mustExec(t, wc, "INSERT INTO t(v) VALUES (randomblob(200))")
	}
	if err := e.cap.Err(); err != nil {
		t.Fatal(err)
	}
	wc.Close()
	cconn.Close()
	want := "9"
	if failSync {
		want = "8"
	}
	if n := queryString(t, db, "SELECT count(*) FROM t"); n != want {
		t.Fatalf("rows %s, want %s", n, want)
	}
	e.checkReplay(db, "checkpoint during a commit")
}

// passiveCheckpoint runs wal_checkpoint(PASSIVE) on c.
func passiveCheckpoint(ctx context.Context, c *sql.Conn) error {
	var busy, logFrames, copied int
	if err := c.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logFrames, &copied); err != nil {
		return err
	}
	if copied <= 0 {
		return fmt.Errorf("checkpoint copied nothing (busy %d, log %d, copied %d)", busy, logFrames, copied)
	}
	return nil
}

// A commit whose padding write fails (synchronous=FULL, psow off, disk
// full) is rolled back by SQLite with no sync: the VFS reports the failed
// write, and the writer's own checkpoint afterwards must not make the
// transaction final (without WriteFailed it would: the checkpointing
// connection's commit returned, so its provisional transaction is taken
// as committed).
func TestFailedPaddingWriteWithdraws(t *testing.T) {
	const ps = 512
	s := newSynth(t, ps, wal.CaptureOptions{})
	defer s.close()
	s.begin(ps)
	s.conn.CommitPhaseTwo()
	s.w.Commit(2, []uint32{1, 2}, [][]byte{pg(ps, 1, 9), pg(ps, 2, 9)}) // frames 3..4
	s.noErr()
	// A write before the commit frame's end is not padding: nothing changes.
	s.conn.WriteFailed(32 + 3*(24+ps))
	if st := s.c.Stats(); st.Withdrawn != 0 {
		t.Fatalf("a failed write inside the transaction withdrew it: %+v", st)
	}
	// Another connection's failed write is not the writer's padding.
	s.conn2.WriteFailed(32 + 4*(24+ps))
	if st := s.c.Stats(); st.Withdrawn != 0 {
		t.Fatalf("another connection's failed write withdrew the transaction: %+v", st)
	}
	s.conn.WriteFailed(32 + 4*(24+ps)) // frame 5: the padding
	if err := s.conn.CheckpointStart(); err != nil {
		t.Fatal(err)
	}
	s.conn.CheckpointDone()
	s.expect("1:1=1,2=1/2")
	if c := s.sp.Confirmed(); c != 1 {
		t.Fatalf("confirmed=%d after a rolled-back commit, want 1", c)
	}
	// SQLite's next transaction reuses frame 3: captured normally.
	s.w.WriteFrame(3, 2, 2, pg(ps, 2, 3), false)
	s.noErr()
	s.conn.CommitPhaseTwo()
	s.expect("1:1=1,2=1/2 2:2=3/2")
	if st := s.c.Stats(); st.Withdrawn != 1 || s.c.Err() != nil {
		t.Fatalf("stats %+v, err %v", st, s.c.Err())
	}
}

// The VFS changes the WAL file first and tells capture after
// (walFile.WriteAt of a new header, walFile.Truncate, VFS.Delete): a
// crash between the two must not drop the spooled records (the checkpoint
// copied them into the main file). So the checkpoint start persists the
// confirmed watermark; saving it only when capture sees the generation end
// would be too late (session-3 review: this failed with that change).
// Each case: two transactions, a checkpoint start, then the file change
// SQLite makes next, then a crash before capture hears of it.
func TestCrashAfterWALChangeBeforeCapture(t *testing.T) {
	const ps = 512
	for _, tc := range []struct {
		name   string
		change func(s *synth)
	}{
		// wal_checkpoint(TRUNCATE), a PERSIST_WAL close, a deletion: the
		// file loses its frames.
		{"truncate", func(s *synth) { s.file.Truncate(0) }},
		// A WAL restart: the new header reaches the file first.
		{"restart", func(s *synth) {
			s.w.CkptSeq++
			s.w.Salt1++
			s.w.Salt2 = 0x99
			s.file.Write(s.w.HeaderBytes(), 0)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSynth(t, ps, wal.CaptureOptions{})
			s.begin(ps)
			s.w.Commit(3, []uint32{3}, [][]byte{pg(ps, 3, 1)})
			s.noErr()
			if err := s.conn.CheckpointStart(); err != nil {
				t.Fatal(err)
			}
			s.conn.CheckpointDone()
			s.expect("1:1=1,2=1/2 2:3=1/3")
			tc.change(s)
			s.close()
			s.open(wal.CaptureOptions{})
			defer s.close()
			s.expect("1:1=1,2=1/2 2:3=1/3")
		})
	}
}
