package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/bopstore/bop/remote"
)

// errChanged: the object's ETag changed while it was being read (it was
// replaced behind the cache's back, or through it by a Put racing the
// read). Nothing of the old version is returned mixed with the new one.
var errChanged = errors.New("cache: object changed while being read")

// errPastEnd: the inner store refused a block's range because it starts
// past the object's end (so the read's position does too). ReadAt reports
// it as io.EOF, Get as remote.ErrInvalidRange.
var errPastEnd = errors.New("cache: offset past the object's end")

// maxChangedRetries bounds how often ReadAt starts over after errChanged.
const maxChangedRetries = 3

// fetch is one ranged GET in flight, shared by every reader of the blocks
// it fills (singleflight). err is written before done is closed.
type fetch struct {
	done chan struct{}
	err  error
}

// ReadAt reads len(p) bytes of key at off into p: from cached blocks where
// it can, otherwise with one ranged GET per run of adjacent missing blocks
// (extended by read-ahead when the read continues an earlier one). It
// follows io.ReaderAt: n < len(p) only with an error, which is io.EOF when
// the object ends first (0, io.EOF at or past its end). A negative off is
// remote.ErrInvalidRange, a missing key remote.ErrNotFound. Keys that are
// not cacheable are read straight from the inner store.
func (c *Cache) ReadAt(ctx context.Context, key string, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("cache: read %q at %d: %w", key, off, remote.ErrInvalidRange)
	}
	for attempt := 0; ; attempt++ {
		n, err := c.read(ctx, key, p, off, 0, "")
		if errors.Is(err, errChanged) && attempt < maxChangedRetries {
			continue
		}
		if err == errPastEnd {
			err = io.EOF
		}
		return n, err
	}
}

// ReaderAt returns an io.ReaderAt over key whose reads go through
// ReadAt with ctx: what decoders such as delta.Open take.
func (c *Cache) ReaderAt(ctx context.Context, key string) io.ReaderAt {
	return &keyReader{c: c, ctx: ctx, key: key}
}

type keyReader struct {
	c   *Cache
	ctx context.Context
	key string
}

func (r *keyReader) ReadAt(p []byte, off int64) (int, error) { return r.c.ReadAt(r.ctx, r.key, p, off) }

// read fills p from bytes [off, off+len(p)) of key. want, if beyond
// off+len(p), is where the caller will keep reading to (a Get body), so
// read-ahead may fetch up to it. expect, if set, is the only ETag the read
// may return bytes of (errChanged otherwise); read pins it to the first
// version it sees, so one call never mixes two.
func (c *Cache) read(ctx context.Context, key string, p []byte, off, want int64, expect string) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("cache: read %q: %w", key, err)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, ErrClosed
	}
	o := c.objects[key]
	if o == nil {
		// Only valid cacheable keys are ever in the index, so the key
		// checks run on the first read of an object only.
		c.mu.Unlock()
		if !c.cacheable(key) {
			return c.readThrough(ctx, key, p, off)
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return 0, ErrClosed
		}
		o = c.objectLocked(key)
	}
	end := off + int64(len(p))
	sequential := o.touchStream(off, end)
	pos := off

	// Loop invariant: c.mu is held, and bytes [off, pos) of p are filled
	// from one version of the object (ETag expect, once set).
	for {
		if c.closed {
			c.mu.Unlock()
			return int(pos - off), ErrClosed
		}
		if cur := c.objects[key]; cur != o {
			// Invalidated and forgotten meanwhile: carry on with the
			// key's current state; expect guards the version.
			if cur == nil {
				cur = c.objectLocked(key)
			}
			c.settleLocked(o)
			o = cur
		}
		stop := end
		if o.size >= 0 {
			if expect == "" {
				expect = o.etag
			} else if o.etag != expect {
				c.settleLocked(o)
				c.mu.Unlock()
				return int(pos - off), errChanged
			}
			stop = min(end, max(o.size, off))
		}
		if pos >= stop {
			var err error
			if pos < end {
				err = io.EOF
			}
			c.settleLocked(o)
			c.mu.Unlock()
			return int(pos - off), err
		}
		idx := pos >> c.shift
		if b := o.blocks[idx]; b != nil {
			bstart := idx << c.shift
			in := int(pos - bstart)
			if in >= b.n {
				// The block is shorter than the object says: it cannot
				// be (load and install check it), so treat it as corrupt.
				var gone []*block
				c.dropBlockLocked(b, &gone)
				c.mu.Unlock()
				c.st.corrupt.Add(1)
				c.release(gone)
				c.mu.Lock()
				continue
			}
			if b.f == nil {
				c.openBlock(o, b) // drops and retakes c.mu
				continue
			}
			n := int(min(stop, bstart+int64(b.n)) - pos)
			f, hdrLen, bn, hash := b.f, b.hdrLen, b.n, b.hash
			if b.links[lruList].in {
				c.lru.moveToFront(b)
			}
			c.files.moveToFront(b)
			c.mu.Unlock()

			err := c.readBlock(f, hdrLen, bn, hash, in, p[pos-off:pos-off+int64(n)])
			switch {
			case err == nil:
				c.st.hits.Add(1)
				c.st.bytesFromCache.Add(int64(n))
				pos += int64(n)
				if pos == end {
					// Done, and the object holds a block, so there is
					// nothing to settle: skip retaking the lock.
					return len(p), nil
				}
			case errors.Is(err, os.ErrClosed):
				// Evicted from the descriptor cache, or dropped, while
				// we read: look it up again.
			default:
				// A failed check or an I/O error: never return the
				// bytes; drop the block, and the next turn refetches it.
				c.st.corrupt.Add(1)
				var gone []*block
				c.mu.Lock()
				c.dropBlockLocked(b, &gone)
				c.mu.Unlock()
				c.release(gone)
			}
			c.mu.Lock()
			continue
		}
		if f := o.fetching[idx]; f != nil {
			c.mu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				return int(pos - off), fmt.Errorf("cache: read %q: %w", key, ctx.Err())
			}
			// Another reader's cancelled ctx or a version change is not
			// this reader's failure: look again (and fetch it ourselves
			// if the block did not land).
			if err := f.err; err != nil && !retryable(err) {
				if errors.Is(err, remote.ErrInvalidRange) {
					err = errPastEnd // the block, so pos, is past the end
				}
				return int(pos - off), err
			}
			c.mu.Lock()
			continue
		}

		// A miss: fetch the run of adjacent missing blocks from idx up to
		// the end of the request, extended by read-ahead.
		last := (end - 1) >> c.shift
		if ra := c.cfg.ReadAhead; ra > 0 {
			ahead := end
			if want > end {
				ahead = max(ahead, min(want, pos+ra))
			}
			if sequential {
				ahead = max(ahead, pos+ra)
			}
			if o.size >= 0 {
				ahead = min(ahead, o.size)
			}
			last = max(last, (ahead-1)>>c.shift)
		}
		if o.size >= 0 {
			last = min(last, (o.size-1)>>c.shift)
		}
		first := idx
		for last > idx && o.blocks[idx+1] == nil && o.fetching[idx+1] == nil {
			idx++
		}
		last = idx
		f := &fetch{done: make(chan struct{})}
		if o.fetching == nil {
			o.fetching = make(map[int64]*fetch)
		}
		for i := first; i <= last; i++ {
			o.fetching[i] = f
		}
		gen := o.gen
		c.mu.Unlock()

		n, err := c.fetchRun(ctx, o, gen, first, last, p[pos-off:], pos, &expect)
		c.finish(o, f, first, last, err)
		pos += int64(n)
		if err != nil {
			if errors.Is(err, remote.ErrInvalidRange) {
				// The block starts past the object's end, so pos does.
				err = errPastEnd
			}
			return int(pos - off), err
		}
		c.mu.Lock()
	}
}

func retryable(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errChanged)
}

// openBlock opens b's file for the descriptor cache. Called and returns
// with c.mu held; drops it around the open. If the file is gone (removed
// behind the cache's back), the block is dropped.
func (c *Cache) openBlock(o *object, b *block) {
	path := c.blockPath(o.khash, b.idx, b.seq)
	c.mu.Unlock()
	f, err := os.Open(path)
	c.mu.Lock()
	var gone []*block
	var closeMe *os.File
	switch {
	case err != nil && b.obj.blocks[b.idx] != b:
		// Evicted or replaced while we opened it: look again.
	case err != nil:
		// Removed behind the cache's back: a damaged cache.
		c.st.corrupt.Add(1)
		c.dropBlockLocked(b, &gone)
	case c.closed || b.obj.blocks[b.idx] != b || b.f != nil:
		closeMe = f // dropped, replaced, or opened by another reader
	default:
		closeMe = c.openLocked(b, f)
	}
	c.mu.Unlock()
	if closeMe != nil {
		closeMe.Close()
	}
	c.release(gone)
	c.mu.Lock()
}

// readBlock reads data bytes [in, in+len(dst)) of a block file into dst,
// verifying every unit it reads.
func (c *Cache) readBlock(f *os.File, hdrLen, n int, hash uint64, in int, dst []byte) error {
	fileOff, span := unitSpan(hdrLen, n, in, len(dst))
	bp := c.scratch.Get().(*[]byte)
	buf := (*bp)[:span]
	err := readFull(f, buf, fileOff)
	if err == nil {
		err = checkUnits(buf, hash, in, dst)
	}
	c.scratch.Put(bp)
	return err
}

// fetchRun GETs blocks [first, last] of o in one request, caches each
// whole block it receives, and copies the bytes from pos on into dst (as
// far as they reach). It returns how many bytes of dst it filled.
func (c *Cache) fetchRun(ctx context.Context, o *object, gen uint64, first, last int64, dst []byte, pos int64, expect *string) (int, error) {
	start := first << c.shift
	length := (last - first + 1) << c.shift
	c.st.requests.Add(1)
	rc, info, err := c.inner.Get(ctx, o.key, start, length)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	if _, err := c.learn(o, &gen, info); err != nil {
		return 0, err
	}
	// A read that already returned bytes of another version starts over.
	if *expect == "" {
		*expect = info.ETag
	} else if *expect != info.ETag {
		return 0, errChanged
	}
	bp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bp)
	copied := 0
	for idx := first; idx <= last; idx++ {
		bstart := idx << c.shift
		if bstart >= info.Size {
			break
		}
		buf := (*bp)[:min(c.cfg.BlockSize, info.Size-bstart)]
		if _, err := io.ReadFull(rc, buf); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return copied, fmt.Errorf("cache: fetch %q block %d: %w", o.key, idx, err)
		}
		c.st.misses.Add(1)
		c.st.bytesFetched.Add(int64(len(buf)))
		if at := pos + int64(copied); copied < len(dst) && at >= bstart && at < bstart+int64(len(buf)) {
			copied += copy(dst[copied:], buf[at-bstart:])
		}
		c.install(o, gen, idx, info, buf)
	}
	return copied, nil
}

// learn checks a GET's ObjectInfo against what the cache remembers of the
// object and fills unknown metadata. A different size or ETag means the
// object was replaced behind the cache's back: every block of the old
// version is dropped, the new metadata is adopted under a new generation
// (*gen, so this fetch's blocks still land), and learn reports the change.
func (c *Cache) learn(o *object, gen *uint64, info remote.ObjectInfo) (changed bool, err error) {
	if info.Size < 0 {
		return false, fmt.Errorf("cache: fetch %q: inner store reports size %d", o.key, info.Size)
	}
	var gone []*block
	c.mu.Lock()
	switch {
	case c.objects[o.key] != o || o.gen != *gen:
		// Invalidated during the GET: install will discard the blocks.
	case o.size < 0:
		o.size, o.etag, o.modTime = info.Size, info.ETag, info.ModTime.UnixNano()
	case o.size != info.Size || o.etag != info.ETag:
		for _, b := range o.blocks {
			c.dropBlockLocked(b, &gone)
		}
		c.gens++
		o.gen = c.gens
		o.fetching = nil // fetches of the old version install nothing
		o.streams = [streamSlots]int64{}
		o.size, o.etag, o.modTime = info.Size, info.ETag, info.ModTime.UnixNano()
		*gen = o.gen
		c.settleLocked(o)
		changed = true
	}
	c.mu.Unlock()
	c.release(gone)
	return changed, nil
}

// finish ends a fetch: its blocks are no longer in flight, and its
// waiters wake up.
func (c *Cache) finish(o *object, f *fetch, first, last int64, err error) {
	c.mu.Lock()
	for i := first; i <= last; i++ {
		if o.fetching[i] == f {
			delete(o.fetching, i)
		}
	}
	f.err = err
	close(f.done)
	c.settleLocked(o)
	c.mu.Unlock()
}

// readThrough reads a key the cache does not cache, with io.ReaderAt
// semantics.
func (c *Cache) readThrough(ctx context.Context, key string, p []byte, off int64) (int, error) {
	c.st.passthrough.Add(1)
	rc, info, err := c.inner.Get(ctx, key, off, int64(len(p)))
	if errors.Is(err, remote.ErrInvalidRange) && off >= 0 {
		return 0, io.EOF
	}
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	n, err := io.ReadFull(rc, p)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		if off+int64(n) < min(info.Size, off+int64(len(p))) {
			return n, fmt.Errorf("cache: read %q: body ended %d bytes early: %w", key, min(info.Size, off+int64(len(p)))-off-int64(n), io.ErrUnexpectedEOF)
		}
		err = io.EOF
	}
	return n, err
}
