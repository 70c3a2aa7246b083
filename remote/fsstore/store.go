package fsstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/bopstore/bop/remote"
)

// reserved is the folder under the root that holds the store's own files.
// '#' is not a key byte, so no key can reach into it, and List skips it.
const reserved = "#bop"

// Store is a remote.Store on a local directory. Safe for concurrent use by
// many goroutines, and by many processes on one machine sharing the root.
type Store struct {
	root string // absolute
	tmp  string // root/#bop/tmp: temp files of puts in progress
	lock *treeLock
	// readOnly: opened by OpenReadOnly; there is no lock and no temp
	// folder, and every write fails with remote.ErrReadOnly.
	readOnly bool
}

var (
	_ remote.Store             = (*Store)(nil)
	_ remote.ConditionEnforcer = (*Store)(nil)
)

// New opens (creating it if needed) the store rooted at dir. It checks
// that the file system keeps microsecond mtimes and supports hard links,
// which the ETag and create-if-absent rules rely on, and removes temp files
// that crashed writers left behind (Sweep).
func New(dir string) (*Store, error) {
	root, err := absRoot(dir)
	if err != nil {
		return nil, err
	}
	s := &Store{root: root, tmp: filepath.Join(root, reserved, "tmp")}
	if err := os.MkdirAll(s.tmp, 0o755); err != nil {
		return nil, fmt.Errorf("fsstore: create %s: %w", s.tmp, err)
	}
	s.lock, err = openTreeLock(filepath.Join(root, reserved, "lock"))
	if err != nil {
		return nil, err
	}
	if err := s.probe(); err != nil {
		s.lock.close()
		return nil, err
	}
	if _, err := s.Sweep(context.Background()); err != nil {
		s.lock.close()
		return nil, err
	}
	return s, nil
}

// OpenReadOnly opens the existing store rooted at dir for reading only:
// it creates nothing (not even the store's own folder "#bop"), takes no
// lock and removes no temp files, so it works on a read-only mount or
// someone else's store. Head, Get and List behave as on a store opened
// with New; Put, PutFile and Delete fail with remote.ErrReadOnly. Reads
// need no lock: an object's file is only ever replaced whole (renamed or
// linked into place), never written in place.
func OpenReadOnly(dir string) (*Store, error) {
	root, err := absRoot(dir)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("fsstore: open %s: %w", root, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("fsstore: open %s: not a directory", root)
	}
	return &Store{root: root, tmp: filepath.Join(root, reserved, "tmp"), readOnly: true}, nil
}

// absRoot is the store's absolute root, on a platform the store supports.
func absRoot(dir string) (string, error) {
	if !supported {
		return "", fmt.Errorf("fsstore: %s: %w", runtime.GOOS, errors.ErrUnsupported)
	}
	root, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("fsstore: %w", err)
	}
	return root, nil
}

// writable fails a write to a read-only store.
func (s *Store) writable(op, key string) error {
	if s.readOnly {
		return fmt.Errorf("fsstore: %s %q: %w", op, key, remote.ErrReadOnly)
	}
	return nil
}

// Close releases the lock file. Objects are unaffected; the Store must not
// be used afterwards.
func (s *Store) Close() error {
	if s.lock == nil {
		return nil
	}
	return s.lock.close()
}

// EnforcesConditions reports that conditional puts are decided here, by
// construction (remote.ConditionEnforcer): IfNoneMatch is a hard link,
// which fails if the key exists; IfMatch compares and renames under the
// store's lock; New checked the file system supports both.
func (s *Store) EnforcesConditions() bool { return true }

// Root is the absolute directory the store lives in.
func (s *Store) Root() string { return s.root }

// probe checks the two file system features the store relies on.
func (s *Store) probe() error {
	f, name, err := s.createTemp()
	if err != nil {
		return err
	}
	defer func() {
		f.Close()
		unlink(name)
	}()
	want := time.UnixMicro(1_700_000_000_123_457)
	if err := os.Chtimes(name, want, want); err != nil {
		return fmt.Errorf("fsstore: set mtime: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("fsstore: stat: %w", err)
	}
	if !fi.ModTime().Equal(want) {
		return fmt.Errorf("fsstore: the file system at %s keeps mtime %v for %v: it needs microsecond timestamps (ETags rely on them)",
			s.root, fi.ModTime().UTC(), want.UTC())
	}
	link := name + "-link"
	if err := os.Link(name, link); err != nil {
		return fmt.Errorf("fsstore: the file system at %s has no hard links (create-if-absent relies on them): %w", s.root, err)
	}
	unlink(link)
	return nil
}

// path maps a valid key to its file.
func (s *Store) path(key string) string { return filepath.Join(s.root, filepath.FromSlash(key)) }

// notFound reports errors that mean "no such object".
func notFound(err error) bool { return errors.Is(err, fs.ErrNotExist) || isNotDir(err) }

// Head returns the object's metadata from one stat.
func (s *Store) Head(ctx context.Context, key string) (remote.ObjectInfo, error) {
	if err := remote.ValidateKey(key); err != nil {
		return remote.ObjectInfo{}, fmt.Errorf("fsstore: head: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return remote.ObjectInfo{}, fmt.Errorf("fsstore: head %q: %w", key, err)
	}
	fi, err := os.Stat(s.path(key))
	if notFound(err) || err == nil && !fi.Mode().IsRegular() {
		return remote.ObjectInfo{}, fmt.Errorf("fsstore: head %q: %w", key, remote.ErrNotFound)
	}
	if err != nil {
		return remote.ObjectInfo{}, fmt.Errorf("fsstore: head %q: %w", key, err)
	}
	return objectInfo(key, fi), nil
}

// Get opens the object and returns a reader of the range. The open file
// keeps the object's content even if a Put replaces it meanwhile (the
// replacement is a new file), so the reader and the returned ObjectInfo
// always describe one version.
func (s *Store) Get(ctx context.Context, key string, off, length int64) (io.ReadCloser, remote.ObjectInfo, error) {
	if err := remote.ValidateKey(key); err != nil {
		return nil, remote.ObjectInfo{}, fmt.Errorf("fsstore: get: %w", err)
	}
	if off < 0 {
		return nil, remote.ObjectInfo{}, fmt.Errorf("fsstore: get %q at %d: %w", key, off, remote.ErrInvalidRange)
	}
	if err := ctx.Err(); err != nil {
		return nil, remote.ObjectInfo{}, fmt.Errorf("fsstore: get %q: %w", key, err)
	}
	f, err := os.Open(s.path(key))
	if notFound(err) {
		return nil, remote.ObjectInfo{}, fmt.Errorf("fsstore: get %q: %w", key, remote.ErrNotFound)
	}
	if err != nil {
		return nil, remote.ObjectInfo{}, fmt.Errorf("fsstore: get %q: %w", key, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, remote.ObjectInfo{}, fmt.Errorf("fsstore: get %q: %w", key, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, remote.ObjectInfo{}, fmt.Errorf("fsstore: get %q: %w", key, remote.ErrNotFound)
	}
	size := fi.Size()
	if off > size {
		f.Close()
		return nil, remote.ObjectInfo{}, fmt.Errorf("fsstore: get %q at %d of %d bytes: %w", key, off, size, remote.ErrInvalidRange)
	}
	end := size
	if length >= 0 && length < size-off {
		end = off + length
	}
	return &reader{ctx: ctx, key: key, f: f, off: off, end: end}, objectInfo(key, fi), nil
}

// reader reads [off, end) of an open object file, checking ctx before each
// read.
type reader struct {
	ctx      context.Context
	key      string
	f        *os.File
	off, end int64
}

func (r *reader) Read(b []byte) (int, error) {
	if r.off >= r.end {
		return 0, io.EOF
	}
	if err := r.ctx.Err(); err != nil {
		return 0, fmt.Errorf("fsstore: read %q: %w", r.key, err)
	}
	if rest := r.end - r.off; int64(len(b)) > rest {
		b = b[:rest]
	}
	n, err := r.f.ReadAt(b, r.off)
	r.off += int64(n)
	if err == io.EOF {
		if n == len(b) {
			return n, nil
		}
		// Objects are immutable files: only a change behind the store's
		// back can shorten one. Never pass that off as a clean end.
		return n, fmt.Errorf("fsstore: read %q: file shrank at offset %d: %w", r.key, r.off, io.ErrUnexpectedEOF)
	}
	if err != nil {
		return n, fmt.Errorf("fsstore: read %q: %w", r.key, err)
	}
	return n, nil
}

func (r *reader) Close() error {
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}

// Delete removes the object's file, then the folders it leaves empty (so a
// later key may use a folder's name), under the tree lock, and syncs the
// folder that changed. A folder of other keys is not an object: deleting
// its name does nothing.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := remote.ValidateKey(key); err != nil {
		return fmt.Errorf("fsstore: delete: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fsstore: delete %q: %w", key, err)
	}
	if err := s.writable("delete", key); err != nil {
		return err
	}
	p := s.path(key)
	if err := s.lock.lock(ctx); err != nil {
		return fmt.Errorf("fsstore: delete %q: %w", key, err)
	}
	err := unlink(p)
	if err != nil && isDirErr(err) {
		if fi, serr := os.Lstat(p); serr == nil && fi.IsDir() {
			err = fs.ErrNotExist // a folder, not an object
		}
	}
	if err != nil {
		s.lock.unlock()
		if notFound(err) {
			return nil
		}
		return fmt.Errorf("fsstore: delete %q: %w", key, err)
	}
	changed := s.pruneLocked(filepath.Dir(p))
	s.lock.unlock()
	if err := s.syncDir(changed); err != nil {
		return fmt.Errorf("fsstore: delete %q: %w", key, err)
	}
	return nil
}

// pruneLocked removes dir and its ancestors below the root while they are
// empty, and returns the deepest folder that remains (whose entries
// changed). Callers hold the tree lock, so no Put is between creating a
// folder and filling it.
func (s *Store) pruneLocked(dir string) string {
	for dir != s.root && len(dir) > len(s.root) {
		if err := rmdir(dir); err != nil {
			break // not empty (or gone): it, or an ancestor, stays
		}
		dir = filepath.Dir(dir)
	}
	return dir
}

// syncDir makes a folder's entries (a rename, link or unlink in it)
// durable. Syncs run after the tree lock is released, so a concurrent
// Delete may have removed the folder meanwhile (pruning it when empty);
// then the change to sync is that removal, an entry in the nearest folder
// that still exists, and that one is synced instead.
func (s *Store) syncDir(dir string) error {
	d, err := os.Open(dir)
	for notFound(err) && dir != s.root && len(dir) > len(s.root) {
		dir = filepath.Dir(dir)
		d, err = os.Open(dir)
	}
	if err != nil {
		return fmt.Errorf("sync folder: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	return nil
}
