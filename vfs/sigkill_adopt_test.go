package vfs

import (
	"bufio"
	"database/sql"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bopstore/bop/internal/testutil"
)

// A process crash during adoption: a child process adopts a database
// stock SQLite built (rollback mode, several MiB: the image takes many
// spool writes), commits one transaction and waits; the parent kills it
// (SIGKILL, by its PID) at points spread over the time the adoption
// takes. The operating system keeps every write the child made. The
// reopen through bop (in this process) must work and hold the original
// database, plus the child's transaction if its COMMIT returned ("ready"
// was read); stock SQLite reads the same from a copy of the files; the
// spool's first record is the original file and the spool replays to
// the live database.

const adoptHelperEnv = "BOP_VFS_ADOPT_HELPER"

// TestAdoptHelperProcess is not a test: it is the child. It prints
// "opening", opens BOP_VFS_PATH through bop (offline), inserts a row,
// prints "ready", and waits for stdin to close.
func TestAdoptHelperProcess(t *testing.T) {
	if os.Getenv(adoptHelperEnv) == "" {
		t.Skip("helper process only")
	}
	path := os.Getenv("BOP_VFS_PATH")
	v, err := Register("bopadopthelper", offline(Config{}))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	fmt.Println("opening")
	db, err := sql.Open("sqlite3", dsn(path, v.Name()))
	if err == nil {
		_, err = db.Exec("INSERT INTO t(id, k, v) VALUES(?, ?, ?)", sigkillRow.id, sigkillRow.row.k, sigkillRow.row.v)
	}
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	db.Close()
	os.Exit(0)
}

var sigkillRow = plChange{id: 1_000_001, row: plRow{"child", bytesOf(3000, 5)}}

func TestSIGKILLAdopt(t *testing.T) {
	kills, rows := 3, 1400 // ~3 MiB
	if !testutil.RaceEnabled {
		kills = 6
	}
	sigkillAdopt(t, rows, kills)
}

// TestHeavySIGKILLAdopt adopts a bigger file (~16 MiB), killed at more
// points.
func TestHeavySIGKILLAdopt(t *testing.T) {
	testutil.Heavy(t)
	sigkillAdopt(t, 8000, 16)
}

func sigkillAdopt(t *testing.T, rows, kills int) {
	src := makeAdoptSource(t, adoptVariant{"rollback", rollbackSource(4096, rows, 2000)})
	m := &plModel{rows: cloneRows(src.rows)}
	for id, row := range m.rows {
		m.sum += plRowHash(id, row.k, row.v)
	}
	states := []uint64{m.hash()}
	m.apply([]plChange{sigkillRow})
	states = append(states, m.hash())

	// One run without a kill: how long from "opening" to "ready".
	var full time.Duration
	outcome := map[string]int{}
	for i := -1; i < kills; i++ {
		path := filepath.Join(t.TempDir(), "app.db")
		copySource(t, src, path)
		h := testutil.StartChild(t, "TestAdoptHelperProcess", 0, adoptHelperEnv+"=1", "BOP_VFS_PATH="+path)
		out := bufio.NewReader(h.Stdout)
		if line, err := out.ReadString('\n'); err != nil || strings.TrimSpace(line) != "opening" {
			t.Fatalf("child: %q, %v", line, err)
		}
		start := time.Now()
		ready := make(chan string, 1)
		go func() {
			line, _ := out.ReadString('\n')
			ready <- strings.TrimSpace(line)
		}()
		var delay time.Duration
		line := ""
		if i < 0 {
			if line = <-ready; line != "ready" {
				t.Fatalf("child: %q", line)
			}
			full = time.Since(start)
			h.Stdin.Close()
			if err := h.Cmd.Wait(); err != nil {
				t.Fatal(err)
			}
		} else {
			// Spread over the run, a little past its end.
			delay = full * time.Duration(i) / time.Duration(kills-1) * 11 / 10
			time.Sleep(delay - time.Since(start))
			if err := h.Cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			h.Cmd.Wait()
			select {
			case line = <-ready:
			case <-time.After(10 * time.Second):
				t.Fatal("the child's stdout did not end")
			}
		}
		if strings.HasPrefix(line, "error") {
			t.Fatalf("child: %s", line)
		}
		promised := 0
		if line == "ready" {
			promised = 1
		}
		_, err := os.Stat(filepath.Join(path+"-bop", metaFileName))
		adopted := err == nil // the adoption had finished (meta.json durable)
		what := fmt.Sprintf("killed after %v of %v (adopted: %v, committed: %v)", delay, full, adopted, promised == 1)
		if i < 0 {
			what = "clean close"
		}
		check := func(who string, h uint64) {
			t.Helper()
			k := -1
			for j := len(states) - 1; j >= 0 && k < 0; j-- {
				if states[j] == h {
					k = j
				}
			}
			if k < promised {
				t.Fatalf("%s: %s reads state %d (want at least %d: the original database, plus the child's transaction if it committed)", what, who, k, promised)
			}
		}
		check("stock SQLite (on a copy)", plainCopyHash(t, path, what))
		v := newVFS(t, offline(Config{}))
		db := openDB(t, v, path)
		db.SetMaxOpenConns(1)
		hb, _, err := tableHash(db)
		if err != nil {
			t.Fatalf("%s: reopening failed: %v", what, err)
		}
		check("the reopen through bop", hb)
		integrityOK(t, db)
		if st := statusOf(t, db); st.CaptureError != "" || st.MainSyncError != "" {
			t.Fatalf("%s: status after the reopen: capture error %q, main sync error %q", what, st.CaptureError, st.MainSyncError)
		}
		checkImageRecord(t, v, path, src.ref, what)
		mustExec(t, db, "INSERT INTO t(id, k, v) VALUES(2000000, 'after', randomblob(100))")
		checkReplay(t, v, path, db)
		db.Close()
		v.Close()
		outcome[fmt.Sprintf("adopted %v, committed %v", adopted, promised == 1)]++
		t.Logf("%s: ok", what)
	}
	t.Logf("outcomes: %v", outcome)
}
