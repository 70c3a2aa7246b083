package manifest

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/bopstore/bop/delta"
	"github.com/bopstore/bop/remote"
)

// getRecord reads and verifies log/<seq>. A missing record wraps
// remote.ErrNotFound.
func getRecord(ctx context.Context, store remote.Store, layout remote.Layout, seq uint64) (*Record, []byte, error) {
	key := layout.Log(seq)
	data, _, err := getSmall(ctx, store, key)
	if err != nil {
		return nil, nil, err
	}
	rec, err := DecodeRecord(key, data)
	if err != nil {
		return nil, nil, err
	}
	if rec.Seq != seq {
		return nil, nil, corruptf(key, "record says seq %d", rec.Seq)
	}
	return rec, data, nil
}

// Refresh brings the catalog up to the remote log: it GETs log/<tip+1>,
// log/<tip+2>, ... until one is missing, applying each (void records are
// recorded and skipped). No LIST. It returns how many records it applied.
// A follower (replica) calls it to see new publishes.
func (c *Catalog) Refresh(ctx context.Context, store remote.Store) (int, error) {
	layout := c.Layout()
	src := c.dirSource(store)
	n := 0
	for {
		seq := c.Tip().Seq + 1
		rec, raw, err := getRecord(ctx, store, layout, seq)
		if errors.Is(err, remote.ErrNotFound) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if err := c.applyFrom(ctx, rec, raw, src); err != nil {
			return n, err
		}
		n++
	}
}

// dirSource is the catalog's directory source, or the store itself.
func (c *Catalog) dirSource(store remote.Store) DirectorySource {
	if c.dirs != nil {
		return c.dirs
	}
	return StoreDirectories{Store: store}
}

// StoreDirectories reads directories from the objects in a store: the
// header, directory and trailer of the object (one or two ranged GETs via
// delta.Open), never the frames.
type StoreDirectories struct{ Store remote.Store }

// Directory implements DirectorySource.
func (d StoreDirectories) Directory(ctx context.Context, o ObjectAdded) ([]byte, error) {
	obj, err := delta.Open(&storeReaderAt{ctx: ctx, store: d.Store, key: o.Key}, o.Size)
	if err != nil {
		return nil, fmt.Errorf("manifest: open object %s: %w", o.Key, err)
	}
	return delta.EncodeDirectory(obj.Summary())
}

// storeReaderAt reads ranges of one object with ranged GETs.
type storeReaderAt struct {
	ctx   context.Context
	store remote.Store
	key   string
}

func (r *storeReaderAt) ReadAt(p []byte, off int64) (int, error) {
	rc, info, err := r.store.Get(r.ctx, r.key, off, int64(len(p)))
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	n, err := io.ReadFull(rc, p)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		if off+int64(n) < info.Size {
			// The object holds the bytes: the stream was cut (a dropped
			// connection), which says nothing about the object. Not EOF,
			// which a decoder takes for a short, corrupt object.
			return n, fmt.Errorf("manifest: get %s: the stream ended after %d of %d bytes at %d (the object holds %d)", r.key, n, len(p), off, info.Size)
		}
		err = io.EOF
	}
	return n, err
}
