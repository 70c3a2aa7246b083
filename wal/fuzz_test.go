package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/bopstore/bop/internal/walgen"
)

// memFS is an in-memory FS for the fuzz targets: they test parsing and
// state handling, and the fuzzer reruns inputs thousands of times while
// minimizing; real files and fsyncs would make that crawl.
type memFS struct {
	mu    sync.Mutex
	files map[string]*memFile
	order []string // paths in creation order
	// frozen fails every write: a crashed process writes nothing more
	// (what a buffered spool still held in memory is lost).
	frozen atomic.Bool
}

type memFile struct {
	mu   sync.Mutex
	data []byte
}

type memHandle struct {
	f *memFile
	m *memFS
}

func newMemFS() *memFS { return &memFS{files: map[string]*memFile{}} }

func (m *memFS) put(name string, b []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.files[filepath.Clean(name)] = &memFile{data: append([]byte(nil), b...)}
	m.order = append(m.order, filepath.Clean(name))
}

func (m *memFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	name = filepath.Clean(name)
	f := m.files[name]
	if f == nil {
		if flag&os.O_CREATE == 0 {
			return nil, fs.ErrNotExist
		}
		f = &memFile{}
		m.files[name] = f
		m.order = append(m.order, name)
	} else if flag&os.O_TRUNC != 0 {
		f.data = nil
	}
	return memHandle{f, m}, nil
}

func (m *memFS) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	name = filepath.Clean(name)
	if m.files[name] == nil {
		return fs.ErrNotExist
	}
	delete(m.files, name)
	return nil
}

func (m *memFS) ReadDir(dir string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	// From the creation order, not the map: map order is random, and
	// sorting randomly ordered input would make coverage nondeterministic.
	var names []string
	for _, p := range m.order {
		if filepath.Dir(p) == filepath.Clean(dir) && m.files[p] != nil && !slices.Contains(names, filepath.Base(p)) {
			names = append(names, filepath.Base(p))
		}
	}
	slices.Sort(names)
	return names, nil
}

func (m *memFS) MkdirAll(string, fs.FileMode) error { return nil }
func (m *memFS) SyncDir(string) error               { return nil }

func (h memHandle) ReadAt(p []byte, off int64) (int, error) {
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	if off >= int64(len(h.f.data)) {
		return 0, io.EOF
	}
	n := copy(p, h.f.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (h memHandle) WriteAt(p []byte, off int64) (int, error) {
	if h.m.frozen.Load() {
		return 0, errors.New("process crashed")
	}
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	if end := off + int64(len(p)); end > int64(len(h.f.data)) {
		h.f.data = append(h.f.data, make([]byte, end-int64(len(h.f.data)))...)
	}
	copy(h.f.data[off:], p)
	return len(p), nil
}

func (h memHandle) Truncate(size int64) error {
	if h.m.frozen.Load() {
		return errors.New("process crashed")
	}
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	if size < int64(len(h.f.data)) {
		h.f.data = h.f.data[:size]
	} else {
		h.f.data = append(h.f.data, make([]byte, size-int64(len(h.f.data)))...)
	}
	return nil
}

func (h memHandle) Size() (int64, error) {
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	return int64(len(h.f.data)), nil
}

func (memHandle) Sync() error  { return nil }
func (memHandle) Close() error { return nil }

type fuzzMain struct{}

func (fuzzMain) ReadAt([]byte, int64) (int, error) { return 0, errors.New("no main file") }
func (fuzzMain) Size() (int64, error)              { return 0, nil }

// oracle checks, independently of capture's parser (walgen's plain
// checksum), that every WAL transaction capture spools is one SQLite's
// recovery would accept: frames 1..last of the generation chain from its
// header with its salts, and the record holds the newest version of each
// page among frames first..last (pages beyond the commit size dropped).
type oracle struct {
	t      *testing.T
	shadow *walgen.File
	want   map[uint64]map[uint32][]byte
	dbSize map[uint64]uint32
	// view, if set, is the WAL as it was before a truncation or deletion
	// that capture is told of afterwards (as the VFS does): the oracle
	// checks what capture finalizes then against the frames SQLite had
	// written, while capture reads the file as it is.
	view []byte
}

func (o *oracle) check(h walHeader, first, last uint32, txid uint64, merge bool) {
	data := o.shadow.Data
	if o.view != nil {
		data = o.view
	}
	ps := int(h.pageSize)
	fsz := 24 + ps
	if !bytes.Equal(data[:min(32, len(data))], h.raw[:]) && first > 0 {
		// The header was already rewritten (a restart finalizes the old
		// generation's last transaction): check against the old header.
	}
	ck := [2]uint32{binary.BigEndian.Uint32(h.raw[24:]), binary.BigEndian.Uint32(h.raw[28:])}
	pages := map[uint32][]byte{}
	var dbSize uint32
	for i := uint32(1); i <= last; i++ {
		off := 32 + int(i-1)*fsz
		if off+fsz > len(data) {
			o.t.Fatalf("txid %d: frame %d is not in the WAL", txid, i)
		}
		fr := data[off : off+fsz]
		if binary.BigEndian.Uint32(fr[8:]) != h.salt1 || binary.BigEndian.Uint32(fr[12:]) != h.salt2 {
			o.t.Fatalf("txid %d: frame %d has other salts", txid, i)
		}
		if binary.BigEndian.Uint32(fr) == 0 {
			o.t.Fatalf("txid %d: frame %d has page number 0", txid, i)
		}
		ck = walgen.Checksum(h.bigEndian, fr[:8], ck)
		ck = walgen.Checksum(h.bigEndian, fr[24:], ck)
		if ck[0] != binary.BigEndian.Uint32(fr[16:]) || ck[1] != binary.BigEndian.Uint32(fr[20:]) {
			o.t.Fatalf("txid %d: checksum chain fails at frame %d", txid, i)
		}
		if i >= first {
			pages[binary.BigEndian.Uint32(fr)] = append([]byte(nil), fr[24:]...)
			// A commit frame inside first..last (reconciliation regroups
			// lost transactions into one record with Coalesce): its
			// transaction cut the pages beyond its size, as replaying
			// them one by one would.
			if n := binary.BigEndian.Uint32(fr[4:]); n != 0 && i < last {
				for p := range pages {
					if p > n {
						delete(pages, p)
					}
				}
			}
		}
		if i == last {
			dbSize = binary.BigEndian.Uint32(fr[4:])
			if dbSize == 0 {
				o.t.Fatalf("txid %d: frame %d is not a commit frame", txid, i)
			}
		}
	}
	for p := range pages {
		if p > dbSize {
			delete(pages, p)
		}
	}
	if merge {
		// Coalesced with the transactions before it: the record holds
		// the newest version of each page of the group, as replaying
		// them one by one leaves it (a shrink cuts earlier versions).
		prev := o.want[txid]
		for p, b := range prev {
			if _, ok := pages[p]; !ok && p <= dbSize {
				pages[p] = b
			}
		}
	}
	o.want[txid] = pages
	o.dbSize[txid] = dbSize
}

// FuzzCapture feeds capture arbitrary sequences of WAL events: well-formed
// frames, zero-salt frames and header rewrites, slot reuse, padding, raw
// writes of arbitrary bytes at arbitrary offsets, syncs that fail or not,
// phase twos from either connection, checkpoints, truncations, deletions
// and reopenings (reconciliation). Capture must never panic, and every
// transaction it spools must pass the oracle.
func FuzzCapture(f *testing.F) {
	for _, seed := range fuzzCaptureSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		runCaptureFuzz(t, in)
	})
}

// The seeds are not vacuous: they make capture spool transactions.
func TestFuzzCaptureSeedsSpool(t *testing.T) {
	total := 0
	for _, seed := range fuzzCaptureSeeds() {
		total += runCaptureFuzz(t, seed)
	}
	if total < len(fuzzCaptureSeeds()) {
		t.Fatalf("the seeds spooled only %d transactions", total)
	}
}

// Seed building blocks, in runCaptureFuzz's encoding.
func fzHeader(salt byte) []byte { return []byte{0, salt} }
func fzFrame(pgno byte, commit bool, v byte) []byte {
	a := (pgno - 1) & 15
	if commit {
		a |= 16 | 1<<5 // commit size pgno+1
	}
	return []byte{1, a, v}
}
func fzReuse(idx, pgno, v byte) []byte { return []byte{2, idx, pgno, v} }
func fzZeroSalt(pgno byte, commit bool) []byte {
	a := (pgno - 1) & 15
	if commit {
		a |= 16
	}
	return []byte{3, a}
}
func fzRewrite(from byte) []byte { return []byte{4, from} }
func fzSync(fail bool, conn byte) []byte {
	return []byte{6 | conn<<7, map[bool]byte{false: 0, true: 1}[fail]}
}
func fzPhaseTwo(conn byte) []byte  { return []byte{7 | conn<<7} }
func fzCheckpoint() []byte         { return []byte{8} }
func fzTruncate(x byte) []byte     { return []byte{9, x} }
func fzPad() []byte                { return []byte{10} }
func fzInPlace(idx, v byte) []byte { return []byte{12, idx, v} }
func fzReopen() []byte             { return []byte{13} }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// fuzzCaptureSeeds returns each seed twice: as written and with
// SyncForPublish calls appended until the other read-back mode is
// selected (runCaptureFuzz picks it from the input's length).
func fuzzCaptureSeeds() [][]byte {
	var out [][]byte
	for _, seed := range fuzzCaptureBaseSeeds() {
		v := seed
		for len(v)/6%2 == len(seed)/6%2 {
			v = append(v, 14)
		}
		out = append(out, seed, v)
	}
	return out
}

func fuzzCaptureBaseSeeds() [][]byte {
	return [][]byte{
		// commit, phase two, a second commit finalized by a later frame
		cat(fzHeader(1), fzFrame(1, false, 1), fzFrame(2, true, 1), fzPhaseTwo(0),
			fzFrame(3, true, 2), fzFrame(1, false, 3), fzFrame(4, true, 3), fzPhaseTwo(0)),
		// failed commit sync withdraws; the slot is reused
		cat(fzHeader(2), fzFrame(1, true, 1), fzPhaseTwo(0), fzFrame(2, true, 2), fzSync(true, 0),
			fzReuse(1, 3, 3), fzFrame(4, true, 4), fzSync(false, 0), fzPhaseTwo(0)),
		// spill, in-place overwrite, zero-salt commit, header rewrite
		cat(fzHeader(3), fzFrame(1, false, 1), fzFrame(2, false, 1), fzInPlace(0, 9),
			fzZeroSalt(3, true), fzRewrite(0), fzPhaseTwo(0)),
		// padding after a commit, sync, then the next transaction
		cat(fzHeader(4), fzFrame(5, true, 5), fzPad(), fzSync(false, 0), fzPhaseTwo(0),
			fzFrame(6, true, 6), fzPhaseTwo(0)),
		// checkpoint from another connection, restart, truncate
		cat(fzHeader(5), fzFrame(1, true, 1), fzCheckpoint(), fzPhaseTwo(1), fzHeader(6),
			fzFrame(2, true, 2), fzPhaseTwo(0), fzTruncate(0), fzHeader(7), fzFrame(3, true, 3), fzPhaseTwo(0)),
		// crash with a provisional transaction: reconciliation captures it
		cat(fzHeader(8), fzFrame(1, true, 1), fzPhaseTwo(0), fzFrame(2, true, 2), fzReopen(),
			fzFrame(3, true, 3), fzPhaseTwo(0)),
		// savepoint rollback then commit
		cat(fzHeader(9), fzFrame(1, false, 1), fzFrame(2, false, 1), fzFrame(3, false, 1),
			fzReuse(1, 4, 4), fzFrame(5, true, 5), fzPhaseTwo(0)),
		// a held group and a provisional commit, truncated, then deleted
		cat(fzHeader(11), fzFrame(1, true, 1), fzPhaseTwo(0), fzFrame(2, true, 2), fzTruncate(0),
			fzHeader(12), fzFrame(3, true, 3), fzPhaseTwo(0), fzFrame(4, true, 4), []byte{11},
			fzHeader(13), fzFrame(5, true, 5), fzPhaseTwo(0)),
		// raw garbage in the middle of a transaction
		cat(fzHeader(10), fzFrame(1, true, 1), fzPhaseTwo(0), []byte{5, 0, 60, 8, 1, 2, 3, 4, 5, 6, 7, 8},
			fzFrame(2, true, 2), fzPhaseTwo(0)),
	}
}

// runCaptureFuzz returns the number of WAL transactions spooled.
func runCaptureFuzz(t *testing.T, in []byte) int {
	const ps = 512
	dir := "/fuzz"
	mfs := newMemFS()
	o := &oracle{t: t, shadow: &walgen.File{Path: filepath.Join(dir, "db-wal")},
		want: map[uint64]map[uint32][]byte{}, dbSize: map[uint64]uint32{}}
	testHookAppend = o.check
	defer func() { testHookAppend = nil }()
	// One goroutine drives both connections: a checkpoint that would wait
	// for the other connection's commit in progress is refused at once.
	defer SetCheckpointWait(0)()

	var sp *Spool
	var c *Capture
	var conns [2]*Conn
	// Half the inputs run with the spool's appends buffered in memory
	// (SpoolOptions.BufferBytes, as the VFS does; small, so that records
	// also straddle buffer writes).
	buffer := []int{0, 700}[len(in)%2]
	// A third run with small transactions coalesced into shared records
	// (CaptureOptions.Coalesce), a third with larger ones and a small
	// bound, a third without.
	coalesce := []int{0, 64 << 10, 8 << 10}[len(in)/2%3]
	// Half of them read pages back from the WAL (CaptureOptions.ReadBack,
	// as the VFS does): truncations and deletions then come in the VFS's
	// order (BeforeTruncate, the file, Truncate; the handles closed before
	// the file is deleted), so capture reads the file as it is.
	readBack := len(in)/6%2 == 1
	open := func() bool {
		var err error
		if sp, err = OpenSpool(filepath.Join(dir, "spool"), SpoolOptions{FS: mfs, BufferBytes: buffer}); err != nil {
			t.Fatal(err)
		}
		c, _ = NewCapture(sp, CaptureOptions{MemoryBytes: 4 * ps, Adopt: true, Coalesce: coalesce, ReadBack: readBack})
		conns[0], conns[1] = c.NewConn(fuzzMain{}), c.NewConn(fuzzMain{})
		if err := conns[0].AttachWAL(o.shadow); err != nil {
			// A WAL reconciliation refuses (bad or unknown) is fine:
			// nothing may have been spooled from it.
			return false
		}
		conns[1].AttachWAL(o.shadow)
		return true
	}
	if !open() {
		t.Fatal("open on an empty WAL failed")
	}
	conn := 0
	w := walgen.New(ps, 11, 22, func(p []byte, off int64) error {
		o.shadow.Write(p, off)
		conns[conn].Write(p, off)
		return nil
	})
	pageFor := func(pgno uint32, v byte) []byte {
		b := bytes.Repeat([]byte{v}, ps)
		binary.LittleEndian.PutUint32(b, pgno)
		return b
	}
	frames := map[uint32][3]uint32{} // idx -> pgno, commit, version (for rewrites)
	next := func() byte {
		if len(in) == 0 {
			return 0
		}
		b := in[0]
		in = in[1:]
		return b
	}
	for steps := 0; len(in) > 0 && steps < 400; steps++ {
		op := next()
		conn = int(op>>7) & 1
		switch op & 0x7f % 16 {
		case 0: // header
			w.Salt2 = uint32(next())
			w.Header()
			clear(frames)
		case 1: // append a frame; commit if the argument says so
			a := next()
			pgno := uint32(a&15) + 1
			commit := uint32(0)
			if a&16 != 0 {
				commit = pgno + uint32(a>>5)
			}
			v := next()
			frames[w.Frames+1] = [3]uint32{pgno, commit, uint32(v)}
			w.Append(pgno, commit, pageFor(pgno, v))
		case 2: // reuse a slot (rollback)
			if w.Frames == 0 {
				continue
			}
			idx := uint32(next())%w.Frames + 1
			pgno := uint32(next()&15) + 1
			v := next()
			frames[idx] = [3]uint32{pgno, 0, uint32(v)}
			w.WriteFrame(idx, pgno, 0, pageFor(pgno, v), false)
		case 3: // zero-salt frame (commit or not)
			a := next()
			pgno := uint32(a&15) + 1
			commit := uint32(0)
			if a&16 != 0 {
				commit = 16
			}
			frames[w.Frames+1] = [3]uint32{pgno, commit, uint32(a)}
			w.WriteFrame(w.Frames+1, pgno, commit, pageFor(pgno, a), true)
		case 4: // rewrite headers from some frame to the last
			if w.Frames == 0 {
				continue
			}
			from := uint32(next())%w.Frames + 1
			w.RewriteHeaders(from, w.Frames, func(i uint32) (uint32, uint32, []byte) {
				f := frames[i]
				return f[0], f[1], pageFor(f[0], byte(f[2]))
			})
		case 5: // raw bytes at an arbitrary offset
			off := int64(next())<<8 | int64(next())
			n := int(next()) % 64
			p := make([]byte, n)
			for i := range p {
				p[i] = next()
			}
			o.shadow.Write(p, off)
			conns[conn].Write(p, off)
		case 6: // sync, failing or not
			fail := next()&1 == 1
			conns[conn].Sync(func() error {
				if fail {
					return errors.New("EIO")
				}
				return nil
			})
		case 7:
			conns[conn].CommitPhaseTwo()
		case 8:
			conns[conn].CheckpointStart()
			conns[conn].CheckpointDone()
		case 9: // truncate
			size := int64(next()) * 97
			if c.readBack {
				if conns[conn].BeforeTruncate(size) != nil {
					continue // the VFS fails the truncation
				}
				o.view = bytes.Clone(o.shadow.Data)
				o.shadow.Truncate(size)
				conns[conn].Truncate(size)
				o.view = nil
				continue
			}
			// Capture first: the oracle needs the bytes.
			conns[conn].Truncate(size)
			o.shadow.Truncate(size)
		case 10:
			if w.Frames > 0 {
				f := frames[w.Frames]
				w.Pad(2048, f[0], f[1], pageFor(f[0], byte(f[2])))
			}
		case 11:
			if c.readBack {
				// SQLite closes its handles, then deletes the file.
				conns[0].DetachWAL()
				conns[1].DetachWAL()
				o.view = bytes.Clone(o.shadow.Data)
				o.shadow.Truncate(0)
				c.Deleted()
				o.view = nil
				conns[0].AttachWAL(o.shadow)
				conns[1].AttachWAL(o.shadow)
				continue
			}
			c.Deleted()
			o.shadow.Truncate(0)
		case 12: // page bytes only, in place
			if w.Frames == 0 {
				continue
			}
			idx := uint32(next())%w.Frames + 1
			f := frames[idx]
			f[2] = uint32(next())
			frames[idx] = f
			p := pageFor(f[0], byte(f[2]))
			o.shadow.Write(p, w.FrameOffset(idx)+24)
			conns[conn].Write(p, w.FrameOffset(idx)+24)
		case 13: // crash and reopen: reconciliation
			// The process dies: appends still in the spool's buffer are
			// lost (the WAL, in the page cache, survives).
			mfs.frozen.Store(true)
			c.Close()
			sp.Close()
			mfs.frozen.Store(false)
			if !open() {
				// Refused: close and start on a fresh WAL.
				c.Close()
				sp.Close()
				o.shadow.Truncate(0)
				if !open() {
					t.Fatal("reopen on an empty WAL failed")
				}
			}
		case 14:
			c.SyncForPublish()
		case 15:
			conns[conn].Write(w.HeaderBytes(), 0)
			o.shadow.Write(w.HeaderBytes(), 0)
		}
	}
	// Every spooled WAL record is what the oracle saw appended.
	st := sp.Status()
	spooled := 0
	if st.LastTxid >= st.FirstTxid {
		for rec, err := range sp.Records(st.FirstTxid, st.LastTxid) {
			if err != nil {
				t.Fatal(err)
			}
			want, ok := o.want[rec.Txid]
			if !ok || rec.DBPages != o.dbSize[rec.Txid] {
				t.Fatalf("txid %d spooled without passing the oracle", rec.Txid)
			}
			n := 0
			for p, err := range rec.Pages() {
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(p.Data, want[p.Pgno]) {
					t.Fatalf("txid %d page %d differs from the newest frame", rec.Txid, p.Pgno)
				}
				n++
			}
			if n != len(want) {
				t.Fatalf("txid %d: %d pages, want %d", rec.Txid, n, len(want))
			}
			spooled++
		}
	}
	c.Close()
	sp.Close()
	return spooled
}

// FuzzSpoolFiles opens a spool whose files hold arbitrary or damaged
// bytes: no panic, and either an error or records whose pages verify
// (iteration reports corruption as an error), and the spool still accepts
// a record afterwards. The first byte selects the mode:
//
//	0: the rest is a segment file      1: the rest is the state file
//	2: the rest is split between both  3: a recipe damaging a valid spool:
//	   pairs (offset, xor) flip bytes of the segment (offset bit 15 set: of
//	   the state file); a final odd byte truncates the segment there (×8)
//
// The recipe mode keeps inputs small (the fuzzer minimizes by rerunning
// inputs byte by byte) while reaching deep into valid structure.
func FuzzSpoolFiles(f *testing.F) {
	for _, seed := range fuzzSpoolSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) { fuzzSpoolFiles(t, in) })
}

const fuzzDir = "/fuzz/spool"

func fuzzSpoolFiles(t *testing.T, in []byte) {
	if len(in) == 0 {
		return
	}
	mfs := newMemFS()
	seg, state := filepath.Join(fuzzDir, segmentName(1)), filepath.Join(fuzzDir, stateFileName)
	body := in[1:]
	switch in[0] % 4 {
	case 0:
		mfs.put(seg, body)
	case 1:
		mfs.put(state, body)
	case 2:
		half := len(body) / 2
		mfs.put(seg, body[:half])
		mfs.put(state, body[half:])
	case 3:
		validSpool(t, mfs)
		for len(body) >= 3 {
			off := int(binary.BigEndian.Uint16(body))
			f := mfs.files[seg]
			if off&0x8000 != 0 {
				f, off = mfs.files[state], off&0x7fff
			}
			if len(f.data) > 0 {
				f.data[off%len(f.data)] ^= body[2] | 1
			}
			body = body[3:]
		}
		if len(body) > 0 {
			if f := mfs.files[seg]; int(body[0])*8 < len(f.data) {
				f.data = f.data[:int(body[0])*8]
			}
		}
	}
	sp, err := OpenSpool(fuzzDir, SpoolOptions{FS: mfs})
	if err != nil {
		return
	}
	defer sp.Close()
	st := sp.Status()
	if st.LastTxid >= st.FirstTxid && st.LastTxid-st.FirstTxid < 1000 {
		for rec, err := range sp.Records(st.FirstTxid, st.LastTxid) {
			if err != nil {
				break
			}
			for _, err := range rec.Pages() {
				if err != nil {
					break
				}
			}
		}
		if set, err := sp.Newest(st.FirstTxid, st.LastTxid); err == nil {
			for _, err := range set.Pages() {
				if err != nil {
					break
				}
			}
			set.Close()
		}
	}
	a, err := sp.Begin(RecordHeader{Kind: KindDirect, PageSize: 512, DBPages: 1, NPages: 1})
	if err == nil {
		a.Add(1, make([]byte, 512))
		if _, err := a.Commit(); err != nil && sp.Status().Err == nil {
			t.Fatalf("append after open failed: %v", err)
		}
	}
}

// validSpool writes a small valid spool into mfs: four records (two
// confirmed), a shrink, a page size change.
func validSpool(t testing.TB, mfs *memFS) {
	sp, err := OpenSpool(fuzzDir, SpoolOptions{FS: mfs})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range []struct {
		ps, db uint32
		pgnos  []uint32
	}{{512, 4, []uint32{1, 3}}, {512, 2, []uint32{2}}, {512, 5, []uint32{5, 1}}, {1024, 2, []uint32{1, 2}}} {
		id := WALIdentity{Salt1: 1, Salt2: 2, Frame: uint32(i + 1), Cksum: [2]uint32{3, uint32(i)}}
		a, err := sp.Begin(RecordHeader{Kind: KindWAL, PageSize: r.ps, DBPages: r.db, NPages: uint32(len(r.pgnos)), WAL: id})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range r.pgnos {
			a.Add(p, bytes.Repeat([]byte{byte(i*16) + byte(p)}, int(r.ps)))
		}
		if _, err := a.Commit(); err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			sp.Sync()
			sp.SetConfirmed(2)
		}
	}
	sp.Close()
}

// fuzzSpoolSeeds: small raw files and recipes.
func fuzzSpoolSeeds(t testing.TB) [][]byte {
	mfs := newMemFS()
	validSpool(t, mfs)
	seg := mfs.files[filepath.Join(fuzzDir, segmentName(1))].data
	state := mfs.files[filepath.Join(fuzzDir, stateFileName)].data
	rec1 := seg[:segHeaderSize+recHeaderSize+2*512+2*dirEntrySize+trailerSize]
	return [][]byte{
		append([]byte{0}, rec1...),                     // one valid record
		append([]byte{0}, seg[:segHeaderSize+70]...),   // a torn first record
		append([]byte{1}, state[:stateSlotSize]...),    // one state slot
		{0, 'b', 'o', 'p', 's', 'p', 'o', 'o', 'l', 2}, // a future version, cut
		{3},                   // the valid spool as is
		{3, 0, 40, 7},         // damage in the first (confirmed) record
		{3, 7, 0, 0x10},       // damage in a later record
		{3, 0x80, 30, 1},      // damage in the state file
		{3, 200},              // a torn tail
		{3, 0x81, 20, 4, 100}, // state and tail
	}
}
