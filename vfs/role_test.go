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
