package fsstore

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/bopstore/bop/remote"
	"github.com/cespare/xxhash/v2"
)

var _ remote.FilePutter = (*Store)(nil)

// PutFile stores the bytes of f under key (remote.FilePutter). On the
// store's file system it takes the file itself rather than copying it:
//
//	open f's name again (a descriptor of our own, checked to be f's
//	      file) and flock it, so Sweep leaves the temp name below alone
//	link it into the temp folder under a fresh name
//	read it through, hashing and counting: PutResult.XXH64 is the hash
//	      of the bytes in the file that becomes the object, not the
//	      caller's word for them
//	then as Put (place): stamp the mtime, fsync, move into place under
//	      the tree lock, fsync the folders that changed
//
// The fsync of the object's file is what makes its bytes durable, as in
// Put; that they were written through another name does not matter.
//
// It copies the bytes (Put) when the file cannot be linked (another file
// system, permissions, anything link(2) refuses), or when the file has
// more than one name already: the stamp sets the file's mtime, which is
// the ETag of every key naming that file, so a file becomes at most one
// object (one given to PutFile before has two names: the caller's and
// the key's).
//
// The caller must never write to f again (remote.FilePutter): the object
// is the same file.
func (s *Store) PutFile(ctx context.Context, key string, f *os.File, opts remote.PutOptions) (remote.PutResult, error) {
	if err := checkPut(ctx, key, opts); err != nil {
		return remote.PutResult{}, err
	}
	if err := s.writable("put", key); err != nil {
		return remote.PutResult{}, err
	}
	fi, err := f.Stat()
	if err != nil {
		return remote.PutResult{}, fmt.Errorf("fsstore: put %q: %w", key, err)
	}
	copyIt := func() (remote.PutResult, error) {
		return s.Put(ctx, key, io.NewSectionReader(f, 0, fi.Size()), opts)
	}
	if _, nlink := inode(fi); !fi.Mode().IsRegular() || nlink != 1 {
		return copyIt()
	}
	if opts.Size >= 0 && fi.Size() != opts.Size {
		return remote.PutResult{}, fmt.Errorf("fsstore: put %q: file of %d bytes, declared %d", key, fi.Size(), opts.Size)
	}
	if s.failsPrecondition(key, opts) {
		return remote.PutResult{}, fmt.Errorf("fsstore: put %q: %w", key, remote.ErrPrecondition)
	}
	g, tmp, ok := s.linkTemp(f, fi)
	if !ok {
		return copyIt()
	}
	moved := false
	defer func() {
		g.Close() // releases the flock
		if !moved {
			unlink(tmp)
		}
	}()
	n, sum, err := hashFile(ctx, g)
	if err != nil {
		return remote.PutResult{}, fmt.Errorf("fsstore: put %q: %w", key, err)
	}
	if n != fi.Size() {
		return remote.PutResult{}, fmt.Errorf("fsstore: put %q: file changed while stored: %d bytes, then %d", key, fi.Size(), n)
	}
	res, moved, err := s.place(ctx, key, g, tmp, n, sum, opts)
	if err != nil {
		return remote.PutResult{}, fmt.Errorf("fsstore: put %q: %w", key, err)
	}
	return res, nil
}

// linkTemp gives the file of f (whose stat is fi) a fresh name in the
// temp folder, and returns a read-only descriptor of it, flock'ed before
// the name exists (Sweep, in any process, skips a temp file it cannot
// lock). false: the file cannot be linked here; nothing is left behind.
func (s *Store) linkTemp(f *os.File, fi os.FileInfo) (*os.File, string, bool) {
	g, err := os.Open(f.Name())
	if err != nil {
		return nil, "", false
	}
	gi, err := g.Stat()
	if err != nil || !os.SameFile(fi, gi) || flock(g) != nil {
		g.Close()
		return nil, "", false
	}
	for range 8 {
		name := tempName(s.tmp)
		err := os.Link(f.Name(), name)
		if os.IsExist(err) {
			continue
		}
		if err != nil {
			break
		}
		// The name must be the file we locked (f's name cannot have
		// changed under a caller that keeps the rule, but this is cheap).
		if li, err := os.Lstat(name); err != nil || !os.SameFile(li, gi) {
			unlink(name)
			break
		}
		return g, name, true
	}
	g.Close()
	return nil, "", false
}

// hashFile reads f from its start to its end in bounded chunks, checking
// ctx between them, and returns its length and xxhash64.
func hashFile(ctx context.Context, f *os.File) (int64, uint64, error) {
	bp := chunks.Get().(*[]byte)
	defer chunks.Put(bp)
	buf := *bp
	h := xxhash.New()
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, 0, err
		}
		m, err := f.ReadAt(buf, n)
		h.Write(buf[:m])
		n += int64(m)
		if err == io.EOF {
			return n, h.Sum64(), nil
		}
		if err != nil {
			return n, 0, fmt.Errorf("read file: %w", err)
		}
	}
}
