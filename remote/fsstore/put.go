package fsstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/bopstore/bop/remote"
	"github.com/cespare/xxhash/v2"
)

// chunkSize bounds the memory of one Put or List walk; ctx is checked
// between chunks.
const chunkSize = 64 << 10

// smallBody is the size below which a Put of a known size copies through
// a buffer of that size.
const smallBody = 16 << 10

var chunks = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// Put writes the object to a temp file, syncs it, and moves it into place
// under the tree lock:
//
//	stream r -> temp file (hashing, counting, checking ctx per chunk)
//	stamp the mtime (unique, see treeLock.stamp) and fsync the file
//	lock: create folders; then rename (unconditional), link (IfNoneMatch)
//	      or stat+compare+rename (IfMatch); unlock
//	fsync the folders that changed
//
// Any failure before the move removes the temp file, so a failed Put
// leaves the key as it was.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, opts remote.PutOptions) (remote.PutResult, error) {
	if err := checkPut(ctx, key, opts); err != nil {
		return remote.PutResult{}, err
	}
	if err := s.writable("put", key); err != nil {
		return remote.PutResult{}, err
	}
	if s.failsPrecondition(key, opts) {
		return remote.PutResult{}, fmt.Errorf("fsstore: put %q: %w", key, remote.ErrPrecondition)
	}
	f, tmp, err := s.createTemp()
	if err != nil {
		return remote.PutResult{}, fmt.Errorf("fsstore: put %q: %w", key, err)
	}
	committed := false
	defer func() {
		f.Close() // releases the temp file's flock
		if !committed {
			unlink(tmp)
		}
	}()

	n, sum, err := copyBody(ctx, f, r, opts.Size)
	if err != nil {
		return remote.PutResult{}, fmt.Errorf("fsstore: put %q: %w", key, err)
	}
	res, moved, err := s.place(ctx, key, f, tmp, n, sum, opts)
	committed = moved
	if err != nil {
		return remote.PutResult{}, fmt.Errorf("fsstore: put %q: %w", key, err)
	}
	return res, nil
}

// place stamps, syncs and moves into place the temp file tmp (open as f,
// flock'ed, holding n bytes hashing to sum), and syncs the folders that
// changed. moved reports that the object is in place and tmp is gone
// (renamed, or unlinked after the link); if not, the caller removes tmp.
func (s *Store) place(ctx context.Context, key string, f *os.File, tmp string, n int64, sum uint64, opts remote.PutOptions) (_ remote.PutResult, moved bool, err error) {
	mtime, err := s.lock.stamp(ctx)
	if err != nil {
		return remote.PutResult{}, false, err
	}
	if err := os.Chtimes(tmp, mtime, mtime); err != nil {
		return remote.PutResult{}, false, err
	}
	if err := f.Sync(); err != nil {
		return remote.PutResult{}, false, fmt.Errorf("sync: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		return remote.PutResult{}, false, err
	}
	if !fi.ModTime().Equal(mtime) || fi.Size() != n {
		return remote.PutResult{}, false, fmt.Errorf("temp file has mtime %v and %d bytes, want %v and %d",
			fi.ModTime(), fi.Size(), mtime, n)
	}
	// Last chance to give up: after the move the object is stored.
	if err := ctx.Err(); err != nil {
		return remote.PutResult{}, false, err
	}
	dirty, err := s.commit(ctx, key, tmp, opts)
	if err != nil {
		return remote.PutResult{}, false, err
	}
	if opts.IfNoneMatch {
		unlink(tmp) // the link made the object; the temp name is now extra
	}
	for _, d := range dirty {
		if err := s.syncDir(d); err != nil {
			// The object is in place but may not survive a power loss.
			return remote.PutResult{}, true, err
		}
	}
	return remote.PutResult{ETag: etag(fi), Size: n, XXH64: sum}, true, nil
}

// checkPut checks a put's arguments (Put, PutFile) before any I/O.
func checkPut(ctx context.Context, key string, opts remote.PutOptions) error {
	if err := remote.ValidateKey(key); err != nil {
		return fmt.Errorf("fsstore: put: %w", err)
	}
	if opts.IfNoneMatch && opts.IfMatch != "" {
		return fmt.Errorf("fsstore: put %q: IfNoneMatch and IfMatch both set", key)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fsstore: put %q: %w", key, err)
	}
	return nil
}

// failsPrecondition reports whether a conditional Put can be refused
// before its body is written: the key exists (IfNoneMatch), or is absent
// or has another ETag (IfMatch). Such a Put fails as if it had been
// decided at this instant, which is a moment inside the call; commit
// checks again under the tree lock, so a Put that passes here can still
// fail there. It saves the temp file, its write and its fsync for the
// puts that lose (the writer's store probe makes two at every open; a
// lost race on a log record one).
func (s *Store) failsPrecondition(key string, opts remote.PutOptions) bool {
	switch {
	case opts.IfNoneMatch:
		fi, err := os.Lstat(s.path(key))
		return err == nil && fi.Mode().IsRegular()
	case opts.IfMatch != "":
		fi, err := os.Stat(s.path(key))
		if errors.Is(err, fs.ErrNotExist) {
			return true
		}
		return err == nil && fi.Mode().IsRegular() && etag(fi) != opts.IfMatch
	}
	return false
}

// copyBody streams r into f in bounded chunks. With size >= 0 the body must
// be exactly size bytes: it reads at most one byte more to tell.
func copyBody(ctx context.Context, f *os.File, r io.Reader, size int64) (int64, uint64, error) {
	if r == nil {
		r = eofReader{}
	}
	var buf []byte
	if size >= 0 && size < smallBody {
		// A small body (a log record, a head) gets a buffer of its own
		// size, not a pooled chunk: a chunk taken for it is 64 KiB of
		// memory a short-lived process touches for nothing.
		buf = make([]byte, size+1)
	} else {
		bp := chunks.Get().(*[]byte)
		defer chunks.Put(bp)
		buf = *bp
	}
	h := xxhash.New()
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, 0, err
		}
		want := buf
		if size >= 0 && size+1-n < int64(len(want)) {
			want = want[:size+1-n]
		}
		m, rerr := r.Read(want)
		if m > 0 {
			if size >= 0 && n+int64(m) > size {
				return n, 0, fmt.Errorf("body longer than the declared %d bytes", size)
			}
			if _, err := f.Write(want[:m]); err != nil {
				return n, 0, fmt.Errorf("write: %w", err)
			}
			h.Write(want[:m])
			n += int64(m)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return n, 0, fmt.Errorf("read body after %d bytes: %w", n, rerr)
		}
	}
	if size >= 0 && n != size {
		return n, 0, fmt.Errorf("body of %d bytes, declared %d: %w", n, size, io.ErrUnexpectedEOF)
	}
	return n, h.Sum64(), nil
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// commit moves the synced temp file to key under the tree lock, and
// returns the folders whose entries changed (to be synced).
func (s *Store) commit(ctx context.Context, key, tmp string, opts remote.PutOptions) ([]string, error) {
	p := s.path(key)
	if err := s.lock.lock(ctx); err != nil {
		return nil, err
	}
	defer s.lock.unlock()
	created, err := s.mkdirsLocked(filepath.Dir(p))
	if err != nil {
		return nil, err
	}
	dirty := []string{filepath.Dir(p)}
	for _, d := range created {
		dirty = append(dirty, filepath.Dir(d))
	}
	switch {
	case opts.IfNoneMatch:
		// link(2) fails if the name exists: create-if-absent without a
		// window between check and create.
		if err := os.Link(tmp, p); err != nil {
			if errors.Is(err, fs.ErrExist) {
				if fi, serr := os.Lstat(p); serr == nil && fi.IsDir() {
					return nil, fmt.Errorf("%q is a folder of other keys", key)
				}
				s.pruneLocked(filepath.Dir(p))
				return nil, remote.ErrPrecondition
			}
			return nil, err
		}
	case opts.IfMatch != "":
		fi, err := os.Stat(p)
		if notFound(err) || err == nil && (!fi.Mode().IsRegular() || etag(fi) != opts.IfMatch) {
			s.pruneLocked(filepath.Dir(p))
			return nil, remote.ErrPrecondition
		}
		if err != nil {
			return nil, err
		}
		if err := os.Rename(tmp, p); err != nil {
			return nil, err
		}
	default:
		if err := os.Rename(tmp, p); err != nil {
			if fi, serr := os.Lstat(p); serr == nil && fi.IsDir() {
				return nil, fmt.Errorf("%q is a folder of other keys", key)
			}
			return nil, err
		}
	}
	return dirty, nil
}

// mkdirsLocked creates dir and its missing ancestors below the root and
// returns the folders it created, outermost first. A path component that
// is an object, not a folder, fails: a key and keys below it cannot both
// exist in a file tree.
func (s *Store) mkdirsLocked(dir string) ([]string, error) {
	var missing []string
	for d := dir; d != s.root && len(d) > len(s.root); d = filepath.Dir(d) {
		fi, err := os.Lstat(d)
		if err == nil {
			if !fi.IsDir() {
				return nil, fmt.Errorf("%q is an object, not a folder", filepath.ToSlash(d[len(s.root)+1:]))
			}
			break
		}
		if !notFound(err) {
			return nil, err
		}
		missing = append(missing, d)
	}
	var created []string
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(missing[i], 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return created, err
		}
		created = append(created, missing[i])
	}
	return created, nil
}

// createTemp creates and flocks a new temp file. The flock tells Sweep (in
// any process) that a writer is alive; a file Sweep removed between our
// create and our flock has no links left, and we start over.
func (s *Store) createTemp() (*os.File, string, error) {
	for range 8 {
		name := tempName(s.tmp)
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, "", fmt.Errorf("create temp file: %w", err)
		}
		if err := flock(f); err != nil {
			f.Close()
			unlink(name)
			return nil, "", fmt.Errorf("lock temp file: %w", err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			unlink(name)
			return nil, "", fmt.Errorf("stat temp file: %w", err)
		}
		if _, nlink := inode(fi); nlink == 0 {
			f.Close() // swept before we locked it
			continue
		}
		return f, name, nil
	}
	return nil, "", errors.New("create temp file: no free name after 8 tries")
}

// tempName is a fresh random name in the temp folder (Sweep's domain).
func tempName(dir string) string {
	return filepath.Join(dir, "put-"+strconv.FormatUint(rand.Uint64(), 16))
}
