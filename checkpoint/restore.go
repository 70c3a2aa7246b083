package checkpoint

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

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
	// Path is the file to create. It must not exist unless Overwrite, nor
	// its -wal, -shm or -journal (an earlier database's, which SQLite
	// would apply to the restored file): Overwrite removes them.
	Path      string
	Overwrite bool
	// Parallel workers (default 8), each restoring one region of the file
	// at a time (restore_plan.go): its bases one GET after the other, then
	// its deltas with up to 32 GETs at once. MaxRead (default 2 MiB, at
	// most 256 MiB): a worker's read buffer; frames are read from a GET's
	// body in blocks of at most that (shared between the GETs read
	// together), and written from there. Memory is about Parallel *
	// MaxRead, whatever the database size.
	Parallel int
	MaxRead  int64
	// MaxGets bounds the GETs whose bodies are open at once (default
	// Parallel * 32, at most 256; never below 1). A store whose client
	// limits its connections (an HTTP transport's MaxConnsPerHost, say)
	// needs MaxGets at or below that limit: a merge of delta streams holds
	// its bodies open while it waits for more, so a smaller limit would
	// leave it waiting for a connection another open body holds.
	MaxGets int
	// DeltaBudget is accepted and ignored: delta pages are no longer held
	// in memory (they are written straight from their objects).
	DeltaBudget int64
	// TempDir holds the catalog built from the store (default: the
	// folder of Path).
	TempDir string
}

// maxMaxRead caps RestoreOptions.MaxRead: larger buffers gain nothing
// and could not be allocated, and the sizes derived from it must not
// overflow. defaultMaxGets caps the default of RestoreOptions.MaxGets:
// more open bodies than that are file descriptors or connections without
// gain.
const (
	maxMaxRead     = 256 << 20
	defaultMaxGets = 256
)

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
	Gets      int64  // GETs of objects (ranged or whole)
	GetBytes  int64  // bytes they fetched
	// SnapshotDamage is not nil when the catalog Restore used was built
	// from the store without the snapshot head names (missing or
	// corrupt), from the whole log instead: the restore is as good, the
	// store needs a new snapshot (manifest.SnapshotDamage).
	SnapshotDamage *manifest.SnapshotDamage
}

// Restore materialises a plain SQLite database file at a boundary: every
// page resolved through the catalog's page map at that boundary, the file
// restored region by region by parallel workers, each region streaming
// the stretch of every object its pages use (restore_plan.go), each
// frame verified (delta.DecodeFrame: page number, length, hash) before it
// is written, pages never written at the boundary as zeros, the file
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
	opts.MaxRead = min(opts.MaxRead, maxMaxRead)
	if opts.MaxGets <= 0 {
		opts.MaxGets = min(opts.Parallel*maxMerge, defaultMaxGets)
	}
	if !opts.Overwrite {
		for _, p := range append([]string{opts.Path}, sidecars(opts.Path)...) {
			if _, err := os.Lstat(p); err == nil {
				return res, errorf("restore: %s exists (SQLite would apply a WAL or journal left there to the restored file): remove it, or overwrite", p)
			} else if !errors.Is(err, os.ErrNotExist) {
				return res, errorf("restore: %w", err)
			}
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
		Size: int64(snap.DBPages()) * int64(snap.PageSize()), SnapshotDamage: cat.SnapshotDamage()}

	f, err := os.CreateTemp(dir, filepath.Base(opts.Path)+".restore-*")
	if err != nil {
		return res, errorf("restore: %w", err)
	}
	tmpPath := f.Name()
	// CreateTemp makes the file private (0600): a restored database gets
	// 0644, what SQLite or cp give a new file under the usual umask, so
	// that other users of the service can read it.
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		os.Remove(tmpPath)
		return res, errorf("restore: chmod %s: %w", tmpPath, err)
	}
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
	// An earlier database's WAL, shared-memory index or journal at Path
	// would be applied to the restored file by the next SQLite to open it
	// (its frames, or its rollback): they go first. A crash in between
	// leaves the earlier file without them, which Overwrite gave up.
	for _, p := range sidecars(opts.Path) {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return res, errorf("restore: remove %s, left by the file it replaces: %w", p, err)
		}
	}
	if err := os.Rename(tmpPath, opts.Path); err != nil {
		return res, errorf("restore: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return res, nil
}

// sidecars are the files SQLite keeps beside a database at path.
func sidecars(path string) []string {
	return []string{path + "-wal", path + "-shm", path + "-journal"}
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
