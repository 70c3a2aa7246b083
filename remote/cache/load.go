package cache

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/cespare/xxhash/v2"
)

// found is a block file that passed the loader's checks.
type found struct {
	h     blockHeader
	khash uint64
	idx   int64
	seq   uint64
	size  int64
	mtime int64
}

// load rebuilds the index from blocks/. A file is kept only if its name
// parses, its header decodes and checks (decodeHeader), it is exactly as
// long as the header says, its name agrees with its header (key hash,
// block number), its block size is the cache's, and its key is still
// cacheable. All blocks of one key must agree on the object's size and
// ETag, or the key's blocks are all dropped; of two files for one block the
// newer (higher seq) wins. Everything else is removed and counted in
// Stats.Discarded; nothing a file holds can make load fail or panic, and
// only I/O errors on the cache's own folders do.
//
// The unit checks are not read here (that would read the whole cache at
// every start): a block with bad data is caught by the read that touches
// it, dropped and refetched.
//
// Recency is not persisted: blocks enter the LRU in file mtime order (the
// order they were fetched), then the cache evicts down to MaxBytes.
func (c *Cache) load() error {
	subs, err := os.ReadDir(c.blocksDir)
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	var (
		mu    sync.Mutex
		all   []found
		wg    sync.WaitGroup
		work  = make(chan string)
		nwork = min(8, max(2, runtime.GOMAXPROCS(0)))
	)
	for range nwork {
		wg.Go(func() {
			for dir := range work {
				fs := c.scanDir(dir)
				mu.Lock()
				all = append(all, fs...)
				mu.Unlock()
			}
		})
	}
	for _, e := range subs {
		p := filepath.Join(c.blocksDir, e.Name())
		if !e.IsDir() || !isSubdirName(e.Name()) {
			c.discard(p)
			continue
		}
		work <- p
	}
	close(work)
	wg.Wait()

	// Group by key: one version per key, one file per block.
	byKey := make(map[string][]found)
	for _, f := range all {
		byKey[f.h.key] = append(byKey[f.h.key], f)
	}
	var keep []found
	var maxSeq uint64
	for _, fs := range byKey {
		for _, f := range fs {
			maxSeq = max(maxSeq, f.seq)
		}
		consistent := true
		for _, f := range fs[1:] {
			if f.h.objSize != fs[0].h.objSize || f.h.etag != fs[0].h.etag {
				consistent = false
				break
			}
		}
		if !consistent {
			for _, f := range fs {
				c.discard(c.blockPath(f.khash, f.idx, f.seq))
			}
			continue
		}
		newest := make(map[int64]found, len(fs))
		for _, f := range fs {
			old, dup := newest[f.idx]
			if !dup || f.seq > old.seq {
				if dup {
					c.discard(c.blockPath(old.khash, old.idx, old.seq))
				}
				newest[f.idx] = f
			} else {
				c.discard(c.blockPath(f.khash, f.idx, f.seq))
			}
		}
		for _, f := range newest {
			keep = append(keep, f)
		}
	}
	sort.Slice(keep, func(i, j int) bool {
		if keep[i].mtime != keep[j].mtime {
			return keep[i].mtime < keep[j].mtime
		}
		return keep[i].seq < keep[j].seq
	})

	var gone []*block
	c.mu.Lock()
	for _, f := range keep {
		o := c.objectLocked(f.h.key)
		o.size, o.etag, o.modTime = f.h.objSize, f.h.etag, f.h.modTime
		c.addBlockLocked(&block{
			obj: o, idx: f.idx, seq: f.seq, n: f.h.n,
			hdrLen: f.h.headerLen(), hash: f.h.hash, size: f.size,
		})
	}
	c.evictLocked(0, &gone) // MaxBytes may have shrunk since
	c.mu.Unlock()
	c.release(gone)
	c.seq.Store(maxSeq)
	return nil
}

// scanDir checks every file of one blocks/<hh> folder, removing the bad.
func (c *Cache) scanDir(dir string) []found {
	ents, err := os.ReadDir(dir)
	if err != nil {
		c.st.fileErrors.Add(1)
		return nil
	}
	var out []found
	buf := make([]byte, maxHeaderLen)
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		f, ok := c.checkFile(p, filepath.Base(dir), e.Name(), buf)
		if !ok {
			c.discard(p)
			continue
		}
		out = append(out, f)
	}
	if len(ents) > 0 && len(out) == 0 {
		os.Remove(dir) // empty now; recreated on demand
	}
	return out
}

// checkFile opens one block file and checks it against its name.
func (c *Cache) checkFile(path, sub, name string, buf []byte) (found, bool) {
	khash, idx, seq, ok := parseName(name)
	if !ok || sub != fmt.Sprintf("%02x", khash>>56) {
		return found{}, false
	}
	file, err := os.Open(path)
	if err != nil {
		return found{}, false
	}
	defer file.Close()
	fi, err := file.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return found{}, false
	}
	n, _ := file.ReadAt(buf[:min(int64(len(buf)), fi.Size())], 0)
	h, err := decodeHeader(buf[:n], fi.Size())
	if err != nil {
		return found{}, false
	}
	if h.blockSize != c.cfg.BlockSize || h.offset>>c.shift != idx || xxhash.Sum64String(h.key) != khash || !c.cfg.Cacheable(h.key) {
		return found{}, false
	}
	return found{h: h, khash: khash, idx: idx, seq: seq, size: fi.Size(), mtime: fi.ModTime().UnixNano()}, true
}

func (c *Cache) discard(path string) {
	c.st.discarded.Add(1)
	if err := os.RemoveAll(path); err != nil {
		c.st.fileErrors.Add(1)
	}
}

// parseName parses "<khash 16 hex>-<idx hex>-<seq hex>.blk", accepting
// only the canonical spelling (what blockPath writes).
func parseName(name string) (khash uint64, idx int64, seq uint64, ok bool) {
	base, found := strings.CutSuffix(name, ".blk")
	if !found {
		return 0, 0, 0, false
	}
	parts := strings.Split(base, "-")
	if len(parts) != 3 || len(parts[0]) != 16 {
		return 0, 0, 0, false
	}
	k, err1 := strconv.ParseUint(parts[0], 16, 64)
	i, err2 := strconv.ParseInt(parts[1], 16, 64)
	s, err3 := strconv.ParseUint(parts[2], 16, 64)
	if err1 != nil || err2 != nil || err3 != nil || i < 0 {
		return 0, 0, 0, false
	}
	if fmt.Sprintf("%016x-%x-%x.blk", k, i, s) != name {
		return 0, 0, 0, false
	}
	return k, i, s, true
}

func isSubdirName(s string) bool {
	if len(s) != 2 {
		return false
	}
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
