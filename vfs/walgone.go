package vfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/bopstore/bop/manifest"
)

// checkWALGone runs wal.Spool.CheckWALGone, which opens the main file
// only if it has to look at it (a new database's may not exist yet: then
// it is empty), and asks the local catalog for the pages of the
// transactions the spool published and no longer holds.
func (d *database) checkWALGone() error {
	var f *os.File
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	openMain := func() (io.ReaderAt, int64, error) {
		var err error
		f, err = os.Open(d.path)
		if errors.Is(err, os.ErrNotExist) {
			return bytes.NewReader(nil), 0, nil
		}
		if err != nil {
			return nil, 0, fmt.Errorf("open %s: %w", d.path, err)
		}
		fi, err := f.Stat()
		if err != nil {
			return nil, 0, fmt.Errorf("stat %s: %w", d.path, err)
		}
		return f, fi.Size(), nil
	}
	return d.spool.CheckWALGone(openMain, d.publishedPages, d.path, d.path+"-wal")
}

// publishedPages is CheckWALGone's wal.PublishedPages: the pages whose
// version at the boundary through lives in a delta object holding
// transactions after txid after, with the hash the catalog stores in the
// object's directory. It reads only the local catalog (the database's if
// open, else opened for this and closed again: the role opens it later),
// never the store.
//
// The version at through of a page changed after `after` is in a delta
// published after it, or in a base object made after it (an adopted
// image's first publish, a compaction): pages in such bases are not
// compared (their directories are not kept locally), and the log says how
// many were skipped. A catalog that cannot answer for through (none, or
// one rebuilt since, whose history starts later) leaves the published
// transactions checked by the database's size alone, and says so in the
// log: a check that cannot be made must not keep the database closed. A
// catalog that fails to answer (corrupt, unreadable) fails the open.
func (d *database) publishedPages(after, through uint64, fn func(pgno uint32, hash uint64) error) error {
	logf := func(format string, args ...any) {
		if d.cfg.Logf != nil {
			d.cfg.Logf("bop: "+format, args...)
		}
	}
	cat := d.catalog
	if cat == nil {
		path := d.catalogPath()
		if _, err := os.Stat(path); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				logf("%s: no catalog to compare the published txids %d..%d with the main file (the WAL is gone): checked by size only", d.path, after+1, through)
				return nil
			}
			return fmt.Errorf("stat %s: %w", path, err)
		}
		var err error
		if cat, err = manifest.Open(path, d.catalogOptions(0)); err != nil {
			return fmt.Errorf("check the published txids %d..%d against %s: %w", after+1, through, d.path, err)
		}
		defer cat.Close()
	}
	snap, err := cat.SnapshotAt(through)
	switch {
	case errors.Is(err, manifest.ErrSnapshotTooOld):
		logf("%s: the catalog's history starts after txid %d: the published txids %d..%d are checked by size only (%v)", d.path, through, after+1, through, err)
		return nil
	case err != nil:
		return fmt.Errorf("check the published txids %d..%d against %s: %w", after+1, through, d.path, err)
	case snap.Rounded():
		logf("%s: the catalog has no boundary at txid %d (its newest is %d): the published txids %d..%d are checked by size only", d.path, through, snap.Txid(), after+1, through)
		return nil
	}
	skipped := 0
	for _, o := range snap.Objects() {
		if o.MaxTxid <= after {
			continue // every page in it was in the main file when the generation began
		}
		if o.Kind != manifest.ObjectDelta {
			skipped++
			continue
		}
		dir, err := cat.Directory(o.ID)
		if err != nil {
			return fmt.Errorf("check the published txids %d..%d against %s: %w", after+1, through, d.path, err)
		}
		for _, e := range dir.Entries {
			loc, err := snap.Resolve(e.Pgno)
			if err != nil {
				return fmt.Errorf("check the published txids %d..%d against %s: object %d: %w", after+1, through, d.path, o.ID, err)
			}
			if loc.Kind != manifest.InObject || loc.Object.ID != o.ID || loc.Frame != e.Index {
				continue // a newer version, in a later object
			}
			if err := fn(e.Pgno, e.Hash); err != nil {
				return err
			}
		}
	}
	if skipped > 0 {
		logf("%s: %d base objects made after txid %d were not compared with the main file (the WAL is gone)", d.path, skipped, after)
	}
	return nil
}
