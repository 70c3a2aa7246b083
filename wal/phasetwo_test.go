package wal_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/bopstore/bop/internal/vfstest"
	"github.com/bopstore/bop/wal"
)

// recorder collects VFS events.
type recorder struct {
	mu  sync.Mutex
	evs []vfstest.Event
}

func (r *recorder) add(e vfstest.Event) {
	r.mu.Lock()
	r.evs = append(r.evs, e)
	r.mu.Unlock()
}

func (r *recorder) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.evs)
}

func (r *recorder) since(i int) []vfstest.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]vfstest.Event(nil), r.evs[i:]...)
}

func describe(evs []vfstest.Event) string {
	var b strings.Builder
	for _, e := range evs {
		switch e.Kind {
		case vfstest.WALWrite:
			if e.FrameHeader {
				fmt.Fprintf(&b, " hdr(pg%d,c%d)", e.Pgno, e.Commit)
			} else if e.Off == 0 {
				b.WriteString(" walhdr")
			}
		case vfstest.MainUnlock, vfstest.MainWrite, vfstest.OpenMain, vfstest.CloseMain:
		default:
			b.WriteString(" " + string(e.Kind))
			if e.Err != nil {
				b.WriteString("(err)")
			}
		}
	}
	return b.String()
}

// checkCommit asserts what the brief asks to verify before relying on
// COMMIT_PHASETWO: after a successful write transaction SQLite calls it
// exactly once, on the committing connection, after the commit frame (and,
// when it syncs at commit, after that sync), before the statement returns.
func checkCommit(t *testing.T, evs []vfstest.Event, syncs bool) {
	t.Helper()
	lastCommitFrame, phaseTwo, syncAfter := -1, -1, false
	n := 0
	for i, e := range evs {
		switch {
		case e.Kind == vfstest.WALWrite && e.FrameHeader && e.Commit != 0 && phaseTwo < 0:
			lastCommitFrame = i
		case e.Kind == vfstest.WALSync && lastCommitFrame >= 0 && phaseTwo < 0 && e.Err == nil:
			syncAfter = true
		case e.Kind == vfstest.PhaseTwo:
			n++
			if phaseTwo < 0 {
				phaseTwo = i
			}
		}
	}
	if lastCommitFrame < 0 {
		t.Fatalf("no commit frame written:%s", describe(evs))
	}
	if n != 1 || phaseTwo < lastCommitFrame {
		t.Fatalf("want one COMMIT_PHASETWO after the commit frame, got %d (commit frame at %d, phase two at %d):%s", n, lastCommitFrame, phaseTwo, describe(evs))
	}
	if evs[phaseTwo].Conn != evs[lastCommitFrame].Conn {
		t.Fatalf("COMMIT_PHASETWO on connection %d, commit frame by %d", evs[phaseTwo].Conn, evs[lastCommitFrame].Conn)
	}
	if syncs && !syncAfter {
		t.Fatalf("no WAL sync between commit frame and COMMIT_PHASETWO:%s", describe(evs))
	}
}

func TestCommitPhaseTwoSignal(t *testing.T) {
	for _, syncMode := range []string{"off", "normal", "full", "extra"} {
		for _, psow := range []bool{true, false} {
			for _, locking := range []string{"normal", "exclusive"} {
				t.Run(fmt.Sprintf("sync=%s,psow=%v,locking=%s", syncMode, psow, locking), func(t *testing.T) {
					testPhaseTwo(t, syncMode, psow, locking)
				})
			}
		}
	}
}

func testPhaseTwo(t *testing.T, syncMode string, psow bool, locking string) {
	rec := &recorder{}
	v, name := newVFS(t, nil, rec.add)
	e := newEnv(t, t.TempDir(), v, name, nil)
	e.mustOpenCapture()
	defer e.closeCapture()
	db := e.openDB(psow, "journal_mode(wal)", "synchronous("+syncMode+")", "locking_mode("+locking+")", "cache_size(10)")
	defer db.Close()
	db.SetMaxOpenConns(1)
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
	syncs := syncMode == "full" || syncMode == "extra"
	var sample string
	for i := 0; i < 30; i++ {
		m := rec.mark()
		switch i % 3 {
		case 0: // small autocommit transaction
			mustExec(t, db, "INSERT INTO t(v) VALUES (randomblob(100))")
		case 1: // a transaction that spills (cache_size 10)
			mustExec(t, db, "INSERT INTO t(v) SELECT randomblob(3000) FROM generate_series(1,40)")
		case 2: // explicit transaction with an update
			tx, _ := db.Begin()
			mustExec(t, tx, "UPDATE t SET v = randomblob(50) WHERE id % 4 = ?", i%4)
			mustExec(t, tx, "INSERT INTO t(v) VALUES (randomblob(10))")
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
		}
		evs := rec.since(m)
		checkCommit(t, evs, syncs)
		if i == 0 {
			sample = describe(evs)
		}
	}
	// A rolled back transaction (spilled frames, then ROLLBACK) and a
	// read-only one: no COMMIT_PHASETWO after frames that did not commit.
	m := rec.mark()
	tx, _ := db.Begin()
	mustExec(t, tx, "INSERT INTO t(v) SELECT randomblob(3000) FROM generate_series(1,40)")
	tx.Rollback()
	queryString(t, db, "SELECT count(*) FROM t")
	for _, ev := range rec.since(m) {
		if ev.Kind == vfstest.PhaseTwo {
			t.Fatalf("COMMIT_PHASETWO after a rollback / read:%s", describe(rec.since(m)))
		}
	}
	if locking == "normal" {
		e.checkReplay(db, "after phase-two checks")
	}
	st := e.cap.Stats()
	if syncs {
		if st.FinalSync == 0 {
			t.Fatalf("no transaction finalized by its commit sync: %+v", st)
		}
	} else if st.FinalPhaseTwo == 0 {
		t.Fatalf("no transaction finalized by COMMIT_PHASETWO: %+v", st)
	}
	t.Logf("one small transaction:%s", sample)
}

// Many connections committing concurrently: every COMMIT_PHASETWO comes
// from the connection whose commit frame precedes it, and capture spools
// each transaction once.
func TestCommitPhaseTwoConcurrent(t *testing.T) {
	rec := &recorder{}
	v, name := newVFS(t, nil, rec.add)
	e := newEnv(t, t.TempDir(), v, name, nil)
	e.mustOpenCapture()
	defer e.closeCapture()
	db := e.openDB(true, "journal_mode(wal)", "synchronous(normal)", "busy_timeout(10000)")
	defer db.Close()
	db.SetMaxOpenConns(4)
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, g INTEGER, v BLOB)")
	before := e.cap.Stats().Commits
	const workers, each = 4, 25
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, err := db.Exec("INSERT INTO t(g, v) VALUES (?, randomblob(200))", w); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	e.checkReplay(db, "concurrent writers")
	if got := e.cap.Stats().Commits - before; got != workers*each {
		t.Fatalf("spooled %d transactions, committed %d", got, workers*each)
	}
	// Per connection: a phase two follows that connection's commit frame
	// (or, in rollback-journal mode while WAL mode is switched on, its
	// writes to the main file).
	lastCommitBy := map[uint64]bool{}
	for _, ev := range rec.since(0) {
		switch {
		case ev.Kind == vfstest.WALWrite && ev.FrameHeader && ev.Commit != 0, ev.Kind == vfstest.MainWrite:
			lastCommitBy[ev.Conn] = true
		case ev.Kind == vfstest.PhaseTwo:
			if !lastCommitBy[ev.Conn] {
				t.Fatalf("COMMIT_PHASETWO on connection %d without a commit frame of its own before it", ev.Conn)
			}
			lastCommitBy[ev.Conn] = false
		}
	}
}

// A WAL sync that fails right after a commit frame: SQLite reports the
// commit failed and rolls back; capture withdraws the transaction, goes on
// capturing the next ones, and the replay still matches.
func TestWALSyncFailureWithdraws(t *testing.T) {
	for _, psow := range []bool{true, false} {
		t.Run(fmt.Sprintf("psow=%v", psow), func(t *testing.T) {
			rec := &recorder{}
			v, name := newVFS(t, nil, rec.add)
			e := newEnv(t, t.TempDir(), v, name, nil)
			e.mustOpenCapture()
			defer e.closeCapture()
			db := e.openDB(psow, "journal_mode(wal)", "synchronous(full)", "cache_size(10)")
			defer db.Close()
			db.SetMaxOpenConns(1)
			mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
			mustExec(t, db, "INSERT INTO t(v) VALUES (1)")
			injected := errors.New("injected fsync failure")
			for round := 0; round < 3; round++ {
				// Small and spilled transactions whose commit sync fails.
				for _, q := range []string{
					"INSERT INTO t(v) VALUES (randomblob(100))",
					"INSERT INTO t(v) SELECT randomblob(3000) FROM generate_series(1,40)",
				} {
					before := e.cap.Stats()
					m := rec.mark()
					e.db.FailWALSyncs(1, injected)
					if _, err := db.Exec(q); err == nil {
						t.Fatalf("commit succeeded although its WAL sync failed:%s", describe(rec.since(m)))
					}
					after := e.cap.Stats()
					if after.Withdrawn != before.Withdrawn+1 || after.Commits != before.Commits {
						t.Fatalf("failed commit: withdrawn %d->%d, commits %d->%d:%s", before.Withdrawn, after.Withdrawn,
							before.Commits, after.Commits, describe(rec.since(m)))
					}
					for _, ev := range rec.since(m) {
						if ev.Kind == vfstest.PhaseTwo {
							t.Fatalf("COMMIT_PHASETWO after a failed commit")
						}
					}
					// The next transactions are captured normally.
					mustExec(t, db, "INSERT INTO t(v) VALUES (randomblob(200))")
					mustExec(t, db, "INSERT INTO t(v) SELECT randomblob(2000) FROM generate_series(1,30)")
					if got := e.cap.Stats().Commits; got != after.Commits+2 {
						t.Fatalf("after the failure %d transactions were captured, want 2", got-after.Commits)
					}
				}
			}
			// 1 row, then per round and query 1+30 rows after the failed commit.
			if n := queryString(t, db, "SELECT count(*) FROM t"); n != "187" {
				t.Fatalf("rows: %s", n)
			}
			e.checkReplay(db, "after failed commit syncs")
			if err := e.cap.Err(); err != nil {
				t.Fatal(err)
			}
			_ = wal.ErrLost
		})
	}
}
