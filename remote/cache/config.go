package cache

import (
	"errors"
	"fmt"
	"math/bits"
	"strings"
)

// Defaults of Config's zero values.
const (
	DefaultMaxBytes     = 1 << 30
	DefaultBlockSize    = 64 << 10
	DefaultReadAhead    = 2 << 20
	DefaultMaxOpenFiles = 1024
)

// maxIdleObjects bounds the objects the cache remembers the size and ETag
// of without holding any of their blocks (learned by Head, or left after
// eviction): a few hundred bytes each.
const maxIdleObjects = 4096

// streamSlots is how many independent sequential readers of one object
// the read-ahead detector follows.
const streamSlots = 4

// Config configures a Cache.
type Config struct {
	// Dir holds the cache's files (created if needed). One Cache at a time
	// may use it: New takes a lock on it.
	Dir string

	// MaxBytes is the quota: the sum of the sizes of the block files (data
	// plus their headers and checks), which the cache keeps exactly. 0
	// means DefaultMaxBytes.
	MaxBytes int64

	// BlockSize is the caching granularity: a power of two from 1 KiB to
	// 64 MiB, 0 meaning DefaultBlockSize (64 KiB). A random page read
	// fetches the one or two blocks around its page: small enough that a
	// cold 4 KiB read moves 64 KiB, not a chunk; large enough that neighbour
	// pages (B-tree siblings, overflow chains) come along and the number of
	// files stays reasonable. Blocks on disk with another block size are
	// discarded by New.
	BlockSize int64

	// ReadAhead is how far a sequential read extends its GET, in bytes
	// (rounded up to whole blocks, at most a quarter of MaxBytes). 0 means
	// DefaultReadAhead (2 MiB); negative disables read-ahead.
	ReadAhead int64

	// MaxOpenFiles bounds the block files kept open for the hot path. 0
	// means DefaultMaxOpenFiles.
	MaxOpenFiles int

	// Cacheable reports whether a key's objects are immutable and worth
	// caching; nil means DefaultCacheable. Other keys go straight through.
	Cacheable func(key string) bool
}

// DefaultCacheable accepts the keys of page objects ("/obj/") and catalog
// snapshots ("/manifest/"), both immutable. Head, log records, pins and
// probes go straight through: head and pins change, a log walk must see
// the store's own 404 at its end, and log records are small and read about
// once per open, so caching them buys nothing.
func DefaultCacheable(key string) bool {
	return strings.Contains(key, "/obj/") || strings.Contains(key, "/manifest/")
}

// normalize fills defaults and checks the values.
func (cfg Config) normalize() (Config, error) {
	if cfg.Dir == "" {
		return cfg, errors.New("cache: Config.Dir is empty")
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.MaxBytes < 0 {
		return cfg, fmt.Errorf("cache: Config.MaxBytes %d is negative", cfg.MaxBytes)
	}
	if cfg.BlockSize == 0 {
		cfg.BlockSize = DefaultBlockSize
	}
	if cfg.BlockSize < minBlockSize || cfg.BlockSize > maxBlockSize || bits.OnesCount64(uint64(cfg.BlockSize)) != 1 {
		return cfg, fmt.Errorf("cache: Config.BlockSize %d is not a power of two from %d to %d", cfg.BlockSize, minBlockSize, maxBlockSize)
	}
	switch {
	case cfg.ReadAhead == 0:
		cfg.ReadAhead = DefaultReadAhead
	case cfg.ReadAhead < 0:
		cfg.ReadAhead = 0
	}
	// Read-ahead never takes more than a quarter of the cache, or it
	// would evict what it is about to serve.
	cfg.ReadAhead = min(cfg.ReadAhead, cfg.MaxBytes/4, maxBlockSize)
	cfg.ReadAhead = (cfg.ReadAhead + cfg.BlockSize - 1) / cfg.BlockSize * cfg.BlockSize
	if cfg.ReadAhead <= cfg.BlockSize {
		cfg.ReadAhead = 0 // one block is what a miss fetches anyway
	}
	if cfg.MaxOpenFiles == 0 {
		cfg.MaxOpenFiles = DefaultMaxOpenFiles
	}
	if cfg.MaxOpenFiles < 1 {
		return cfg, fmt.Errorf("cache: Config.MaxOpenFiles %d is below 1", cfg.MaxOpenFiles)
	}
	if cfg.Cacheable == nil {
		cfg.Cacheable = DefaultCacheable
	}
	return cfg, nil
}
