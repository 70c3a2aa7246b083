package checkpoint

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"os"
	"path/filepath"

	"github.com/bopstore/bop/delta"
	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/wal"
)

// The executor: it turns one action of a plan into an object in the
// store, through a staging file.
//
//	stage:  pages from the spool (real bytes, verified against their spool
//	        hashes) stream into the delta encoder and into a staging file;
//	        memory is one page, a write buffer and the object's directory.
//	verify: the staged file is read back whole (delta.Verify: every frame,
//	        the directory, the content hash) before anything is uploaded.
//	upload: one Put of the file under the content-hash key
//	        Layout.Object(kind, id, hash), unconditional: the key names one
//	        content, so repeating the upload (a resumed job) stores the same
//	        bytes. The store's hash of what it received must equal the hash
//	        of the file. A store that can (remote.FilePutter: fsstore on
//	        the same file system) takes the staging file itself instead of
//	        a copy of its bytes.
//
// Invariant: a staging file is written only by the stage call that
// created it, before its upload. stage removes any file of that name and
// creates a new one (O_EXCL), never truncating or rewriting one in place:
// the file a store took at upload is the object itself, so writing it
// later (say, a resumed job staging the same action again after a crash
// left the old file) would change a stored object.

// pageSource yields the pages of a spool page set in a pgno range:
// *wal.PageSet (deltas), or an imageSource (bases).
type pageSource interface {
	PagesIn(pgnos []uint32, lo, hi uint32) iter.Seq2[wal.Page, error]
	Close()
}

// imageSource streams an image record's pages, in the order they were
// appended (1, 2, ... N: the VFS records an adopted file front to back),
// without an index: successive PagesIn calls must ask for ascending,
// disjoint ranges (the base actions of a plan, in order). Memory is the
// spool's read buffer and one page.
type imageSource struct {
	hdr     wal.RecordHeader
	stopRec func()
	next    func() (wal.Page, error, bool)
	stop    func()
	peeked  bool
	peek    wal.Page
}

func openImage(sp *wal.Spool, txid uint64) (*imageSource, error) {
	nextRec, stopRec := iter.Pull2(sp.Records(txid, txid))
	rec, err, ok := nextRec()
	if !ok || err != nil {
		stopRec()
		if err == nil {
			err = fmt.Errorf("spool has no record %d", txid)
		}
		return nil, err
	}
	if rec.Kind != wal.KindImage {
		stopRec()
		return nil, fmt.Errorf("spool record %d is a %s record, not an image", txid, rec.Kind)
	}
	next, stop := iter.Pull2(rec.Pages())
	return &imageSource{hdr: rec.RecordHeader, stopRec: stopRec, next: next, stop: stop}, nil
}

func (s *imageSource) PagesIn(_ []uint32, lo, hi uint32) iter.Seq2[wal.Page, error] {
	return func(yield func(wal.Page, error) bool) {
		for {
			var pg wal.Page
			if s.peeked {
				pg, s.peeked = s.peek, false
			} else {
				p, err, ok := s.next()
				if !ok {
					return
				}
				if err != nil {
					yield(wal.Page{}, err)
					return
				}
				pg = p
			}
			if pg.Pgno < lo {
				continue
			}
			if pg.Pgno > hi {
				// The first page of the next range: keep a copy (the
				// spool reuses its buffer on the next read).
				s.peek = wal.Page{Pgno: pg.Pgno, Txid: pg.Txid, Hash: pg.Hash, Data: append(s.peek.Data[:0], pg.Data...)}
				s.peeked = true
				return
			}
			if !yield(pg, nil) {
				return
			}
		}
	}
}

func (s *imageSource) Close() {
	s.stop()
	s.stopRec()
}

// staged is an object in a staging file, verified.
type staged struct {
	path     string
	f        *os.File
	sum      delta.Summary
	fileHash uint64 // xxhash64 of the whole file: what Put must report
}

func (s *staged) close() {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
}

// stagingName is the staging file of one action of one job. Everything
// in the staging folder is a file named like this.
func stagingName(dir, job string, index int) string {
	return filepath.Join(dir, fmt.Sprintf("%s.a%d.obj", job, index))
}

// dirName is where the directory of a staged delta waits for the record.
func dirName(staging string) string { return staging + ".dir" }

const stageBuffer = 64 << 10

// stage writes action a of plan pl to a staging file at path and
// verifies it. pgnos is the page set's sorted page list (the plan's input).
func stage(ctx context.Context, path string, pl *Plan, a *Action, src pageSource, pgnos []uint32) (_ *staged, err error) {
	kind := delta.KindDelta
	if a.Kind == manifest.ObjectBase {
		kind = delta.KindBase
	}
	// A new file, never an old one truncated (the invariant above): an
	// old one (a resumed job's, left by a crash) loses its name first.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		if err = os.Remove(path); err == nil {
			f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint: job %s action %d: create staging file: %w", pl.Job, a.Index, err)
	}
	st := &staged{path: path, f: f}
	defer func() {
		if err != nil {
			st.close()
			os.Remove(path)
		}
	}()
	bw := bufio.NewWriterSize(f, stageBuffer)
	enc, err := delta.NewEncoder(bw, delta.Header{Kind: kind, PageSize: pl.PageSize,
		ObjectID: a.ObjectID, MinTxid: pl.From, MaxTxid: pl.To, FirstPgno: a.First, PageCount: a.Pages})
	if err != nil {
		return nil, fmt.Errorf("checkpoint: job %s action %d: %w", pl.Job, a.Index, err)
	}
	// Set pages interleave with the zero fill (pages a shrink cut and the
	// range regrew without writing): zero pages below each set page go
	// first. next is the lowest pgno not yet considered.
	zero := make([]byte, pl.PageSize)
	emitZeros := func(from, to uint64) error {
		if from > to || len(pl.ZeroFill) == 0 {
			return nil
		}
		var err error
		mergePages(nil, pl.ZeroFill, uint32(from), uint32(to), func(p uint32, _ bool) bool {
			err = enc.Add(p, zero)
			return err == nil
		})
		return err
	}
	next := uint64(a.First)
	n := 0
	for pg, err := range src.PagesIn(pgnos, a.First, a.Last) {
		if err != nil {
			return nil, fmt.Errorf("checkpoint: job %s action %d: %w", pl.Job, a.Index, err)
		}
		if n%256 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		n++
		if err := emitZeros(next, uint64(pg.Pgno)-1); err != nil {
			return nil, fmt.Errorf("checkpoint: job %s action %d: %w", pl.Job, a.Index, err)
		}
		// The spool verified the page against this hash as it read it.
		if err := enc.AddHashed(pg.Pgno, pg.Data, pg.Hash); err != nil {
			return nil, fmt.Errorf("checkpoint: job %s action %d: page %d: %w", pl.Job, a.Index, pg.Pgno, err)
		}
		next = uint64(pg.Pgno) + 1
	}
	if err := emitZeros(next, uint64(a.Last)); err != nil {
		return nil, fmt.Errorf("checkpoint: job %s action %d: %w", pl.Job, a.Index, err)
	}
	sum, err := enc.Close()
	if err != nil {
		// Fewer pages than the plan says: the spool range no longer holds
		// what it held when the job was planned.
		return nil, permanent(fmt.Errorf("checkpoint: job %s action %d (pages %d..%d): %w", pl.Job, a.Index, a.First, a.Last, err))
	}
	if err := bw.Flush(); err != nil {
		return nil, fmt.Errorf("checkpoint: job %s action %d: write staging file: %w", pl.Job, a.Index, err)
	}
	// No fsync: a staging file never outlives this run's use of it. It is
	// verified and uploaded from here (reads see the written bytes), and
	// after a crash every staging file is stale and swept at the start of
	// the next cycle (Publisher.sweep): a resumed job stages again. (A
	// store that took the file as an object has fsynced it; the sweep
	// removes only the staging name.)
	st.sum, st.fileHash = sum, sum.FileHash
	if err := verifyStaged(st); err != nil {
		return nil, fmt.Errorf("checkpoint: job %s action %d: staged object failed verification: %w", pl.Job, a.Index, err)
	}
	return st, nil
}

// verifyStaged reads the staged file back whole: every frame against its
// directory entry, the directory, and the content hash the key will carry.
func verifyStaged(st *staged) error {
	fi, err := st.f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() != st.sum.Size {
		return fmt.Errorf("file is %d bytes, the encoder wrote %d", fi.Size(), st.sum.Size)
	}
	o, err := delta.Open(st.f, st.sum.Size)
	if err != nil {
		return err
	}
	if o.Hash() != st.sum.Hash {
		return fmt.Errorf("trailer hash %016x, the encoder computed %016x", o.Hash(), st.sum.Hash)
	}
	return o.Verify()
}

// objectAdded describes an object for the log record. dir is the delta
// directory (nil for a base, or when it is not at hand: the catalog then
// reads it from the object).
func objectAdded(layout remote.Layout, pl *Plan, a *Action, size int64, hash uint64, dir []byte) (manifest.ObjectAdded, error) {
	key, err := layout.Object(a.Kind, a.ObjectID, hash)
	if err != nil {
		return manifest.ObjectAdded{}, err
	}
	return manifest.ObjectAdded{ID: a.ObjectID, Kind: a.Kind, Key: key, Size: size, Hash: manifest.Hash(hash),
		FirstPgno: a.First, PageCount: a.Pages, MinTxid: pl.From, MaxTxid: pl.To, Chunks: a.Chunks, Directory: dir}, nil
}

// upload sends a staged object to the store under its content-hash key
// and checks that the store received exactly the staged bytes. The store
// may keep the staging file as the object (remote.PutFile): from here on
// it is never written (the invariant above).
func upload(ctx context.Context, store remote.Store, key string, st *staged) error {
	res, err := remote.PutFile(ctx, store, key, st.f, remote.PutOptions{Size: st.sum.Size})
	if err != nil {
		return fmt.Errorf("checkpoint: upload %s: %w", key, err)
	}
	if res.Size != st.sum.Size || res.XXH64 != st.fileHash {
		return fmt.Errorf("checkpoint: upload %s: the store received %d bytes with hash %016x, staged %d bytes with hash %016x",
			key, res.Size, res.XXH64, st.sum.Size, st.fileHash)
	}
	return nil
}
