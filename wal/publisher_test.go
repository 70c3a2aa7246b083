package wal_test

import (
	"bytes"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bopstore/bop/wal"
)

// A publisher running concurrently with SQLite's writers and checkpoints,
// with a spool limit small enough that commits hit backpressure: it syncs
// for publishing, leases what is confirmed, applies it to a copy of the
// database (what the remote would hold), releases and truncates. At the
// end the copy equals the database: nothing was lost, reordered or
// duplicated across truncations, and backpressure released every writer.
func TestConcurrentPublisher(t *testing.T) {
	e := newEnv(t, t.TempDir(), nil, "", nil)
	e.sopts.MaxBytes = 256 << 10
	e.sopts.AppendTimeout = 30 * time.Second
	e.mustOpenCapture()
	defer e.closeCapture()
	db := e.openDB(true, "journal_mode(wal)", "synchronous(normal)", "busy_timeout(20000)", "wal_autocheckpoint(50)")
	defer db.Close()
	db.SetMaxOpenConns(3)
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, g INTEGER, v BLOB)")

	remote := e.path + ".published"
	out, err := os.Create(remote)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	var published atomic.Uint64
	blockedSeen := atomic.Bool{}
	publish := func() error {
		confirmed, err := e.cap.SyncForPublish()
		if err != nil {
			return err
		}
		st := e.spool.Status()
		if st.Blocked {
			blockedSeen.Store(true)
		}
		from := published.Load() + 1
		if confirmed < from {
			return nil
		}
		release, err := e.spool.Lease(from, confirmed, "test publisher")
		if err != nil {
			return err
		}
		for rec, err := range e.spool.Records(from, confirmed) {
			if err != nil {
				release()
				return err
			}
			for p, err := range rec.Pages() {
				if err != nil {
					release()
					return err
				}
				if _, err := out.WriteAt(p.Data, int64(p.Pgno-1)*int64(rec.PageSize)); err != nil {
					release()
					return err
				}
			}
			if err := out.Truncate(int64(rec.DBPages) * int64(rec.PageSize)); err != nil {
				release()
				return err
			}
		}
		// Truncation is refused while the lease is held.
		if err := e.spool.Truncate(confirmed); !errors.Is(err, wal.ErrLeased) {
			release()
			return errors.New("truncate under a lease was not refused")
		}
		release()
		published.Store(confirmed)
		return e.spool.Truncate(confirmed)
	}

	stop := make(chan struct{})
	var pubErr error
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			if err := publish(); err != nil {
				pubErr = err
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				if _, err := db.Exec("INSERT INTO t(g, v) SELECT ?, randomblob(3000) FROM generate_series(1, 1 + ? % 7)", w, i); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	pwg.Wait()
	if pubErr != nil {
		t.Fatal(pubErr)
	}
	checkpointTruncate(t, db)
	if err := publish(); err != nil {
		t.Fatal(err)
	}
	live, _ := os.ReadFile(e.path)
	got, _ := os.ReadFile(remote)
	if !bytes.Equal(live, got) {
		t.Fatalf("published copy (%d bytes) differs from the database (%d bytes) at page %d", len(got), len(live), firstDiffPage(live, got, 4096))
	}
	st := e.spool.Status()
	if st.FirstTxid != published.Load()+1 || st.LastTxid != published.Load() {
		t.Fatalf("spool not drained: %+v (published %d)", st, published.Load())
	}
	t.Logf("published through txid %d; backpressure seen: %v", published.Load(), blockedSeen.Load())
}
