package vfs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bopstore/bop/delta"
	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote"
	"github.com/cespare/xxhash/v2"
)

// The primary's main database file is its local page image. Normally the
// image holds every page (a new or adopted database) and reads and writes
// pass straight through. After a takeover (or, later, lazy hydration) it
// may be sparse: then <db>-bop/image holds a presence bitmap of the pages
// the image holds, and a read of a page it never held is served from the
// remote at T_seed, the boundary the image was created at, and written into
// the image (hydration).
//
// Invariants:
//   - A page marked present holds its newest version in the image file (or
//     in the WAL, which SQLite reads first). A page not marked present has
//     had no local write since T_seed, so its version at T_seed is its
//     newest version outside the WAL: read(page, T_seed) is exact.
//   - Marks only ever go from absent to present (a write, a hydration, a
//     truncation past the page), all under image.mu, so a hydration never
//     overwrites a newer page a checkpoint wrote.
//   - The bitmap is persisted only after the image data it describes was
//     fsynced: a save writes the marks as they were before that fsync began
//     (marksBefore), never a mark set by a write the fsync may have missed.
//   - The bitmap is persisted before SQLite may restart the WAL (through
//     mainFile.Sync and the generation-end barrier, durable.go's
//     beforeWALReuse): until then the WAL still holds every page a
//     checkpoint wrote, so a crash that loses marks loses nothing.
//   - No MemoryMapper is offered on a sparse image's files: SQLite would
//     read the OS file, holes and all, around ReadAt.
const (
	imageFileName = "image"
	imageMagic    = "bopimage"
	imageVersion  = 1
	imageHdrSize  = 48
)

// imageHeader is the fixed part of the image file.
type imageHeader struct {
	PageSize  uint32
	SeedPages uint32 // pages 1..SeedPages are covered by the bitmap; later ones are always present
	TSeed     uint64
}

// encodeImage returns the file bytes: header, bitmap, xxhash64 of both.
func encodeImage(h imageHeader, bits []byte) []byte {
	b := make([]byte, imageHdrSize+len(bits)+8)
	le := binary.LittleEndian
	copy(b, imageMagic)
	le.PutUint32(b[8:], imageVersion)
	le.PutUint32(b[12:], h.PageSize)
	le.PutUint32(b[16:], h.SeedPages)
	le.PutUint64(b[24:], h.TSeed)
	le.PutUint64(b[32:], uint64(len(bits)))
	copy(b[imageHdrSize:], bits)
	le.PutUint64(b[imageHdrSize+len(bits):], xxhash.Sum64(b[:imageHdrSize+len(bits)]))
	return b
}

// decodeImage parses an image file.
func decodeImage(b []byte) (imageHeader, []byte, error) {
	var h imageHeader
	le := binary.LittleEndian
	if len(b) < imageHdrSize+8 || string(b[:8]) != imageMagic {
		return h, nil, errors.New("not an image file")
	}
	if v := le.Uint32(b[8:]); v != imageVersion {
		return h, nil, fmt.Errorf("image format version %d, this bop reads %d", v, imageVersion)
	}
	if le.Uint32(b[20:]) != 0 || le.Uint64(b[40:]) != 0 {
		return h, nil, errors.New("reserved header bytes are not zero")
	}
	h.PageSize = le.Uint32(b[12:])
	h.SeedPages = le.Uint32(b[16:])
	h.TSeed = le.Uint64(b[24:])
	n := le.Uint64(b[32:])
	if !delta.ValidPageSize(h.PageSize) {
		return h, nil, fmt.Errorf("bad page size %d", h.PageSize)
	}
	if n != uint64(bitmapLen(h.SeedPages)) || uint64(len(b)) != imageHdrSize+n+8 {
		return h, nil, fmt.Errorf("bitmap of %d bytes for %d pages in a file of %d bytes", n, h.SeedPages, len(b))
	}
	body := b[:imageHdrSize+n]
	if le.Uint64(b[imageHdrSize+n:]) != xxhash.Sum64(body) {
		return h, nil, errors.New("checksum mismatch")
	}
	if h.SeedPages%8 != 0 && b[imageHdrSize+n-1]>>(h.SeedPages%8) != 0 {
		return h, nil, errors.New("bits set past the last covered page")
	}
	return h, append([]byte(nil), b[imageHdrSize:imageHdrSize+n]...), nil
}

func bitmapLen(pages uint32) int { return int((uint64(pages) + 7) / 8) }

// pageSource reads a page's version at the image's seed boundary.
type pageSource interface {
	// page fills buf (one page) with page pgno; beyond is true if the page
	// is past the database's end at the boundary.
	page(ctx context.Context, pgno uint32, buf []byte) (beyond bool, err error)
}

// image is a sparse page image's presence bitmap and remote source.
type image struct {
	dir string
	hdr imageHeader
	src pageSource

	mu      sync.Mutex
	bits    []byte
	missing uint32
	marked  uint64 // marks set since open (a counter)
	saved   uint64 // the value of marked the persisted bitmap reflects
	gone    bool   // complete and the bitmap file removed
	hydrate bool   // fetched pages are written into the image (false: read-only file)

	complete atomic.Bool // every page present: reads pass through
	fetches  atomic.Int64
}

// loadImage opens the sparse image state of dir, or returns nil if the
// image is complete (no bitmap file).
func loadImage(dir string, src pageSource) (*image, error) {
	path := filepath.Join(dir, imageFileName)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bop: read %s: %w", path, err)
	}
	h, bits, err := decodeImage(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadState, path, err)
	}
	img := &image{dir: dir, hdr: h, src: src, bits: bits}
	for p := uint32(1); p <= h.SeedPages; p++ {
		if !img.hasLocked(p) {
			img.missing++
		}
	}
	img.complete.Store(img.missing == 0)
	return img, nil
}

// createImage writes a new, empty presence bitmap: no page is present.
func createImage(dir string, h imageHeader) error {
	return writeFileAtomic(dir, imageFileName, encodeImage(h, make([]byte, bitmapLen(h.SeedPages))))
}

func (img *image) hasLocked(p uint32) bool {
	if p > img.hdr.SeedPages {
		return true
	}
	i := p - 1
	return img.bits[i/8]&(1<<(i%8)) != 0
}

func (img *image) markLocked(p uint32) {
	if p == 0 || p > img.hdr.SeedPages {
		return
	}
	i := p - 1
	if img.bits[i/8]&(1<<(i%8)) == 0 {
		img.bits[i/8] |= 1 << (i % 8)
		img.missing--
		img.marked++
		if img.missing == 0 {
			img.complete.Store(true)
		}
	}
}

// Missing returns the number of pages the image does not hold.
func (img *image) Missing() uint32 {
	img.mu.Lock()
	defer img.mu.Unlock()
	return img.missing
}

// mainIO is how the image reads and writes the main file: the connection's
// file for reads, and bop's write path (seal accounting) for hydration.
type mainIO interface {
	readBase(p []byte, off int64) (int, error)
	writeBase(p []byte, off int64) error
}

// remoteReadTimeout bounds one page fetch from the store.
const remoteReadTimeout = 2 * time.Minute

// readAt serves a read of the main file: runs of present pages from the
// file, absent pages from the source (then written into the image).
// Sub-page reads (SQLite's 100-byte header, the 16-byte change counter) are
// served from the page that holds them.
func (img *image) readAt(ctx context.Context, io_ mainIO, p []byte, off int64) (int, error) {
	ps := int64(img.hdr.PageSize)
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		pgno := pos/ps + 1
		// The run of pages from pgno whose presence is the same.
		img.mu.Lock()
		present := pgno > int64(img.hdr.SeedPages) || img.hasLocked(uint32(pgno))
		end := int64(len(p))
		if present {
			for q := pgno + 1; q <= int64(img.hdr.SeedPages) && (q-1)*ps < off+end; q++ {
				if !img.hasLocked(uint32(q)) {
					end = (q-1)*ps - off
					break
				}
			}
		} else {
			end = min(end, pgno*ps-off)
		}
		img.mu.Unlock()
		if present {
			m, err := io_.readBase(p[n:end], pos)
			n += m
			if err != nil {
				return n, err
			}
			continue
		}
		page := make([]byte, ps)
		beyond, err := img.fetch(ctx, uint32(pgno), page)
		if err != nil {
			return n, err
		}
		if beyond {
			return n, io.EOF
		}
		in := pos - (pgno-1)*ps
		n += copy(p[n:end], page[in:])
		if err := img.fill(io_, uint32(pgno), page); err != nil {
			return n, err
		}
	}
	return n, nil
}

// fetch reads page pgno at T_seed from the source.
func (img *image) fetch(ctx context.Context, pgno uint32, page []byte) (bool, error) {
	img.fetches.Add(1)
	ctx, cancel := context.WithTimeout(ctx, remoteReadTimeout)
	defer cancel()
	beyond, err := img.src.page(ctx, pgno, page)
	if err != nil {
		return false, fmt.Errorf("bop: read page %d at txid %d from the remote: %w", pgno, img.hdr.TSeed, err)
	}
	return beyond, nil
}

// fill writes a fetched page into the image unless a write got there
// first.
func (img *image) fill(io_ mainIO, pgno uint32, page []byte) error {
	img.mu.Lock()
	defer img.mu.Unlock()
	if !img.hydrate || img.hasLocked(pgno) {
		return nil
	}
	if err := io_.writeBase(page, int64(pgno-1)*int64(len(page))); err != nil {
		return err
	}
	img.markLocked(pgno)
	return nil
}

// writeAt performs a write of SQLite's to the main file, marking the pages
// it covers present. A page it covers only in part is hydrated first.
func (img *image) writeAt(ctx context.Context, io_ mainIO, p []byte, off int64, write func() error) error {
	ps := int64(img.hdr.PageSize)
	first, last := off/ps+1, (off+int64(len(p))-1)/ps+1
	for _, q := range []int64{first, last} {
		covered := off <= (q-1)*ps && off+int64(len(p)) >= q*ps
		if covered || q > int64(img.hdr.SeedPages) {
			continue
		}
		img.mu.Lock()
		has := img.hasLocked(uint32(q))
		img.mu.Unlock()
		if has {
			continue
		}
		page := make([]byte, ps)
		beyond, err := img.fetch(ctx, uint32(q), page)
		if err != nil {
			return err
		}
		if !beyond {
			if err := img.fill(io_, uint32(q), page); err != nil {
				return err
			}
		}
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := write(); err != nil {
		return err
	}
	for q := first; q <= last && q <= int64(img.hdr.SeedPages); q++ {
		img.markLocked(uint32(q))
	}
	return nil
}

// truncated records a truncation of the main file to size: the pages past
// it are gone, so they are never read from the remote again.
func (img *image) truncated(size int64) {
	ps := int64(img.hdr.PageSize)
	img.mu.Lock()
	defer img.mu.Unlock()
	for q := (size+ps-1)/ps + 1; q <= int64(img.hdr.SeedPages); q++ {
		img.markLocked(uint32(q))
	}
}

// imageMarks is a copy of the marks at one moment (marksBefore).
type imageMarks struct {
	bits    []byte // nil: nothing to persist
	missing uint32
	marked  uint64
}

// marksBefore copies the marks not yet persisted, before an fsync of the
// main file: only those are known durable once it succeeds.
func (img *image) marksBefore() imageMarks {
	img.mu.Lock()
	defer img.mu.Unlock()
	if img.marked == img.saved || img.gone {
		return imageMarks{marked: img.marked}
	}
	return imageMarks{bits: append([]byte(nil), img.bits...), missing: img.missing, marked: img.marked}
}

// unsaved reports whether marks were set that the bitmap file lacks.
func (img *image) unsaved() bool {
	img.mu.Lock()
	defer img.mu.Unlock()
	return img.marked != img.saved && !img.gone
}

// save persists m, taken by marksBefore before an fsync of the main file
// that succeeded, unless a newer copy was saved already. A complete
// image's bitmap file is removed.
func (img *image) save(m imageMarks) error {
	img.mu.Lock()
	defer img.mu.Unlock()
	if m.bits == nil || img.gone || m.marked <= img.saved {
		return nil
	}
	if m.missing == 0 {
		if err := os.Remove(filepath.Join(img.dir, imageFileName)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("bop: remove %s: %w", filepath.Join(img.dir, imageFileName), err)
		}
		if err := syncDir(img.dir); err != nil {
			return err
		}
		img.gone = true
	} else if err := writeFileAtomic(img.dir, imageFileName, encodeImage(img.hdr, m.bits)); err != nil {
		return err
	}
	img.saved = m.marked
	return nil
}

// persist saves every mark set so far; the caller has just fsynced the
// image and no write to it can be running (the database's last close).
func (img *image) persist() error { return img.save(img.marksBefore()) }

// remotePages reads pages at one boundary through the catalog's page map
// and the store: one ranged GET per page, verified by delta.DecodeFrame.
type remotePages struct {
	snap     *manifest.Snapshot
	store    remote.Store
	pageSize uint32
}

func (r *remotePages) page(ctx context.Context, pgno uint32, buf []byte) (bool, error) {
	loc, err := r.snap.Resolve(pgno)
	if err != nil {
		return false, err
	}
	switch loc.Kind {
	case manifest.Beyond:
		return true, nil
	case manifest.Zero:
		clear(buf)
		return false, nil
	case manifest.InObject:
	default:
		return false, fmt.Errorf("page %d: unknown location %v", pgno, loc.Kind)
	}
	rc, _, err := r.store.Get(ctx, loc.Object.Key, loc.Offset, loc.Length)
	if err != nil {
		return false, fmt.Errorf("get %s at %d: %w", loc.Object.Key, loc.Offset, err)
	}
	defer rc.Close()
	frame := make([]byte, loc.Length)
	if _, err := io.ReadFull(rc, frame); err != nil {
		return false, fmt.Errorf("read %s at %d: %w", loc.Object.Key, loc.Offset, err)
	}
	page, _, err := delta.DecodeFrame(frame, pgno, r.pageSize)
	if err != nil {
		return false, fmt.Errorf("%s frame %d: %w", loc.Object.Key, loc.Frame, err)
	}
	copy(buf, page)
	return false, nil
}
