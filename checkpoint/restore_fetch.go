package checkpoint

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/semaphore"

	"github.com/bopstore/bop/delta"
	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote"
)

// restorer holds what the workers share.
type restorer struct {
	ctx     context.Context
	store   remote.Store
	snap    *manifest.Snapshot
	f       *os.File
	ps      uint32
	fs      int64
	db      uint32
	maxRead int64 // bytes of frames one read of a body fills
	// bodies bounds the GET bodies open at once (RestoreOptions.MaxGets):
	// a phase-1 piece takes one, a merge all of its streams at once, so
	// that no worker holds bodies while it waits for more.
	bodies   *semaphore.Weighted
	maxGets  int
	gets     atomic.Int64
	getBytes atomic.Int64
}

// fetchPages writes every page of the boundary into f (see restore_plan.go
// for the two phases) with opts.Parallel workers.
func fetchPages(ctx context.Context, opts RestoreOptions, snap *manifest.Snapshot, f *os.File) (zeros uint32, gets, getBytes int64, err error) {
	ps := snap.PageSize()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rs := &restorer{ctx: ctx, store: opts.Store, snap: snap, f: f, ps: ps, fs: delta.FrameSize(ps), db: snap.DBPages()}
	// A worker's buffer: MaxRead (at most maxMaxRead), no larger than the
	// database's frames, whole frames, at least one.
	rs.maxRead = max(rs.fs, min(opts.MaxRead, maxMaxRead, int64(rs.db)*rs.fs)/rs.fs*rs.fs)
	rs.maxGets = max(1, opts.MaxGets)
	rs.bodies = semaphore.NewWeighted(int64(rs.maxGets))

	objs, regions, zeros, err := rs.plan(regionPages(rs.db, ps, opts.Parallel, minRegionReads*rs.maxRead))
	if err != nil {
		return 0, 0, 0, err
	}
	err = rs.runWorkers(len(regions), opts.Parallel, func(ctx context.Context, i int, buf []byte, w *pageWriter) error {
		return rs.restoreRegion(ctx, &regions[i], buf, w)
	})
	if err != nil {
		return 0, 0, 0, err
	}
	for _, o := range objs {
		if w := o.wrote.Load(); w != o.pages {
			return 0, 0, 0, errorf("restore: %s: %d of the %d pages the boundary reads from it were found in frames %d..%d",
				o.obj.Key, w, o.pages, o.first, o.last)
		}
	}
	return zeros, rs.gets.Load(), rs.getBytes.Load(), nil
}

// restoreRegion writes the pages of r: its base pieces (phase 1), then,
// once every one of their writes returned, its delta pieces merged in page
// order (phase 2), then starts the region's write-back (restore_plan.go).
func (rs *restorer) restoreRegion(ctx context.Context, r *region, buf []byte, w *pageWriter) error {
	for _, p := range r.bases {
		if err := rs.bodies.Acquire(ctx, 1); err != nil {
			return err
		}
		err := rs.fetchPiece(ctx, p, buf, w)
		rs.bodies.Release(1)
		if err != nil {
			return err
		}
	}
	if err := rs.mergePieces(ctx, r.deltas, buf, w); err != nil {
		return err
	}
	startWriteback(rs.f, int64(r.lo-1)*int64(rs.ps), int64(r.hi-r.lo+1)*int64(rs.ps))
	return nil
}

// plan resolves every page (place resolves each fetched frame's page
// again to place it): per object, the span of frames used and how many
// pages resolve to it; per region of size pages (regionPages), the span
// of frames its pages use in each object, bases and deltas apart.
// Memory: one objPlan per object, one piece per object and region.
func (rs *restorer) plan(size uint32) (objs []*objPlan, regions []region, zeros uint32, err error) {
	byID := map[uint64]*objPlan{}
	for lo := uint64(1); lo <= uint64(rs.db); lo += uint64(size) {
		regions = append(regions, region{lo: uint32(lo), hi: uint32(min(lo+uint64(size)-1, uint64(rs.db)))})
	}
	for p := uint32(1); p <= rs.db; p++ {
		k := int((p - 1) / size)
		loc, err := rs.snap.Resolve(p)
		if err != nil {
			return nil, nil, 0, errorf("restore: resolve page %d: %w", p, err)
		}
		switch loc.Kind {
		case manifest.Zero:
			zeros++
			continue
		case manifest.InObject:
		default:
			return nil, nil, 0, errorf("restore: page %d resolves to %s inside a %d-page database", p, loc.Kind, rs.db)
		}
		o := byID[loc.Object.ID]
		if o == nil {
			if loc.Frame >= loc.Object.PageCount || loc.Object.Size < delta.FrameOffset(rs.ps, loc.Object.PageCount) {
				return nil, nil, 0, errorf("restore: page %d resolves to frame %d of %s, which holds %d frames in %d bytes",
					p, loc.Frame, loc.Object.Key, loc.Object.PageCount, loc.Object.Size)
			}
			o = &objPlan{obj: loc.Object, first: loc.Frame, last: loc.Frame, region: -1}
			byID[loc.Object.ID] = o
			objs = append(objs, o)
		}
		if loc.Frame >= o.obj.PageCount {
			return nil, nil, 0, errorf("restore: page %d resolves to frame %d of %s, which holds %d frames",
				p, loc.Frame, o.obj.Key, o.obj.PageCount)
		}
		o.first, o.last = min(o.first, loc.Frame), max(o.last, loc.Frame)
		o.pages++
		r := &regions[k]
		list := &r.deltas
		if o.base() {
			list = &r.bases
		}
		if o.region != k {
			o.region, o.at = k, len(*list)
			*list = append(*list, piece{plan: o, first: loc.Frame, last: loc.Frame})
			continue
		}
		sp := &(*list)[o.at]
		sp.first, sp.last = min(sp.first, loc.Frame), max(sp.last, loc.Frame)
	}
	for i := range regions {
		for j := range regions[i].bases {
			p := &regions[i].bases[j]
			p.whole = p.frames()*wholeObjectDen >= int64(p.plan.obj.PageCount)*wholeObjectNum
		}
	}
	return objs, regions, zeros, nil
}

// runWorkers runs do(0) .. do(n-1) on workers, each with its own read
// buffer and page writer, and returns when every one has returned: the
// first error cancels the rest.
func (rs *restorer) runWorkers(n, workers int, do func(ctx context.Context, i int, buf []byte, w *pageWriter) error) error {
	if n == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(rs.ctx)
	defer cancel()
	var (
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	for range min(workers, n) {
		wg.Go(func() {
			buf := make([]byte, rs.maxRead)
			w := newPageWriter(rs.f, rs.ps)
			for i := range next {
				if ctx.Err() != nil {
					return
				}
				if err := do(ctx, i, buf, w); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return rs.ctx.Err()
}

// fetchPiece streams frames p.first..p.last of an object and writes its
// pages. A body that fails mid-way (a connection the server dropped) is
// asked for again once, from the first frame not yet handled.
func (rs *restorer) fetchPiece(ctx context.Context, p piece, buf []byte, w *pageWriter) error {
	next := p.first
	for attempt := 0; ; attempt++ {
		err := rs.stream(ctx, p, next, buf, w, &next)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var t transientError
		if attempt == 0 && errors.As(err, &t) {
			continue
		}
		if errors.As(err, &t) {
			return t.err
		}
		return err
	}
}

// transientError is a failed GET or body read: worth one more GET.
type transientError struct{ err error }

func (e transientError) Error() string { return e.err.Error() }

// get sends one GET of obj (n < 0: to its end) and counts it. A failed
// request is transient (worth one more); an object whose size is not the
// catalog's is not.
func (rs *restorer) get(ctx context.Context, obj *manifest.ObjectRef, off, n int64) (io.ReadCloser, error) {
	rc, info, err := rs.store.Get(ctx, obj.Key, off, n)
	if err != nil {
		return nil, transientError{errorf("restore: get %s [%d, +%d): %w", obj.Key, off, n, err)}
	}
	rs.gets.Add(1)
	if info.Size != obj.Size {
		rc.Close()
		return nil, errorf("restore: %s is %d bytes, the catalog says %d", obj.Key, info.Size, obj.Size)
	}
	return rc, nil
}

// stream does one GET of frames from..p.last (the whole object if p.whole
// and from is p.first) and handles them, advancing *next past every frame
// handled.
func (rs *restorer) stream(ctx context.Context, p piece, from uint32, buf []byte, w *pageWriter, next *uint32) error {
	obj := p.plan.obj
	off := delta.FrameOffset(rs.ps, from)
	length := int64(p.last-from+1) * rs.fs
	getOff, getLen := off, length
	if p.whole && from == p.first {
		getOff, getLen = 0, -1
	}
	rc, err := rs.get(ctx, obj, getOff, getLen)
	if err != nil {
		return err
	}
	defer rc.Close()
	if skip := off - getOff; skip > 0 {
		if _, err := io.CopyN(io.Discard, rc, skip); err != nil {
			return transientError{errorf("restore: read %s: %w", obj.Key, err)}
		}
		rs.getBytes.Add(skip)
	}
	for from <= p.last {
		n := min(int64(p.last-from)+1, int64(len(buf))/rs.fs)
		b := buf[:n*rs.fs]
		if _, err := io.ReadFull(rc, b); err != nil {
			return transientError{errorf("restore: read %s frames %d..%d: %w", obj.Key, from, from+uint32(n)-1, err)}
		}
		rs.getBytes.Add(int64(len(b)))
		if err := rs.handle(p.plan, from, b, w); err != nil {
			return err
		}
		from += uint32(n)
		*next = from
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if getLen < 0 {
		// The rest (directory, trailer) is read so that the connection
		// can serve the next GET.
		n, _ := io.Copy(io.Discard, rc)
		rs.getBytes.Add(n)
	}
	return nil
}

// handle verifies and writes the frames in b (frames first, first+1, ...
// of o). Every write is done when it returns: b can be reused.
func (rs *restorer) handle(o *objPlan, first uint32, b []byte, w *pageWriter) error {
	n := uint32(int64(len(b)) / rs.fs)
	var wrote int64
	for k := range n {
		exact, err := rs.place(o, first+k, b[int64(k)*rs.fs:int64(k+1)*rs.fs], w)
		if err != nil {
			return err
		}
		if exact {
			wrote++
		}
	}
	o.wrote.Add(wrote)
	return w.flush()
}

// place verifies frame fi of o and hands its page to w when the boundary
// reads it there (exact) or, in a base, when a delta of phase 2 writes
// over it (filler); any other frame ends w's run and is not written. w
// keeps a reference to frame until it is flushed.
func (rs *restorer) place(o *objPlan, fi uint32, frame []byte, w *pageWriter) (exact bool, err error) {
	obj := o.obj
	var pgno uint32
	if o.base() {
		// A base's frame fi is page FirstPgno + fi (delta format).
		if p := uint64(obj.FirstPgno) + uint64(fi); p >= 1 && p <= uint64(rs.db) {
			pgno = uint32(p)
		}
	} else if p := delta.FramePgno(frame); p >= 1 && p <= rs.db {
		pgno = p
	}
	if pgno == 0 {
		return false, w.flush()
	}
	loc, err := rs.snap.Resolve(pgno)
	if err != nil {
		return false, errorf("restore: resolve page %d: %w", pgno, err)
	}
	// The page's version in this frame (exact), or, in a base, a page a
	// delta of phase 2 writes over (filler: keeps the base's writes long;
	// checked all the same, as every base frame fetched, so a damaged
	// object is reported, not papered over).
	exact = loc.Kind == manifest.InObject && loc.Object.ID == obj.ID && loc.Frame == fi
	filler := o.base() && loc.Kind == manifest.InObject && loc.Object.Kind != manifest.ObjectBase
	if !exact && !filler {
		return false, w.flush()
	}
	page, _, err := delta.DecodeFrame(frame, pgno, rs.ps)
	if err != nil {
		return false, errorf("restore: %s, frame %d, page %d: %w", obj.Key, fi, pgno, err)
	}
	return exact, w.add(pgno, page)
}

// maxWrite bounds one write, and writes are aligned to it in the file.
// Linux's page cache sizes its folios by the writes: 2 MiB writes make
// 2 MiB folios, which cost about 7 times the CPU of 64 KiB writes on the
// benchmark machine (fresh large folios are slow to fill), and every
// later 4 KiB overwrite of a delta page into such a folio walks all of its
// blocks (ext4_block_write_begin). Writes of 64 KiB measured about 3.5x
// cheaper overall, for 16 times the syscalls.
const maxWrite = 64 << 10

// maxIOV bounds the pages gathered for one write (Linux's IOV_MAX, the
// most buffers one pwritev takes).
const maxIOV = 1024

// pageWriter gathers pages of consecutive page numbers and writes them
// with one positional write (pwritev where there is one), straight from
// the fetched frames: at most maxWrite bytes, never across a maxWrite
// boundary of the file.
type pageWriter struct {
	f       *os.File
	pages   [][]byte
	max     int
	pgno    uint32 // page number of pages[0]
	ps      uint32
	scratch writeScratch
}

func newPageWriter(f *os.File, ps uint32) *pageWriter {
	maxPages := max(1, min(maxWrite/int(ps), maxIOV))
	return &pageWriter{f: f, ps: ps, max: maxPages, pages: make([][]byte, 0, maxPages)}
}

func (w *pageWriter) add(pgno uint32, page []byte) error {
	if n := len(w.pages); n > 0 && (pgno != w.pgno+uint32(n) || (pgno-1)%uint32(w.max) == 0) {
		if err := w.flush(); err != nil {
			return err
		}
	}
	if len(w.pages) == 0 {
		w.pgno = pgno
	}
	w.pages = append(w.pages, page)
	return nil
}

func (w *pageWriter) flush() error {
	if len(w.pages) == 0 {
		return nil
	}
	n := uint32(len(w.pages))
	err := writePages(w.f, int64(w.pgno-1)*int64(w.ps), w.pages, &w.scratch)
	clear(w.pages) // no references to fetch buffers
	w.pages = w.pages[:0]
	if err != nil {
		return errorf("restore: write pages %d..%d: %w", w.pgno, w.pgno+n-1, err)
	}
	return nil
}
