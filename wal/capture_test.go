package wal_test

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bopstore/bop/internal/walgen"
	"github.com/bopstore/bop/wal"
)

// synth drives a Capture with a synthetic WAL write stream (walgen), as
// one or two SQLite connections would.
type synth struct {
	t     testing.TB
	dir   string
	sp    *wal.Spool
	c     *wal.Capture
	conn  *wal.Conn
	conn2 *wal.Conn
	file  *walgen.File
	w     *walgen.Writer
	// writer is the connection the generator writes through.
	writer *wal.Conn
	werr   error
}

type nopMain struct{}

func (nopMain) ReadAt([]byte, int64) (int, error) { return 0, errors.New("no main file") }
func (nopMain) Size() (int64, error)              { return 0, nil }

func newSynth(t testing.TB, ps int, opts wal.CaptureOptions) *synth {
	t.Helper()
	s := &synth{t: t, dir: t.TempDir()}
	s.file = &walgen.File{Path: filepath.Join(s.dir, "db-wal")}
	s.open(opts)
	s.w = walgen.New(ps, 0x1234, 0xabcd, func(p []byte, off int64) error {
		s.file.Write(p, off)
		err := s.writer.Write(p, off)
		if err != nil && s.werr == nil {
			s.werr = err
		}
		return nil
	})
	return s
}

func (s *synth) open(opts wal.CaptureOptions) {
	s.t.Helper()
	sp, err := wal.OpenSpool(filepath.Join(s.dir, "spool"), wal.SpoolOptions{})
	if err != nil {
		s.t.Fatal(err)
	}
	c, err := wal.NewCapture(sp, opts)
	if err != nil {
		s.t.Fatal(err)
	}
	s.sp, s.c = sp, c
	s.conn, s.conn2 = c.NewConn(nopMain{}), c.NewConn(nopMain{})
	s.writer = s.conn
	if err := s.conn.AttachWAL(s.file); err != nil {
		s.t.Fatal(err)
	}
	s.conn2.AttachWAL(s.file)
}

// begin writes the WAL header and transaction 1 (pages 1 and 2 at
// version 1, database size 2): the opening most scenarios share.
func (s *synth) begin(ps int) {
	s.t.Helper()
	s.w.Header()
	s.w.Commit(2, []uint32{1, 2}, [][]byte{pg(ps, 1, 1), pg(ps, 2, 1)})
}

// newHeldGroup is a synth with coalescing whose transaction 1 (begin) is
// final and held in memory as the group, nothing spooled yet.
func newHeldGroup(t *testing.T) *synth {
	t.Helper()
	s := newSynth(t, heldGroupPS, wal.CaptureOptions{Coalesce: 1 << 20})
	t.Cleanup(s.close)
	s.begin(heldGroupPS)
	s.noErr()
	if err := s.conn.CommitPhaseTwo(); err != nil {
		t.Fatal(err)
	}
	return s
}

const heldGroupPS = 512

func (s *synth) close() {
	s.c.Close()
	s.sp.Close()
}

func (s *synth) noErr() {
	s.t.Helper()
	if s.werr != nil {
		s.t.Fatal(s.werr)
	}
}

func pg(ps int, pgno uint32, v byte) []byte {
	b := bytes.Repeat([]byte{v}, ps)
	b[0], b[1] = byte(pgno), byte(pgno>>8)
	return b
}

// records returns "txid:pgno=v,..." for every spooled record.
func (s *synth) records() string {
	s.t.Helper()
	st := s.sp.Status()
	var out []string
	if st.LastTxid < st.FirstTxid {
		return ""
	}
	for rec, err := range s.sp.Records(st.FirstTxid, st.LastTxid) {
		if err != nil {
			s.t.Fatal(err)
		}
		var ps []string
		for p, err := range rec.Pages() {
			if err != nil {
				s.t.Fatal(err)
			}
			ps = append(ps, fmt.Sprintf("%d=%d", p.Pgno, p.Data[2]))
		}
		out = append(out, fmt.Sprintf("%d:%s/%d", rec.Txid, strings.Join(ps, ","), rec.DBPages))
	}
	return strings.Join(out, " ")
}

func (s *synth) expect(want string) {
	s.t.Helper()
	if got := s.records(); got != want {
		s.t.Fatalf("spool:\n got %s\nwant %s", got, want)
	}
}

func TestCaptureProvisionalUntilPhaseTwo(t *testing.T) {
	const ps = 512
	s := newSynth(t, ps, wal.CaptureOptions{})
	defer s.close()
	s.w.Header()
	s.w.Commit(3, []uint32{1, 2, 3}, [][]byte{pg(ps, 1, 1), pg(ps, 2, 1), pg(ps, 3, 1)})
	s.noErr()
	s.expect("") // provisional: nothing spooled yet
	if err := s.conn.CommitPhaseTwo(); err != nil {
		t.Fatal(err)
	}
	s.expect("1:1=1,2=1,3=1/3")
	// Without a phase two (a VFS that does not forward it), the next
	// transaction's first frame makes the previous one final.
	s.w.Commit(3, []uint32{2}, [][]byte{pg(ps, 2, 2)})
	s.expect("1:1=1,2=1,3=1/3")
	s.w.Commit(4, []uint32{4}, [][]byte{pg(ps, 4, 3)})
	s.noErr()
	s.expect("1:1=1,2=1,3=1/3 2:2=2/3")
	// Another connection's phase two does not finalize it.
	s.conn2.CommitPhaseTwo()
	s.expect("1:1=1,2=1,3=1/3 2:2=2/3")
	s.conn.CommitPhaseTwo()
	s.expect("1:1=1,2=1,3=1/3 2:2=2/3 3:4=3/4")
	if st := s.c.Stats(); st.FinalPhaseTwo != 2 || st.FinalNextFrame != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// The prototype treated a write at or below an emitted commit as an
// anomaly and dropped every later transaction. Here the provisional
// transaction is withdrawn and capture goes on.
func TestCaptureWithdrawAndContinue(t *testing.T) {
	const ps = 512
	s := newSynth(t, ps, wal.CaptureOptions{})
	defer s.close()
	s.begin(ps)
	s.conn.CommitPhaseTwo()
	// Transaction 2 writes frames 3..4 with a commit frame, but its sync
	// fails: SQLite rolls it back and the next transaction reuses frame 3.
	s.w.Commit(2, []uint32{1, 2}, [][]byte{pg(ps, 1, 9), pg(ps, 2, 9)})
	if err := s.conn.Sync(func() error { return errors.New("EIO") }); err == nil {
		t.Fatal("sync error not returned")
	}
	s.w.WriteFrame(3, 2, 2, pg(ps, 2, 3), false)
	s.noErr()
	s.conn.CommitPhaseTwo()
	s.w.Commit(5, []uint32{5}, [][]byte{pg(ps, 5, 4)})
	s.conn.CommitPhaseTwo()
	s.noErr()
	s.expect("1:1=1,2=1/2 2:2=3/2 3:5=4/5")
	if st := s.c.Stats(); st.Withdrawn != 1 {
		t.Fatalf("stats %+v", st)
	}

	// Same without any sync: the rollback shows only as the rewrite.
	s.w.Commit(5, []uint32{1, 3}, [][]byte{pg(ps, 1, 8), pg(ps, 3, 8)}) // frames 5,6: provisional
	s.w.WriteFrame(5, 4, 0, pg(ps, 4, 5), false)                        // frame 5 again
	s.w.WriteFrame(6, 1, 5, pg(ps, 1, 5), false)
	s.conn.CommitPhaseTwo()
	s.noErr()
	s.expect("1:1=1,2=1/2 2:2=3/2 3:5=4/5 4:4=5,1=5/5")
}

func TestCaptureWriteBelowFinalStops(t *testing.T) {
	const ps = 512
	s := newSynth(t, ps, wal.CaptureOptions{})
	defer s.close()
	s.begin(ps)
	s.conn.CommitPhaseTwo()
	s.w.WriteFrame(2, 2, 2, pg(ps, 2, 7), false)
	if !errors.Is(s.werr, wal.ErrLost) {
		t.Fatalf("write below a final commit: %v", s.werr)
	}
	s.werr = nil
	s.w.Append(3, 3, pg(ps, 3, 1))
	if s.werr == nil || !errors.Is(s.c.Err(), wal.ErrLost) {
		t.Fatalf("capture went on after losing track: %v", s.werr)
	}
	s.expect("1:1=1,2=1/2")
}

// With psow off and a sync at commit, SQLite repeats the commit frame up
// to a sector boundary; each copy is a valid commit frame.
func TestCapturePadding(t *testing.T) {
	const ps = 512
	s := newSynth(t, ps, wal.CaptureOptions{})
	defer s.close()
	s.w.Header()
	p1 := pg(ps, 1, 1)
	s.w.Commit(1, []uint32{1}, [][]byte{p1})
	n, _ := s.w.Pad(4096, 1, 1, p1)
	if n == 0 {
		t.Fatal("no padding generated")
	}
	if err := s.conn.Sync(func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	s.conn.CommitPhaseTwo()
	s.w.Commit(2, []uint32{2}, [][]byte{pg(ps, 2, 2)})
	s.w.Pad(4096, 2, 2, pg(ps, 2, 2))
	s.conn.Sync(func() error { return nil })
	s.noErr()
	s.expect("1:1=1/1 2:2=2/2")
	if st := s.c.Stats(); st.PaddingFrames == 0 || st.FinalSync != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// A spilled page modified again is overwritten in place (page bytes
// only); the frames after it are written with zero salts and their
// headers rewritten at commit.
func TestCaptureInPlaceOverwriteAndRewrite(t *testing.T) {
	const ps = 512
	s := newSynth(t, ps, wal.CaptureOptions{})
	defer s.close()
	s.w.Header()
	s.w.Commit(1, []uint32{1}, [][]byte{pg(ps, 1, 1)})
	s.conn.CommitPhaseTwo()
	// Spill: frames 2,3,4 (pages 2,3,4), no commit.
	for _, p := range []uint32{2, 3, 4} {
		s.w.Append(p, 0, pg(ps, p, 1))
	}
	// Page 3 changes again: in place at frame 3.
	newer := pg(ps, 3, 2)
	s.file.Write(newer, s.w.FrameOffset(3)+24)
	s.conn.Write(newer, s.w.FrameOffset(3)+24)
	// Commit: page 5 appended with zero salts (commit frame), then
	// headers 3..5 rewritten.
	s.w.WriteFrame(5, 5, 5, pg(ps, 5, 1), true)
	s.noErr()
	s.expect("1:1=1/1")
	pages := map[uint32][]byte{3: newer, 4: pg(ps, 4, 1), 5: pg(ps, 5, 1)}
	s.w.RewriteHeaders(3, 5, func(i uint32) (uint32, uint32, []byte) {
		c := uint32(0)
		if i == 5 {
			c = 5
		}
		return i, c, pages[i]
	})
	s.conn.CommitPhaseTwo()
	s.noErr()
	s.expect("1:1=1/1 2:2=1,3=2,4=1,5=1/5")
}

// A savepoint rollback reuses frame slots with no commit pending; the
// abandoned frames never reach the spool.
func TestCaptureSavepointRollback(t *testing.T) {
	const ps = 512
	s := newSynth(t, ps, wal.CaptureOptions{})
	defer s.close()
	s.w.Header()
	for p := uint32(1); p <= 6; p++ {
		s.w.Append(p, 0, pg(ps, p, 1))
	}
	// ROLLBACK TO a savepoint taken after frame 2: frames 3.. reused.
	s.w.WriteFrame(3, 7, 0, pg(ps, 7, 2), false)
	s.w.Append(8, 8, pg(ps, 8, 2))
	s.conn.CommitPhaseTwo()
	s.noErr()
	s.expect("1:1=1,2=1,7=2,8=2/8")
}

func TestCaptureRestartAndCheckpoint(t *testing.T) {
	const ps = 1024
	s := newSynth(t, ps, wal.CaptureOptions{})
	defer s.close()
	s.begin(ps)
	// A checkpoint starts (on another goroutine, as SQLite's would) before
	// the writer's phase two arrived: it waits for it, and the transaction
	// is final, durable and confirmed before the copy.
	ckpt := make(chan error, 1)
	go func() { ckpt <- s.conn2.CheckpointStart() }()
	for s.c.Stats().CkptWaits == 0 {
		time.Sleep(time.Millisecond)
	}
	s.conn.CommitPhaseTwo()
	if err := <-ckpt; err != nil {
		t.Fatal(err)
	}
	s.conn2.CheckpointDone()
	if st := s.sp.Status(); st.ConfirmedTxid != 1 {
		t.Fatalf("not confirmed at checkpoint start: %+v", st)
	}
	if s.file.Syncs == 0 {
		t.Fatal("capture did not fsync the WAL before the checkpoint (nothing else had)")
	}
	// Restart: new salts, frames from 1 again.
	s.w.Restart(0x5555)
	s.w.Commit(3, []uint32{3}, [][]byte{pg(ps, 3, 2)})
	s.conn.CommitPhaseTwo()
	s.noErr()
	s.expect("1:1=1,2=1/2 2:3=2/3")
	// Truncation to 0 and a fresh generation.
	s.file.Truncate(0)
	s.conn.Truncate(0)
	s.w.Salt1, s.w.Salt2 = 77, 88
	s.w.Header()
	s.w.Commit(3, []uint32{1}, [][]byte{pg(ps, 1, 3)})
	s.conn.CommitPhaseTwo()
	s.noErr()
	s.expect("1:1=1,2=1/2 2:3=2/3 3:1=3/3")
}

func TestCaptureBigEndianChecksums(t *testing.T) {
	const ps = 4096
	s := newSynth(t, ps, wal.CaptureOptions{})
	defer s.close()
	s.w.BigEndian = true
	s.w.Header()
	s.w.Commit(2, []uint32{2, 1}, [][]byte{pg(ps, 2, 1), pg(ps, 1, 1)})
	s.conn.CommitPhaseTwo()
	s.noErr()
	s.expect("1:2=1,1=1/2")
	// And reconciliation reads big-endian WALs.
	s.w.Commit(3, []uint32{3}, [][]byte{pg(ps, 3, 2)})
	s.close()
	s.open(wal.CaptureOptions{})
	s.expect("1:2=1,1=1/2 2:3=2/3")
}

func TestCaptureGarbageHeader(t *testing.T) {
	s := newSynth(t, 512, wal.CaptureOptions{})
	defer s.close()
	h := s.w.HeaderBytes()
	h[25] ^= 1
	s.file.Write(h, 0)
	err := s.conn.Write(h, 0)
	if !errors.Is(err, wal.ErrBadWAL) || !strings.Contains(err.Error(), s.file.Path) {
		t.Fatalf("bad header checksum: %v", err)
	}
	s.expect("")
}

func TestCaptureMemoryBoundSpills(t *testing.T) {
	if wal.ReadBackForced() {
		t.Skip("tests the in-memory frame store (its spill file)")
	}
	const ps = 4096
	s := newSynth(t, ps, wal.CaptureOptions{MemoryBytes: 64 << 10})
	defer s.close()
	s.w.Header()
	var want []string
	for p := uint32(1); p <= 100; p++ {
		c := uint32(0)
		if p == 100 {
			c = 100
		}
		s.w.Append(p, c, pg(ps, p, byte(p)))
		want = append(want, fmt.Sprintf("%d=%d", p, byte(p)))
	}
	s.conn.CommitPhaseTwo()
	s.noErr()
	s.expect("1:" + strings.Join(want, ",") + "/100")
	if st := s.c.Stats(); st.Spilled < 80 {
		t.Fatalf("spilled %d frames", st.Spilled)
	}
}

// With coalescing, a WAL sync appends the group held in memory before the
// sync runs and fsyncs the spool beside it (one wait for the disk, not
// two), but the record is confirmed only by a later persist (here a
// checkpoint) after a WAL sync that succeeded: a failed sync leaves it
// synced ahead of the WAL and unconfirmed, which reconciliation allows.
func TestCaptureSyncAppendsGroupFirst(t *testing.T) {
	const ps = heldGroupPS
	s := newHeldGroup(t)
	s.w.Commit(3, []uint32{3}, [][]byte{pg(ps, 3, 1)})
	s.conn.CommitPhaseTwo()
	s.noErr()
	if st := s.sp.Status(); st.LastTxid != 0 {
		t.Fatalf("the group was appended before any sync: %+v", st)
	}
	var during wal.SpoolStatus
	err := s.conn.Sync(func() error {
		// The spool's fsync runs while the WAL's does: wait for it.
		deadline := time.Now().Add(10 * time.Second)
		for during = s.sp.Status(); during.SyncedTxid < 1 && time.Now().Before(deadline); during = s.sp.Status() {
			time.Sleep(time.Millisecond)
		}
		return errors.New("EIO")
	})
	if err == nil {
		t.Fatal("sync error not returned")
	}
	if during.LastTxid != 1 || during.SyncedTxid != 1 || during.ConfirmedTxid != 0 {
		t.Fatalf("during the WAL sync: %+v; want the group (txid 1) appended and synced beside it, not confirmed", during)
	}
	if st := s.sp.Status(); st.ConfirmedTxid != 0 {
		t.Fatalf("confirmed after a failed WAL sync: %+v", st)
	}
	// A second WAL sync, during which another connection commits: its
	// transaction, final during the sync, is appended and fsynced after
	// it (the fsync beside the sync ran before it existed).
	err = s.conn.Sync(func() error {
		s.writer = s.conn2
		s.w.Commit(4, []uint32{4}, [][]byte{pg(ps, 4, 1)})
		s.conn2.CommitPhaseTwo()
		s.writer = s.conn
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	s.noErr()
	if st := s.sp.Status(); st.LastTxid != 2 || st.SyncedTxid != 2 {
		t.Fatalf("after the WAL sync: %+v; want txid 2 (final during the sync) appended and synced", st)
	}
	if err := s.conn.CheckpointStart(); err != nil {
		t.Fatal(err)
	}
	s.conn.CheckpointDone()
	if st := s.sp.Status(); st.ConfirmedTxid != 2 {
		t.Fatalf("not confirmed at checkpoint start: %+v", st)
	}
	s.expect("1:1=1,2=1,3=1/3 2:4=1/4")
}
