package vfs

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fault"
)

// The store probe runs while the catalog is created (takeRole), not in
// the takeover: a store that does not enforce conditional writes must
// still be refused at open, before anything is written to it (no head,
// no log record), and an honest store accepted with one probe (3 PUTs),
// not two (the takeover's own probe is skipped once this one passed).
func TestUnsafeStoreRefusedAtOpen(t *testing.T) {
	var fs *fault.Store
	var probes *probeCounter
	cfg := Config{}
	cfg.wrapStore = func(s remote.Store) remote.Store {
		if fs == nil {
			fs = fault.New(s, fault.Config{IgnoreConditions: true})
		} else {
			fs = fault.New(s, fault.Config{})
		}
		probes = &probeCounter{Store: fs}
		return probes
	}
	v := newVFS(t, cfg)
	path := filepath.Join(t.TempDir(), "unsafe.db")
	db := openDB(t, v, path, "journal_mode(wal)")
	err := db.Ping()
	if err == nil || !errContains(err, manifest.ErrUnsafeStore.Error()) {
		t.Fatalf("open on a store ignoring conditions: %v, want %v", err, manifest.ErrUnsafeStore)
	}
	db.Close()
	layout, lerr := remote.NewLayout("default", "unsafe.db")
	if lerr != nil {
		t.Fatal(lerr)
	}
	ctx := context.Background()
	if _, _, err := manifest.GetHead(ctx, fs, layout); !errors.Is(err, remote.ErrNotFound) {
		t.Fatalf("head after a refused open: %v", err)
	}
	if _, err := fs.Head(ctx, layout.Log(1)); !errors.Is(err, remote.ErrNotFound) {
		t.Fatalf("log record 1 after a refused open: %v", err)
	}

	// The next open gets an honest store (the wrapper above).
	db = openDB(t, v, path, "journal_mode(wal)")
	mustExec(t, db, "CREATE TABLE t(x)")
	mustExec(t, db, "INSERT INTO t VALUES (1)")
	h, _, err := manifest.GetHead(ctx, fs, layout)
	if err != nil || h.Epoch == 0 || h.Writer == "" {
		t.Fatalf("head after the honest open: %+v, %v", h, err)
	}
	if n := probes.puts.Load(); n != 3 {
		t.Fatalf("the honest open made %d probe PUTs, want 3 (one probe)", n)
	}
}

// A store that declares it enforces conditional puts by construction
// (remote.ConditionEnforcer: the embedded fsstore) is not probed: no probe
// PUT, and the writer role is still taken. (TestUnsafeStoreRefusedAtOpen
// shows that a store without the declaration is probed and refused.)
func TestConditionEnforcerNotProbed(t *testing.T) {
	var probes *probeCounter
	cfg := Config{}
	cfg.wrapStore = func(s remote.Store) remote.Store {
		if !remote.EnforcesConditions(s) {
			t.Errorf("the embedded store does not declare remote.ConditionEnforcer")
		}
		probes = &probeCounter{Store: s}
		return enforcingCounter{probes}
	}
	v := newVFS(t, cfg)
	path := filepath.Join(t.TempDir(), "enforced.db")
	db := openDB(t, v, path, "journal_mode(wal)")
	mustExec(t, db, "CREATE TABLE t(x)")
	mustExec(t, db, "INSERT INTO t VALUES (1)")
	layout, err := remote.NewLayout("default", "enforced.db")
	if err != nil {
		t.Fatal(err)
	}
	h, _, err := manifest.GetHead(context.Background(), probes, layout)
	if err != nil || h.Epoch == 0 || h.Writer == "" {
		t.Fatalf("head after the open: %+v, %v", h, err)
	}
	if n := probes.puts.Load(); n != 0 {
		t.Fatalf("the open made %d probe PUTs to a store that enforces conditions, want 0", n)
	}
}

// enforcingCounter is a probeCounter that forwards the store's
// remote.ConditionEnforcer declaration.
type enforcingCounter struct{ *probeCounter }

func (e enforcingCounter) EnforcesConditions() bool { return remote.EnforcesConditions(e.Store) }

// probeCounter counts the PUTs of probe keys.
type probeCounter struct {
	remote.Store
	puts atomic.Int64
}

func (p *probeCounter) Put(ctx context.Context, key string, r io.Reader, opts remote.PutOptions) (remote.PutResult, error) {
	if strings.Contains(key, "/probe/") {
		p.puts.Add(1)
	}
	return p.Store.Put(ctx, key, r, opts)
}

// A first open that stops right after meta.json became durable (a crash
// there: the files are left as they are) reopens: the seal was made valid
// before meta.json (openLocal), not only at the end of the open. Without
// that the reopen fails with ErrBadState (an empty seal).
func TestFirstOpenStoppedAfterMeta(t *testing.T) {
	v := newVFS(t, Config{})
	path := filepath.Join(t.TempDir(), "stopped.db")
	stop := errors.New("stopped after meta.json")
	openTestHook = func(stage string) error {
		if stage == "meta-written" {
			return stop
		}
		return nil
	}
	defer func() { openTestHook = nil }()
	db := openDB(t, v, path, "journal_mode(wal)")
	if err := db.Ping(); !errors.Is(err, stop) && !errContains(err, stop.Error()) {
		t.Fatalf("first open: %v, want the hook's error", err)
	}
	db.Close()
	openTestHook = nil

	db = openDB(t, v, path, "journal_mode(wal)")
	mustExec(t, db, "CREATE TABLE t(x)")
	mustExec(t, db, "INSERT INTO t VALUES (1)")
	if n := queryInt(t, db, "SELECT count(*) FROM t"); n != 1 {
		t.Fatalf("rows after the reopen: %d", n)
	}
	integrityOK(t, db)
}
