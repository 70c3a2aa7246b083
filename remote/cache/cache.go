package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bopstore/bop/remote"
)

// ErrClosed is returned by every method of a closed Cache.
var ErrClosed = errors.New("cache: closed")

// ErrLocked: another Cache (in this or another process) uses the directory.
var ErrLocked = errors.New("cache: directory in use by another cache")

// Cache is a remote.Store that keeps byte ranges of immutable objects of
// an inner Store on local disk. Safe for concurrent use.
type Cache struct {
	inner     remote.Store
	cfg       Config
	shift     uint // log2(BlockSize)
	dir       string
	blocksDir string
	tmpDir    string
	lock      *os.File

	mu      sync.Mutex
	objects map[string]*object
	lru     list // unpinned blocks
	files   list // blocks with an open descriptor
	idle    objList
	used    int64
	entries int64
	gens    uint64
	closed  bool

	seq      atomic.Uint64  // last block file number handed out
	installs sync.WaitGroup // installs between their check and their end
	st       counters

	scratch sync.Pool // *[]byte of readSpan(BlockSize): read buffers
	bufs    sync.Pool // *[]byte of BlockSize: fetch buffers
	images  sync.Pool // *[]byte of a whole block file: install buffers
}

var (
	_ remote.Store      = (*Cache)(nil)
	_ remote.FilePutter = (*Cache)(nil)
)

// New opens the cache in cfg.Dir over inner, rebuilding its index from the
// block files found there (see load.go).
func New(inner remote.Store, cfg Config) (*Cache, error) {
	if inner == nil {
		return nil, errors.New("cache: nil inner store")
	}
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	c := &Cache{
		inner:     inner,
		cfg:       cfg,
		shift:     uint(bits.TrailingZeros64(uint64(cfg.BlockSize))),
		dir:       dir,
		blocksDir: filepath.Join(dir, "blocks"),
		tmpDir:    filepath.Join(dir, "tmp"),
		objects:   make(map[string]*object),
		lru:       list{which: lruList},
		files:     list{which: filesList},
	}
	span := readSpan(int(cfg.BlockSize))
	c.scratch.New = func() any { b := make([]byte, span); return &b }
	c.bufs.New = func() any { b := make([]byte, cfg.BlockSize); return &b }
	fileMax := maxHeaderLen + int(unitsLen(int(cfg.BlockSize)))
	c.images.New = func() any { b := make([]byte, 0, fileMax); return &b }

	for _, d := range []string{dir, c.blocksDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("cache: %w", err)
		}
	}
	c.lock, err = lockDir(filepath.Join(dir, "lock"))
	if err != nil {
		return nil, err
	}
	// Temp files are blocks whose writer died before renaming them: we
	// hold the lock, so no writer is alive.
	if err := os.RemoveAll(c.tmpDir); err != nil {
		c.lock.Close()
		return nil, fmt.Errorf("cache: clear %s: %w", c.tmpDir, err)
	}
	if err := os.MkdirAll(c.tmpDir, 0o755); err != nil {
		c.lock.Close()
		return nil, fmt.Errorf("cache: %w", err)
	}
	if err := c.load(); err != nil {
		c.lock.Close()
		return nil, err
	}
	return c, nil
}

// readSpan is the largest unit span of one block: the scratch buffer size.
func readSpan(blockSize int) int { return int(unitsLen(blockSize)) }

// Close closes the cache's files and releases its directory; the cached
// blocks stay on disk for the next New. The inner store is not closed.
// Reads in progress fail with ErrClosed.
func (c *Cache) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	var open []*os.File
	for b := c.files.head; b != nil; b = b.links[filesList].next {
		open = append(open, b.f)
		b.f = nil
	}
	c.files = list{which: filesList}
	c.mu.Unlock()
	// An install that passed its check before closed was set finishes
	// (and, seeing closed, removes its file) before the directory is
	// released to the next Cache.
	c.installs.Wait()
	for _, f := range open {
		f.Close()
	}
	return c.lock.Close()
}

// Inner returns the wrapped store.
func (c *Cache) Inner() remote.Store { return c.inner }

// Pin keeps every cached block of key (present and future) from eviction
// until a matching Unpin. Pins nest. Keys the cache does not cache are
// ignored.
func (c *Cache) Pin(key string) {
	if !c.cacheable(key) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	o := c.objectLocked(key)
	o.pins++
	if o.pins == 1 {
		for _, b := range o.blocks {
			c.lru.remove(b)
		}
	}
	c.settleLocked(o)
}

// Unpin undoes one Pin. The key's blocks become evictable again once no
// pin is left, as the most recently used.
func (c *Cache) Unpin(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o := c.objects[key]
	if o == nil || o.pins == 0 {
		return
	}
	o.pins--
	if o.pins == 0 {
		for _, b := range o.blocks {
			c.lru.pushFront(b)
		}
		c.settleLocked(o)
	}
}

// cacheable reports whether key is valid and cached.
func (c *Cache) cacheable(key string) bool {
	return remote.ValidateKey(key) == nil && c.cfg.Cacheable(key)
}

// Put passes through. For a cacheable key it also forgets what is cached
// of the key, before (so fetches racing the put install nothing) and after
// (so nothing learned during it survives): objects are immutable by
// contract, but a replacement through the cache must never be hidden.
func (c *Cache) Put(ctx context.Context, key string, r io.Reader, opts remote.PutOptions) (remote.PutResult, error) {
	if err := c.checkOpen(); err != nil {
		return remote.PutResult{}, err
	}
	c.st.passthrough.Add(1)
	if !c.cacheable(key) {
		return c.inner.Put(ctx, key, r, opts)
	}
	c.invalidate(key)
	res, err := c.inner.Put(ctx, key, r, opts)
	c.invalidate(key)
	return res, err
}

// PutFile passes through like Put (remote.FilePutter: the inner store
// may take the file itself; remote.PutFile copies for one that cannot).
func (c *Cache) PutFile(ctx context.Context, key string, f *os.File, opts remote.PutOptions) (remote.PutResult, error) {
	if err := c.checkOpen(); err != nil {
		return remote.PutResult{}, err
	}
	c.st.passthrough.Add(1)
	if !c.cacheable(key) {
		return remote.PutFile(ctx, c.inner, key, f, opts)
	}
	c.invalidate(key)
	res, err := remote.PutFile(ctx, c.inner, key, f, opts)
	c.invalidate(key)
	return res, err
}

// Delete passes through and drops the key's cached blocks.
func (c *Cache) Delete(ctx context.Context, key string) error {
	if err := c.checkOpen(); err != nil {
		return err
	}
	c.st.passthrough.Add(1)
	if !c.cacheable(key) {
		return c.inner.Delete(ctx, key)
	}
	c.invalidate(key)
	err := c.inner.Delete(ctx, key)
	c.invalidate(key)
	return err
}

// List passes through: it is for administration, never a hot path.
func (c *Cache) List(ctx context.Context, prefix string, fn func(remote.ObjectInfo) error) error {
	if err := c.checkOpen(); err != nil {
		return err
	}
	c.st.passthrough.Add(1)
	return c.inner.List(ctx, prefix, fn)
}

// Head answers from the remembered metadata of a cacheable key, asking the
// inner store once.
func (c *Cache) Head(ctx context.Context, key string) (remote.ObjectInfo, error) {
	if err := c.checkOpen(); err != nil {
		return remote.ObjectInfo{}, err
	}
	if !c.cacheable(key) {
		c.st.passthrough.Add(1)
		return c.inner.Head(ctx, key)
	}
	if err := ctx.Err(); err != nil {
		return remote.ObjectInfo{}, fmt.Errorf("cache: head %q: %w", key, err)
	}
	c.mu.Lock()
	o := c.objectLocked(key)
	if o.size >= 0 {
		info := o.info()
		if o.idle {
			c.idle.remove(o)
			c.idle.pushFront(o)
		}
		c.mu.Unlock()
		return info, nil
	}
	gen := o.gen
	o.busy++
	c.mu.Unlock()

	c.st.requests.Add(1)
	info, err := c.inner.Head(ctx, key)

	c.mu.Lock()
	o.busy--
	if err == nil && c.objects[key] == o && o.gen == gen && o.size < 0 && len(info.ETag) <= maxETagLen {
		o.size, o.etag, o.modTime = info.Size, info.ETag, info.ModTime.UnixNano()
	}
	c.settleLocked(o)
	c.mu.Unlock()
	return info, err
}

func (c *Cache) checkOpen() error {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return ErrClosed
	}
	return nil
}

func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
