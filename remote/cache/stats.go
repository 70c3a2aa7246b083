package cache

import "sync/atomic"

// Stats is a snapshot of the cache's counters (since New) and state.
type Stats struct {
	// Hits counts block reads served from block files (a read spanning
	// two cached blocks is two hits).
	Hits int64
	// Misses counts blocks fetched from the inner store, read-ahead
	// included.
	Misses int64
	// BytesFromCache counts bytes delivered to callers from block files.
	BytesFromCache int64
	// BytesFetched counts body bytes read from the inner store to fill
	// the cache.
	BytesFetched int64
	// Requests counts calls to the inner store made to fill the cache
	// (ranged GETs of cacheable keys, and Heads of them).
	Requests int64
	// Passthrough counts calls handed to the inner store unchanged: Put,
	// Delete, List, and every call on a key that is not cached.
	Passthrough int64
	// Evictions counts blocks dropped to stay under MaxBytes.
	Evictions int64
	// Corrupt counts cached blocks that failed a check when read; each was
	// dropped and fetched again.
	Corrupt int64
	// Discarded counts files that New found invalid (torn, truncated,
	// foreign, inconsistent, another block size) and removed.
	Discarded int64
	// FileErrors counts failures to write or remove block files; the
	// reads involved still succeeded from the fetched bytes.
	FileErrors int64

	// UsedBytes is the sum of the sizes of the cached block files;
	// always <= MaxBytes.
	UsedBytes int64
	// Entries is the number of cached blocks.
	Entries int64
	// Objects is the number of keys the cache knows something of.
	Objects int
	// OpenFiles is the number of block files held open.
	OpenFiles int
}

type counters struct {
	hits, misses, bytesFromCache, bytesFetched atomic.Int64
	requests, passthrough, evictions, corrupt  atomic.Int64
	discarded, fileErrors                      atomic.Int64
}

// Stats returns the counters and the current state.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	s := Stats{UsedBytes: c.used, Entries: c.entries, Objects: len(c.objects), OpenFiles: c.files.n}
	c.mu.Unlock()
	s.Hits = c.st.hits.Load()
	s.Misses = c.st.misses.Load()
	s.BytesFromCache = c.st.bytesFromCache.Load()
	s.BytesFetched = c.st.bytesFetched.Load()
	s.Requests = c.st.requests.Load()
	s.Passthrough = c.st.passthrough.Load()
	s.Evictions = c.st.evictions.Load()
	s.Corrupt = c.st.corrupt.Load()
	s.Discarded = c.st.discarded.Load()
	s.FileErrors = c.st.fileErrors.Load()
	return s
}
