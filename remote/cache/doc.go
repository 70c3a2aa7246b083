// Package cache is bop's disk cache tier: a remote.Store that wraps any
// other Store and keeps byte ranges of immutable objects (page objects and
// catalog snapshots) on local disk, under a byte quota.
//
//	c, err := cache.New(inner, cache.Config{Dir: dir, MaxBytes: 1 << 30})
//	n, err := c.ReadAt(ctx, key, frame, off) // the hot path: one page frame
//
// # What is cached
//
// Keys that Config.Cacheable accepts (by default those of objects, "/obj/",
// and snapshots, "/manifest/") are immutable by contract: a key names one
// content for its whole life. Their bytes are cached in blocks of
// Config.BlockSize (64 KiB by default), block i holding bytes
// [i*BlockSize, (i+1)*BlockSize) of the object. Every other key (head, log
// records, pins, probes) goes straight through to the inner store.
//
// # Reads
//
//   - A read fetches only the blocks it touches that are missing; adjacent
//     missing blocks go in ONE ranged GET. A whole object is never fetched to
//     serve a small range.
//   - A read that continues where an earlier read of the same object ended
//     (sequential access) extends the GET to Config.ReadAhead bytes; a Get
//     body, which knows where it will stop, always reads ahead up to that
//     point.
//   - Concurrent readers of a missing block share one fetch (singleflight).
//   - Each fetch learns the object's size and ETag from the GET's response
//     (no HEAD on the read path); they are remembered per key, so range
//     edges are answered without requests. A GET whose ETag differs from
//     the remembered one means the object changed behind the cache's back:
//     its blocks are dropped and the read starts over, so one read never
//     mixes two versions.
//
// # Invariants (kept in index.go and install.go, under Cache.mu)
//
//   - used == the sum of the file sizes of the blocks in the index, and
//     used <= MaxBytes at every moment the lock is not held. A block that
//     cannot fit (everything else pinned) is served but not cached.
//   - A (key, block) pair has at most one entry. Re-adding it (a refetch
//     after a corrupt file, a race) removes the old entry from the index and
//     the accounting before the new one is counted, and unlinks its file:
//     no file is ever left behind that the index does not name (except
//     during the short window between dropping an entry and its unlink,
//     and temp files that the next New sweeps).
//   - Unpinned blocks are on the LRU list, pinned ones are not: eviction
//     takes the least recently used unpinned block and never a pinned one.
//   - Every entry's block file is complete: it is written to a temp file and
//     renamed into place (under a name no other file ever had) before the
//     index names it.
//
// # Block files
//
// Each block is one self-describing file (docs/FORMAT-cache.md): a header
// with magic, version, key, offset, length, the object's size, ETag and
// mtime, and an xxhash64 of the header; then the data in 1 KiB units, each
// preceded by a CRC-32C that is salted with the header hash and the unit's
// index. A read verifies exactly the units it returns; a failed check drops
// the block and refetches it, never returns it. New rebuilds the index from
// the files (checking each header, its size and its name) and discards
// anything else, so the cache survives restarts and crashes without a
// separate index file that could disagree with the blocks.
//
// # Hot path
//
// A hit is a map lookup and two list moves under one mutex, then one pread
// of the units into a pooled buffer on a block file kept open in a bounded
// descriptor cache (Config.MaxOpenFiles), the unit checks, and a copy into
// the caller's buffer: no allocation.
package cache
