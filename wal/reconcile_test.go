package wal_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bopstore/bop/internal/walgen"
	"github.com/bopstore/bop/wal"
)

// foreignWAL writes a WAL without capture (another program's).
func foreignWAL(ps int, path string) (*walgen.File, *walgen.Writer) {
	f := &walgen.File{Path: path}
	w := walgen.New(ps, 0x77, 0x99, f.Write)
	return f, w
}

func TestReconcileUnknownGeneration(t *testing.T) {
	const ps = 512
	dir := t.TempDir()
	f, w := foreignWAL(ps, filepath.Join(dir, "db-wal"))
	w.Header()
	w.Commit(2, []uint32{1, 2}, [][]byte{pg(ps, 1, 1), pg(ps, 2, 1)})
	w.Commit(3, []uint32{3}, [][]byte{pg(ps, 3, 2)})

	sp, err := wal.OpenSpool(filepath.Join(dir, "spool"), wal.SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := wal.NewCapture(sp, wal.CaptureOptions{})
	err = c.NewConn(nopMain{}).AttachWAL(f)
	if !errors.Is(err, wal.ErrUnknownWAL) || !strings.Contains(err.Error(), f.Path) {
		t.Fatalf("unknown generation: %v", err)
	}
	if st := sp.Status(); st.LastTxid != 0 {
		t.Fatalf("spooled from an unknown WAL: %+v", st)
	}
	c.Close()
	sp.Close()

	// Adoption: every committed transaction captured, once.
	s := &synth{t: t, dir: dir, file: f}
	s.open(wal.CaptureOptions{Adopt: true})
	s.expect("1:1=1,2=1/2 2:3=2/3")
	s.close()
	s.open(wal.CaptureOptions{Adopt: true})
	s.expect("1:1=1,2=1/2 2:3=2/3")
	s.close()
}

func TestReconcileCapturesWhatSQLiteKept(t *testing.T) {
	const ps = 512
	s := newSynth(t, ps, wal.CaptureOptions{})
	s.begin(ps)
	s.conn.CommitPhaseTwo()
	// Committed in the WAL, but the process died before phase two.
	s.w.Commit(2, []uint32{2}, [][]byte{pg(ps, 2, 2)})
	s.w.Commit(3, []uint32{3}, [][]byte{pg(ps, 3, 3)})
	s.noErr()
	s.expect("1:1=1,2=1/2 2:2=2/2")
	// And an unfinished transaction after them, written as the process
	// died (capture never saw it).
	s.writer = s.conn2
	s.close()
	s.w.Append(1, 0, pg(ps, 1, 4))

	s.werr = nil
	s.open(wal.CaptureOptions{})
	s.expect("1:1=1,2=1/2 2:2=2/2 3:3=3/3")
	if st := s.c.Stats(); st.Reconciled != 1 {
		t.Fatalf("stats %+v", st)
	}
	if st := s.sp.Status(); st.ConfirmedTxid != 3 {
		t.Fatalf("not confirmed after reconcile: %+v", st)
	}
	// Capture continues where SQLite's recovery puts the end of the WAL
	// (after frame 4, the last commit; frame 5 is overwritten).
	s.w.WriteFrame(5, 4, 4, pg(ps, 4, 5), false)
	s.conn.CommitPhaseTwo()
	s.noErr()
	s.expect("1:1=1,2=1/2 2:2=2/2 3:3=3/3 4:4=5/4")
	s.close()
	// Reopening again captures nothing twice.
	s.open(wal.CaptureOptions{})
	s.expect("1:1=1,2=1/2 2:2=2/2 3:3=3/3 4:4=5/4")
	s.close()
}

// After a power loss the spool may hold transactions whose WAL frames did
// not survive: those above the confirmed watermark are verified against
// the WAL and dropped when it no longer holds them.
func TestReconcileDropsWhatTheWALLost(t *testing.T) {
	const ps = 512
	s := newSynth(t, ps, wal.CaptureOptions{})
	s.w.Header()
	s.w.Commit(1, []uint32{1}, [][]byte{pg(ps, 1, 1)})
	s.conn.CommitPhaseTwo()
	if _, err := s.c.SyncForPublish(); err != nil {
		t.Fatal(err)
	}
	keep := len(s.file.Data)
	for v := byte(2); v <= 4; v++ {
		s.w.Commit(1, []uint32{1}, [][]byte{pg(ps, 1, v)})
		s.conn.CommitPhaseTwo()
	}
	s.noErr()
	s.expect("1:1=1/1 2:1=2/1 3:1=3/1 4:1=4/1")
	if st := s.sp.Status(); st.ConfirmedTxid != 1 {
		t.Fatalf("confirmed %d", st.ConfirmedTxid)
	}
	s.close()
	// The WAL lost everything after txid 1; a later frame survived as
	// garbage (the OS wrote a later block, not the ones before it).
	tail := append([]byte(nil), s.file.Data[keep+2*(24+ps):]...)
	s.file.Truncate(int64(keep))
	s.file.Write(make([]byte, 2*(24+ps)), int64(keep))
	s.file.Write(tail, int64(keep+2*(24+ps)))
	s.open(wal.CaptureOptions{})
	s.expect("1:1=1/1")
	if st := s.c.Stats(); st.ReconDropped != 3 {
		t.Fatalf("stats %+v", st)
	}
	// SQLite writes the next transaction after frame 1; capture agrees.
	s.w.WriteFrame(2, 1, 1, pg(ps, 1, 9), false)
	s.conn.CommitPhaseTwo()
	s.noErr()
	s.expect("1:1=1/1 2:1=9/1")
	s.close()
}

func TestReconcileLostConfirmedFrame(t *testing.T) {
	const ps = 512
	s := newSynth(t, ps, wal.CaptureOptions{})
	s.w.Header()
	s.w.Commit(1, []uint32{1}, [][]byte{pg(ps, 1, 1)})
	s.conn.CommitPhaseTwo()
	s.c.SyncForPublish()
	s.close()
	s.file.Truncate(32) // the same generation, without its committed frame
	sp, _ := wal.OpenSpool(filepath.Join(s.dir, "spool"), wal.SpoolOptions{})
	defer sp.Close()
	c, _ := wal.NewCapture(sp, wal.CaptureOptions{})
	defer c.Close()
	err := c.NewConn(nopMain{}).AttachWAL(s.file)
	if !errors.Is(err, wal.ErrLost) {
		t.Fatalf("WAL lost a confirmed frame: %v", err)
	}
}

func TestReconcileBadWAL(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		data func(w *walgen.Writer) []byte
	}{
		{"garbage", func(*walgen.Writer) []byte { return []byte(strings.Repeat("not a WAL file at all! ", 40)) }},
		{"header checksum", func(w *walgen.Writer) []byte { h := w.HeaderBytes(); h[30] ^= 1; return h }},
		{"page size", func(w *walgen.Writer) []byte { w.PageSize = 1000; return w.HeaderBytes() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, w := foreignWAL(512, filepath.Join(dir, tc.name+"-wal"))
			f.Write(tc.data(w), 0)
			sp, _ := wal.OpenSpool(filepath.Join(dir, tc.name), wal.SpoolOptions{})
			defer sp.Close()
			c, _ := wal.NewCapture(sp, wal.CaptureOptions{Adopt: true})
			defer c.Close()
			err := c.Reconcile(f)
			if !errors.Is(err, wal.ErrBadWAL) || !strings.Contains(err.Error(), f.Path) {
				t.Fatalf("%v", err)
			}
			if st := sp.Status(); st.LastTxid != 0 {
				t.Fatal("spooled from a bad WAL")
			}
		})
	}
	// A zero header (never written) is an empty WAL, not an error.
	f := &walgen.File{Path: filepath.Join(dir, "zero-wal")}
	f.Write(make([]byte, 4096), 0)
	sp, _ := wal.OpenSpool(filepath.Join(dir, "zero"), wal.SpoolOptions{})
	defer sp.Close()
	c, _ := wal.NewCapture(sp, wal.CaptureOptions{})
	defer c.Close()
	if err := c.Reconcile(f); err != nil {
		t.Fatal(err)
	}
}

// A checksum failure in the middle of the WAL ends what SQLite's recovery
// reads: commits before it count, nothing after.
func TestReconcileStopsAtBadChecksum(t *testing.T) {
	const ps = 512
	dir := t.TempDir()
	f, w := foreignWAL(ps, filepath.Join(dir, "db-wal"))
	w.Header()
	w.Commit(1, []uint32{1}, [][]byte{pg(ps, 1, 1)})
	w.Commit(2, []uint32{2}, [][]byte{pg(ps, 2, 2)})
	w.Commit(3, []uint32{3}, [][]byte{pg(ps, 3, 3)})
	f.Data[w.FrameOffset(2)+24+100] ^= 1 // page bytes of frame 2
	s := &synth{t: t, dir: dir, file: f}
	s.open(wal.CaptureOptions{Adopt: true})
	defer s.close()
	s.expect("1:1=1/1")
}

// memMain is a main database file in memory.
type memMain struct{ b []byte }

func (m *memMain) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m.b)) {
		return 0, errors.New("EOF")
	}
	return copy(p, m.b[off:]), nil
}
func (m *memMain) Size() (int64, error) { return int64(len(m.b)), nil }

// A generation whose WAL file is kept after rollback-journal-mode
// transactions followed it: nothing of it is captured again.
func TestReconcileKeptWALAfterDirectWrites(t *testing.T) {
	const ps = 512
	s := newSynth(t, ps, wal.CaptureOptions{})
	s.begin(ps)
	s.conn.CommitPhaseTwo()
	s.w.Commit(2, []uint32{2}, [][]byte{pg(ps, 2, 2)})
	s.conn.CommitPhaseTwo()
	// Rollback-journal mode: a connection writes the main file directly.
	main := &memMain{b: make([]byte, 2*ps)}
	copy(main.b, "SQLite format 3\x00")
	main.b[16], main.b[17] = ps>>8, ps&0xff
	dc := s.c.NewConn(main)
	if err := dc.MainWrite(main.b[ps:], ps); err != nil {
		t.Fatal(err)
	}
	if err := dc.CommitPhaseTwo(); err != nil {
		t.Fatal(err)
	}
	s.noErr()
	want := "1:1=1,2=1/2 2:2=2/2 3:2=0/2"
	s.expect(want)
	s.close()
	for i := 0; i < 2; i++ {
		s.open(wal.CaptureOptions{})
		s.expect(want)
		s.close()
	}
}

// A process crash loses the group coalescing holds; reconciliation spools
// the lost transactions again as one record with the group's txid (the
// txid LastFinal reported for every one of them), holding what replaying
// them one by one gives: here page 3 is cut by a shrink (transaction 4)
// and not written again, so the record leaves it out as the live group
// does (wal.CaptureOptions.Coalesce). Without coalescing each transaction
// gets its own record (TestReconcileCapturesWhatSQLiteKept).
func TestReconcileRegroupsLostGroup(t *testing.T) {
	const ps = 512
	opts := wal.CaptureOptions{Coalesce: 1 << 20}
	const want = "1:1=4,2=5/3"
	commits := func(s *synth) {
		t.Helper()
		s.w.Header()
		for _, c := range []struct {
			dbPages uint32
			pgnos   []uint32
			v       byte
		}{
			{2, []uint32{1, 2}, 1},
			{2, []uint32{2}, 2},
			{3, []uint32{3}, 3},
			{2, []uint32{1}, 4}, // the database shrinks: page 3 is gone
			{3, []uint32{2}, 5}, // and grows again without it
		} {
			pages := make([][]byte, len(c.pgnos))
			for i, p := range c.pgnos {
				pages[i] = pg(ps, p, c.v)
			}
			s.w.Commit(c.dbPages, c.pgnos, pages)
			s.noErr()
			s.conn.CommitPhaseTwo()
		}
	}
	// Live: one group.
	live := newSynth(t, ps, opts)
	commits(live)
	if err := live.c.Flush(); err != nil {
		t.Fatal(err)
	}
	live.expect(want)
	live.close()

	s := newSynth(t, ps, opts)
	commits(s)
	if g := s.c.LastFinal(); g != 1 {
		t.Fatalf("the group's txid %d, want 1", g)
	}
	s.expect("") // all held in memory
	// Crash: the capture and what it holds are lost.
	s.sp.Close()
	s.open(opts)
	defer s.close()
	s.expect(want)
	if st := s.c.Stats(); st.Reconciled != 5 {
		t.Fatalf("reconciled %d transactions, want 5", st.Reconciled)
	}
}

// A group held in memory is reported (LastFinal) only while capture can
// still append it: once capture stops, the tip is the spool's last record,
// and nothing appends the group, also not the flush Conn.Sync runs before
// the WAL sync (failLocked: "continuing could spool something wrong").
func TestLastFinalAfterCaptureStops(t *testing.T) {
	s := newHeldGroup(t)
	if g := s.c.LastFinal(); g != 1 {
		t.Fatalf("LastFinal %d with a group held, want 1", g)
	}
	// SQLite writes over the settled frame 1: capture stops (ErrLost).
	s.w.WriteFrame(1, 1, 2, pg(heldGroupPS, 1, 9), false)
	if !errors.Is(s.c.Err(), wal.ErrLost) {
		t.Fatalf("capture error %v, want ErrLost", s.c.Err())
	}
	if g := s.c.LastFinal(); g != 0 {
		t.Fatalf("LastFinal %d after capture stopped, want 0 (nothing spooled)", g)
	}
	if err := s.conn.Sync(func() error { return nil }); err == nil {
		t.Fatal("Sync on a stopped capture returned no error")
	}
	if st := s.sp.Status(); st.LastTxid != 0 {
		t.Fatalf("capture stopped with ErrLost, yet Conn.Sync appended the held group: spool %+v", st)
	}
}
