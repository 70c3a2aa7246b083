package wal_test

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"

	"github.com/bopstore/bop/internal/walgen"
	"github.com/bopstore/bop/wal"
)

// adoptModel builds a main file and a WAL (walgen: an independent writer
// of the format) and keeps, beside them, what SQLite reads from the pair:
// the newest committed version of each page over the main file, at the
// size of the last commit.
type adoptModel struct {
	t               *testing.T
	ps              int
	main            []byte
	file            *walgen.File
	w               *walgen.Writer
	pending         map[uint32][]byte // the WAL's transaction being written
	wal             map[uint32][]byte // committed in the WAL's current generation
	dbPages         uint32            // of the last commit (0: none)
	lastCommitFrame uint32
}

func newAdoptModel(t *testing.T, ps int, mainPages uint32) *adoptModel {
	m := &adoptModel{t: t, ps: ps, file: &walgen.File{Path: filepath.Join(t.TempDir(), "db-wal")}}
	for p := uint32(1); p <= mainPages; p++ {
		m.main = append(m.main, pg(ps, p, 0)...)
	}
	m.w = walgen.New(ps, 0x1111, 0x2222, m.file.Write)
	m.w.Header()
	m.wal, m.pending = map[uint32][]byte{}, map[uint32][]byte{}
	return m
}

// commit appends a committed transaction to the WAL (with the frames of
// uncommitted before it: a commit frame commits every frame before it).
func (m *adoptModel) commit(dbPages uint32, pgnos []uint32, v byte) {
	for p, b := range m.pending {
		m.wal[p] = b
	}
	clear(m.pending)
	var pages [][]byte
	for _, p := range pgnos {
		b := pg(m.ps, p, v)
		pages = append(pages, b)
		m.wal[p] = b
	}
	if err := m.w.Commit(dbPages, pgnos, pages); err != nil {
		m.t.Fatal(err)
	}
	m.dbPages, m.lastCommitFrame = dbPages, m.w.Frames
}

// uncommitted appends frames of a transaction that never commits.
func (m *adoptModel) uncommitted(pgnos []uint32, v byte) {
	for _, p := range pgnos {
		b := pg(m.ps, p, v)
		if err := m.w.Append(p, 0, b); err != nil {
			m.t.Fatal(err)
		}
		m.pending[p] = b
	}
}

// restart starts a new WAL generation over the old one (a checkpoint
// copied everything into the main file first): old frames past the new
// ones stay in the file with stale salts.
func (m *adoptModel) restart() {
	m.backfill(nil)
	m.wal, m.dbPages, m.lastCommitFrame = map[uint32][]byte{}, 0, 0
	clear(m.pending)
	if err := m.w.Restart(0x3333); err != nil {
		m.t.Fatal(err)
	}
}

// backfill copies the newest committed version of the given pages (all
// if nil) into the main file, as a checkpoint does (partially if
// interrupted), sizing it as a complete checkpoint does.
func (m *adoptModel) backfill(pgnos []uint32) {
	all := pgnos == nil
	if all {
		for p := range m.wal {
			pgnos = append(pgnos, p)
		}
	}
	for _, p := range pgnos {
		b, ok := m.wal[p]
		if !ok || p > m.dbPages {
			continue
		}
		off := int(p-1) * m.ps
		if len(m.main) < off+m.ps {
			m.main = append(m.main, make([]byte, off+m.ps-len(m.main))...)
		}
		copy(m.main[off:], b)
	}
	if all && m.dbPages > 0 {
		m.main = m.main[:min(len(m.main), int(m.dbPages)*m.ps)]
	}
}

// want is the database SQLite reads.
func (m *adoptModel) want() []byte {
	n := uint32(len(m.main) / m.ps)
	if m.dbPages > 0 {
		n = m.dbPages
	}
	out := make([]byte, int(n)*m.ps)
	copy(out, m.main)
	for p, b := range m.wal {
		if p <= n {
			copy(out[int(p-1)*m.ps:], b)
		}
	}
	return out
}

// adopt runs AppendImage on a new spool and returns the image's header
// and bytes.
func (m *adoptModel) adopt(dir string) (wal.RecordHeader, []byte, error) {
	sp, err := wal.OpenSpool(filepath.Join(dir, "spool"), wal.SpoolOptions{})
	if err != nil {
		m.t.Fatal(err)
	}
	defer sp.Close()
	h, err := wal.AppendImage(sp, &memMain{b: m.main}, uint32(m.ps), m.file)
	if err != nil {
		return h, nil, err
	}
	if st := sp.Status(); st.LastTxid != h.Txid || st.ConfirmedTxid != h.Txid || st.SyncedTxid != h.Txid {
		m.t.Fatalf("image txid %d, spool %+v: not durable and confirmed", h.Txid, st)
	}
	var img []byte
	next := uint32(1)
	for rec, err := range sp.Records(h.Txid, h.Txid) {
		if err != nil {
			m.t.Fatal(err)
		}
		if rec.RecordHeader != h {
			m.t.Fatalf("spooled header %+v, AppendImage returned %+v", rec.RecordHeader, h)
		}
		for p, err := range rec.Pages() {
			if err != nil {
				m.t.Fatal(err)
			}
			if p.Pgno != next {
				m.t.Fatalf("image page %d where %d was due: an image is pages 1..N in order", p.Pgno, next)
			}
			next++
			img = append(img, p.Data...)
		}
	}
	return h, img, nil
}

func TestAppendImage(t *testing.T) {
	const ps = 512
	for _, tc := range []struct {
		name  string
		build func(m *adoptModel)
		// frames: the image names the last commit frame (else no WAL
		// identity).
		frames bool
	}{
		{"no WAL frames", func(m *adoptModel) {}, false},
		{"committed frames", func(m *adoptModel) {
			m.commit(6, []uint32{2, 3}, 1)
			m.commit(8, []uint32{3, 7, 8}, 2)
		}, true},
		{"fully backfilled, not restarted", func(m *adoptModel) {
			m.commit(6, []uint32{2, 3}, 1)
			m.commit(8, []uint32{3, 7, 8}, 2)
			m.backfill(nil)
		}, true},
		{"partial backfill", func(m *adoptModel) {
			m.commit(6, []uint32{2, 3}, 1)
			m.backfill(nil) // a checkpoint a reader held back
			m.commit(8, []uint32{3, 7, 8}, 2)
		}, true},
		{"interrupted checkpoint", func(m *adoptModel) {
			m.commit(6, []uint32{1, 2, 3, 5}, 1)
			m.commit(6, []uint32{3, 5}, 2)
			m.backfill([]uint32{1, 3}) // pages copied in page order, then the crash
		}, true},
		{"shrinking transaction", func(m *adoptModel) {
			m.commit(8, []uint32{2, 7, 8}, 1)
			m.commit(4, []uint32{1, 4}, 2) // pages 5.. are cut off
		}, true},
		{"growth past the main file", func(m *adoptModel) {
			m.commit(9, []uint32{1, 8}, 1) // page 7 and 9: in neither file, read as zeros
		}, true},
		{"uncommitted trailing frames", func(m *adoptModel) {
			m.commit(6, []uint32{2}, 1)
			m.uncommitted([]uint32{2, 3, 9}, 9)
		}, true},
		{"only uncommitted frames", func(m *adoptModel) {
			m.uncommitted([]uint32{1, 2}, 9)
		}, false},
		{"stale frames of an older generation", func(m *adoptModel) {
			for i := range 6 {
				m.commit(6, []uint32{1, 2, 3, 4}, byte(10+i))
			}
			m.restart()
			m.commit(7, []uint32{2, 7}, 3)
			if frames, _ := m.file.Size(); frames <= m.w.FrameOffset(m.w.Frames+1) {
				t.Fatal("no stale frames after the new generation's")
			}
		}, true},
		{"restarted, nothing committed since", func(m *adoptModel) {
			m.commit(6, []uint32{1, 2, 3, 4}, 1)
			m.restart()
		}, false},
		{"sector padding", func(m *adoptModel) {
			m.commit(6, []uint32{2}, 1)
			if _, err := m.w.Pad(4096, 2, 6, pg(ps, 2, 1)); err != nil {
				t.Fatal(err)
			}
			m.lastCommitFrame = m.w.Frames
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newAdoptModel(t, ps, 6)
			tc.build(m)
			mainBefore := bytes.Clone(m.main)
			walBefore := bytes.Clone(m.file.Data)
			h, img, err := m.adopt(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			want := m.want()
			if h.Kind != wal.KindImage || h.PageSize != ps || int(h.DBPages)*ps != len(want) || h.NPages != h.DBPages {
				t.Fatalf("header %+v for a %d-page database", h, len(want)/ps)
			}
			if !bytes.Equal(img, want) {
				t.Fatalf("image differs from what SQLite reads, first at page %d", firstDiffPage(img, want, ps))
			}
			switch {
			case tc.frames && (h.WAL.Frame != m.lastCommitFrame || h.WAL.Salt1 != m.w.Salt1 || h.WAL.Salt2 != m.w.Salt2):
				t.Fatalf("identity %+v, want frame %d of generation %08x/%08x", h.WAL, m.lastCommitFrame, m.w.Salt1, m.w.Salt2)
			case !tc.frames && h.WAL != (wal.WALIdentity{}):
				t.Fatalf("identity %+v for a WAL without committed frames", h.WAL)
			}
			if !bytes.Equal(m.main, mainBefore) || !bytes.Equal(m.file.Data, walBefore) {
				t.Fatal("adoption modified the database or its WAL")
			}
			if tc.frames && m.file.Syncs == 0 {
				t.Fatal("the WAL was not fsynced before the image was confirmed")
			}
		})
	}
}

func TestAppendImageRefusals(t *testing.T) {
	const ps = 512
	t.Run("page size", func(t *testing.T) {
		m := newAdoptModel(t, 2*ps, 2) // a WAL of 1024-byte pages
		m.commit(2, []uint32{1}, 1)
		sp, err := wal.OpenSpool(filepath.Join(t.TempDir(), "spool"), wal.SpoolOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer sp.Close()
		_, err = wal.AppendImage(sp, &memMain{b: m.main}, ps, m.file) // for a file of 512-byte pages
		if !errors.Is(err, wal.ErrBadWAL) {
			t.Fatalf("a WAL of another page size: %v", err)
		}
		if st := sp.Status(); st.LastTxid != 0 {
			t.Fatalf("spooled %d records", st.LastTxid)
		}
	})
	t.Run("bad header", func(t *testing.T) {
		m := newAdoptModel(t, ps, 4)
		m.commit(4, []uint32{1}, 1)
		m.file.Data[25] ^= 1
		if _, _, err := m.adopt(t.TempDir()); !errors.Is(err, wal.ErrBadWAL) {
			t.Fatalf("a WAL with a bad header checksum: %v", err)
		}
	})
	t.Run("partial page", func(t *testing.T) {
		m := newAdoptModel(t, ps, 4)
		m.main = m.main[:len(m.main)-1]
		if _, _, err := m.adopt(t.TempDir()); err == nil {
			t.Fatal("a main file of a partial page was adopted")
		}
	})
}

// After adoption capture resumes after the image's commit frame: nothing
// of the WAL is captured again (now or at a later open), SQLite's next
// transactions in the same generation, and after a restart, are.
func TestAppendImageThenCapture(t *testing.T) {
	const ps = 512
	dir := t.TempDir()
	f := &walgen.File{Path: filepath.Join(dir, "db-wal")}
	var s *synth
	w := walgen.New(ps, 0x51, 0x52, func(p []byte, off int64) error {
		f.Write(p, off)
		if s != nil {
			if err := s.writer.Write(p, off); err != nil {
				t.Error(err)
			}
		}
		return nil
	})
	main := &memMain{}
	for p := uint32(1); p <= 3; p++ {
		main.b = append(main.b, pg(ps, p, 0)...)
	}
	w.Header()
	w.Commit(3, []uint32{2}, [][]byte{pg(ps, 2, 1)})
	w.Commit(4, []uint32{4}, [][]byte{pg(ps, 4, 2)})
	w.Append(3, 0, pg(ps, 3, 9)) // unfinished: SQLite overwrites it
	sp, err := wal.OpenSpool(filepath.Join(dir, "spool"), wal.SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wal.AppendImage(sp, main, ps, f); err != nil {
		t.Fatal(err)
	}
	sp.Close()

	s = &synth{t: t, dir: dir, file: f}
	s.open(wal.CaptureOptions{})
	const image = "1:1=0,2=1,3=0,4=2/4"
	s.expect(image)
	if st := s.c.Stats(); st.Reconciled != 0 {
		t.Fatalf("reconciliation captured %d transactions the image holds", st.Reconciled)
	}
	// The image starts the generation it adopted, for the missing-WAL
	// check (CheckWALGone): its records begin after txid 1.
	if got := s.sp.WALStart(); got != 2 {
		t.Fatalf("walStart %d after adopting an image of txid 1, want 2", got)
	}
	// SQLite's recovery stops at frame 2 too: its next transaction
	// overwrites frame 3.
	w.WriteFrame(3, 3, 4, pg(ps, 3, 3), false)
	s.noErr()
	s.conn.CommitPhaseTwo()
	s.expect(image + " 2:3=3/4")
	s.close()
	s.open(wal.CaptureOptions{})
	s.expect(image + " 2:3=3/4")
	w.Restart(0x77)
	w.Commit(4, []uint32{1}, [][]byte{pg(ps, 1, 4)})
	s.noErr()
	s.conn.CommitPhaseTwo()
	s.expect(image + " 2:3=3/4 3:1=4/4")
	// A new generation's records begin after every earlier one's.
	if got := s.sp.WALStart(); got != 3 {
		t.Fatalf("walStart %d after a restart that followed txid 2, want 3", got)
	}
	s.close()
	s.open(wal.CaptureOptions{})
	defer s.close()
	s.expect(image + " 2:3=3/4 3:1=4/4")
	if got := s.sp.WALStart(); got != 3 {
		t.Fatalf("walStart %d after a reopen in the same generation, want 3 (kept)", got)
	}
}

// CaptureOptions.Adopt replays an unknown generation's frames only into
// an empty spool: on top of an image taken from the main file they could
// give states that never existed (a checkpoint may have copied some of
// them into it), so that is refused.
func TestReconcileAdoptNeedsEmptySpool(t *testing.T) {
	const ps = 512
	dir := t.TempDir()
	f, w := foreignWAL(ps, filepath.Join(dir, "db-wal"))
	w.Header()
	w.Commit(2, []uint32{1, 2}, [][]byte{pg(ps, 1, 1), pg(ps, 2, 1)})
	sp, err := wal.OpenSpool(filepath.Join(dir, "spool"), wal.SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	a, err := sp.Begin(wal.RecordHeader{Kind: wal.KindImage, PageSize: ps, DBPages: 2, NPages: 2})
	if err != nil {
		t.Fatal(err)
	}
	a.Add(1, pg(ps, 1, 0))
	a.Add(2, pg(ps, 2, 0))
	if _, err := a.Commit(); err != nil {
		t.Fatal(err)
	}
	c, err := wal.NewCapture(sp, wal.CaptureOptions{Adopt: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Reconcile(f); !errors.Is(err, wal.ErrUnknownWAL) {
		t.Fatalf("WAL frames over a file image: %v", err)
	}
	if st := sp.Status(); st.LastTxid != 1 {
		t.Fatalf("spooled %d records", st.LastTxid)
	}
}

// An image record may carry a WAL identity (older spools hold images
// without one); a direct record may not, a WAL record must.
func TestRecordIdentityByKind(t *testing.T) {
	const ps = 512
	dir := filepath.Join(t.TempDir(), "spool")
	sp, err := wal.OpenSpool(dir, wal.SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id := wal.WALIdentity{Salt1: 1, Salt2: 2, Frame: 3, Cksum: [2]uint32{4, 5}}
	var want []wal.WALIdentity
	for _, tc := range []struct {
		kind wal.Kind
		id   wal.WALIdentity
		ok   bool
	}{
		{wal.KindImage, id, true},
		{wal.KindImage, wal.WALIdentity{}, true},
		{wal.KindDirect, id, false},
		{wal.KindDirect, wal.WALIdentity{}, true},
		{wal.KindWAL, wal.WALIdentity{}, false},
	} {
		a, err := sp.Begin(wal.RecordHeader{Kind: tc.kind, PageSize: ps, DBPages: 1, NPages: 1, WAL: tc.id})
		if (err == nil) != tc.ok {
			t.Fatalf("%s record with identity %+v: %v", tc.kind, tc.id, err)
		}
		if err != nil {
			continue
		}
		a.Add(1, pg(ps, 1, 1))
		if _, err := a.Commit(); err != nil {
			t.Fatal(err)
		}
		want = append(want, tc.id)
	}
	if err := sp.Sync(); err != nil {
		t.Fatal(err)
	}
	sp.Close()
	// Reopening decodes them all again.
	sp, err = wal.OpenSpool(dir, wal.SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if st := sp.Status(); st.LastTxid != uint64(len(want)) {
		t.Fatalf("reopened spool holds %d records, want %d", st.LastTxid, len(want))
	}
	for i, id := range want {
		if h, err := sp.Header(uint64(i + 1)); err != nil || h.WAL != id {
			t.Fatalf("record %d read back as %+v, %v; want identity %+v", i+1, h, err, id)
		}
	}
}

// FuzzAppendImage drives the model with operations read from the input
// (transactions, uncommitted frames, partial checkpoints, restarts) and
// checks that the image is what SQLite reads; a final byte flip in the WAL
// (damage the model does not predict) must give an error or a well-formed
// image, never a panic.
func FuzzAppendImage(f *testing.F) {
	f.Add([]byte{3, 0, 5, 2, 1, 2, 0, 7, 3, 4, 5, 6})
	f.Add([]byte{6, 0, 9, 3, 1, 2, 3, 3, 0x0f, 2, 0, 4, 1, 8, 1, 1, 2, 0, 0})
	f.Add([]byte{1, 2, 0, 1, 5, 0, 3, 2, 7, 9, 4, 0xff, 0xff, 0x40})
	f.Fuzz(func(t *testing.T, in []byte) {
		const ps = 512
		if len(in) == 0 || len(in) > 200 {
			return
		}
		next := func() byte {
			if len(in) == 0 {
				return 0
			}
			b := in[0]
			in = in[1:]
			return b
		}
		m := newAdoptModel(t, ps, uint32(1+next()%8))
		v := byte(1)
		for ops := 0; len(in) > 1 && ops < 30; ops++ {
			switch next() % 5 {
			case 0, 1:
				db := uint32(1 + next()%12)
				var pgnos []uint32
				for range 1 + next()%3 {
					pgnos = append(pgnos, uint32(1+next()%12))
				}
				m.commit(db, pgnos, v)
			case 2:
				m.uncommitted([]uint32{uint32(1 + next()%12)}, v)
			case 3:
				var pgnos []uint32
				mask := next()
				for p := uint32(1); p <= 8; p++ {
					if mask&(1<<(p-1)) != 0 {
						pgnos = append(pgnos, p)
					}
				}
				m.backfill(pgnos)
			case 4:
				m.restart()
			}
			v++
		}
		flip := len(in) == 1 && in[0] != 0 && len(m.file.Data) > 0
		if flip {
			m.file.Data[int(in[0])*97%len(m.file.Data)] ^= 0x20
		}
		h, img, err := m.adopt(t.TempDir())
		if err != nil {
			if !flip {
				t.Fatal(err)
			}
			return
		}
		if h.NPages != h.DBPages || len(img) != int(h.DBPages)*ps {
			t.Fatalf("image %+v of %d bytes", h, len(img))
		}
		if flip {
			return
		}
		if want := m.want(); !bytes.Equal(img, want) {
			t.Fatalf("image of %d pages differs from what SQLite reads (%d pages), first at page %d", len(img)/ps, len(want)/ps, firstDiffPage(img, want, ps))
		}
		if m.lastCommitFrame != h.WAL.Frame {
			t.Fatalf("identity frame %d, last commit frame %d", h.WAL.Frame, m.lastCommitFrame)
		}
	})
}
