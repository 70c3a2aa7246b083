package wal_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	_ "github.com/ncruces/go-sqlite3/driver"

	"github.com/bopstore/bop/internal/crashfs"
	"github.com/bopstore/bop/internal/vfstest"
	"github.com/bopstore/bop/wal"
)

var (
	vfsOnce sync.Once
	testVFS *vfstest.VFS
	vfsSeq  atomic.Int64
)

// sharedVFS is the capture wrapper registered once as "bopcapture".
func sharedVFS() *vfstest.VFS {
	vfsOnce.Do(func() {
		testVFS = vfstest.New(nil)
		testVFS.Register("bopcapture")
	})
	return testVFS
}

// newVFS registers a fresh wrapper (for tests that need a crash tracker
// or a trace) under a unique name.
func newVFS(t testing.TB, crash *crashfs.Tracker, trace func(vfstest.Event)) (*vfstest.VFS, string) {
	v := vfstest.New(nil)
	v.Crash = crash
	v.Trace = trace
	name := fmt.Sprintf("bopcapture%d", vfsSeq.Add(1))
	v.Register(name)
	return v, name
}

// env is one database with its spool and capture.
type env struct {
	t       testing.TB
	dir     string
	path    string
	vfs     *vfstest.VFS
	vfsName string
	fs      wal.FS
	spool   *wal.Spool
	cap     *wal.Capture
	db      *vfstest.DB
	sopts   wal.SpoolOptions
	copts   wal.CaptureOptions
}

func newEnv(t testing.TB, dir string, v *vfstest.VFS, vfsName string, fsys wal.FS) *env {
	t.Helper()
	if v == nil {
		v, vfsName = sharedVFS(), "bopcapture"
	}
	e := &env{t: t, dir: dir, path: filepath.Join(dir, "db.sqlite"), vfs: v, vfsName: vfsName, fs: fsys}
	e.sopts.FS = fsys
	return e
}

// openCapture opens the spool and capture and attaches them.
func (e *env) openCapture() error {
	sp, err := wal.OpenSpool(filepath.Join(e.dir, "spool"), e.sopts)
	if err != nil {
		return err
	}
	c, err := wal.NewCapture(sp, e.copts)
	if err != nil {
		sp.Close()
		return err
	}
	e.spool, e.cap = sp, c
	e.db = e.vfs.Attach(e.path, c)
	return nil
}

func (e *env) mustOpenCapture() {
	e.t.Helper()
	if err := e.openCapture(); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) closeCapture() {
	if e.cap != nil {
		e.cap.Close()
		e.cap = nil
	}
	if e.spool != nil {
		e.spool.Close()
		e.spool = nil
	}
	e.vfs.Detach(e.path)
}

// dsn builds a database/sql DSN for this env's database.
func (e *env) dsn(psow bool, pragmas ...string) string {
	q := url.Values{}
	q.Set("vfs", e.vfsName)
	if !psow {
		q.Set("psow", "0")
	}
	for _, p := range pragmas {
		q.Add("_pragma", p)
	}
	return "file:" + e.path + "?" + q.Encode()
}

func (e *env) openDB(psow bool, pragmas ...string) *sql.DB {
	e.t.Helper()
	db, err := sql.Open("sqlite3", e.dsn(psow, pragmas...))
	if err != nil {
		e.t.Fatal(err)
	}
	return db
}

type execer interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}

func mustExec(t testing.TB, db execer, q string, args ...any) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func queryString(t testing.TB, db *sql.DB, q string) string {
	t.Helper()
	var s string
	if err := db.QueryRow(q).Scan(&s); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return s
}

// replaySpool applies every record of sp, in order, to a new file and
// returns its bytes.
func replaySpool(t testing.TB, sp *wal.Spool, out string) []byte {
	t.Helper()
	st := sp.Status()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if st.LastTxid >= st.FirstTxid {
		for rec, err := range sp.Records(st.FirstTxid, st.LastTxid) {
			if err != nil {
				t.Fatal(err)
			}
			for pg, err := range rec.Pages() {
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.WriteAt(pg.Data, int64(pg.Pgno-1)*int64(rec.PageSize)); err != nil {
					t.Fatal(err)
				}
			}
			if err := f.Truncate(int64(rec.DBPages) * int64(rec.PageSize)); err != nil {
				t.Fatal(err)
			}
		}
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkpointTruncate runs wal_checkpoint(TRUNCATE) and fails if busy.
func checkpointTruncate(t testing.TB, db *sql.DB) {
	t.Helper()
	var busy, logf, ckpt int
	if err := db.QueryRow("PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logf, &ckpt); err != nil {
		t.Fatal(err)
	}
	if busy != 0 {
		t.Fatalf("checkpoint busy")
	}
}

// checkReplay checkpoints the live database into its file and compares it
// byte for byte with the replay of the spool.
func (e *env) checkReplay(db *sql.DB, label string) {
	e.t.Helper()
	checkpointTruncate(e.t, db)
	live, err := os.ReadFile(e.path)
	if err != nil {
		e.t.Fatal(err)
	}
	got := replaySpool(e.t, e.spool, e.path+".replay")
	if !bytes.Equal(live, got) {
		e.t.Fatalf("%s: replay of the spool (%d bytes) differs from the live database (%d bytes) at page %d; capture stats %+v",
			label, len(got), len(live), firstDiffPage(live, got, 512), e.cap.Stats())
	}
	if err := e.cap.Err(); err != nil {
		e.t.Fatalf("%s: capture stopped: %v", label, err)
	}
}

func firstDiffPage(a, b []byte, ps int) int {
	for i := 0; i < max(len(a), len(b)); i += ps {
		x := a[min(i, len(a)):min(i+ps, len(a))]
		y := b[min(i, len(b)):min(i+ps, len(b))]
		if !bytes.Equal(x, y) {
			return i/ps + 1
		}
	}
	return -1
}

// crashFS adapts crashfs.FS to wal.FS.
type crashFS struct{ crashfs.FS }

func (c crashFS) OpenFile(name string, flag int, perm fs.FileMode) (wal.File, error) {
	f, err := c.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// restoreAfterCrash closes db and capture after tr.Crash() (the power went
// out), removes the -shm (memory, gone with the machine) and brings the
// files back as mode says; it returns the crash report.
func (e *env) restoreAfterCrash(db *sql.DB, tr *crashfs.Tracker, mode crashfs.Mode, rng *rand.Rand) string {
	e.t.Helper()
	db.Close()
	e.closeCapture()
	os.Remove(e.path + "-shm")
	rep, err := tr.Restore(mode, rng)
	if err != nil {
		e.t.Fatal(err)
	}
	return rep.String()
}
