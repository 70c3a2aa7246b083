package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/bopstore/bop/remote"
)

// Get returns a reader of length bytes of key from off (remote.Store
// semantics). For a cacheable key the reader is served block by block from
// the cache, fetching missing runs (read-ahead up to the range's end) as it
// goes: memory stays bounded by one block per read, never the object. The
// ObjectInfo comes from the remembered metadata; if the object is unknown,
// the first block of the range is fetched to learn it (its bytes are then
// cached for the reader). A body whose object is replaced while it is read
// fails rather than mix versions.
func (c *Cache) Get(ctx context.Context, key string, off, length int64) (io.ReadCloser, remote.ObjectInfo, error) {
	if err := c.checkOpen(); err != nil {
		return nil, remote.ObjectInfo{}, err
	}
	if !c.cacheable(key) {
		c.st.passthrough.Add(1)
		return c.inner.Get(ctx, key, off, length)
	}
	if off < 0 {
		return nil, remote.ObjectInfo{}, fmt.Errorf("cache: get %q at %d: %w", key, off, remote.ErrInvalidRange)
	}
	if err := ctx.Err(); err != nil {
		return nil, remote.ObjectInfo{}, fmt.Errorf("cache: get %q: %w", key, err)
	}
	info, err := c.meta(ctx, key, off, length)
	if err != nil {
		return nil, remote.ObjectInfo{}, err
	}
	if off > info.Size {
		return nil, remote.ObjectInfo{}, fmt.Errorf("cache: get %q at %d of %d bytes: %w", key, off, info.Size, remote.ErrInvalidRange)
	}
	end := info.Size
	if length >= 0 && length < info.Size-off {
		end = off + length
	}
	return &body{c: c, ctx: ctx, key: key, etag: info.ETag, pos: off, end: end}, info, nil
}

// meta returns key's metadata, learning it if unknown: from a HEAD for an
// empty range, else by reading the range's first byte, which fetches (and
// caches) its first blocks.
func (c *Cache) meta(ctx context.Context, key string, off, length int64) (remote.ObjectInfo, error) {
	if info, ok := c.known(key); ok {
		return info, nil
	}
	if length == 0 {
		return c.Head(ctx, key)
	}
	want := int64(math.MaxInt64)
	if length > 0 && length <= math.MaxInt64-off {
		want = off + length
	}
	var one [1]byte
	for attempt := 0; attempt <= maxChangedRetries; attempt++ {
		_, err := c.read(ctx, key, one[:], off, want, "")
		switch {
		case err == errPastEnd:
			return remote.ObjectInfo{}, fmt.Errorf("cache: get %q at %d: %w", key, off, remote.ErrInvalidRange)
		case errors.Is(err, errChanged):
			continue
		case err != nil && err != io.EOF:
			return remote.ObjectInfo{}, err
		}
		if info, ok := c.known(key); ok {
			return info, nil
		}
		// Forgotten between the read and now (a racing Put): again.
	}
	// Replaced faster than we can learn it: take the inner store's word.
	c.st.requests.Add(1)
	return c.inner.Head(ctx, key)
}

// known returns the remembered metadata of key.
func (c *Cache) known(key string) (remote.ObjectInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o := c.objects[key]
	if o == nil || o.size < 0 {
		return remote.ObjectInfo{}, false
	}
	return o.info(), true
}

// body is a Get reader over the cache.
type body struct {
	c        *Cache
	ctx      context.Context
	key      string
	etag     string
	pos, end int64
	closed   bool
}

func (r *body) Read(b []byte) (int, error) {
	if r.closed {
		return 0, fmt.Errorf("cache: read %q: body closed", r.key)
	}
	if r.pos >= r.end {
		return 0, io.EOF
	}
	if len(b) == 0 {
		return 0, nil
	}
	if err := r.ctx.Err(); err != nil {
		return 0, fmt.Errorf("cache: read %q: %w", r.key, err)
	}
	n := int(min(int64(len(b)), r.end-r.pos))
	got, err := r.c.read(r.ctx, r.key, b[:n], r.pos, r.end, r.etag)
	r.pos += int64(got)
	if err == errPastEnd {
		err = io.EOF
	}
	switch {
	case err == io.EOF && r.pos < r.end:
		err = fmt.Errorf("cache: read %q: object ended at %d, before %d: %w", r.key, r.pos, r.end, io.ErrUnexpectedEOF)
	case err == io.EOF:
		err = nil
	case errors.Is(err, errChanged):
		err = fmt.Errorf("cache: read %q at %d: %w", r.key, r.pos, err)
	}
	return got, err
}

func (r *body) Close() error {
	r.closed = true
	return nil
}
