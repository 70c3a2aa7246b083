package vfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/backend"
	"github.com/bopstore/bop/remote/cache"
	"github.com/cespare/xxhash/v2"
)

// openStore opens the database's remote store: the backend of the store
// URL (no I/O for s3, local for file), read through a byte-range disk
// cache (remote/cache) of Config.CacheBytes, except the embedded default
// store, which is on local disk already. Page objects and catalog
// snapshots are immutable, so the cache serves them forever; head, log
// records and pins always go to the store.
func (d *database) openStore(ctx context.Context) error {
	be, err := backend.Open(ctx, d.remoteURL, d.cfg.backendOptions())
	if err != nil {
		return err
	}
	inner := be
	if d.cfg.wrapStore != nil {
		inner = d.cfg.wrapStore(be)
	}
	// Asked of the store beneath the cache (a test's wrapper included):
	// the one that decides conditional puts.
	d.enforcesConditions = remote.EnforcesConditions(inner)
	if d.cfg.Remote == "" {
		// The embedded default store is a folder of <db>-bop, on the
		// database's own disk: a disk cache in front of it would keep a
		// second copy of its objects on that same disk, and cost a lock
		// file, folders and a scan at every open and a block file per
		// object published. Reads go to the store's files directly.
		d.inner, d.store = be, inner
		return nil
	}
	c, err := cache.New(inner, cache.Config{Dir: d.cacheDir(), MaxBytes: d.cfg.CacheBytes})
	if err != nil {
		closeStore(be)
		return fmt.Errorf("open the remote cache: %w", err)
	}
	d.inner, d.store = be, c
	return nil
}

// cacheDir is the database's cache folder: <db>-bop/cache, or a folder of
// its own under Config.CacheDir (one cache per folder: it is locked), named
// by tenant and database name plus a hash of the store URL and the local
// path, so that two databases (or two local copies of one) never share one.
func (d *database) cacheDir() string {
	if d.cfg.CacheDir == "" {
		return filepath.Join(d.dir, "cache")
	}
	return filepath.Join(d.cfg.CacheDir, fmt.Sprintf("%s-%s-%016x", d.layout.Tenant, d.layout.DB, xxhash.Sum64String(d.remoteURL+"\x00"+d.path)))
}

// cacheUsed is the cache's size on disk.
func (d *database) cacheUsed() int64 {
	if c, ok := d.store.(*cache.Cache); ok {
		return c.Stats().UsedBytes
	}
	return 0
}

// closeStores closes the cache (if any), then the backend.
func (d *database) closeStores() error {
	var err error
	if c, ok := d.store.(*cache.Cache); ok {
		err = c.Close()
	}
	err = errors.Join(err, closeStore(d.inner))
	d.store, d.inner = nil, nil
	return err
}

func closeStore(s remote.Store) error {
	if c, ok := s.(io.Closer); ok {
		return c.Close()
	}
	return nil
}
