package checkpoint

import (
	"cmp"
	"slices"
	"sync/atomic"

	"github.com/bopstore/bop/delta"
	"github.com/bopstore/bop/manifest"
)

// A restore reads every object the boundary uses as few times as possible:
// each object is streamed once, from the first to the last of its frames
// the boundary uses (whole, with one plain GET, when that is all of its
// frames), and every verified page is written straight from the fetched
// frames to its place in the file.
//
// Two phases keep "every page written once, with its version at the
// boundary" without holding pages in memory:
//
//  1. base objects. A base's frames are pages FirstPgno, FirstPgno+1, ...
//     (delta format), so a stretch of a base is a stretch of the file.
//     Pages that resolve to this frame are verified and written; pages
//     that resolve to a delta object are verified and written too, as
//     filler, so that runs stay long (phase 2 overwrites them); pages
//     that resolve to anything else (zero, another base) end a run and
//     are not touched.
//  2. delta objects, after every phase-1 write returned. A delta frame
//     names its page in its header; it is written only if the page
//     resolves to exactly this object and frame, after DecodeFrame
//     checked it for that page.
//
// Invariant: after phase 2 every page that resolves to an object holds
// that object's verified frame (only delta-resolved pages ever receive
// filler, and phase 2 writes each of them after all filler), zero pages
// are never written (the new file reads as zeros), and nothing is written
// past the database size. Each object counts the pages it wrote; a count
// that differs from the pages the boundary resolves to it (a frame header
// naming another page, say) fails the restore naming the object.

// objPlan is what the restore needs from one object.
type objPlan struct {
	obj         *manifest.ObjectRef
	first, last uint32 // first and last frame the boundary uses
	pages       int64  // pages that resolve to it
	wrote       atomic.Int64
}

func (o *objPlan) base() bool { return o.obj.Kind == manifest.ObjectBase }

// piece is one GET: frames first..last of an object.
type piece struct {
	plan        *objPlan
	first, last uint32
	whole       bool // fetch the whole object without a Range (first..last is all of it)
}

func (p piece) frames() int64 { return int64(p.last-p.first) + 1 }

// wholeObjectNum/Den: a single-piece span covering at least this share of an
// object's frames is fetched with a plain GET of the whole object, which
// also brings the header and the directory (about 0.6% of a base); a
// smaller span is one ranged GET of the frames only.
const (
	wholeObjectNum = 7
	wholeObjectDen = 8
)

// minPieceReads: an object's span is cut into pieces (one GET each) only
// to give every worker work, and never below this many reads (MaxRead)
// per piece, 8 MiB by default, so the number of GETs stays close to the
// number of objects.
const minPieceReads = 4

// planPieces cuts the spans of plans into pieces for parallel workers:
// at most ceil(span / target) pieces per object, where target is the
// phase's bytes divided by the workers (at least minPiece bytes), largest
// first so that the phase ends evenly.
func planPieces(plans []*objPlan, ps uint32, workers int, minPiece int64) []piece {
	fs := delta.FrameSize(ps)
	var total int64
	for _, o := range plans {
		total += (int64(o.last-o.first) + 1) * fs
	}
	target := max(minPiece, total/int64(max(1, workers)))
	targetFrames := max(1, target/fs)
	var out []piece
	for _, o := range plans {
		span := int64(o.last-o.first) + 1
		n := (span + targetFrames - 1) / targetFrames
		each := (span + n - 1) / n
		if n == 1 {
			whole := span*wholeObjectDen >= int64(o.obj.PageCount)*wholeObjectNum
			out = append(out, piece{plan: o, first: o.first, last: o.last, whole: whole})
			continue
		}
		for f := int64(o.first); f <= int64(o.last); f += each {
			out = append(out, piece{plan: o, first: uint32(f), last: uint32(min(f+each-1, int64(o.last)))})
		}
	}
	slices.SortStableFunc(out, func(a, b piece) int { return cmp.Compare(b.frames(), a.frames()) })
	return out
}
