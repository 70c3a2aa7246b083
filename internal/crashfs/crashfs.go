// Package crashfs simulates a power loss for tests. A Tracker follows the
// files a test cares about: their content as of the last fsync (durable)
// and the writes and truncations since (volatile, in order). Crash freezes
// the machine: every later mutating operation through the tracker fails
// with ErrCrashed. Restore then rewrites each file on disk as a power loss
// could have left it: all unsynced operations lost, all kept, or a random
// subset of 4 KiB pieces of them (so records and frames can tear).
//
// Files are real files: the code under test reads and writes them
// normally, and reports every mutation to the tracker (FS does this for
// code written against a small file-system interface; internal/vfstest
// does it for SQLite's files). The model: a file's existence and removal
// are durable at once; its bytes only at Sync. In a directory followed with
// FollowDir, entries are durable only at SyncDir instead: the creations,
// removals and renames of followed files in it since the last SyncDir are
// lost, kept, or each kept with probability 1/2 (RandomSubset), like
// writes (POSIX orders none of them before the directory's fsync). A
// file's bytes follow it through a rename; a file whose entry is lost
// keeps nothing on disk.
package crashfs

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"sync"
)

// ErrCrashed is returned by every mutating operation after Crash.
var ErrCrashed = errors.New("crashfs: simulated power loss: the machine is down")

// Mode selects what survives a crash.
type Mode int

const (
	// LoseUnsynced drops every write and truncation since the last Sync.
	LoseUnsynced Mode = iota
	// KeepUnsynced keeps them all (as if the OS had flushed everything).
	KeepUnsynced
	// RandomSubset keeps each 4 KiB piece of each unsynced write (and
	// each truncation) with probability 1/2, independently.
	RandomSubset
)

func (m Mode) String() string {
	switch m {
	case LoseUnsynced:
		return "lose-unsynced"
	case KeepUnsynced:
		return "keep-unsynced"
	case RandomSubset:
		return "random-subset"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Tracker follows files by absolute path.
type Tracker struct {
	mu      sync.Mutex
	files   map[string]*file // by current path
	dirs    map[string]*dir  // followed directories, by path
	crashed bool
	keepDir func(kind, name string) bool // see KeepDirOps
}

// dir is a followed directory: its entries of followed files as of the
// last SyncDir, the entry operations since, and every name a followed
// file had in it (Restore removes those the crash did not keep).
type dir struct {
	durable map[string]*file
	ops     []dirOp
	names   map[string]bool
}

// dirOp creates (f set), removes (f nil, to "") or renames (to set) the
// entry name.
type dirOp struct {
	name, to string
	f        *file
}

type file struct {
	durable []byte
	ops     []op
	removed bool
}

type op struct {
	trunc bool
	off   int64 // write offset, or truncation size
	data  []byte
}

// New returns an empty tracker.
func New() *Tracker { return &Tracker{files: map[string]*file{}, dirs: map[string]*dir{}} }

// FollowDir makes the entries of followed files in dir durable only at
// SyncDir (see the package comment). Call it before following files in
// it; following a followed directory is a no-op.
func (t *Tracker) FollowDir(path string) {
	path = abs(path)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dirs[path] == nil {
		t.dirs[path] = &dir{durable: map[string]*file{}, names: map[string]bool{}}
	}
}

// KeepDirOps makes the next Restore keep exactly the entry operations of
// followed directories for which keep returns true, whatever the mode (a
// test's fixed scenario). kind is "create", "remove" or "rename"; name is
// the entry (a rename's source).
func (t *Tracker) KeepDirOps(keep func(kind, name string) bool) {
	t.mu.Lock()
	t.keepDir = keep
	t.mu.Unlock()
}

func (o dirOp) kind() string {
	switch {
	case o.f != nil:
		return "create"
	case o.to != "":
		return "rename"
	}
	return "remove"
}

// dirOf returns the followed directory holding path (nil: not followed)
// and path's name in it.
func (t *Tracker) dirOf(path string) (*dir, string) {
	return t.dirs[filepath.Dir(path)], filepath.Base(path)
}

func abs(path string) string {
	if p, err := filepath.Abs(path); err == nil {
		return p
	}
	return path
}

// Open starts following path; its current content on disk (nothing if it
// does not exist) counts as durable. Following a followed file is a no-op.
func (t *Tracker) Open(path string) error { return t.follow(path, false) }

// Create follows path as a file just created (empty). In a followed
// directory its entry is durable only at SyncDir; elsewhere Create is
// Open, without reading the file.
func (t *Tracker) Create(path string) error { return t.follow(path, true) }

func (t *Tracker) follow(path string, create bool) error {
	path = abs(path)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.crashed {
		return ErrCrashed
	}
	d, name := t.dirOf(path)
	if create && d != nil {
		f := &file{}
		t.files[path] = f
		d.ops = append(d.ops, dirOp{name: name, f: f})
		d.names[name] = true
		return nil
	}
	if f := t.files[path]; f != nil && !f.removed {
		return nil
	}
	var b []byte
	exists := false
	if !create {
		var err error
		b, err = os.ReadFile(path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		exists = err == nil
	}
	f := &file{durable: b}
	t.files[path] = f
	if d != nil && exists {
		d.durable[name], d.names[name] = f, true
	}
	return nil
}

// Check returns ErrCrashed after Crash.
func (t *Tracker) Check() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.crashed {
		return ErrCrashed
	}
	return nil
}

func (t *Tracker) lookup(path string) *file {
	f := t.files[abs(path)]
	if f == nil || f.removed {
		return nil
	}
	return f
}

// Write records a write that reached the file (call it after the real
// write succeeded; before, call Check). Untracked paths are ignored.
func (t *Tracker) Write(path string, p []byte, off int64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.crashed {
		return ErrCrashed
	}
	if f := t.lookup(path); f != nil {
		f.ops = append(f.ops, op{off: off, data: append([]byte(nil), p...)})
	}
	return nil
}

// Truncate records a truncation.
func (t *Tracker) Truncate(path string, size int64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.crashed {
		return ErrCrashed
	}
	if f := t.lookup(path); f != nil {
		f.ops = append(f.ops, op{trunc: true, off: size})
	}
	return nil
}

// Sync records an fsync: everything written so far is durable.
func (t *Tracker) Sync(path string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.crashed {
		return ErrCrashed
	}
	if f := t.lookup(path); f != nil {
		for _, o := range f.ops {
			f.durable = apply(f.durable, o)
		}
		f.ops = nil
	}
	return nil
}

// Remove records a deletion (durable at once, or at SyncDir in a
// followed directory).
func (t *Tracker) Remove(path string) error {
	path = abs(path)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.crashed {
		return ErrCrashed
	}
	if d, name := t.dirOf(path); d != nil {
		if t.files[path] != nil {
			delete(t.files, path)
			d.ops = append(d.ops, dirOp{name: name})
		}
		return nil
	}
	if f := t.files[path]; f != nil {
		f.removed = true
		f.durable, f.ops = nil, nil
	}
	return nil
}

// Rename records a rename of a followed file (call it after the real
// rename succeeded): its bytes, durable and not, go with it; a followed
// file at newpath is replaced. Durable at once, or at SyncDir in a
// followed directory; across directories only between unfollowed ones.
func (t *Tracker) Rename(oldpath, newpath string) error {
	oldpath, newpath = abs(oldpath), abs(newpath)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.crashed {
		return ErrCrashed
	}
	f := t.files[oldpath]
	if f == nil || f.removed {
		return nil
	}
	d, name := t.dirOf(oldpath)
	nd, to := t.dirOf(newpath)
	if (d != nil || nd != nil) && d != nd {
		return fmt.Errorf("crashfs: rename %s to %s: across a followed directory is not modeled", oldpath, newpath)
	}
	delete(t.files, oldpath)
	t.files[newpath] = f
	if d != nil {
		d.ops = append(d.ops, dirOp{name: name, to: to})
		d.names[to] = true
	}
	return nil
}

// SyncDir records an fsync of a directory: the entries of a followed one
// are durable as they are now (a no-op for another).
func (t *Tracker) SyncDir(path string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.crashed {
		return ErrCrashed
	}
	if d := t.dirs[abs(path)]; d != nil {
		for _, o := range d.ops {
			d.durable = applyDir(d.durable, o)
		}
		d.ops = nil
	}
	return nil
}

// applyDir applies an entry operation to entries (a rename of a missing
// entry does nothing: the crash did not keep its source).
func applyDir(entries map[string]*file, o dirOp) map[string]*file {
	switch {
	case o.f != nil:
		entries[o.name] = o.f
	case o.to != "":
		if f, ok := entries[o.name]; ok {
			delete(entries, o.name)
			entries[o.to] = f
		}
	default:
		delete(entries, o.name)
	}
	return entries
}

func apply(b []byte, o op) []byte {
	if o.trunc {
		if o.off < int64(len(b)) {
			return b[:o.off]
		}
		return append(b, make([]byte, o.off-int64(len(b)))...)
	}
	end := o.off + int64(len(o.data))
	if end > int64(len(b)) {
		b = append(b, make([]byte, end-int64(len(b)))...)
	}
	copy(b[o.off:], o.data)
	return b
}

// Crash freezes the machine: from now on every mutation fails.
func (t *Tracker) Crash() {
	t.mu.Lock()
	t.crashed = true
	t.mu.Unlock()
}

// Report says what Restore did.
type Report struct {
	Files                  int
	OpsKept, OpsLost       int // whole operations kept / lost
	OpsTorn                int // operations kept in part
	BytesKept, BytesLost   int64
	DirOpsKept, DirOpsLost int // entry operations in followed directories
}

func (r Report) String() string {
	s := fmt.Sprintf("%d files, ops kept %d, lost %d, torn %d (bytes kept %d, lost %d)",
		r.Files, r.OpsKept, r.OpsLost, r.OpsTorn, r.BytesKept, r.BytesLost)
	if r.DirOpsKept+r.DirOpsLost > 0 {
		s += fmt.Sprintf(", directory entry ops kept %d, lost %d", r.DirOpsKept, r.DirOpsLost)
	}
	return s
}

const pieceSize = 4096

// Restore writes every followed file to disk as the crash left it (close
// every handle on them first), forgets them all and brings the machine
// back up. rng is used by RandomSubset.
func (t *Tracker) Restore(mode Mode, rng *rand.Rand) (Report, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var rep Report
	paths := make([]string, 0, len(t.files))
	for p := range t.files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, path := range paths {
		f := t.files[path]
		if d, _ := t.dirOf(path); d != nil {
			continue // below
		}
		if f.removed {
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return rep, err
			}
			continue
		}
		rep.Files++
		if err := os.WriteFile(path, f.crashed(mode, rng, &rep), 0o644); err != nil {
			return rep, err
		}
	}
	// Followed directories: the entries the crash kept, each with its
	// file's bytes; every other name a followed file had is removed.
	dirPaths := make([]string, 0, len(t.dirs))
	for p := range t.dirs {
		dirPaths = append(dirPaths, p)
	}
	sort.Strings(dirPaths)
	for _, dp := range dirPaths {
		d := t.dirs[dp]
		entries := make(map[string]*file, len(d.durable))
		for name, f := range d.durable {
			entries[name] = f
		}
		for _, o := range d.ops {
			keep := mode == KeepUnsynced || (mode == RandomSubset && rng.IntN(2) == 0)
			if t.keepDir != nil {
				keep = t.keepDir(o.kind(), o.name)
			}
			if keep {
				entries = applyDir(entries, o)
				rep.DirOpsKept++
			} else {
				rep.DirOpsLost++
			}
		}
		names := make([]string, 0, len(d.names))
		for name := range d.names {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			path := filepath.Join(dp, name)
			f, ok := entries[name]
			if !ok {
				if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return rep, err
				}
				continue
			}
			rep.Files++
			if err := os.WriteFile(path, f.crashed(mode, rng, &rep), 0o644); err != nil {
				return rep, err
			}
		}
	}
	t.files, t.keepDir = map[string]*file{}, nil
	for _, d := range t.dirs {
		d.durable, d.ops, d.names = map[string]*file{}, nil, map[string]bool{}
	}
	t.crashed = false
	return rep, nil
}

// crashed returns f's bytes as the crash left them.
func (f *file) crashed(mode Mode, rng *rand.Rand, rep *Report) []byte {
	b := f.durable
	for _, o := range f.ops {
		switch {
		case mode == KeepUnsynced || (mode == RandomSubset && o.trunc && rng.IntN(2) == 0):
			b = apply(b, o)
			rep.OpsKept++
			rep.BytesKept += int64(len(o.data))
		case mode == LoseUnsynced || o.trunc:
			rep.OpsLost++
			rep.BytesLost += int64(len(o.data))
		default:
			// Each aligned 4 KiB piece of the write survives or not.
			kept, lost := 0, 0
			for p := o.off; p < o.off+int64(len(o.data)); {
				end := min((p/pieceSize+1)*pieceSize, o.off+int64(len(o.data)))
				if rng.IntN(2) == 0 {
					b = apply(b, op{off: p, data: o.data[p-o.off : end-o.off]})
					kept++
					rep.BytesKept += end - p
				} else {
					lost++
					rep.BytesLost += end - p
				}
				p = end
			}
			switch {
			case lost == 0:
				rep.OpsKept++
			case kept == 0:
				rep.OpsLost++
			default:
				rep.OpsTorn++
			}
		}
	}
	return b
}

// FS is a small file system over the real one that reports every mutation
// to a Tracker. Its methods mirror wal.FS (adapt with a one-line wrapper).
type FS struct{ T *Tracker }

// File is an open file of FS.
type File struct {
	f    *os.File
	path string
	t    *Tracker
}

// OpenFile opens (creating) a file and follows it.
func (x FS) OpenFile(name string, flag int, perm fs.FileMode) (*File, error) {
	if flag&(os.O_CREATE|os.O_TRUNC|os.O_WRONLY|os.O_RDWR) != 0 {
		if err := x.T.Check(); err != nil {
			return nil, err
		}
	}
	existed := true
	if _, err := os.Stat(name); errors.Is(err, fs.ErrNotExist) {
		existed = false
	}
	if existed {
		// Follow it from its content before this open (O_TRUNC below is
		// an operation like any other).
		if err := x.T.Open(name); err != nil {
			return nil, err
		}
	}
	f, err := os.OpenFile(name, flag&^os.O_TRUNC, perm)
	if err != nil {
		return nil, err
	}
	if !existed {
		if err := x.T.Create(name); err != nil {
			f.Close()
			return nil, err
		}
	}
	file := &File{f: f, path: abs(name), t: x.T}
	if flag&os.O_TRUNC != 0 {
		if err := file.Truncate(0); err != nil {
			f.Close()
			return nil, err
		}
	}
	return file, nil
}

// Remove deletes a file.
func (x FS) Remove(name string) error {
	if err := x.T.Check(); err != nil {
		return err
	}
	if err := x.followEntry(name); err != nil {
		return err
	}
	if err := os.Remove(name); err != nil {
		return err
	}
	return x.T.Remove(name)
}

// ReadDir lists a directory's entry names, sorted.
func (x FS) ReadDir(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names, nil
}

// MkdirAll creates a directory.
func (x FS) MkdirAll(dir string, perm fs.FileMode) error {
	if err := x.T.Check(); err != nil {
		return err
	}
	return os.MkdirAll(dir, perm)
}

// Rename renames a file.
func (x FS) Rename(oldpath, newpath string) error {
	if err := x.T.Check(); err != nil {
		return err
	}
	for _, p := range []string{oldpath, newpath} {
		if err := x.followEntry(p); err != nil {
			return err
		}
	}
	if err := os.Rename(oldpath, newpath); err != nil {
		return err
	}
	return x.T.Rename(oldpath, newpath)
}

// followEntry follows an existing file of a followed directory before its
// entry changes, so that a crash can bring it back.
func (x FS) followEntry(path string) error {
	x.T.mu.Lock()
	d, _ := x.T.dirOf(abs(path))
	x.T.mu.Unlock()
	if d == nil {
		return nil
	}
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	return x.T.Open(path)
}

// SyncDir makes a followed directory's entries durable (the others are
// durable at once).
func (x FS) SyncDir(dir string) error { return x.T.SyncDir(dir) }

// ReadAt reads from the file.
func (f *File) ReadAt(p []byte, off int64) (int, error) { return f.f.ReadAt(p, off) }

// WriteAt writes and records the write.
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	if err := f.t.Check(); err != nil {
		return 0, err
	}
	n, err := f.f.WriteAt(p, off)
	if n > 0 {
		if terr := f.t.Write(f.path, p[:n], off); terr != nil {
			return n, terr
		}
	}
	return n, err
}

// Truncate truncates and records it.
func (f *File) Truncate(size int64) error {
	if err := f.t.Check(); err != nil {
		return err
	}
	if err := f.f.Truncate(size); err != nil {
		return err
	}
	return f.t.Truncate(f.path, size)
}

// Sync records an fsync (the real fsync is skipped: the tracker decides
// what is durable, and tests run faster).
func (f *File) Sync() error {
	if err := f.t.Check(); err != nil {
		return err
	}
	return f.t.Sync(f.path)
}

// Size returns the file's size.
func (f *File) Size() (int64, error) {
	fi, err := f.f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// Close closes the file (allowed after a crash).
func (f *File) Close() error { return f.f.Close() }
