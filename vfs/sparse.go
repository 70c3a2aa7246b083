package vfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bopstore/bop/wal"
)

// seedSparse lays out the local files of the database at path as a sparse
// image of the remote state at boundary m.TSeed: an all-holes main file of
// dbPages pages, a presence bitmap with no page present, a spool whose txids
// continue after T_seed, a seal and meta.json (written last). It is the
// local half of a takeover: the caller (the takeover of issue 6, and the
// tests of the sparse read path) has built <path>-bop/catalog.db holding
// the remote state at T_seed, holds or does not need the ownership lock,
// and has moved any previous local files away.
func seedSparse(path string, m *meta, pageSize, dbPages uint32) error {
	dir := path + "-bop"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, "catalog.db")); err != nil {
		return fmt.Errorf("bop: seed sparse image of %s: no catalog: %w", path, err)
	}
	for _, p := range []string{path + "-wal", path + "-shm", path + "-journal"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	err = f.Truncate(int64(dbPages) * int64(pageSize))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("bop: seed sparse image %s: %w", path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return err
	}
	if dbPages > 0 {
		if err := createImage(dir, imageHeader{PageSize: pageSize, SeedPages: dbPages, TSeed: m.TSeed}); err != nil {
			return err
		}
	}
	sp, err := wal.OpenSpool(filepath.Join(dir, "spool"), wal.SpoolOptions{})
	if err != nil {
		return err
	}
	err = sp.SetStart(m.TSeed)
	if cerr := sp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	s, _, err := openSeal(dir, true)
	if err != nil {
		return err
	}
	defer s.close()
	main, err := statFile(path)
	if err != nil {
		return err
	}
	if err := s.save(sealState{main: main}); err != nil {
		return err
	}
	m.Origin = originTakeover
	return writeMeta(dir, m)
}
