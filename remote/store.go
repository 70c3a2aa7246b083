// Package remote defines the object store that bop keeps its page objects,
// log records, head, snapshots and pins in, and the rules every backend
// keeps: streaming puts, ranged gets, and conditional writes that decide
// races between writers.
//
// Backends live in their own packages (fsstore: a local directory, the
// embedded default; s3store: S3 and compatible servers) and are chosen by
// URL through package backend. Wrappers (cache: a byte-range disk cache
// tier; fault: fault injection and metering) are Stores too.
package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Sentinel errors. Backends wrap them with context (key, operation);
// callers test with errors.Is.
var (
	// ErrNotFound: the key does not exist.
	ErrNotFound = errors.New("remote: object not found")
	// ErrPrecondition: a conditional put lost the race. The key already
	// existed (IfNoneMatch) or its ETag differed (IfMatch). S3 reports
	// this as 412 or 409; both map here.
	ErrPrecondition = errors.New("remote: precondition failed")
	// ErrInvalidKey: the key breaks the key rules (see ValidateKey).
	ErrInvalidKey = errors.New("remote: invalid key")
	// ErrInvalidRange: a ranged get asked for bytes outside the object.
	ErrInvalidRange = errors.New("remote: invalid range")
	// ErrReadOnly: a write to a store opened for reading only.
	ErrReadOnly = errors.New("remote: store opened read-only")
)

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Key  string
	Size int64
	// ETag is opaque: compare it only for equality and pass it back
	// unchanged as PutOptions.IfMatch. It changes whenever the object is
	// replaced, and a key never shows one ETag for two different contents.
	ETag    string
	ModTime time.Time // as reported by the backend
}

// PutOptions select a conditional put. At most one of IfNoneMatch and
// IfMatch may be set.
type PutOptions struct {
	// IfNoneMatch creates the object only if the key does not exist
	// (If-None-Match: *). Losing returns ErrPrecondition.
	IfNoneMatch bool
	// IfMatch replaces the object only if its current ETag equals this
	// value (If-Match: etag). A missing key or another ETag returns
	// ErrPrecondition.
	IfMatch string
	// Size is the object's length if the caller knows it, else -1 (any
	// negative value means unknown). 0 declares an empty body, so the zero
	// PutOptions suits only empty objects. A known size lets a backend
	// skip buffering; a body shorter or longer than a known Size fails the
	// Put and stores nothing.
	Size int64
}

// PutResult reports what a successful Put stored.
type PutResult struct {
	ETag string
	Size int64
	// XXH64 is the xxhash64 of the bytes sent, computed while streaming.
	XXH64 uint64
}

// Store is an object store. Keys follow ValidateKey; a key (or List
// prefix, see ValidatePrefix) that breaks the rules fails every method with
// ErrInvalidKey before any I/O. Every method honours ctx cancellation: a
// cancelled ctx fails the call with an error wrapping ctx.Err().
// Implementations are safe for concurrent use. Package storetest is the
// executable form of this contract: every backend and wrapper passes it.
type Store interface {
	// Put streams r to key. It never holds the whole object in memory:
	// large bodies go up in parts. Conditional puts (opts) are atomic
	// with respect to every other writer of the same store, including
	// other processes. Setting both IfNoneMatch and IfMatch is an error.
	// A nil r is an empty body. A Put that fails (r returns an error, the
	// size differs from opts.Size, ctx is cancelled, a condition fails)
	// stores nothing: the key keeps its previous object, or stays absent
	// and creatable.
	Put(ctx context.Context, key string, r io.Reader, opts PutOptions) (PutResult, error)

	// Get returns length bytes of key starting at off; length < 0 means
	// to the end of the object. Ranges follow io.ReaderAt conventions:
	// off < 0 or off > size returns ErrInvalidRange; off == size returns
	// an empty body (so every object, even an empty one, reads at off 0);
	// a range that starts inside the object and runs past its end is
	// shortened to the end; length 0 returns an empty body. A negative off
	// fails before any I/O; otherwise a missing key returns ErrNotFound
	// whatever the range. The ObjectInfo describes the whole object (Size
	// is the object's size, not the range's). The caller closes the
	// reader; reads after ctx is cancelled fail.
	Get(ctx context.Context, key string, off, length int64) (io.ReadCloser, ObjectInfo, error)

	// Head returns the object's metadata, or ErrNotFound.
	Head(ctx context.Context, key string) (ObjectInfo, error)

	// Delete removes key. Deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error

	// List calls fn for every key that starts with prefix (a plain string
	// prefix: "a/b" matches "a/b/c" and "a/bc"), in lexicographic byte
	// order; an empty prefix lists every key. For administration and GC
	// only: no hot path may list. fn returning an error stops the listing
	// with that error (errors.Is matches it).
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error
}

// ConditionEnforcer is an optional interface of a Store whose conditional
// puts are decided by bop's own code (fsstore: link and compare-and-rename
// under its lock, on a file system it checked when opened), so that they
// cannot be ignored the way a server's can. manifest.ProbeStore exists to
// catch a server that ignores If-None-Match or If-Match; a store that
// declares this is not probed (EnforcesConditions).
//
// Only a backend declares it. A wrapper must not forward it unless it
// passes every conditional put through unchanged: a store that does not
// declare it is probed, which is always safe.
type ConditionEnforcer interface {
	// EnforcesConditions reports that every IfNoneMatch and IfMatch put
	// is enforced as Store.Put documents, by construction.
	EnforcesConditions() bool
}

// EnforcesConditions reports whether s declares that it enforces
// conditional puts by construction (ConditionEnforcer).
func EnforcesConditions(s Store) bool {
	c, ok := s.(ConditionEnforcer)
	return ok && c.EnforcesConditions()
}

// FilePutter is an optional interface of a Store that can store a local
// file without copying its bytes (fsstore: a hard link to the file, on
// the same file system). The checkpoint publisher stages every object in
// a file first; a store that takes the file saves writing its bytes a
// second time.
//
// Wrappers forward it when they pass puts through unchanged (cache);
// callers use PutFile, which falls back to Put.
type FilePutter interface {
	// PutFile stores the bytes of f (from offset 0 to its end, which must
	// be opts.Size when that is known) under key, exactly as Put with
	// those bytes would: same conditions, same result, PutResult.XXH64
	// the hash of the bytes stored. f stays open and owned by the caller.
	//
	// The store may keep f's file itself as the object. So the caller
	// hands the file over: it must never write to it, through any
	// descriptor or name, once PutFile is called (it may read it, close
	// it and remove its name). A store that cannot take the file (another
	// file system, a file with more than one name) copies its bytes.
	PutFile(ctx context.Context, key string, f *os.File, opts PutOptions) (PutResult, error)
}

// PutFile stores the bytes of f under key: by s's PutFile when s is a
// FilePutter (see its rule: f must never be written again), else by Put
// with f's bytes from offset 0 (fileBody).
func PutFile(ctx context.Context, s Store, key string, f *os.File, opts PutOptions) (PutResult, error) {
	if fp, ok := s.(FilePutter); ok {
		return fp.PutFile(ctx, key, f, opts)
	}
	body, err := fileBody(f)
	if err != nil {
		return PutResult{}, fmt.Errorf("remote: put %q: %w", key, err)
	}
	return s.Put(ctx, key, body, opts)
}

// fileBody is a Put body of f's bytes from offset 0 to its size now,
// independent of f's offset: a section reader, which a backend may read
// at any offset and rewind (an io.ReaderAt and io.Seeker of the file's
// exact length, as s3store's sectioned upload needs).
func fileBody(f *os.File) (*io.SectionReader, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return io.NewSectionReader(f, 0, fi.Size()), nil
}
