package checkpoint

import (
	"context"
	"errors"
	"io"
	"sync"

	"github.com/bopstore/bop/delta"
)

// Phase 2 writes a region's delta pages in ascending page order, whatever
// delta holds them. Each is a 4 KiB overwrite of a page phase 1 wrote as
// filler, and the kernel's cost of one such write depends on its
// neighbours: on the benchmark machine 47,000 single-page overwrites of a
// 1 GiB file cost ~3.4 µs each in random order or delta by delta (a delta
// holds 1% of the pages), ~1.3 µs each in page order (the page cache's
// structures for the next page are still in the CPU's caches). Adjacent
// delta pages also join into one write.
//
// A region's delta pieces (one span of frames per delta) are merged
// maxMerge at a time: each stream reads blocks of an equal share of the
// worker's buffer (at least one frame; fewer streams at once when the
// buffer holds fewer frames), so memory stays Parallel * MaxRead.

// maxMerge bounds the streams (GETs) one merge reads at once (and
// RestoreOptions.MaxGets, the GETs of the whole restore).
const maxMerge = 32

// mergeStream is one piece being merged: a ranged GET of its frames and
// the block of them read last.
type mergeStream struct {
	p       piece
	rc      io.ReadCloser
	buf     []byte // this stream's share of the worker's buffer
	base    uint32 // object frame number of the block's first frame
	n, i    uint32 // frames in the block, the next one to handle
	wrote   int64  // exact pages handed to the writer
	retried bool   // the one new GET after a failure was sent
}

// mergePieces writes the delta pages of a region (restore_plan.go).
func (rs *restorer) mergePieces(ctx context.Context, pieces []piece, buf []byte, w *pageWriter) error {
	width := int(min(maxMerge, int64(rs.maxGets), max(1, int64(len(buf))/rs.fs)))
	for len(pieces) > 0 {
		g := pieces[:min(len(pieces), width)]
		pieces = pieces[len(g):]
		// All of the merge's bodies at once, or none: a merge holding
		// some while it waited for others could wait forever on merges
		// doing the same.
		if err := rs.bodies.Acquire(ctx, int64(len(g))); err != nil {
			return err
		}
		err := rs.merge(ctx, g, buf, w)
		rs.bodies.Release(int64(len(g)))
		if err != nil {
			return err
		}
	}
	return nil
}

// merge streams the pieces of g at once and hands their frames to place
// in ascending order of the page each frame names.
func (rs *restorer) merge(ctx context.Context, g []piece, buf []byte, w *pageWriter) error {
	share := int64(len(buf)) / int64(len(g)) / rs.fs * rs.fs
	ss := make([]mergeStream, len(g))
	for i, p := range g {
		ss[i] = mergeStream{p: p, buf: buf[int64(i)*share : int64(i+1)*share], base: p.first}
	}
	defer func() {
		for i := range ss {
			if ss[i].rc != nil {
				ss[i].rc.Close()
			}
		}
	}()
	// The GETs go out together: a store's time to first byte is paid
	// once, not once per delta. A failed one is sent again by fill.
	var wg sync.WaitGroup
	for i := range ss {
		wg.Go(func() {
			if rs.open(ctx, &ss[i], ss[i].base) != nil {
				ss[i].retried = true
			}
		})
	}
	wg.Wait()
	for i := range ss {
		if err := rs.fill(ctx, &ss[i]); err != nil {
			return err
		}
	}
	for {
		// The stream whose next frame names the lowest page (a damaged
		// header only changes the order; place rejects the frame).
		var s *mergeStream
		var low uint32
		for i := range ss {
			c := &ss[i]
			if c.i == c.n {
				continue
			}
			if pg := delta.FramePgno(c.frame(rs.fs)); s == nil || pg < low {
				s, low = c, pg
			}
		}
		if s == nil {
			break
		}
		exact, err := rs.place(s.p.plan, s.base+s.i, s.frame(rs.fs), w)
		if err != nil {
			return err
		}
		if exact {
			s.wrote++
		}
		if s.i++; s.i < s.n {
			continue
		}
		if s.base+s.n > s.p.last {
			s.p.plan.wrote.Add(s.wrote)
			continue
		}
		// w holds pages of this block: written before it is refilled.
		if err := w.flush(); err != nil {
			return err
		}
		if err := rs.fill(ctx, s); err != nil {
			return err
		}
	}
	return w.flush()
}

func (s *mergeStream) frame(fs int64) []byte {
	return s.buf[int64(s.i)*fs : int64(s.i+1)*fs]
}

// open sends the stream's ranged GET for frames from..p.last.
func (rs *restorer) open(ctx context.Context, s *mergeStream, from uint32) error {
	rc, err := rs.get(ctx, s.p.plan.obj, delta.FrameOffset(rs.ps, from), int64(s.p.last-from+1)*rs.fs)
	if err != nil {
		return err
	}
	s.rc = rc
	return nil
}

// fill reads the stream's next block (the frames after the current one,
// at most its share of the buffer). A failed GET or body read is tried
// once more per stream, with a new GET from the first frame not read.
func (rs *restorer) fill(ctx context.Context, s *mergeStream) error {
	from := s.base + s.n
	n := uint32(min(int64(s.p.last-from)+1, int64(len(s.buf))/rs.fs))
	b := s.buf[:int64(n)*rs.fs]
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := s.readInto(ctx, rs, from, b)
		if err == nil {
			s.base, s.n, s.i = from, n, 0
			rs.getBytes.Add(int64(len(b)))
			return nil
		}
		if s.rc != nil {
			s.rc.Close()
			s.rc = nil
		}
		var t transientError
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !errors.As(err, &t) {
			return err
		}
		if s.retried {
			return t.err
		}
		s.retried = true
	}
}

// readInto reads frames from.. into b, sending the GET first if the
// stream has none open.
func (s *mergeStream) readInto(ctx context.Context, rs *restorer, from uint32, b []byte) error {
	if s.rc == nil {
		if err := rs.open(ctx, s, from); err != nil {
			return err
		}
	}
	if _, err := io.ReadFull(s.rc, b); err != nil {
		return transientError{errorf("restore: read %s frames %d..%d: %w", s.p.plan.obj.Key, from, from+uint32(int64(len(b))/rs.fs)-1, err)}
	}
	return nil
}
