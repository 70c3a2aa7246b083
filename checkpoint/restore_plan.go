package checkpoint

import (
	"sync/atomic"

	"github.com/bopstore/bop/manifest"
)

// A restore reads every object the boundary uses in as few GETs as its
// regions allow, and writes every verified page straight from the fetched
// frames to its place in the file.
//
// The file is restored region by region: the database's page numbers are
// cut into regions of equal size (regionPages), at most regionsPerWorker
// per worker, and a worker restores a whole region, in two phases, before
// it takes the next one in file order. That keeps "every page written
// once, with its version at the boundary" without holding pages in memory:
//
//  1. base objects. A base's frames are pages FirstPgno, FirstPgno+1, ...
//     (delta format), so a stretch of a base is a stretch of the file: the
//     region's stretch of each base is streamed (one GET). Pages that
//     resolve to this frame are verified and written; pages that resolve
//     to a delta object are verified and written too, as filler, so that
//     runs stay long (phase 2 overwrites them); pages that resolve to
//     anything else (zero, another base) end a run and are not touched.
//  2. delta objects, after every phase-1 write of the region returned. A
//     delta frame names its page in its header; it is written only if the
//     page resolves to exactly this object and frame, after DecodeFrame
//     checked it for that page. Frames are in page order in an object, so
//     the region's pages of a delta are one span of its frames: the
//     region streams that span of every delta with pages there, merging
//     the streams so that pages are written in ascending page order
//     (restore_merge.go).
//
// Then the kernel is asked to start writing the region back
// (startWriteback): no later write touches it, so its write-back overlaps
// the fetching of later regions instead of waiting for the final fsync.
//
// Invariant: after a region's phase 2 every page of it that resolves to an
// object holds that object's verified frame (only delta-resolved pages
// ever receive filler, filler for a page is written only by its own
// region's phase 1, and phase 2 writes each of them after all of it), zero
// pages are never written (the new file reads as zeros), and nothing is
// written past the database size. Each object counts the pages it wrote;
// a count that differs from the pages the boundary resolves to it (a frame
// header naming another page, say) fails the restore naming the object.

// objPlan is what the restore needs from one object.
type objPlan struct {
	obj         *manifest.ObjectRef
	first, last uint32 // first and last frame the boundary uses
	pages       int64  // pages that resolve to it
	wrote       atomic.Int64
	region, at  int // while planning: the region whose piece (index at) was last extended
}

func (o *objPlan) base() bool { return o.obj.Kind == manifest.ObjectBase }

// piece is one GET: frames first..last of an object.
type piece struct {
	plan        *objPlan
	first, last uint32
	whole       bool // fetch the whole object without a Range (first..last is all of it)
}

func (p piece) frames() int64 { return int64(p.last-p.first) + 1 }

// region is a stretch of pages and the pieces that restore it.
type region struct {
	lo, hi        uint32 // pages
	bases, deltas []piece
}

// wholeObjectNum/Den: a base piece covering at least this share of its
// object's frames is fetched with a plain GET of the whole object, which
// also brings the header and the directory (about 0.6% of a base); a
// smaller one is one ranged GET of its frames only.
const (
	wholeObjectNum = 7
	wholeObjectDen = 8
)

// regionsPerWorker: regions are small enough that each worker restores
// more than one, so that the first ones are written back while the last
// are fetched. More regions mean more GETs (one per delta and region):
// 2 measured best for a 1 GiB database with 20 deltas on versitygw (wall
// 0.84 s, against 0.94 s with 1 and 0.84 s with 3; 4 cost 0.90 s, 8
// 1.16 s).
const regionsPerWorker = 2

// minRegionReads: a region holds at least this many reads (MaxRead) of
// pages, 8 MiB by default, so that small databases are not cut into
// GETs of a few pages.
const minRegionReads = 4

// regionPages is the number of pages in a region (the last may be
// shorter): the database cut into regionsPerWorker regions per worker,
// none below minBytes of pages.
func regionPages(dbPages, ps uint32, workers int, minBytes int64) uint32 {
	n := uint64(max(1, workers)) * regionsPerWorker
	size := (uint64(dbPages) + n - 1) / n
	size = max(size, uint64(max(1, minBytes/int64(ps))))
	return uint32(min(size, uint64(max(1, dbPages))))
}
