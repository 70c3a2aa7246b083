package checkpoint

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/bopstore/bop/delta"
	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote"
)

// RestoreOptions say what to restore and where.
type RestoreOptions struct {
	// Store holds the objects (required).
	Store remote.Store
	// Catalog resolves pages. Nil: one is built from the store alone
	// (manifest.OpenRemote: head, snapshot, log; no LIST) in a temporary
	// folder and removed afterwards; Layout names the database then.
	Catalog *manifest.Catalog
	Layout  remote.Layout
	// Txid is the boundary to restore; 0 means the newest. A txid between
	// two boundaries rounds down to the one below (RestoreResult says so).
	Txid uint64
	// Path is the file to create. It must not exist unless Overwrite.
	Path      string
	Overwrite bool
	// Parallel workers (default 8): reads and writes in flight. MaxRead
	// (default 2 MiB) is the unit of work: the file is written in chunks
	// of that size, and frames are read from the streams in blocks of at
	// most that. DeltaBudget bounds the delta pages held in memory for one
	// band (default 4 * MaxRead). Memory is about 2 * Parallel * MaxRead
	// + 2 * DeltaBudget.
	Parallel    int
	MaxRead     int64
	DeltaBudget int64
	// TempDir holds the catalog built from the store (default: the
	// folder of Path).
	TempDir string
}

// RestoreResult describes a restored file.
type RestoreResult struct {
	Path      string
	Txid      uint64 // the boundary restored
	Requested uint64 // the txid asked for (0: newest)
	Rounded   bool   // Requested fell between boundaries and was rounded down to Txid
	Seq       uint64 // the record whose boundary it is
	PageSize  uint32
	DBPages   uint32
	Size      int64  // file size: DBPages * PageSize
	ZeroPages uint32 // pages that read as zeros (never written at that boundary)
	Gets      int64  // ranged GETs of object frames
	GetBytes  int64  // bytes they fetched
}

// maxGapFrames: frames of an object between two wanted frames that a
// coalesced read fetches and discards rather than split the read.
const maxGapFrames = 4

// Restore materialises a plain SQLite database file at a boundary: every
// page resolved through the catalog's page map at that boundary, fetched
// with parallel ranged GETs (consecutive frames of one object coalesced),
// each frame verified (delta.DecodeFrame: page number, length, hash) before
// it is written, pages never written at the boundary as zeros, the file
// exactly DBPages * PageSize bytes. It is written to a temporary file,
// fsynced and renamed into place, so Path holds a whole database or
// nothing.
func Restore(ctx context.Context, opts RestoreOptions) (res RestoreResult, err error) {
	if opts.Store == nil || opts.Path == "" {
		return res, errorf("restore: Store and Path are required")
	}
	if opts.Parallel <= 0 {
		opts.Parallel = 8
	}
	if opts.MaxRead <= 0 {
		opts.MaxRead = 2 << 20
	}
	if !opts.Overwrite {
		if _, err := os.Lstat(opts.Path); err == nil {
			return res, errorf("restore: %s exists", opts.Path)
		} else if !errors.Is(err, os.ErrNotExist) {
			return res, errorf("restore: %w", err)
		}
	}
	dir := filepath.Dir(opts.Path)
	cat := opts.Catalog
	if cat == nil {
		tmpRoot := opts.TempDir
		if tmpRoot == "" {
			tmpRoot = dir
		}
		tmp, err := os.MkdirTemp(tmpRoot, ".bop-restore-catalog-")
		if err != nil {
			return res, errorf("restore: %w", err)
		}
		defer os.RemoveAll(tmp)
		if cat, err = manifest.OpenRemote(ctx, opts.Store, opts.Layout, filepath.Join(tmp, "catalog.db"), manifest.Options{}); err != nil {
			return res, errorf("restore: build the catalog from the store: %w", err)
		}
		defer cat.Close()
	}
	var snap *manifest.Snapshot
	if opts.Txid == 0 {
		snap = cat.Snapshot()
	} else if snap, err = cat.SnapshotAt(opts.Txid); err != nil {
		return res, errorf("restore: %w", err)
	}
	if snap.BoundarySeq() == 0 || snap.Txid() == 0 {
		return res, fmt.Errorf("%w: no boundary at or below txid %d in %s", ErrNothingPublished, opts.Txid, cat.Layout().Root())
	}
	res = RestoreResult{Path: opts.Path, Txid: snap.Txid(), Requested: opts.Txid, Rounded: opts.Txid != 0 && snap.Rounded(),
		Seq: snap.BoundarySeq(), PageSize: snap.PageSize(), DBPages: snap.DBPages(),
		Size: int64(snap.DBPages()) * int64(snap.PageSize())}

	f, err := os.CreateTemp(dir, filepath.Base(opts.Path)+".restore-*")
	if err != nil {
		return res, errorf("restore: %w", err)
	}
	tmpPath := f.Name()
	defer func() {
		if f != nil {
			f.Close()
		}
		if err != nil {
			os.Remove(tmpPath)
		}
	}()
	if err := preallocate(f, res.Size); err != nil {
		return res, errorf("restore: size %s: %w", tmpPath, err)
	}
	if res.ZeroPages, res.Gets, res.GetBytes, err = fetchPages(ctx, opts, snap, f); err != nil {
		return res, err
	}
	if err := checkHeader(f, res.PageSize, res.DBPages); err != nil {
		return res, errorf("restore %s at txid %d: %w", cat.Layout().Root(), res.Txid, err)
	}
	if err := f.Sync(); err != nil {
		return res, errorf("restore: fsync %s: %w", tmpPath, err)
	}
	if err := f.Close(); err != nil {
		f = nil
		return res, errorf("restore: %w", err)
	}
	f = nil
	if err := os.Rename(tmpPath, opts.Path); err != nil {
		return res, errorf("restore: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return res, nil
}

// The file is produced in bands of consecutive pages, each band sized so
// that the pages in it that resolve to delta objects fit DeltaBudget. For
// each band:
//
//  1. its delta pages are read into a slab, one task per delta object,
//     from that object's stream: one ranged GET per delta object for the
//     whole restore, read forward band after band (a delta's pages ascend
//     with its frames), frames no longer visible read through. Band k+1's
//     deltas are read while band k is written (two slabs);
//  2. the band is written in chunks of MaxRead bytes, each worker a
//     stretch of consecutive chunks: base pages from one GET per base
//     object per stretch, streamed, delta pages from the slab, pages never
//     written as zeros; one write per chunk.
//
// Every page is written exactly once and in large writes; GETs stay few.

// segmentChunks is the most consecutive output chunks one task writes.
const segmentChunks = 32

// deltaLoc is one page of a band that resolves to a delta object.
type deltaLoc struct {
	pgno  uint32
	frame uint32
	obj   *manifest.ObjectRef
}

// band is the delta pages of a band, fetched: page pgnos[i] is
// slab[i*ps:(i+1)*ps].
type band struct {
	pgnos []uint32
	slab  []byte
}

func (b *band) page(pgno, ps uint32) ([]byte, bool) {
	i, ok := slices.BinarySearch(b.pgnos, pgno)
	if !ok {
		return nil, false
	}
	return b.slab[int64(i)*int64(ps) : int64(i+1)*int64(ps)], true
}

// restorer holds what the workers share.
type restorer struct {
	ctx       context.Context
	store     remote.Store
	snap      *manifest.Snapshot
	f         *os.File
	ps        uint32
	fs        int64
	maxFrames uint32 // frames one GET may fetch
	chunk     uint32 // pages of an output chunk
	gets      atomic.Int64
	getBytes  atomic.Int64
}

// frame verifies frame i of a fetched run (it must hold pgno) and
// returns its page.
func (rs *restorer) frame(b []byte, i uint32, pgno uint32, key string) ([]byte, error) {
	fo := int64(i) * rs.fs
	page, _, err := delta.DecodeFrame(b[fo:fo+rs.fs], pgno, rs.ps)
	if err != nil {
		return nil, errorf("restore: %s, page %d: %w", key, pgno, err)
	}
	return page, nil
}

// fetchDeltas reads the band's pages of one delta object (locs, ascending)
// into the band's slab, run by run (frames following each other within
// maxGapFrames, at most maxFrames), from the object's stream.
func (rs *restorer) fetchDeltas(ds *streamSet, bd *band, locs []deltaLoc, buf []byte) error {
	obj := locs[0].obj
	for i := 0; i < len(locs); {
		j := i + 1
		for j < len(locs) && locs[j].frame-locs[j-1].frame <= maxGapFrames+1 && locs[j].frame-locs[i].frame < rs.maxFrames {
			j++
		}
		first := locs[i].frame
		b, err := ds.read(obj, first, locs[j-1].frame-first+1, buf)
		if err != nil {
			return err
		}
		for _, l := range locs[i:j] {
			page, err := rs.frame(b, l.frame-first, l.pgno, obj.Key)
			if err != nil {
				return err
			}
			dst, _ := bd.page(l.pgno, rs.ps)
			copy(dst, page)
		}
		i = j
	}
	return nil
}

// streamSet keeps one open ranged GET per object, from the first frame
// asked for to the last frame the restore will need from it (last), read
// forward as the restore advances: frames not needed in between (pages
// newer layers shadow) are read through, never fetched again. One object's
// stream is used by one task at a time; different objects concurrently.
type streamSet struct {
	rs      *restorer
	mu      sync.Mutex
	last    map[uint64]uint32
	streams map[uint64]*frameStream
}

type frameStream struct {
	rc   io.ReadCloser
	next uint32 // next frame the body yields
	end  uint32 // last frame of the GET
}

func newStreamSet(rs *restorer) *streamSet {
	return &streamSet{rs: rs, last: map[uint64]uint32{}, streams: map[uint64]*frameStream{}}
}

// need records that frame of obj will be read.
func (ss *streamSet) need(obj *manifest.ObjectRef, frame uint32) {
	if cur, ok := ss.last[obj.ID]; !ok || frame > cur {
		ss.last[obj.ID] = frame
	}
}

// read returns frames first..first+n-1 of obj (verified by the caller).
// A read that fails (a stream the server closed while idle) is retried
// once on a new GET.
func (ss *streamSet) read(obj *manifest.ObjectRef, first, n uint32, buf []byte) ([]byte, error) {
	b, err := ss.readOnce(obj, first, n, buf)
	if err != nil && ss.rs.ctx.Err() == nil {
		ss.drop(obj.ID)
		b, err = ss.readOnce(obj, first, n, buf)
	}
	return b, err
}

func (ss *streamSet) drop(id uint64) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if st := ss.streams[id]; st != nil {
		st.rc.Close()
		delete(ss.streams, id)
	}
}

func (ss *streamSet) readOnce(obj *manifest.ObjectRef, first, n uint32, buf []byte) ([]byte, error) {
	rs := ss.rs
	ss.mu.Lock()
	st, end := ss.streams[obj.ID], max(ss.last[obj.ID], first+n-1)
	ss.mu.Unlock()
	if st != nil && (st.next > first || first+n-1 > st.end) {
		ss.drop(obj.ID)
		st = nil
	}
	if st == nil {
		off := delta.FrameOffset(rs.ps, first)
		length := int64(end-first+1) * rs.fs
		rc, info, err := rs.store.Get(rs.ctx, obj.Key, off, length)
		if err != nil {
			return nil, errorf("restore: get %s [%d, +%d): %w", obj.Key, off, length, err)
		}
		if info.Size != obj.Size {
			rc.Close()
			return nil, errorf("restore: %s is %d bytes, the catalog says %d", obj.Key, info.Size, obj.Size)
		}
		rs.gets.Add(1)
		st = &frameStream{rc: rc, next: first, end: end}
		ss.mu.Lock()
		ss.streams[obj.ID] = st
		ss.mu.Unlock()
	}
	if skip := int64(first-st.next) * rs.fs; skip > 0 {
		if _, err := io.CopyN(io.Discard, st.rc, skip); err != nil {
			return nil, errorf("restore: read %s: %w", obj.Key, err)
		}
		rs.getBytes.Add(skip)
		st.next = first
	}
	b := buf[:int64(n)*rs.fs]
	if _, err := io.ReadFull(st.rc, b); err != nil {
		return nil, errorf("restore: read %s frames %d..%d: %w", obj.Key, first, first+n-1, err)
	}
	st.next = first + n
	rs.getBytes.Add(int64(len(b)))
	return b, nil
}

func (ss *streamSet) close() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for id, st := range ss.streams {
		st.rc.Close()
		delete(ss.streams, id)
	}
}

// newBaseReader is the stream set of one stretch of output (p0..p1): the
// base frames it needs, one GET per base object.
func (rs *restorer) newBaseReader(p0, p1 uint32) (*streamSet, error) {
	ss := newStreamSet(rs)
	for p := p0; p <= p1; p++ {
		loc, err := rs.snap.Resolve(p)
		if err != nil {
			return nil, errorf("restore: resolve page %d: %w", p, err)
		}
		if loc.Kind == manifest.InObject && loc.Object.Kind == manifest.ObjectBase {
			ss.need(loc.Object, loc.Frame)
		}
	}
	return ss, nil
}

// writeChunk assembles pages c0..c1 and writes them with one write.
func (rs *restorer) writeChunk(bd *band, br *streamSet, c0, c1 uint32, out, buf []byte) error {
	ps := int64(rs.ps)
	out = out[:int64(c1-c0+1)*ps]
	any := false
	// Base pages, grouped by object: the frames of one base in a chunk
	// are frame(c)..frame(c') for consecutive pages, so one read each.
	type span struct {
		obj         *manifest.ObjectRef
		first, last uint32 // frames
		p0          uint32 // pgno of frame first
	}
	var spans []span
	for p := c0; p <= c1; p++ {
		loc, err := rs.snap.Resolve(p)
		if err != nil {
			return errorf("restore: resolve page %d: %w", p, err)
		}
		dst := out[int64(p-c0)*ps : int64(p-c0+1)*ps]
		switch {
		case loc.Kind == manifest.Zero:
			clear(dst)
		case loc.Kind != manifest.InObject:
			return errorf("restore: page %d resolves to %s inside a %d-page database", p, loc.Kind, rs.snap.DBPages())
		case loc.Object.Kind != manifest.ObjectBase:
			page, ok := bd.page(p, rs.ps)
			if !ok {
				return errorf("restore: internal: delta page %d was not fetched", p)
			}
			copy(dst, page)
			any = true
		default:
			any = true
			if n := len(spans); n > 0 && spans[n-1].obj.ID == loc.Object.ID && loc.Frame > spans[n-1].last {
				spans[n-1].last = loc.Frame
				continue
			}
			spans = append(spans, span{obj: loc.Object, first: loc.Frame, last: loc.Frame, p0: p})
		}
	}
	for _, sp := range spans {
		b, err := br.read(sp.obj, sp.first, sp.last-sp.first+1, buf)
		if err != nil {
			return err
		}
		for i := uint32(0); i <= sp.last-sp.first; i++ {
			p := sp.p0 + i
			page, err := rs.frame(b, i, p, sp.obj.Key)
			if err != nil {
				return err
			}
			// A frame a delta or a shrink shadows is verified, not used.
			if loc, _ := rs.snap.Resolve(p); loc.Kind == manifest.InObject && loc.Object.ID == sp.obj.ID {
				copy(out[int64(p-c0)*ps:], page)
			}
		}
	}
	if !any {
		return nil // all zeros: the truncated file already reads so
	}
	if _, err := rs.f.WriteAt(out, int64(c0-1)*ps); err != nil {
		return errorf("restore: write pages %d..%d: %w", c0, c1, err)
	}
	return nil
}

// fetchPages writes every page of the boundary into f, band by band, with
// opts.Parallel workers.
func fetchPages(ctx context.Context, opts RestoreOptions, snap *manifest.Snapshot, f *os.File) (zeros uint32, gets, getBytes int64, err error) {
	ps := snap.PageSize()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rs := &restorer{ctx: ctx, store: opts.Store, snap: snap, f: f, ps: ps, fs: delta.FrameSize(ps)}
	rs.chunk = uint32(max(1, opts.MaxRead/int64(ps)))
	rs.maxFrames = max(rs.chunk, uint32(opts.MaxRead/rs.fs))
	budget := opts.DeltaBudget
	if budget <= 0 {
		budget = 4 * opts.MaxRead
	}
	budgetPages := int(max(1, budget/int64(ps)))

	var (
		errOnce  sync.Once
		firstErr error
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	tasks := make(chan func(out, buf []byte) error, opts.Parallel*2)
	var workers sync.WaitGroup
	for range opts.Parallel {
		workers.Add(1)
		go func() {
			defer workers.Done()
			out := make([]byte, int64(rs.chunk)*int64(ps))
			buf := make([]byte, int64(rs.maxFrames)*rs.fs)
			for t := range tasks {
				// Every task runs (its wrapper marks it done); after a
				// failure it returns at once.
				if err := t(out, buf); err != nil {
					fail(err)
				}
			}
		}()
	}
	submit := func(wg *sync.WaitGroup, t func(out, buf []byte) error) bool {
		wg.Add(1)
		select {
		case tasks <- func(out, buf []byte) error {
			defer wg.Done()
			if ctx.Err() != nil {
				return nil
			}
			return t(out, buf)
		}:
			return true
		case <-ctx.Done():
			wg.Done()
			return false
		}
	}

	db := snap.DBPages()
	// The delta objects' streams live across bands: find how far each is
	// read.
	ds := newStreamSet(rs)
	defer ds.close()
	for p := uint32(1); p <= db; p++ {
		loc, rerr := snap.Resolve(p)
		if rerr != nil {
			return 0, 0, 0, errorf("restore: resolve page %d: %w", p, rerr)
		}
		if loc.Kind == manifest.InObject && loc.Object.Kind != manifest.ObjectBase {
			ds.need(loc.Object, loc.Frame)
		}
	}
	var locs []deltaLoc
	// Two slabs: band k's deltas are fetched while band k-1 is written;
	// band k waits for band k-2's writes before reusing its slab.
	var slabs [2][]byte
	var writes [2]*sync.WaitGroup
	first := uint32(1)
	for k := 0; first <= db && ctx.Err() == nil; k++ {
		// Plan the band: up to budgetPages delta pages.
		locs = locs[:0]
		last := first
		for p := first; ; p++ {
			loc, rerr := snap.Resolve(p)
			if rerr != nil {
				fail(errorf("restore: resolve page %d: %w", p, rerr))
				break
			}
			if loc.Kind == manifest.InObject && loc.Object.Kind != manifest.ObjectBase {
				if len(locs) == budgetPages {
					break
				}
				locs = append(locs, deltaLoc{pgno: p, frame: loc.Frame, obj: loc.Object})
			} else if loc.Kind == manifest.Zero {
				zeros++
			}
			last = p
			if p == db {
				break
			}
		}
		if ctx.Err() != nil {
			break
		}
		if w := writes[k%2]; w != nil {
			w.Wait()
		}
		if slabs[k%2] == nil {
			slabs[k%2] = make([]byte, int64(budgetPages)*int64(ps))
		}
		bd := &band{pgnos: make([]uint32, len(locs)), slab: slabs[k%2][:int64(len(locs))*int64(ps)]}
		for i, l := range locs {
			bd.pgnos[i] = l.pgno
		}
		// 1: the band's delta pages, per object in runs of nearby frames.
		var fetches sync.WaitGroup
		byObj := slices.Clone(locs)
		slices.SortStableFunc(byObj, func(a, b deltaLoc) int {
			switch {
			case a.obj.ID < b.obj.ID:
				return -1
			case a.obj.ID > b.obj.ID:
				return 1
			}
			return 0
		})
		for i := 0; i < len(byObj); {
			j := i + 1
			for j < len(byObj) && byObj[j].obj.ID == byObj[i].obj.ID {
				j++
			}
			objLocs := byObj[i:j]
			if !submit(&fetches, func(_, buf []byte) error { return rs.fetchDeltas(ds, bd, objLocs, buf) }) {
				break
			}
			i = j
		}
		fetches.Wait()
		wrote := &sync.WaitGroup{}
		writes[k%2] = wrote
		// 2: the band's chunks, a stretch of consecutive chunks per task,
		// so that each worker writes its part of the file in order
		// (interleaving every chunk between workers writes measurably
		// slower on ext4, fsync included).
		// At most segmentChunks chunks, and small enough that every
		// worker gets a stretch of the band.
		bandChunks := (uint64(last-first) + 1 + uint64(rs.chunk) - 1) / uint64(rs.chunk)
		stretch := uint64(rs.chunk) * max(1, min(segmentChunks, bandChunks/uint64(opts.Parallel)))
		for s0 := uint64(first); s0 <= uint64(last) && ctx.Err() == nil; s0 += stretch {
			s1 := min(s0+stretch-1, uint64(last))
			if !submit(wrote, func(out, buf []byte) error {
				br, err := rs.newBaseReader(uint32(s0), uint32(s1))
				if err != nil {
					return err
				}
				defer br.close()
				for c0 := s0; c0 <= s1; c0 += uint64(rs.chunk) {
					c1 := uint32(min(c0+uint64(rs.chunk)-1, s1))
					if err := rs.writeChunk(bd, br, uint32(c0), c1, out, buf); err != nil {
						return err
					}
					if ctx.Err() != nil {
						return ctx.Err()
					}
				}
				return nil
			}) {
				break
			}
		}
		if last == db {
			break
		}
		first = last + 1
	}
	close(tasks)
	workers.Wait() // every task ran: every band is written
	if firstErr != nil {
		return 0, 0, 0, firstErr
	}
	if err := ctx.Err(); err != nil {
		return 0, 0, 0, err
	}
	return zeros, rs.gets.Load(), rs.getBytes.Load(), nil
}

// checkHeader checks page 1 of a restored file against the boundary: the
// SQLite magic, the page size, and (when SQLite marks it valid) the
// in-header database size. A mismatch means the page map and the objects
// disagree; the file is not kept.
func checkHeader(f *os.File, pageSize, dbPages uint32) error {
	var h [100]byte
	if _, err := f.ReadAt(h[:], 0); err != nil {
		return fmt.Errorf("read page 1: %w", err)
	}
	if string(h[:16]) != "SQLite format 3\x00" {
		return fmt.Errorf("page 1 is not an SQLite header")
	}
	ps := uint32(binary.BigEndian.Uint16(h[16:]))
	if ps == 1 {
		ps = 65536
	}
	if ps != pageSize {
		return fmt.Errorf("page 1 says page size %d, the catalog %d", ps, pageSize)
	}
	changeCounter, validFor := binary.BigEndian.Uint32(h[24:]), binary.BigEndian.Uint32(h[92:])
	if n := binary.BigEndian.Uint32(h[28:]); changeCounter == validFor && n != dbPages {
		return fmt.Errorf("page 1 says %d pages, the boundary %d", n, dbPages)
	}
	return nil
}
