package cache

import (
	"os"

	"github.com/bopstore/bop/remote"
)

// install caches one fetched block of o (data, whole or the object's
// last) if o is still at generation gen. Failures only cost the caching:
// the reader already has its bytes.
//
// The file is written to tmp/ and renamed to a name no file ever had
// (seq), then counted in the index under c.mu. If the block is already
// cached (a re-add: a refetch after a corrupt file, or a race), the old
// entry is dropped from the index and the accounting first and its file
// unlinked, so used stays the exact sum of the indexed files and no file
// outlives its entry.
func (c *Cache) install(o *object, gen uint64, idx int64, info remote.ObjectInfo, data []byte) {
	if len(info.ETag) > maxETagLen || len(data) == 0 {
		return // cannot be described in a header; served uncached
	}
	h := blockHeader{
		key:       o.key,
		etag:      info.ETag,
		offset:    idx << c.shift,
		n:         len(data),
		objSize:   info.Size,
		modTime:   info.ModTime.UnixNano(),
		blockSize: c.cfg.BlockSize,
	}
	size := h.fileLen()
	if size > c.cfg.MaxBytes {
		return
	}
	c.mu.Lock()
	stale := c.closed || c.objects[o.key] != o || o.gen != gen
	if !stale {
		c.installs.Add(1) // Close waits for us: no file lands after it
	}
	c.mu.Unlock()
	if stale {
		return
	}
	defer c.installs.Done()

	ip := c.images.Get().(*[]byte)
	img := appendBlock((*ip)[:0], &h, data)
	seq := c.seq.Add(1)
	f, err := c.writeBlock(o.khash, idx, seq, img)
	*ip = img[:0]
	c.images.Put(ip)
	if err != nil {
		c.st.fileErrors.Add(1)
		return
	}

	var gone []*block
	var closeMe *os.File
	c.mu.Lock()
	ok := !c.closed && c.objects[o.key] == o && o.gen == gen && o.etag == info.ETag
	if ok {
		if old := o.blocks[idx]; old != nil {
			c.dropBlockLocked(old, &gone) // re-add: replaces the entry
		}
		ok = c.evictLocked(size, &gone)
	}
	if ok {
		b := &block{obj: o, idx: idx, seq: seq, n: len(data), hdrLen: h.headerLen(), hash: h.hash, size: size}
		c.addBlockLocked(b)
		closeMe = c.openLocked(b, f)
	} else {
		// Stale, closed, or no room (the rest is pinned).
		closeMe = f
		gone = append(gone, &block{obj: o, idx: idx, seq: seq})
	}
	c.mu.Unlock()
	if closeMe != nil {
		closeMe.Close()
	}
	c.release(gone)
}

// writeBlock writes a block file image to tmp/ and renames it to its name.
// It returns the file, open for reading.
func (c *Cache) writeBlock(khash uint64, idx int64, seq uint64, img []byte) (*os.File, error) {
	f, err := os.CreateTemp(c.tmpDir, "blk-*")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*os.File, error) {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	if _, err := f.Write(img); err != nil {
		return fail(err)
	}
	// No fsync: after a crash a torn file fails the loader's size check
	// or a unit check on read, and is fetched again. A cache need not be
	// durable, only never wrong.
	path := c.blockPath(khash, idx, seq)
	err = os.Rename(f.Name(), path)
	if os.IsNotExist(err) {
		if err = os.MkdirAll(c.blockDir(khash), 0o755); err == nil {
			err = os.Rename(f.Name(), path)
		}
	}
	if err != nil {
		return fail(err)
	}
	return f, nil
}
