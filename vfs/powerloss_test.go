package vfs

import (
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/ncruces/go-sqlite3/util/vfsutil"
	sqlite3vfs "github.com/ncruces/go-sqlite3/vfs"

	"github.com/bopstore/bop/internal/crashfs"
	"github.com/bopstore/bop/internal/testutil"
	"github.com/bopstore/bop/wal"
)

// Power loss through bop's own VFS (Register, offline: nothing is
// published, the spool keeps every transaction). SQLite's main file, WAL
// and rollback journal go through crashfs under bop's VFS (v.base), the
// spool through it as the VFS configures it (buffered, coalescing capture;
// the seam testSpoolFS), the seal file and meta.json (its temporary file,
// the rename, the -bop folder's fsync) through it too (the seam
// testStateFS), and bop's own fsync of the main file (the one before a WAL
// restart with synchronous=OFF, and the seal's settle) is reported to the
// same tracker (the durable.fsync seam). The -bop folder and its spool
// folder are followed directories (crashfs.FollowDir), and so is the
// database's folder: the creation, removal or rename of a followed file
// in them is durable only at the folder's fsync, and a crash keeps all,
// none or a random subset of those not yet durable. A random workload
// (autocommit inserts, updates and deletes, a bigger transaction that
// spills, bop's automatic and explicit PASSIVE/TRUNCATE checkpoints, clean
// closes) runs with synchronous OFF, NORMAL and FULL; the power goes at a
// random point: between statements, or at any mutating operation on a
// followed file (a write, truncation, size hint or fsync of the main
// file, WAL or journal, of a spool file, a deletion of the WAL, bop's
// main-file fsync, a write or fsync of the seal: busy set before a
// main-file write, settle; picked by count, or as the n-th of one kind,
// also during the last close: SQLite's final checkpoint, bop's fsync
// before the WAL's deletion, the deletion, the spool's final sync, the
// seal's clean save), which then fails, as does everything after it. The
// first open (meta.json, the seal's creation) is cut in
// powerloss_open_test.go. The files come back with
// their unsynced writes all lost, all kept, or a random subset of 4 KiB
// pieces kept (crashfs.Mode), and the database is reopened through bop.
//
// What bop must guarantee after the power loss, in every synchronous mode
// (SQLite itself promises nothing with OFF, but bop's fsync of the main
// file before a WAL restart, its fsync of a restarted WAL's header before
// the first frame (walFile.WriteAt) and capture's WAL fsync before a
// checkpoint's copy make the same hold there):
//   - the open succeeds: nothing here is an outside change, so the seal
//     must not refuse (ErrChangedOutside would mean bop wrote the main
//     file without marking the seal busy first) and reconciliation must
//     accept what SQLite recovers;
//   - the database is exactly the state after some prefix of the
//     committed transactions (no torn transaction, no fork), and that
//     prefix holds every promised one: with FULL every transaction whose
//     COMMIT returned; in every mode every transaction whose txid
//     (capture.LastFinal right after it) was at or below the spool's
//     persisted confirmed watermark when the power went (a confirmed
//     record was durable in the WAL and in the spool);
//   - PRAGMA integrity_check is ok;
//   - the confirmed watermark never goes back, and replaying the spool up
//     to the newest confirmed txid gives exactly the database as it was
//     after that txid's transaction (the spool never holds, below the
//     watermark, something the database lost or something else);
//   - replaying the whole spool gives the live database, byte for byte
//     (checkReplay), right after the reopen and again after more writes
//     (reconciliation did not fork the history);
//   - no capture or main-file fsync error is left in Status.
//
// Limits: bop's other files in the -bop folder, opened with plain os
// calls (the lock file, the catalog, the store), stay outside crashfs:
// they are snapshotted at the moment of the power cut and put back after
// the close. The close after the cut runs bop's close path against a
// dead machine (every followed operation fails); only its effects on
// followed files are undone, so an effect it could have through another
// path (say, an unfollowed file) would be missed. The database's folder
// is followed too (session 7): a WAL's or journal's creation and deletion
// are durable at the folder's fsync (SQLite's at a new file's first
// fsync or a deletion with syncDir, capture's at its first fsync of a WAL
// handle, bop's before its seal says the WAL is gone); the main file
// exists at boot, its entry durable. crashfs follows files' entries, not
// folders': the spool folder's entry in -bop is durable at once.
// The clean close's fsync of the main file (sealClosed) reaches the os,
// not the tracker, which then treats main-file writes as unsynced that
// are synced (harsher, never laxer). The -shm file is left as the cut
// left it: SQLite's first connection rebuilds it (the DMS lock). Sparse
// images, adoption and publishing are not exercised (offline, new
// database; TestPowerLossMetaBeforeEntries adopts a file once).
func TestPowerLossVFS(t *testing.T) {
	for _, sync := range []string{"off", "normal", "full"} {
		t.Run(sync, func(t *testing.T) {
			powerLossVFS(t, sync, 11, 8, 12, 60)
		})
	}
}

// TestHeavyPowerLossVFS is the larger sweep: more seeds, cuts and bigger
// transactions.
func TestHeavyPowerLossVFS(t *testing.T) {
	testutil.Heavy(t)
	for _, sync := range []string{"off", "normal", "full"} {
		for seed := uint64(100); seed < 104; seed++ {
			t.Run(fmt.Sprintf("%s/seed=%d", sync, seed), func(t *testing.T) {
				powerLossVFS(t, sync, seed, 24, 30, 400)
			})
		}
	}
}

// powerRig is the machine: one tracker per boot (a clean close or a power
// cut ends it), a counter of mutating operations on followed files, and
// the armed cut.
type powerRig struct {
	base   sqlite3vfs.VFS // the os VFS
	bopDir string

	ops   atomic.Int64
	cutAt atomic.Int64 // the operation number the power goes at (0: none)
	// Or the power goes at the cutKindN-th operation whose description
	// contains cutKind (an fsync, a spool write...).
	cutKind  atomic.Pointer[string]
	cutKindN atomic.Int64

	mu      sync.Mutex
	tr      *crashfs.Tracker
	down    bool
	cutWhat string
	snap    map[string][]byte // unfollowed files of the -bop folder at the cut

	afterSizeHint func() // if set, runs after a size hint of a main file
	// cutWhen, if set, is asked at each counted operation (one goroutine
	// at a time: a first open's): true cuts the power before it.
	cutWhen atomic.Pointer[func(what string) bool]
	// foldersSynced counts the -bop folder's fsyncs (crashStateFS).
	foldersSynced atomic.Int64

	// WAL headers written, and WAL frames written while the header
	// before them was not yet fsynced.
	walHeaders, unsyncedHeaderFrames atomic.Int64
}

func (r *powerRig) tracker() *crashfs.Tracker {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tr
}

func (r *powerRig) isDown() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.down
}

// op counts a mutating operation about to run on a followed file; the
// power goes before the armed one (which then fails, as all later ones).
func (r *powerRig) op(what string) {
	if n := r.ops.Add(1); n == r.cutAt.Load() {
		r.powerCut(what)
	}
	if k := r.cutKind.Load(); k != nil && strings.Contains(what, *k) && r.cutKindN.Add(-1) == 0 {
		r.powerCut(what)
	}
	if f := r.cutWhen.Load(); f != nil && (*f)(what) {
		r.powerCut(what)
	}
}

// powerCut freezes the tracker and snapshots the unfollowed files of the
// -bop folder.
func (r *powerRig) powerCut(what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down {
		return
	}
	r.down, r.cutWhat = true, what
	r.tr.Crash()
	r.snap = map[string][]byte{}
	filepath.WalkDir(r.bopDir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if e.IsDir() && e.Name() == "spool" {
			return filepath.SkipDir
		}
		if e.Type().IsRegular() {
			if b, err := os.ReadFile(p); err == nil {
				r.snap[p] = b
			}
		}
		return nil
	})
}

// putBackSnapshot undoes what the close after the cut did to unfollowed
// files of the -bop folder.
func (r *powerRig) putBackSnapshot() error {
	var paths []string
	filepath.WalkDir(r.bopDir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if e.IsDir() && e.Name() == "spool" {
			return filepath.SkipDir
		}
		if e.Type().IsRegular() {
			paths = append(paths, p)
		}
		return nil
	})
	for _, p := range paths {
		if _, ok := r.snap[p]; !ok {
			if err := os.Remove(p); err != nil {
				return err
			}
		}
	}
	for p, b := range r.snap {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// newPowerRig puts a rig under v for the database at path: SQLite's
// files through crashVFS, bop's spool and state files through the test
// seams (undone at the test's end), and boots it.
func newPowerRig(t *testing.T, v *VFS, path string) *powerRig {
	r := &powerRig{base: v.base, bopDir: path + "-bop"}
	v.base = crashVFS{r}
	testSpoolFS, testStateFS = crashSpoolFS{r}, crashStateFS{crashSpoolFS{r}}
	t.Cleanup(func() { testSpoolFS, testStateFS = nil, nil })
	r.boot()
	return r
}

// boot starts a new tracker: every file as it is now is durable (after a
// clean close bop fsynced everything; after a restore it is what the disk
// holds).
func (r *powerRig) boot() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tr, r.down, r.cutWhat, r.snap = crashfs.New(), false, "", nil
	// The seal and meta.json (testStateFS) live in the -bop folder: their
	// entries are durable only at its fsync.
	r.tr.FollowDir(r.bopDir)
	r.tr.FollowDir(filepath.Join(r.bopDir, "spool"))
	// The database's folder too: the creation and deletion of the WAL
	// and the journal are durable only at its fsync (SQLite's at a new
	// WAL's or journal's first fsync, and when it deletes a journal with
	// syncDir; capture's at its first fsync of a WAL handle).
	r.tr.FollowDir(filepath.Dir(r.bopDir))
	r.cutAt.Store(0)
	r.cutKind.Store(nil)
	r.cutWhen.Store(nil)
}

// crashVFS is bop's base VFS in this test: the os VFS with SQLite's main
// file, WAL and journal followed by the rig's tracker.
type crashVFS struct{ r *powerRig }

func (c crashVFS) Open(name string, flags sqlite3vfs.OpenFlag) (sqlite3vfs.File, sqlite3vfs.OpenFlag, error) {
	return c.r.base.Open(name, flags)
}

func (c crashVFS) OpenFilename(name *sqlite3vfs.Filename, flags sqlite3vfs.OpenFlag) (sqlite3vfs.File, sqlite3vfs.OpenFlag, error) {
	existed := false
	if name != nil {
		_, serr := os.Lstat(name.String())
		existed = serr == nil
	}
	f, oflags, err := vfsutil.WrapOpenFilename(c.r.base, name, flags)
	if err != nil || name == nil || flags&(sqlite3vfs.OPEN_MAIN_DB|sqlite3vfs.OPEN_WAL|sqlite3vfs.OPEN_MAIN_JOURNAL) == 0 {
		return f, oflags, err
	}
	path := name.String()
	tr := c.r.tracker()
	// A WAL or journal this open created is a new entry of the folder:
	// durable at the folder's fsync, which ncruces' file does at its
	// first Sync (and capture's handle at its first fsync: fdsync).
	created := flags&(sqlite3vfs.OPEN_WAL|sqlite3vfs.OPEN_MAIN_JOURNAL) != 0 && !existed
	track := tr.Open
	if created {
		track = tr.Create
	}
	if err := track(path); err != nil {
		f.Close()
		return nil, flags, err
	}
	if flags&sqlite3vfs.OPEN_MAIN_DB != 0 {
		// bop's own fsync of the main file goes through its own handle:
		// report it to the tracker instead.
		if d := lookup(path); d != nil {
			d.setFsync(func() error {
				c.r.op("bop's fsync of the main file")
				return tr.Sync(path)
			})
		}
	}
	kind := "journal"
	switch {
	case flags&sqlite3vfs.OPEN_MAIN_DB != 0:
		kind = "main file"
	case flags&sqlite3vfs.OPEN_WAL != 0:
		kind = "WAL"
	}
	cf := &crashFile{fileForward: fileForward{f}, r: c.r, tr: tr, path: path, kind: kind}
	cf.dirSyncDue.Store(created)
	return cf, oflags, nil
}

func (c crashVFS) Delete(name string, syncDir bool) error {
	c.r.op("delete " + filepath.Base(name))
	tr := c.r.tracker()
	if err := tr.Check(); err != nil {
		return err
	}
	if err := c.r.base.Delete(name, syncDir); err != nil {
		return err
	}
	if err := tr.Remove(name); err != nil {
		return err
	}
	if syncDir {
		return tr.SyncDir(filepath.Dir(name))
	}
	return nil
}

func (c crashVFS) Access(name string, flags sqlite3vfs.AccessFlag) (bool, error) {
	return c.r.base.Access(name, flags)
}

func (c crashVFS) FullPathname(name string) (string, error) { return c.r.base.FullPathname(name) }

// crashFile reports every mutation to the tracker. Its Sync only tells
// the tracker (the tracker decides what is durable). It has no descriptor
// (SyscallConn), so capture's WAL fsync from other goroutines falls back
// to Sync (internal/fdsync), which never touches the os file.
type crashFile struct {
	fileForward
	r    *powerRig
	tr   *crashfs.Tracker
	path string
	kind string
	// hdrPending: a WAL header was written through this handle and not
	// fsynced since.
	hdrPending atomic.Bool
	// dirSyncDue: this handle created the file; its first Sync fsyncs
	// the folder too (as ncruces' file and capture's fdsync do).
	dirSyncDue atomic.Bool
}

func (f *crashFile) WriteAt(p []byte, off int64) (int, error) {
	f.r.op(f.kind + " write")
	if err := f.tr.Check(); err != nil {
		return 0, err
	}
	if f.kind == "WAL" {
		switch {
		case off == 0:
			f.r.walHeaders.Add(1)
			f.hdrPending.Store(true)
		case f.hdrPending.Load():
			f.r.unsyncedHeaderFrames.Add(1)
		}
	}
	n, err := f.File.WriteAt(p, off)
	if n > 0 {
		if terr := f.tr.Write(f.path, p[:n], off); terr != nil {
			return n, terr
		}
	}
	return n, err
}

func (f *crashFile) Truncate(size int64) error {
	f.r.op(f.kind + " truncation")
	if err := f.tr.Check(); err != nil {
		return err
	}
	if err := f.File.Truncate(size); err != nil {
		return err
	}
	return f.tr.Truncate(f.path, size)
}

// SizeHint (SQLite's FCNTL_SIZE_HINT at the start of a checkpoint's copy)
// extends the file (fallocate): a mutation like a truncation upwards.
func (f *crashFile) SizeHint(size int64) error {
	f.r.op(f.kind + " size hint")
	if err := f.tr.Check(); err != nil {
		return err
	}
	before, err := f.File.Size()
	if err != nil {
		return err
	}
	if err := vfsutil.WrapSizeHint(f.File, size); err != nil {
		return err
	}
	if after, err := f.File.Size(); err == nil && after > before {
		if err := f.tr.Truncate(f.path, after); err != nil {
			return err
		}
	}
	if f.r.afterSizeHint != nil && f.kind == "main file" {
		f.r.afterSizeHint()
	}
	return nil
}

func (f *crashFile) Sync(flags sqlite3vfs.SyncFlag) error {
	f.r.op(f.kind + " fsync")
	err := f.tr.Sync(f.path)
	if err == nil {
		f.hdrPending.Store(false)
		if f.dirSyncDue.CompareAndSwap(true, false) {
			err = f.tr.SyncDir(filepath.Dir(f.path))
		}
	}
	return err
}

// crashSpoolFS is the spool's file system: crashfs under the current
// tracker, every mutation counted.
type crashSpoolFS struct{ r *powerRig }

type crashSpoolFile struct {
	*crashfs.File
	r *powerRig
}

func (c crashSpoolFS) fs() crashfs.FS { return crashfs.FS{T: c.r.tracker()} }

func (c crashSpoolFS) OpenFile(name string, flag int, perm fs.FileMode) (wal.File, error) {
	if flag&(os.O_CREATE|os.O_TRUNC) != 0 {
		c.r.op("spool create " + filepath.Base(name))
	}
	f, err := c.fs().OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return crashSpoolFile{f, c.r}, nil
}

func (c crashSpoolFS) Remove(name string) error {
	c.r.op("spool remove " + filepath.Base(name))
	return c.fs().Remove(name)
}

func (c crashSpoolFS) ReadDir(dir string) ([]string, error) { return c.fs().ReadDir(dir) }

func (c crashSpoolFS) MkdirAll(dir string, perm fs.FileMode) error {
	return c.fs().MkdirAll(dir, perm)
}

func (c crashSpoolFS) SyncDir(dir string) error {
	c.r.op("spool directory fsync")
	return c.fs().SyncDir(dir)
}

func (f crashSpoolFile) WriteAt(p []byte, off int64) (int, error) {
	f.r.op("spool write")
	return f.File.WriteAt(p, off)
}

func (f crashSpoolFile) Truncate(size int64) error {
	f.r.op("spool truncation")
	return f.File.Truncate(size)
}

func (f crashSpoolFile) Sync() error {
	f.r.op("spool fsync")
	return f.File.Sync()
}

// crashStateFS is the file system of the seal and meta.json
// (testStateFS): crashfs under the current tracker, every mutation
// counted, named after the file ("seal write", "meta.json.tmp fsync",
// "rename meta.json.tmp", "state folder fsync").
type crashStateFS struct{ crashSpoolFS }

type crashStateFile struct {
	*crashfs.File
	r    *powerRig
	name string
}

func (c crashStateFS) OpenFile(name string, flag int, perm fs.FileMode) (wal.File, error) {
	if flag&(os.O_CREATE|os.O_TRUNC) != 0 {
		c.r.op("state create " + filepath.Base(name))
	}
	f, err := c.fs().OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return crashStateFile{f, c.r, filepath.Base(name)}, nil
}

func (c crashStateFS) Remove(name string) error {
	c.r.op("state remove " + filepath.Base(name))
	return c.fs().Remove(name)
}

func (c crashStateFS) Rename(oldpath, newpath string) error {
	c.r.op("rename " + filepath.Base(oldpath))
	return c.fs().Rename(oldpath, newpath)
}

func (c crashStateFS) SyncDir(dir string) error {
	c.r.op("state folder fsync")
	err := c.fs().SyncDir(dir)
	if err == nil {
		c.r.foldersSynced.Add(1)
	}
	return err
}

func (f crashStateFile) WriteAt(p []byte, off int64) (int, error) {
	f.r.op(f.name + " write")
	return f.File.WriteAt(p, off)
}

func (f crashStateFile) Truncate(size int64) error {
	f.r.op(f.name + " truncation")
	return f.File.Truncate(size)
}

func (f crashStateFile) Sync() error {
	f.r.op(f.name + " fsync")
	return f.File.Sync()
}

// The workload's model: table t(id INTEGER PRIMARY KEY, k TEXT, v BLOB)
// with an index on k. A state is summarised by an order-free hash of its
// rows (the sum of each row's hash) and the row count.

type plRow struct {
	k string
	v []byte
}

type plChange struct {
	id  int64
	del bool
	row plRow
}

type plModel struct {
	rows map[int64]plRow
	sum  uint64
}

// noTable is the hash of a database without the table (before CREATE).
const noTable = ^uint64(0)

func plRowHash(id int64, k string, v []byte) uint64 {
	h := xxhash.New()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(id))
	h.Write(b[:])
	binary.LittleEndian.PutUint64(b[:], uint64(len(k)))
	h.Write(b[:])
	h.Write([]byte(k))
	h.Write(v)
	return h.Sum64()
}

func plHash(sum uint64, n int) uint64 { return sum + uint64(n)*0x9e3779b97f4a7c15 }

func (m *plModel) hash() uint64 { return plHash(m.sum, len(m.rows)) }

// after returns the hash of the state after chs, without changing m.
func (m *plModel) after(chs []plChange) uint64 {
	over := map[int64]*plRow{}
	sum, n := m.sum, len(m.rows)
	cur := func(id int64) (plRow, bool) {
		if r, ok := over[id]; ok {
			if r == nil {
				return plRow{}, false
			}
			return *r, true
		}
		r, ok := m.rows[id]
		return r, ok
	}
	for _, c := range chs {
		if old, ok := cur(c.id); ok {
			sum -= plRowHash(c.id, old.k, old.v)
			n--
		}
		if c.del {
			over[c.id] = nil
			continue
		}
		row := c.row
		over[c.id] = &row
		sum += plRowHash(c.id, row.k, row.v)
		n++
	}
	return plHash(sum, n)
}

func (m *plModel) apply(chs []plChange) {
	for _, c := range chs {
		if old, ok := m.rows[c.id]; ok {
			m.sum -= plRowHash(c.id, old.k, old.v)
			delete(m.rows, c.id)
		}
		if !c.del {
			m.rows[c.id] = c.row
			m.sum += plRowHash(c.id, c.row.k, c.row.v)
		}
	}
}

// tableHash is the hash of the table's rows in db (noTable if absent),
// with the rows themselves.
func tableHash(db *sql.DB) (uint64, map[int64]plRow, error) {
	var n int
	if err := db.QueryRow("SELECT count(*) FROM sqlite_schema WHERE name = 't'").Scan(&n); err != nil {
		return 0, nil, err
	}
	if n == 0 {
		return noTable, nil, nil
	}
	rows, err := db.Query("SELECT id, k, v FROM t")
	if err != nil {
		return 0, nil, err
	}
	defer rows.Close()
	got := map[int64]plRow{}
	var sum uint64
	for rows.Next() {
		var id int64
		var k string
		var v []byte
		if err := rows.Scan(&id, &k, &v); err != nil {
			return 0, nil, err
		}
		sum += plRowHash(id, k, v)
		got[id] = plRow{k, v}
	}
	if err := rows.Err(); err != nil {
		return 0, nil, err
	}
	return plHash(sum, len(got)), got, nil
}

// plState is one committed state of the history: its hash, the txid
// capture gave it (LastFinal right after the commit; 0: unknown) and the
// model's rows (to continue from it after a power loss).
type plState struct {
	hash uint64
	txid uint64
	rows map[int64]plRow
}

type plStmt struct {
	name string
	chs  []plChange // nil: no change (a checkpoint)
	run  func(db *sql.DB) error
}

// powerLossVFS runs rounds of the workload, each ended by a power cut
// and checked after the reopen. stmts is the number of statements per
// round, big the rows of a big transaction.
func powerLossVFS(t *testing.T, syncMode string, seed uint64, rounds, stmts, big int) {
	rng := rand.New(rand.NewPCG(seed, 0x9e37))
	oldSettle := settleDelay
	settleDelay = 5 * time.Millisecond // the seal settles (and is tested) within a round
	t.Cleanup(func() { settleDelay = oldSettle })
	v := newVFS(t, offline(Config{AutoCheckpoint: 60}))
	path := filepath.Join(t.TempDir(), "app.db")
	r := &powerRig{base: v.base, bopDir: path + "-bop"}
	v.base = crashVFS{r}
	testSpoolFS, testStateFS = crashSpoolFS{r}, crashStateFS{crashSpoolFS{r}}
	t.Cleanup(func() { testSpoolFS, testStateFS = nil, nil })
	pragmas := []string{"synchronous(" + syncMode + ")", "cache_size(16)"}

	model := &plModel{rows: map[int64]plRow{}}
	hist := []plState{{hash: noTable, rows: map[int64]plRow{}}}
	promised := 0 // hist[promised] and every state before it must survive
	nextID := int64(1)
	var opsDone, stmtsDone int64
	cuts := map[string]int{} // where the power went: how often

	open := func() *sql.DB {
		r.boot()
		db, err := sql.Open("sqlite3", dsn(path, v.Name(), pragmas...))
		if err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(1)
		return db
	}
	closeDB := func(db *sql.DB) {
		db.Close()
		if lookup(fullPath(t, v, path)) != nil {
			t.Fatal("the database state is still open after its last connection closed")
		}
	}
	db := open()
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v BLOB)")
	mustExec(t, db, "CREATE INDEX t_k ON t(k)")
	hist = append(hist, plState{hash: model.hash(), rows: map[int64]plRow{}})
	promised = len(hist) - 1 // checkReplay below makes it durable
	checkReplay(t, v, path, db)

	value := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	randomID := func() (int64, bool) {
		for range 8 {
			id := 1 + rng.Int64N(nextID)
			if _, ok := model.rows[id]; ok {
				return id, true
			}
		}
		return 0, false
	}
	exec := func(q string, args ...any) func(db *sql.DB) error {
		return func(db *sql.DB) error { _, err := db.Exec(q, args...); return err }
	}
	newStmt := func() plStmt {
		switch p := rng.IntN(100); {
		case p < 40:
			id := nextID
			nextID++
			row := plRow{fmt.Sprintf("k%d", rng.IntN(1000)), value(20 + rng.IntN(3000))}
			return plStmt{"insert", []plChange{{id: id, row: row}}, exec("INSERT INTO t(id, k, v) VALUES(?, ?, ?)", id, row.k, row.v)}
		case p < 60:
			if id, ok := randomID(); ok {
				row := plRow{fmt.Sprintf("k%d", rng.IntN(1000)), value(20 + rng.IntN(3000))}
				return plStmt{"update", []plChange{{id: id, row: row}}, exec("UPDATE t SET k = ?, v = ? WHERE id = ?", row.k, row.v, id)}
			}
		case p < 72:
			if id, ok := randomID(); ok {
				return plStmt{"delete", []plChange{{id: id, del: true}}, exec("DELETE FROM t WHERE id = ?", id)}
			}
		case p < 80:
			// A bigger transaction: spills out of the 16-page cache into
			// the WAL before its commit, and outgrows the spool's buffer.
			var chs []plChange
			for range big/2 + rng.IntN(big) {
				switch q := rng.IntN(10); {
				case q < 7:
					chs = append(chs, plChange{id: nextID, row: plRow{fmt.Sprintf("k%d", rng.IntN(1000)), value(200 + rng.IntN(2000))}})
					nextID++
				case q < 9:
					if id, ok := randomID(); ok {
						chs = append(chs, plChange{id: id, row: plRow{"u", value(100 + rng.IntN(1000))}})
					}
				default:
					if id, ok := randomID(); ok {
						chs = append(chs, plChange{id: id, del: true})
					}
				}
			}
			return plStmt{fmt.Sprintf("transaction of %d changes", len(chs)), chs, func(db *sql.DB) error {
				tx, err := db.Begin()
				if err != nil {
					return err
				}
				for _, c := range chs {
					if c.del {
						_, err = tx.Exec("DELETE FROM t WHERE id = ?", c.id)
					} else {
						_, err = tx.Exec("INSERT OR REPLACE INTO t(id, k, v) VALUES(?, ?, ?)", c.id, c.row.k, c.row.v)
					}
					if err != nil {
						tx.Rollback()
						return err
					}
				}
				return tx.Commit()
			}}
		case p < 90:
			return plStmt{"wal_checkpoint(PASSIVE)", nil, checkpointStmt("PASSIVE")}
		default:
			return plStmt{"wal_checkpoint(TRUNCATE)", nil, checkpointStmt("TRUNCATE")}
		}
		return plStmt{"wal_checkpoint(PASSIVE)", nil, checkpointStmt("PASSIVE")}
	}

	modes := []crashfs.Mode{crashfs.LoseUnsynced, crashfs.KeepUnsynced, crashfs.RandomSubset}
	for round := range rounds {
		mode := modes[(int(seed)+round)%len(modes)]
		what := fmt.Sprintf("seed %d, synchronous=%s, round %d, %s", seed, syncMode, round, mode)
		d := stateOf(t, v, path)
		confirmed := d.spool.Confirmed()

		// Where the power goes: before statement cutStmt, or at a
		// random operation (estimated from the operations per statement
		// so far) if inside.
		cutStmt := -1
		inClose := false
		switch round % 4 {
		case 0:
			cutStmt = rng.IntN(stmts + 1)
		case 1:
			per := max(opsDone/max(stmtsDone, 1), 4)
			r.cutAt.Store(r.ops.Load() + 1 + rng.Int64N(per*int64(stmts)*2/3))
		case 2:
			kinds := []string{"fsync", "spool", "main file write", "truncation", "size hint", "delete", "seal"}
			r.cutKindN.Store(1 + rng.Int64N(4))
			r.cutKind.Store(&kinds[rng.IntN(len(kinds))])
		case 3:
			inClose = true // armed after the statements
		}
		var inflight *plState
		var inflightName string
		ops0 := r.ops.Load()
		ran := 0
		for i := range stmts {
			if i == cutStmt {
				r.powerCut(fmt.Sprintf("between statements (before statement %d)", i))
				break
			}
			st := newStmt()
			ran++
			err := st.run(db)
			if err != nil {
				if !r.isDown() {
					t.Fatalf("%s: statement %d (%s) failed with the power on: %v", what, i, st.name, err)
				}
				if st.chs != nil {
					inflight = &plState{hash: model.after(st.chs)}
					inflightName = st.name
					// Its model rows, should the database hold it.
					m := &plModel{rows: cloneRows(model.rows), sum: model.sum}
					m.apply(st.chs)
					inflight.rows = m.rows
				}
				break
			}
			if st.chs != nil {
				model.apply(st.chs)
				txid := d.capture.LastFinal()
				if r.isDown() {
					// Capture may have stopped at the cut: LastFinal
					// then no longer names this transaction.
					txid = 0
				}
				hist = append(hist, plState{hash: model.hash(), txid: txid, rows: cloneRows(model.rows)})
				if syncMode == "full" {
					// FULL: a COMMIT that returned was synced in the WAL
					// (also if the power went during the statement: every
					// fsync after the cut fails).
					promised = len(hist) - 1
				}
			}
			if r.isDown() {
				break
			}
			confirmed = d.spool.Confirmed()
		}
		closed := false
		if inClose && !r.isDown() {
			// The power goes during the last close: its checkpoint,
			// bop's fsync of the main file, the WAL's deletion, the
			// spool's final sync.
			kinds := []string{"fsync", "spool", "main file write", "truncation", "size hint", "delete", "seal"}
			r.cutKindN.Store(1 + rng.Int64N(3))
			r.cutKind.Store(&kinds[rng.IntN(len(kinds))])
			closeDB(db)
			closed = true
			if !r.isDown() {
				// The close completed: everything is durable.
				r.powerCut("after a clean close")
				promised = len(hist) - 1
			} else {
				r.mu.Lock()
				r.cutWhat += " during the last close"
				r.mu.Unlock()
			}
		}
		if !r.isDown() {
			r.powerCut("after the round's last statement")
		}
		if ran > 0 {
			opsDone += r.ops.Load() - ops0
			stmtsDone += int64(ran)
		}
		// Every state whose txid was confirmed is promised.
		for i := len(hist) - 1; i > promised; i-- {
			if hist[i].txid != 0 && hist[i].txid <= confirmed {
				promised = i
				break
			}
		}
		r.mu.Lock()
		cutWhat := r.cutWhat
		r.mu.Unlock()
		kind := cutWhat
		if strings.HasPrefix(kind, "between") {
			kind = "between statements"
		}
		cuts[kind]++
		what += ", power cut at " + cutWhat
		if inflight != nil {
			what += " (during: " + inflightName + ")"
		}

		// The machine is down: close what the process holds (bop's close
		// path runs against failing files), put back what the cut left.
		if !closed {
			closeDB(db)
		}
		if err := r.putBackSnapshot(); err != nil {
			t.Fatal(err)
		}
		rep, err := restoreKeepingMtimes(r.tracker(), mode, rng, path)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %s", what, rep)

		db = open()
		k := checkAfterPowerLoss(t, what, v, path, db, syncMode, hist, promised, inflight, confirmed)
		if k < 0 {
			hist = append(hist, *inflight)
			k = len(hist) - 1
		}
		hist = hist[:k+1]
		// Txids above the watermark may have been renumbered by
		// reconciliation; the recovered state is the spool's last.
		for i := range hist {
			if hist[i].txid > confirmed {
				hist[i].txid = 0
			}
		}
		model.rows = cloneRows(hist[k].rows)
		model.sum = 0
		for id, row := range model.rows {
			model.sum += plRowHash(id, row.k, row.v)
		}
		for id := range model.rows {
			nextID = max(nextID, id+1)
		}
		hist[k].txid = stateOf(t, v, path).capture.LastFinal()
		// checkReplay's TRUNCATE checkpoint made it durable (the main
		// file fsynced before the WAL's truncation).
		promised = k

		if rng.IntN(4) == 0 {
			// A clean close and reopen: everything is kept.
			closeDB(db)
			db = open()
			h, _, err := tableHash(db)
			if err != nil {
				t.Fatalf("%s: after a clean close: %v", what, err)
			}
			if h != hist[k].hash {
				t.Fatalf("%s: a clean close and reopen changed the database", what)
			}
		}
	}
	integrityOK(t, db)
	checkReplay(t, v, path, db)
	closeDB(db)
	t.Logf("power cuts: %v", cuts)
}

func checkpointStmt(mode string) func(db *sql.DB) error {
	return func(db *sql.DB) error {
		var busy, logf, ckpt int64
		return db.QueryRow("PRAGMA wal_checkpoint("+mode+")").Scan(&busy, &logf, &ckpt)
	}
}

func cloneRows(m map[int64]plRow) map[int64]plRow {
	c := make(map[int64]plRow, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// restoreKeepingMtimes restores the tracked files as the power loss left
// them. crashfs rewrites every followed file; one whose bytes did not
// change gets its modification time back, as a real power loss leaves
// the identity of a file that was fsynced and not written since (the
// seal compares it).
func restoreKeepingMtimes(tr *crashfs.Tracker, mode crashfs.Mode, rng *rand.Rand, path string) (crashfs.Report, error) {
	type before struct {
		b  []byte
		mt time.Time
	}
	keep := map[string]before{}
	for _, p := range []string{path, path + "-wal"} {
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return crashfs.Report{}, err
		}
		keep[p] = before{b, fi.ModTime()}
	}
	rep, err := tr.Restore(mode, rng)
	if err != nil {
		return rep, err
	}
	for p, was := range keep {
		b, err := os.ReadFile(p)
		if err == nil && string(b) == string(was.b) {
			if err := os.Chtimes(p, was.mt, was.mt); err != nil {
				return rep, err
			}
		}
	}
	return rep, nil
}

// checkAfterPowerLoss checks the reopened database against the history
// and returns the index of the state it holds (-1: inflight).
func checkAfterPowerLoss(t *testing.T, what string, v *VFS, path string, db *sql.DB, syncMode string, hist []plState, promised int, inflight *plState, confirmed uint64) int {
	t.Helper()
	h, _, err := tableHash(db)
	if err != nil {
		t.Fatalf("%s: reopening failed: %v", what, err)
	}
	k := -2
	if inflight != nil && h == inflight.hash {
		k = -1
	}
	for i := len(hist) - 1; i >= 0 && k == -2; i-- {
		if hist[i].hash == h {
			k = i
		}
	}
	switch {
	case k == -2:
		t.Fatalf("%s: the database holds no committed state of the history (a torn transaction or a fork)", what)
	case k >= 0 && k < promised:
		for i := max(0, k-3); i < len(hist); i++ {
			t.Logf("state %d: txid %d, hash %x", i, hist[i].txid, hist[i].hash)
		}
		t.Fatalf("%s: the database went back to state %d of %d, but state %d was promised (synchronous=%s, confirmed txid %d)", what, k, len(hist)-1, promised, syncMode, confirmed)
	}
	if s := queryString(t, db, "PRAGMA integrity_check"); s != "ok" {
		t.Fatalf("%s: integrity_check: %s", what, s)
	}
	d := stateOf(t, v, path)
	if st := statusOf(t, db); st.CaptureError != "" || st.MainSyncError != "" {
		t.Fatalf("%s: status after the reopen: capture error %q, main sync error %q", what, st.CaptureError, st.MainSyncError)
	}
	if c := d.spool.Confirmed(); c < confirmed {
		t.Fatalf("%s: the confirmed watermark went back from %d to %d", what, confirmed, c)
	}
	// The spool up to the newest confirmed txid is the database as of
	// that txid's last transaction.
	T, L := uint64(0), -1
	for i := range hist {
		if hist[i].txid != 0 && hist[i].txid <= confirmed && hist[i].txid >= T {
			T, L = hist[i].txid, i
		}
	}
	if T > 0 {
		if got := replayHash(t, d.spool, T); got != hist[L].hash {
			t.Fatalf("%s: replaying the spool to the confirmed txid %d does not give state %d, its last transaction", what, T, L)
		}
	}
	checkReplay(t, v, path, db)
	return k
}

// replayHash replays the spool's records 1..to into a new file and
// returns the hash of its table.
func replayHash(t *testing.T, sp *wal.Spool, to uint64) uint64 {
	t.Helper()
	st := sp.Status()
	if st.FirstTxid > 1 || st.LastTxid < to {
		t.Fatalf("the spool holds txids %d..%d, not 1..%d", st.FirstTxid, st.LastTxid, to)
	}
	out := filepath.Join(t.TempDir(), "prefix.db")
	replaySpoolFrom(t, sp, 1, to, out)
	db, err := sql.Open("sqlite3", "file:"+out+"?immutable=1&mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	h, _, err := tableHash(db)
	if err != nil {
		t.Fatalf("read the spool's replay to txid %d: %v", to, err)
	}
	return h
}

// TestPowerLossAfterSizeHint: SQLite extends the main file (SIZE_HINT,
// fallocate) at the start of a checkpoint's copy, before its first page
// write. The power goes right after that extension (kept: its size and
// mtime reached the disk), with the seal settled before the checkpoint.
// The reopen must not refuse the file as changed outside bop: the seal
// must have been busy before the extension.
func TestPowerLossAfterSizeHint(t *testing.T) {
	oldSettle := settleDelay
	settleDelay = time.Millisecond
	t.Cleanup(func() { settleDelay = oldSettle })
	v := newVFS(t, offline(Config{AutoCheckpoint: -1}))
	path := filepath.Join(t.TempDir(), "app.db")
	r := &powerRig{base: v.base, bopDir: path + "-bop"}
	v.base = crashVFS{r}
	testSpoolFS = crashSpoolFS{r}
	t.Cleanup(func() { testSpoolFS = nil })
	r.boot()
	db := openDB(t, v, path, "synchronous(normal)")
	db.SetMaxOpenConns(1)
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
	insertRows(t, db, 0, 10)
	checkpointTruncate(t, db)
	d := stateOf(t, v, path)
	waitUntil(t, "the seal to settle", func() bool { return !d.seal.state().busy })
	insertRows(t, db, 10, 20) // grows the database: the checkpoint extends the file
	var hinted atomic.Bool
	r.afterSizeHint = func() {
		if hinted.CompareAndSwap(false, true) {
			r.powerCut("right after the main file's size hint")
		}
	}
	if _, err := db.Exec("PRAGMA wal_checkpoint(PASSIVE)"); err == nil {
		t.Fatal("the checkpoint succeeded after the power cut")
	}
	if !hinted.Load() {
		t.Fatal("the checkpoint gave no size hint")
	}
	db.Close()
	if err := r.putBackSnapshot(); err != nil {
		t.Fatal(err)
	}
	if _, err := restoreKeepingMtimes(r.tracker(), crashfs.KeepUnsynced, rand.New(rand.NewPCG(1, 2)), path); err != nil {
		t.Fatal(err)
	}
	r.boot()
	db = openDB(t, v, path, "synchronous(normal)")
	if n, err := func() (n int64, err error) { err = db.QueryRow("SELECT count(*) FROM t").Scan(&n); return }(); err != nil || n != 30 {
		t.Fatalf("after the power loss: %d rows, %v; want 30", n, err)
	}
	integrityOK(t, db)
	checkReplay(t, v, path, db)
}

// TestWALHeaderDurableBeforeFrames: whenever SQLite starts or restarts
// the WAL (a new header, after a complete checkpoint or a truncation), the
// header is fsynced before the first frame of the new generation is
// written, in every synchronous mode: by SQLite with NORMAL and FULL, by
// bop with OFF (walFile.WriteAt). Otherwise a power loss can keep new
// frames over the old generation's and lose the header
// (TestHeavyPowerLossVFS/off found it: the reopen refused the WAL as
// changed outside bop).
func TestWALHeaderDurableBeforeFrames(t *testing.T) {
	for _, sync := range []string{"off", "normal", "full"} {
		t.Run(sync, func(t *testing.T) {
			v := newVFS(t, offline(Config{AutoCheckpoint: -1}))
			path := filepath.Join(t.TempDir(), "app.db")
			r := &powerRig{base: v.base, bopDir: path + "-bop"}
			v.base = crashVFS{r}
			r.boot()
			db := openDB(t, v, path, "synchronous("+sync+")")
			db.SetMaxOpenConns(1)
			mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
			for round := range 3 {
				insertRows(t, db, round*10, 10)
				if round == 1 {
					checkpointTruncate(t, db) // the next write starts the WAL over from 0 bytes
				} else if err := checkpointStmt("PASSIVE")(db); err != nil {
					t.Fatal(err) // the next write restarts the WAL
				}
			}
			insertRows(t, db, 100, 5)
			if n := r.walHeaders.Load(); n < 3 {
				t.Fatalf("%d WAL headers written, want a start and restarts", n)
			}
			if n := r.unsyncedHeaderFrames.Load(); n != 0 {
				t.Fatalf("%d WAL frames written while the WAL header before them was not fsynced", n)
			}
			integrityOK(t, db)
			checkReplay(t, v, path, db)
		})
	}
}

// TestPowerLossWALDeletionAtClose: SQLite deletes the WAL at the last
// close without fsyncing the folder, so a power loss soon after a clean
// close can bring the WAL back (its deletion is lost, its bytes are as
// they were). The seal said the WAL was absent; the reopen refused the
// database as changed outside bop. bop fsyncs the database's folder
// before its seal vouches for the WAL's absence (sealClosed). Found by
// TestPowerLossVFS once the rig followed the database's folder.
func TestPowerLossWALDeletionAtClose(t *testing.T) {
	v := newVFS(t, offline(Config{}))
	path := filepath.Join(t.TempDir(), "app.db")
	r := newPowerRig(t, v, path)
	db := openDB(t, v, path)
	db.SetMaxOpenConns(1)
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// A clean database at boot; its WAL is created by the next open.
	r.boot()
	db = openDB(t, v, path)
	db.SetMaxOpenConns(1)
	for i := 0; i < 20; i++ {
		mustExec(t, db, "INSERT INTO t(v) VALUES(randomblob(3000))")
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + "-wal"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the close left the WAL: %v", err)
	}
	r.powerCut("after a clean close")
	// The power loss keeps every entry operation but the WAL's deletion.
	r.tracker().KeepDirOps(func(kind, name string) bool { return !(kind == "remove" && name == "app.db-wal") })
	if _, err := restoreKeepingMtimes(r.tracker(), crashfs.LoseUnsynced, nil, path); err != nil {
		t.Fatal(err)
	}
	if err := r.putBackSnapshot(); err != nil {
		t.Fatal(err)
	}
	walBack := false
	if _, err := os.Stat(path + "-wal"); err == nil {
		walBack = true
	}
	r.boot()
	db = openDB(t, v, path)
	db.SetMaxOpenConns(1)
	if n := queryInt(t, db, "SELECT count(*) FROM t"); n != 20 {
		t.Fatalf("%d rows after the reopen, want 20 (the WAL came back: %v)", n, walBack)
	}
	integrityOK(t, db)
	mustExec(t, db, "INSERT INTO t(v) VALUES(randomblob(10))")
	checkReplay(t, v, path, db)
}
