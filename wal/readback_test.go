package wal_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/bopstore/bop/internal/walgen"
	"github.com/bopstore/bop/wal"
)

// Read-back (CaptureOptions.ReadBack): capture holds no page and reads
// each back from the WAL when it spools it. These tests cover what could
// take the frames away first, and a WAL changed under capture. The rest
// of the package's tests run in this mode too with BOP_TEST_READBACK=1
// (scripts/test.sh), and FuzzCapture switches it on for half its inputs.

const rbPS = 512

func newReadBack(t *testing.T) *synth {
	t.Helper()
	s := newSynth(t, rbPS, wal.CaptureOptions{Coalesce: 1 << 20, ReadBack: true})
	t.Cleanup(s.close)
	return s
}

// heldGroupAndProvisional leaves transaction 1 final in the coalesced
// group (not spooled) and transaction 2 provisional (its commit frame
// written, no phase two yet): both only in the WAL.
func heldGroupAndProvisional(t *testing.T, s *synth) {
	t.Helper()
	s.begin(rbPS)
	if err := s.conn.CommitPhaseTwo(); err != nil {
		t.Fatal(err)
	}
	s.w.Commit(3, []uint32{2, 3}, [][]byte{pg(rbPS, 2, 2), pg(rbPS, 3, 2)})
	s.noErr()
	if got := s.records(); got != "" {
		t.Fatalf("spooled already: %s", got)
	}
}

// The last WAL handle closes (SQLite may delete the file next): the group
// is appended and the provisional transaction copied into memory, so the
// deletion's generation end spools it from there.
func TestReadBackMaterializesAtLastDetach(t *testing.T) {
	s := newReadBack(t)
	heldGroupAndProvisional(t, s)
	s.conn2.DetachWAL() // another handle remains: nothing happens
	if st := s.c.Stats(); st.Materialized != 0 {
		t.Fatalf("materialized with a handle still open: %+v", st)
	}
	s.expect("")
	s.conn.DetachWAL()
	if st := s.c.Stats(); st.Materialized != 1 {
		t.Fatalf("stats after the last detach: %+v", st)
	}
	s.expect("1:1=1,2=1/2")
	s.file.Truncate(0) // deleted
	if err := s.c.Deleted(); err != nil {
		t.Fatal(err)
	}
	s.expect("1:1=1,2=1/2 2:2=2,3=2/3")
	if err := s.c.Err(); err != nil {
		t.Fatal(err)
	}
}

// A truncation below the WAL header (a checkpoint in TRUNCATE mode): the
// VFS calls BeforeTruncate first, then truncates, then Truncate ends the
// generation, spooling what it held from memory.
func TestReadBackBeforeTruncate(t *testing.T) {
	s := newReadBack(t)
	heldGroupAndProvisional(t, s)
	if err := s.conn.BeforeTruncate(1 << 20); err != nil { // cuts nothing held
		t.Fatal(err)
	}
	if st := s.c.Stats(); st.Materialized != 0 {
		t.Fatalf("materialized for a truncation that cuts nothing: %+v", st)
	}
	if err := s.conn.BeforeTruncate(0); err != nil {
		t.Fatal(err)
	}
	s.file.Truncate(0)
	if err := s.conn.Truncate(0); err != nil {
		t.Fatal(err)
	}
	s.expect("1:1=1,2=1/2 2:2=2,3=2/3")
	if st := s.c.Stats(); st.Materialized != 1 {
		t.Fatalf("stats: %+v", st)
	}
	// The next generation reads back again.
	s.w.Restart(0x99)
	s.w.Commit(3, []uint32{1}, [][]byte{pg(rbPS, 1, 4)})
	s.noErr()
	if err := s.conn.CommitPhaseTwo(); err != nil {
		t.Fatal(err)
	}
	if err := s.c.Flush(); err != nil {
		t.Fatal(err)
	}
	s.expect("1:1=1,2=1/2 2:2=2,3=2/3 3:1=4/3")
	if st := s.c.Stats(); st.Materialized != 1 {
		t.Fatalf("stats: %+v", st)
	}
}

// Without BeforeTruncate, the frames are gone when capture needs them: it
// stops (ErrLost) rather than spool something else.
func TestReadBackLostFramesStopCapture(t *testing.T) {
	s := newReadBack(t)
	heldGroupAndProvisional(t, s)
	s.file.Truncate(0)
	err := s.conn.Truncate(0)
	if !errors.Is(err, wal.ErrLost) {
		t.Fatalf("truncation under capture: %v, want ErrLost", err)
	}
	s.expect("")
}

// A frame of a final transaction changed in the file behind capture's
// back (never by SQLite): appending the group finds it and stops capture
// with ErrLost; no record holds the other bytes.
func TestReadBackDetectsChangedFrame(t *testing.T) {
	for _, what := range []string{"page", "header"} {
		t.Run(what, func(t *testing.T) {
			s := newReadBack(t)
			s.begin(rbPS)
			if err := s.conn.CommitPhaseTwo(); err != nil {
				t.Fatal(err)
			}
			off := s.w.FrameOffset(2) + 24 + 100 // page 2's bytes
			if what == "header" {
				off = s.w.FrameOffset(2) + 17 // its checksum
			}
			s.file.Data[off] ^= 0x40
			err := s.c.Flush()
			if !errors.Is(err, wal.ErrLost) {
				t.Fatalf("flush over a changed frame: %v, want ErrLost", err)
			}
			s.expect("")
		})
	}
}

// SQLite rewrites the headers of a transaction's frames one by one
// (walRewriteChecksums); capture verifies each from the sum of its page
// it kept when the page was written whole, without reading the page. A
// page written again must count with its new bytes: written whole, the
// sum is the new page's; written in part, there is no sum and the page
// is read back.
func TestReadBackRewrittenPages(t *testing.T) {
	s := newReadBack(t)
	s.w.Header()
	// A spilling transaction: frames with zero salts (unverifiable until
	// their headers are rewritten), then the commit frame.
	for i, p := range []uint32{1, 2, 3} {
		s.w.WriteFrame(uint32(i+1), p, 0, pg(rbPS, p, 1), true)
	}
	s.w.WriteFrame(4, 4, 4, pg(rbPS, 4, 1), true)
	// Headers of frames 1 and 2 rewritten: both verify.
	s.w.RewriteHeaders(1, 1, func(i uint32) (uint32, uint32, []byte) { return i, 0, pg(rbPS, i, 1) })
	// Page 2 written again in part, page 3 whole, in place.
	s.writeAt(s.w.FrameOffset(2)+24+100, []byte{7, 7, 7})
	p2 := pg(rbPS, 2, 1)
	copy(p2[100:], []byte{7, 7, 7})
	s.writeAt(s.w.FrameOffset(3)+24, pg(rbPS, 3, 7))
	s.w.RewriteHeaders(2, 4, func(i uint32) (uint32, uint32, []byte) {
		switch i {
		case 2:
			return 2, 0, p2
		case 3:
			return 3, 0, pg(rbPS, 3, 7)
		}
		return 4, 4, pg(rbPS, 4, 1)
	})
	s.noErr()
	if err := s.conn.CommitPhaseTwo(); err != nil {
		t.Fatal(err)
	}
	if err := s.c.Flush(); err != nil {
		t.Fatal(err)
	}
	s.expect("1:1=1,2=1,3=7,4=1/4")
	st := s.sp.Status()
	for rec, err := range s.sp.Records(st.FirstTxid, st.LastTxid) {
		if err != nil {
			t.Fatal(err)
		}
		for p, err := range rec.Pages() {
			if err != nil {
				t.Fatal(err)
			}
			if p.Pgno == 2 && p.Data[100] != 7 {
				t.Fatalf("page 2 lost its partial rewrite")
			}
		}
	}
}

// writeAt writes p at off of the WAL (the file first, as SQLite through
// the VFS).
func (s *synth) writeAt(off int64, p []byte) {
	s.t.Helper()
	s.file.Write(p, off)
	if err := s.writer.Write(p, off); err != nil {
		s.t.Fatal(err)
	}
}

// closableWAL is a WAL handle that can fail a sync and be closed.
type closableWAL struct {
	*walgen.File
	failSync, closed bool
}

func (f *closableWAL) Sync() error {
	if f.failSync {
		f.failSync = false
		return errors.New("EIO")
	}
	return f.File.Sync()
}

func (f *closableWAL) ReadAt(p []byte, off int64) (int, error) {
	if f.closed {
		return 0, os.ErrClosed
	}
	return f.File.ReadAt(p, off)
}

// A handle whose attach failed (the VFS then closes it) is never read
// back from, nor counted as the one open at the last detach (found by
// review: capture stopped on a legal WAL).
func TestReadBackFailedAttach(t *testing.T) {
	dir := t.TempDir()
	file := &walgen.File{Path: filepath.Join(dir, "db-wal")}
	sp, err := wal.OpenSpool(filepath.Join(dir, "spool"), wal.SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	c, _ := wal.NewCapture(sp, wal.CaptureOptions{Coalesce: 1 << 20, ReadBack: true})
	defer c.Close()
	a, b := c.NewConn(nopMain{}), c.NewConn(nopMain{})
	ha := &closableWAL{File: file, failSync: true}
	if err := a.AttachWAL(ha); err == nil {
		t.Fatal("attach with a failing sync succeeded")
	}
	ha.closed = true
	if err := b.AttachWAL(file); err != nil {
		t.Fatal(err)
	}
	w := walgen.New(rbPS, 1, 2, func(p []byte, off int64) error { file.Write(p, off); return b.Write(p, off) })
	w.Header()
	if err := w.Commit(2, []uint32{1, 2}, [][]byte{pg(rbPS, 1, 1), pg(rbPS, 2, 1)}); err != nil {
		t.Fatal(err)
	}
	if err := b.CommitPhaseTwo(); err != nil {
		t.Fatal(err)
	}
	w.Commit(3, []uint32{3}, [][]byte{pg(rbPS, 3, 2)}) // provisional
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	b.DetachWAL()
	if st := c.Stats(); st.Materialized != 1 {
		t.Fatalf("the real last handle's detach did not materialize: %+v", st)
	}
	if err := c.Err(); err != nil {
		t.Fatal(err)
	}
}

// Materializing checks the pages it copies as appending does: a frame
// of the provisional transaction changed in the file stops capture, and
// the transaction is not spooled with other bytes.
func TestReadBackMaterializeVerifies(t *testing.T) {
	s := newReadBack(t)
	heldGroupAndProvisional(t, s)
	s.file.Data[s.w.FrameOffset(4)+24+100] ^= 0x40 // transaction 2's page 3
	s.conn2.DetachWAL()
	s.conn.DetachWAL()
	if err := s.c.Err(); !errors.Is(err, wal.ErrLost) {
		t.Fatalf("capture after materializing a changed frame: %v, want ErrLost", err)
	}
	s.file.Truncate(0)
	if err := s.c.Deleted(); err == nil {
		t.Fatal("the deletion's generation end succeeded on a stopped capture")
	}
	s.expect("1:1=1,2=1/2")
}

// A group of many transactions rewriting the same page holds about one
// reference per page, not one per version.
func TestReadBackGroupRefsBounded(t *testing.T) {
	s := newReadBack(t)
	s.begin(rbPS)
	for v := 2; v < 3000; v++ {
		s.w.Commit(2, []uint32{2}, [][]byte{pg(rbPS, 2, byte(v))})
		if err := s.conn.CommitPhaseTwo(); err != nil {
			t.Fatal(err)
		}
	}
	s.noErr()
	if n := s.c.GroupRefs(); n > 2*2+1024+1 {
		t.Fatalf("the group holds %d references for 2 pages", n)
	}
	if err := s.c.Flush(); err != nil {
		t.Fatal(err)
	}
	s.expect(fmt.Sprintf("1:1=1,2=%d/2", 2999%256))
}
