package cache

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/cespare/xxhash/v2"

	"github.com/bopstore/bop/remote"
)

// object is what the cache knows of one key. Every field is guarded by
// Cache.mu. An object stays in Cache.objects while it has blocks, pins,
// fetches or Heads in flight; without them it stays (on the idle list, bounded)
// only if its metadata is known.
type object struct {
	key   string
	khash uint64 // xxhash64(key): names its block files

	// Metadata, learned from the first GET or HEAD; size < 0: unknown.
	size    int64
	etag    string
	modTime int64

	// gen changes whenever the object is invalidated (Put, Delete, a
	// changed ETag). A fetch started under an older gen installs nothing.
	gen uint64

	blocks   map[int64]*block
	fetching map[int64]*fetch
	pins     int
	busy     int // Heads in flight: keep the object while they run

	// streams are the end offsets of recent reads: a read starting at one
	// of them is sequential.
	streams    [streamSlots]int64
	nextStream int

	idle               bool
	idlePrev, idleNext *object
}

func (o *object) info() remote.ObjectInfo {
	return remote.ObjectInfo{Key: o.key, Size: o.size, ETag: o.etag, ModTime: unixTime(o.modTime)}
}

// touchStream records a read of [off, end) and reports whether it
// continued an earlier one.
func (o *object) touchStream(off, end int64) bool {
	for i, s := range o.streams {
		if s == off && off > 0 {
			o.streams[i] = end
			return true
		}
	}
	o.streams[o.nextStream] = end
	o.nextStream = (o.nextStream + 1) % streamSlots
	return false
}

// block is one cached block: a file in the index.
type block struct {
	obj    *object
	idx    int64  // block number: bytes [idx*BlockSize, ...) of the object
	seq    uint64 // unique file number
	n      int    // data bytes
	hdrLen int
	hash   uint64 // header hash: the unit check salt
	size   int64  // file size: what the block counts against the quota

	f     *os.File // open descriptor or nil; while indexed, on the files list iff non-nil
	links [2]links // lruList and filesList
}

type links struct {
	prev, next *block
	in         bool
}

const (
	lruList   = 0 // unpinned blocks; front = most recently used
	filesList = 1 // blocks with an open file; front = most recently used
)

// list is an intrusive doubly linked list of blocks through links[which].
type list struct {
	which      int
	head, tail *block
	n          int
}

func (l *list) pushFront(b *block) {
	lk := &b.links[l.which]
	if lk.in {
		l.remove(b)
	}
	lk.in, lk.prev, lk.next = true, nil, l.head
	if l.head != nil {
		l.head.links[l.which].prev = b
	} else {
		l.tail = b
	}
	l.head = b
	l.n++
}

func (l *list) remove(b *block) {
	lk := &b.links[l.which]
	if !lk.in {
		return
	}
	if lk.prev != nil {
		lk.prev.links[l.which].next = lk.next
	} else {
		l.head = lk.next
	}
	if lk.next != nil {
		lk.next.links[l.which].prev = lk.prev
	} else {
		l.tail = lk.prev
	}
	*lk = links{}
	l.n--
}

func (l *list) moveToFront(b *block) {
	if l.head != b {
		l.pushFront(b)
	}
}

// objList is the idle list: objects with known metadata and nothing else.
type objList struct {
	head, tail *object
	n          int
}

func (l *objList) pushFront(o *object) {
	o.idle, o.idlePrev, o.idleNext = true, nil, l.head
	if l.head != nil {
		l.head.idlePrev = o
	} else {
		l.tail = o
	}
	l.head = o
	l.n++
}

func (l *objList) remove(o *object) {
	if !o.idle {
		return
	}
	if o.idlePrev != nil {
		o.idlePrev.idleNext = o.idleNext
	} else {
		l.head = o.idleNext
	}
	if o.idleNext != nil {
		o.idleNext.idlePrev = o.idlePrev
	} else {
		l.tail = o.idlePrev
	}
	o.idle, o.idlePrev, o.idleNext = false, nil, nil
	l.n--
}

// objectLocked returns key's object, creating it (metadata unknown). The
// caller has validated key and checked that it is cacheable, and settles
// the object when done with it.
func (c *Cache) objectLocked(key string) *object {
	if o := c.objects[key]; o != nil {
		return o
	}
	c.gens++
	o := &object{key: key, khash: xxhash.Sum64String(key), size: -1, gen: c.gens}
	c.objects[key] = o
	return o
}

// settleLocked puts an object where its state says it belongs: active
// (blocks, pins or fetches), idle (metadata only, bounded), or forgotten.
func (c *Cache) settleLocked(o *object) {
	if c.objects[o.key] != o {
		return // already forgotten; a stale reference
	}
	if len(o.blocks) > 0 || o.pins > 0 || o.busy > 0 || len(o.fetching) > 0 {
		c.idle.remove(o)
		return
	}
	if o.size < 0 {
		c.idle.remove(o)
		delete(c.objects, o.key)
		return
	}
	if !o.idle {
		c.idle.pushFront(o)
		for c.idle.n > maxIdleObjects {
			old := c.idle.tail
			c.idle.remove(old)
			delete(c.objects, old.key)
		}
	}
}

// addBlockLocked counts a new block in the index. The caller made room.
//
// Invariant: used == sum of size over the index; entries == its blocks.
func (c *Cache) addBlockLocked(b *block) {
	o := b.obj
	if o.blocks == nil {
		o.blocks = make(map[int64]*block)
	}
	o.blocks[b.idx] = b
	c.used += b.size
	c.entries++
	if o.pins == 0 {
		c.lru.pushFront(b)
	}
	c.idle.remove(o)
}

// dropBlockLocked removes a block from the index and the accounting. Its
// file and descriptor are the caller's to release (after unlocking) with
// release. The object is not settled.
func (c *Cache) dropBlockLocked(b *block, gone *[]*block) {
	o := b.obj
	if o.blocks[b.idx] != b {
		return // not in the index (any more)
	}
	delete(o.blocks, b.idx)
	c.used -= b.size
	c.entries--
	c.lru.remove(b)
	c.files.remove(b)
	*gone = append(*gone, b)
}

// evictLocked makes room for need more bytes by dropping least recently
// used unpinned blocks, and reports whether it did.
func (c *Cache) evictLocked(need int64, gone *[]*block) bool {
	for c.used+need > c.cfg.MaxBytes {
		v := c.lru.tail
		if v == nil {
			return false // the rest is pinned
		}
		c.dropBlockLocked(v, gone)
		c.settleLocked(v.obj)
		c.st.evictions.Add(1)
	}
	return true
}

// release closes and unlinks the files of dropped blocks. Called without
// the lock. A reader still in a pread on a closed descriptor is safe: the
// os package defers the close until the read returns, and later reads see
// os.ErrClosed and look the block up again.
func (c *Cache) release(gone []*block) {
	for _, b := range gone {
		if b.f != nil {
			b.f.Close()
		}
		if err := os.Remove(c.blockPath(b.obj.khash, b.idx, b.seq)); err != nil && !os.IsNotExist(err) {
			c.st.fileErrors.Add(1)
		}
	}
}

// openLocked records a newly opened descriptor of b, closing the least
// recently used one past MaxOpenFiles (returned, to close unlocked).
func (c *Cache) openLocked(b *block, f *os.File) (closeMe *os.File) {
	b.f = f
	c.files.pushFront(b)
	if c.files.n > c.cfg.MaxOpenFiles {
		v := c.files.tail
		c.files.remove(v)
		closeMe, v.f = v.f, nil
	}
	return closeMe
}

// invalidate forgets everything cached of key: its blocks, its metadata
// and its fetches in flight (which will install nothing). Pins stay.
func (c *Cache) invalidate(key string) {
	var gone []*block
	c.mu.Lock()
	if o := c.objects[key]; o != nil {
		c.invalidateLocked(o, &gone)
	}
	c.mu.Unlock()
	c.release(gone)
}

func (c *Cache) invalidateLocked(o *object, gone *[]*block) {
	for _, b := range o.blocks {
		c.dropBlockLocked(b, gone)
	}
	c.gens++
	o.gen = c.gens
	o.size, o.etag, o.modTime = -1, "", 0
	o.fetching = nil
	o.streams = [streamSlots]int64{}
	c.settleLocked(o)
}

// Layout of Dir:
//
//	lock                                the lock file (flock)
//	tmp/                                blocks being written; emptied by New
//	blocks/<hh>/<khash>-<idx>-<seq>.blk one file per cached block
//
// hh is the top byte of khash = xxhash64(key), khash 16 hex digits, idx
// and seq hex without leading zeros. seq is unique per file over the life
// of the directory (New continues after the highest one found), so a name
// never refers to two files, and replacing a block never overwrites a file
// a reader may hold open.
func (c *Cache) blockDir(khash uint64) string {
	return filepath.Join(c.blocksDir, fmt.Sprintf("%02x", khash>>56))
}

func (c *Cache) blockPath(khash uint64, idx int64, seq uint64) string {
	return filepath.Join(c.blockDir(khash), fmt.Sprintf("%016x-%x-%x.blk", khash, idx, seq))
}
