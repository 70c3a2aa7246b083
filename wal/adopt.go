package wal

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Adoption: the first state bop records of an existing database is the
// state SQLite reads from it, which is not the main file alone when a WAL
// is there. A checkpoint copies WAL frames into the main file before the
// WAL is restarted, page by page, and may be interrupted: the main file
// then mixes pages of several WAL transactions with older ones, a state
// that never existed. Its WAL's committed transactions cannot be replayed
// on top of it either (the file may already hold their newer pages). So
// the image is the main file overlaid with the WAL's committed frames (the
// newest frame of each page up to the last commit frame, as SQLite's
// recovery reads them), at the database size that commit frame gives: the
// state after the WAL's last transaction. The record names that commit
// frame (its WAL identity), so reconciliation treats the generation as
// captured up to it and never captures those frames again.

// AppendImage appends the database SQLite reads from main (the main
// database file, which must be durable: the caller fsyncs it) and w (its
// WAL; nil: none) to sp as one image record of every page 1..N in order,
// makes it durable (the WAL is fsynced first, then the spool) and
// confirmed, and returns its header. pageSize is the main file's page
// size; main's size must be a whole number of pages.
//
// The WAL's valid frames are those of the checksum chain from its header
// (scanWAL); frames after its last commit frame (an unfinished
// transaction) and stale frames of an older generation past the chain
// are ignored. Without a committed frame the image is main as it is, and
// carries no WAL identity.
//
// Memory: one 1 MiB run of pages, and 8 bytes per WAL frame of the chain
// (the page number and frame of each, sorted to find each page's newest
// frame, like SQLite's own wal-index). Neither file is modified.
func AppendImage(sp *Spool, main MainFile, pageSize uint32, w WALFile) (RecordHeader, error) {
	if !validPageSize(pageSize) {
		return RecordHeader{}, fmt.Errorf("wal: adopt: bad page size %d", pageSize)
	}
	ps := int64(pageSize)
	size, err := main.Size()
	if err != nil {
		return RecordHeader{}, fmt.Errorf("wal: adopt: size of the database file: %w", err)
	}
	if size%ps != 0 || size/ps > 1<<32-2 {
		return RecordHeader{}, fmt.Errorf("wal: adopt: the database file is %d bytes, not a whole number (at most 2^32-2) of %d-byte pages", size, ps)
	}
	mainPages := uint32(size / ps)
	ov, err := walOverlay(w, pageSize)
	if err != nil {
		return RecordHeader{}, err
	}
	n := mainPages
	if ov.scan != nil {
		n = ov.dbPages
	}
	if n == 0 {
		return RecordHeader{}, errors.New("wal: adopt: the database has no pages")
	}
	h := RecordHeader{Kind: KindImage, PageSize: pageSize, DBPages: n, NPages: n, WAL: ov.scan.identity()}
	a, err := sp.Begin(h)
	if err != nil {
		return RecordHeader{}, fmt.Errorf("wal: adopt: %w", err)
	}
	if err := ov.write(a, main, mainPages, n); err != nil {
		a.Abort()
		return RecordHeader{}, fmt.Errorf("wal: adopt: %w", err)
	}
	if h.Txid, err = a.Commit(); err != nil {
		return RecordHeader{}, fmt.Errorf("wal: adopt: %w", err)
	}
	// Confirmed means durable in the spool and in its source: the WAL
	// frames the image includes are fsynced before the spool says so
	// (reconciliation would otherwise find the identity's frame gone
	// after a power loss: ErrLost).
	if ov.scan != nil {
		if err := w.Sync(); err != nil {
			return RecordHeader{}, fmt.Errorf("wal: adopt: fsync %s: %w", w.Name(), err)
		}
	}
	if err := sp.Sync(); err != nil {
		return RecordHeader{}, err
	}
	if err := sp.SetConfirmed(h.Txid); err != nil {
		return RecordHeader{}, err
	}
	return h, nil
}

// overlay is what a WAL adds to the main file: the newest committed frame
// of each page, by page number.
type overlay struct {
	w       WALFile
	scan    *walScan // nil: no committed frame
	dbPages uint32   // the last commit frame's database size
	newest  []framePage
}

type framePage struct{ pgno, frame uint32 }

// walOverlay scans w (scanWAL) and indexes its committed frames.
func walOverlay(w WALFile, pageSize uint32) (*overlay, error) {
	var frames []framePage
	scan, ok, err := scanWALFrames(w, func(frame, pgno uint32) {
		frames = append(frames, framePage{pgno: pgno, frame: frame})
	})
	if err != nil {
		return nil, err
	}
	if !ok || scan.last == 0 {
		return &overlay{}, nil
	}
	if scan.hdr.pageSize != pageSize {
		return nil, fmt.Errorf("wal: adopt: %s holds %d-byte pages, the database file %d-byte pages: %w", w.Name(), scan.hdr.pageSize, pageSize, ErrBadWAL)
	}
	last, _ := scan.lastCommit()
	if last.dbPages > 1<<32-2 {
		return nil, fmt.Errorf("wal: adopt: %s: commit frame %d says the database has %d pages: %w", w.Name(), last.frame, last.dbPages, ErrBadWAL)
	}
	// The chain's frames are 1, 2, ... in order: those up to the last
	// commit frame are the first scan.last.
	frames = frames[:scan.last]
	// Newest frame first within a page, then one per page, and none past
	// the database's size (a page the last transactions cut off).
	slices.SortFunc(frames, func(a, b framePage) int {
		if c := cmp.Compare(a.pgno, b.pgno); c != 0 {
			return c
		}
		return cmp.Compare(b.frame, a.frame)
	})
	frames = slices.CompactFunc(frames, func(a, b framePage) bool { return a.pgno == b.pgno })
	cut, _ := slices.BinarySearchFunc(frames, last.dbPages+1, func(f framePage, p uint32) int { return cmp.Compare(f.pgno, p) })
	frames = slices.Clip(frames[:cut])
	return &overlay{w: w, scan: scan, dbPages: last.dbPages, newest: frames}, nil
}

// write adds pages 1..n to a in runs: each run read from main (zeros past
// its mainPages pages, as SQLite reads a page neither file holds), then
// the WAL's newest frames of the run's pages over it.
func (ov *overlay) write(a *Appender, main MainFile, mainPages, n uint32) error {
	ps := a.hdr.PageSize
	per := max(1, uint32((1<<20)/ps))
	buf := make([]byte, per*ps)
	pgnos := make([]uint32, 0, per)
	next := ov.newest
	var fsz int64
	if ov.scan != nil {
		fsz = frameHeaderSz + int64(ps)
	}
	for p := uint32(1); p <= n; {
		k := min(per, n-p+1)
		b := buf[:k*ps]
		inMain := uint32(0)
		if p <= mainPages {
			inMain = min(k, mainPages-p+1)
		}
		if inMain > 0 {
			if err := readFull(main, b[:inMain*ps], int64(p-1)*int64(ps)); err != nil {
				return fmt.Errorf("read database pages %d..%d: %w", p, p+inMain-1, err)
			}
		}
		clear(b[inMain*ps:])
		for len(next) > 0 && next[0].pgno < p+k {
			fp := next[0]
			next = next[1:]
			dst := b[(fp.pgno-p)*ps : (fp.pgno-p+1)*ps]
			off := walHeaderSize + int64(fp.frame-1)*fsz + frameHeaderSz
			if err := readFull(ov.w, dst, off); err != nil {
				return fmt.Errorf("read frame %d (page %d) of %s: %w", fp.frame, fp.pgno, ov.w.Name(), err)
			}
		}
		pgnos = pgnos[:0]
		for i := range k {
			pgnos = append(pgnos, p+i)
		}
		if err := a.AddRun(pgnos, b); err != nil {
			return err
		}
		p += k // no overflow: n <= 2^32-2
	}
	return nil
}

// readFull reads len(b) bytes at off (io.EOF with all of them is success).
func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}
