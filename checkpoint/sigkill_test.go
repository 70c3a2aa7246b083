package checkpoint

import (
	"bufio"
	"context"
	"database/sql"
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
	"github.com/bopstore/bop/remote/fsstore"
)

const childEnv = "BOP_CHECKPOINT_SIGKILL_CHILD"

// TestSIGKILLChild is the child process of the SIGKILL tests: real SQLite
// commits through the capture VFS while the background publisher
// publishes every few milliseconds; it prints "C <id>" after each COMMIT
// returned, until it is killed.
func TestSIGKILLChild(t *testing.T) {
	dir := os.Getenv(childEnv)
	if dir == "" {
		t.Skip("child process of TestHeavySIGKILL")
	}
	seed, _ := strconv.ParseUint(os.Getenv("BOP_CHECKPOINT_SEED"), 10, 64)
	rng := rand.New(rand.NewPCG(seed, 1))
	store, err := fsstore.New(filepath.Join(dir, "store"))
	if err != nil {
		fmt.Println("E", err)
		os.Exit(1)
	}
	n := newSQLNode(t, store, filepath.Join(dir, "db"), 8, false, func(c *Config) {
		c.NoLoop, c.Interval = false, time.Duration(1+rng.IntN(20))*time.Millisecond
		c.Policy.MaxObjectPages = 16 // several objects per publish
	})
	var next int
	if err := n.db.QueryRow("SELECT coalesce(max(id),0)+1 FROM t").Scan(&next); err != nil {
		fmt.Println("E", err)
		os.Exit(1)
	}
	fmt.Println("R")
	for id := next; ; id++ {
		var err error
		switch r := rng.IntN(20); {
		case r == 0:
			_, err = n.db.Exec("INSERT INTO t(id, v) SELECT ?, randomblob(2000) UNION ALL SELECT -?*1000-value, randomblob(1500) FROM generate_series(1,60)", id, id)
		case r == 1:
			_, err = n.db.Exec("DELETE FROM t WHERE id < 0 AND id % 3 = 0")
			if err == nil {
				_, err = n.db.Exec("INSERT INTO t(id, v) VALUES (?, x'01')", id)
			}
		default:
			_, err = n.db.Exec("INSERT INTO t(id, v) VALUES (?, randomblob(?))", id, 50+rng.IntN(3000))
		}
		if err != nil {
			fmt.Println("E", err)
			os.Exit(1)
		}
		fmt.Println("C", id)
	}
}

func TestSIGKILL(t *testing.T) {
	sigkillLoop(t, 3)
}

func TestHeavySIGKILL(t *testing.T) {
	testutil.Heavy(t)
	sigkillLoop(t, 100)
}

// sigkillLoop kills a child that commits and publishes, `kills` times at
// random moments. After each kill the parent opens the same state (spool,
// capture with reconciliation, catalog, a new writer that takes over),
// publishes, and checks: every job completed or abandoned, staging and
// quota empty, no lease left, every object the catalog references
// exists, every transaction the child saw committed is in the restored
// database, and the restore equals the live database byte for byte.
func sigkillLoop(t *testing.T, kills int) {
	dir := t.TempDir()
	store, err := fsstore.New(filepath.Join(dir, "store"))
	must(t, err)
	dbDir := filepath.Join(dir, "db")
	must(t, os.MkdirAll(dbDir, 0o755))
	n := newSQLNode(t, store, dbDir, 8, false, nil)
	n.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
	n.close()

	rng := rand.New(rand.NewPCG(uint64(kills), 7))
	committed := map[int]bool{}
	states := map[string]int{} // unfinished jobs found after a kill, by state
	for k := 0; k < kills; k++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSIGKILLChild$")
		cmd.Env = append(os.Environ(), childEnv+"="+dir, fmt.Sprintf("BOP_CHECKPOINT_SEED=%d", k))
		out, err := cmd.StdoutPipe()
		must(t, err)
		cmd.Stderr = os.Stderr
		must(t, cmd.Start())
		lines := make(chan string)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		ready := false
		deadline := time.After(60 * time.Second)
		for !ready {
			select {
			case l, ok := <-lines:
				if !ok {
					cmd.Wait()
					t.Fatalf("kill %d: child exited before it was ready", k)
				}
				if strings.HasPrefix(l, "E ") {
					t.Fatalf("kill %d: child: %s", k, l)
				}
				ready = l == "R"
			case <-deadline:
				cmd.Process.Kill()
				t.Fatalf("kill %d: child not ready", k)
			}
		}
		timer := time.After(time.Duration(20+rng.IntN(400)) * time.Millisecond)
	run:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break run
				}
				if strings.HasPrefix(l, "E ") {
					cmd.Process.Kill()
					t.Fatalf("kill %d: child: %s", k, l)
				}
				if id, ok := strings.CutPrefix(l, "C "); ok {
					v, _ := strconv.Atoi(id)
					committed[v] = true
				}
			case <-timer:
				cmd.Process.Signal(syscall.SIGKILL)
				timer = nil
			}
		}
		cmd.Wait()
		checkAfterKill(t, store, dbDir, k, committed, states)
	}
	t.Logf("%d kills, %d transactions committed; unfinished jobs found after kills: %v", kills, len(committed), states)
}

func checkAfterKill(t *testing.T, store *fsstore.Store, dbDir string, k int, committed map[int]bool, states map[string]int) {
	t.Helper()
	n := newSQLNode(t, store, dbDir, 8, false, nil)
	defer n.close()
	jobs, err := n.cat.UnfinishedJobs()
	must(t, err)
	for _, j := range jobs {
		states[string(j.State)]++
	}
	if names, _ := os.ReadDir(filepath.Join(dbDir, "staging")); len(names) > 0 {
		states["staging-files"]++
	}
	// Opening the WAL reconciles the spool with what SQLite kept.
	var busy, logf, ckpt int
	if err := n.db.QueryRow("PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logf, &ckpt); err != nil || busy != 0 {
		t.Fatalf("kill %d: checkpoint: %v %d", k, err, busy)
	}
	txid := publishNow(t, n.pub)
	if st := n.spool.Status(); st.LastTxid != txid {
		t.Fatalf("kill %d: published %d, spool at %d", k, txid, st.LastTxid)
	}
	checkJobsFinished(t, n.cat, n.pub, filepath.Join(dbDir, "staging"))
	checkReferencedObjects(t, store, n.cat)
	live, err := os.ReadFile(n.path)
	must(t, err)
	path := filepath.Join(t.TempDir(), fmt.Sprintf("kill-%d.db", k))
	res, err := Restore(context.Background(), RestoreOptions{Store: store, Catalog: n.cat, Path: path})
	must(t, err)
	got, err := os.ReadFile(path)
	must(t, err)
	sameBytes(t, fmt.Sprintf("kill %d: restore at %d vs live", k, res.Txid), got, live, 4096)
	// Every committed transaction is there.
	rdb, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	must(t, err)
	defer rdb.Close()
	have := map[int]bool{}
	rows, err := rdb.Query("SELECT id FROM t WHERE id > 0")
	must(t, err)
	for rows.Next() {
		var id int
		must(t, rows.Scan(&id))
		have[id] = true
	}
	must(t, rows.Err())
	rows.Close()
	for id := range committed {
		if !have[id] {
			t.Fatalf("kill %d: transaction %d was committed but the restored database lacks it", k, id)
		}
	}
	if k%10 == 0 {
		integrityCheck(t, path)
	}
}
