package wal_test

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bopstore/bop/internal/testutil"
	"github.com/bopstore/bop/wal"
)

const childEnv = "BOP_WAL_SIGKILL_CHILD"

// TestSIGKILLChild is the child process of the SIGKILL tests: it writes
// transactions until killed, printing "C <id>" after each COMMIT returned.
func TestSIGKILLChild(t *testing.T) {
	dir := os.Getenv(childEnv)
	if dir == "" {
		t.Skip("child process of TestHeavySIGKILL")
	}
	seed, _ := strconv.ParseUint(os.Getenv("BOP_WAL_SEED"), 10, 64)
	rng := rand.New(rand.NewPCG(seed, 1))
	e := newEnv(t, dir, nil, "", nil)
	e.sopts.BufferBytes, _ = strconv.Atoi(os.Getenv("BOP_WAL_BUFFER"))
	e.copts.Coalesce, _ = strconv.Atoi(os.Getenv("BOP_WAL_COALESCE"))
	if err := e.openCapture(); err != nil {
		fmt.Println("E", err)
		os.Exit(1)
	}
	db := e.openDB(true, "journal_mode(wal)", "synchronous("+os.Getenv("BOP_WAL_SYNC")+")", "cache_size(20)", "wal_autocheckpoint(100)")
	db.SetMaxOpenConns(1)
	var next int
	if err := db.QueryRow("SELECT coalesce(max(id),0)+1 FROM t").Scan(&next); err != nil {
		fmt.Println("E", err)
		os.Exit(1)
	}
	fmt.Println("R")
	for id := next; ; id++ {
		tx, err := db.Begin()
		if err == nil {
			_, err = tx.Exec("UPDATE c SET n = n + 1")
		}
		if err == nil {
			if rng.IntN(8) == 0 { // a transaction that spills
				_, err = tx.Exec("INSERT INTO t(id, v) SELECT ?, randomblob(2000) UNION ALL SELECT -?*1000-value, randomblob(1500) FROM generate_series(1,60)", id, id)
			} else {
				_, err = tx.Exec("INSERT INTO t(id, v) VALUES (?, randomblob(?))", id, 50+rng.IntN(2000))
			}
		}
		if err == nil {
			err = tx.Commit()
		}
		if err != nil {
			fmt.Println("E", err)
			os.Exit(1)
		}
		fmt.Println("C", id)
		if rng.IntN(16) == 0 {
			if _, err := e.cap.SyncForPublish(); err != nil {
				fmt.Println("E", err)
				os.Exit(1)
			}
		}
	}
}

func TestSIGKILL(t *testing.T) {
	sigkillLoop(t, 4)
}

func TestHeavySIGKILL(t *testing.T) {
	testutil.Heavy(t)
	sigkillLoop(t, 60)
}

// sigkillLoop kills a child writing transactions `kills` times, at random
// moments. After each kill the database is reopened with capture
// (reconciliation) and checked: the spool replays to SQLite's committed
// state, every transaction the child reported committed is present, and
// every transaction is spooled exactly once (one WAL record per committed
// transaction, each WAL commit frame once).
func sigkillLoop(t *testing.T, kills int) {
	dir := t.TempDir()
	e := newEnv(t, dir, nil, "", nil)
	e.mustOpenCapture()
	db := e.openDB(true, "journal_mode(wal)")
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
	mustExec(t, db, "CREATE TABLE c(n INTEGER)")
	mustExec(t, db, "INSERT INTO c VALUES (0)")
	db.Close()
	setupRecords := countWALRecords(t, e.spool)
	e.closeCapture()

	rng := rand.New(rand.NewPCG(uint64(kills), 2))
	reported := map[int]bool{}
	coalesced := false // a child ran with CaptureOptions.Coalesce
	for k := 0; k < kills; k++ {
		syncMode := []string{"normal", "full"}[k%2]
		// Every other pair of children buffers its spool appends in
		// memory (SpoolOptions.BufferBytes, as the VFS does), and one of
		// them also coalesces small transactions (CaptureOptions.
		// Coalesce): the kill loses what is in memory.
		buffer := []int{0, 0, 2000, 64 << 10}[k%4]
		coalesce := []int{0, 0, 1 << 20, 0}[k%4] // with synchronous=normal
		coalesced = coalesced || coalesce > 0
		cmd := exec.Command(os.Args[0], "-test.run=^TestSIGKILLChild$")
		cmd.Env = append(os.Environ(), childEnv+"="+dir, "BOP_WAL_SYNC="+syncMode, fmt.Sprintf("BOP_WAL_SEED=%d", k),
			fmt.Sprintf("BOP_WAL_BUFFER=%d", buffer), fmt.Sprintf("BOP_WAL_COALESCE=%d", coalesce))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// Kill after a random number of commits, or mid-transaction
		// after a random delay.
		want := rng.IntN(40)
		delay := time.Duration(rng.IntN(30)) * time.Millisecond
		ready, n := false, 0
		var timer <-chan time.Time
	read:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break read
				}
				switch {
				case l == "R":
					ready = true
					timer = time.After(delay + 200*time.Millisecond)
				case strings.HasPrefix(l, "C "):
					id, _ := strconv.Atoi(l[2:])
					reported[id] = true
					n++
					if n >= want && rng.IntN(2) == 0 {
						break read
					}
				case strings.HasPrefix(l, "E "):
					cmd.Process.Kill()
					cmd.Wait()
					t.Fatalf("child %d: %s", k, l)
				}
			case <-timer:
				break read
			case <-time.After(60 * time.Second):
				t.Fatalf("child %d hangs (ready %v)", k, ready)
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		for l := range lines { // whatever it printed before dying
			if id, err := strconv.Atoi(strings.TrimPrefix(l, "C ")); err == nil && strings.HasPrefix(l, "C ") {
				reported[id] = true
			}
		}
		cmd.Wait()
		if !ready {
			t.Fatalf("child %d never became ready", k)
		}
		// Verify now, or let the next child reconcile first (every other
		// kill), then verify.
		if k%2 == 1 || k == kills-1 {
			verifyAfterKill(t, dir, reported, setupRecords, coalesced)
		}
	}
	t.Logf("%d kills, %d transactions reported committed", kills, len(reported))
}

// With coalesced is true, a spool record may hold several transactions:
// there are at most as many records as transactions (a transaction spooled
// twice would show as two records with one WAL identity, or in the replay).
func verifyAfterKill(t *testing.T, dir string, reported map[int]bool, setupRecords int, coalesced bool) {
	t.Helper()
	e := newEnv(t, dir, nil, "", nil)
	e.mustOpenCapture()
	defer e.closeCapture()
	db := e.openDB(true, "journal_mode(wal)")
	defer db.Close()
	var n, rows int
	if err := db.QueryRow("SELECT (SELECT n FROM c), (SELECT count(*) FROM t WHERE id > 0)").Scan(&n, &rows); err != nil {
		t.Fatal(err)
	}
	for id := range reported {
		var x int
		if err := db.QueryRow("SELECT count(*) FROM t WHERE id = ?", id).Scan(&x); err != nil || x != 1 {
			t.Fatalf("transaction %d was reported committed but is not in the database (%v)", id, err)
		}
	}
	if rows != n {
		t.Fatalf("counter %d, rows %d", n, rows)
	}
	e.checkReplay(db, "after SIGKILL")
	checkUniqueIdentities(t, e.spool)
	if got := countWALRecords(t, e.spool) - setupRecords; got != n && !(coalesced && got < n) {
		t.Fatalf("%d transactions committed, %d spooled", n, got)
	}
}

func countWALRecords(t testing.TB, sp *wal.Spool) int {
	t.Helper()
	st := sp.Status()
	n := 0
	if st.LastTxid < st.FirstTxid {
		return 0
	}
	for rec, err := range sp.Records(st.FirstTxid, st.LastTxid) {
		if err != nil {
			t.Fatal(err)
		}
		if rec.Kind == wal.KindWAL {
			n++
		}
	}
	return n
}

var _ = filepath.Join
