package vfs

import (
	"bufio"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bopstore/bop/internal/testutil"
	"github.com/ncruces/go-sqlite3"
)

// Tests with a second, real process. The child is this test binary run
// with -test.run=^TestHelperProcess$ and BOP_VFS_HELPER set.

const helperEnv = "BOP_VFS_HELPER"

// TestHelperProcess is not a test: it is the child process.
//
//	hold:  open the database (BOP_VFS_PATH) through bop, write a row, print
//	       "ready <pid>", keep it open until stdin closes, close, exit.
//	crash: open, write BOP_VFS_ROWS rows in autocommit transactions, print
//	       "ready", then exit without closing anything (a crash as far as
//	       bop is concerned; the OS keeps what was written).
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("helper process only")
	}
	path := os.Getenv("BOP_VFS_PATH")
	if mode == "repl" || mode == "commit" {
		publishingChild(mode, path) // exits
	}
	v, err := Register("bophelper", Config{})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	var pragmas []string
	if mode == "crash" {
		// The seal must still be busy when the crash comes.
		settleDelay = time.Hour
		// Checkpoints often, so that the crash finds the seal busy.
		pragmas = append(pragmas, "wal_autocheckpoint(20)")
	}
	db, err := sql.Open("sqlite3", dsn(path, v.Name(), pragmas...))
	if err == nil {
		_, err = db.Exec("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")
	}
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	switch mode {
	case "hold":
		if _, err := db.Exec("INSERT INTO t(v) VALUES ('child')"); err != nil {
			fmt.Println("error", err)
			os.Exit(2)
		}
		fmt.Printf("ready %d\n", os.Getpid())
		io.Copy(io.Discard, os.Stdin)
		if err := db.Close(); err != nil {
			fmt.Println("error", err)
			os.Exit(2)
		}
		os.Exit(0)
	case "crash":
		n, _ := strconv.Atoi(os.Getenv("BOP_VFS_ROWS"))
		for i := 0; i < n; i++ {
			if _, err := db.Exec("INSERT INTO t(v) VALUES (?)", strings.Repeat("c", 100+i%50)); err != nil {
				fmt.Println("error", err)
				os.Exit(2)
			}
		}
		// A checkpoint just before the crash leaves the seal busy (it is
		// settled a second after bop's writes to the main file stop);
		// the last rows stay in the WAL only.
		if _, err := db.Exec("PRAGMA wal_checkpoint(PASSIVE)"); err != nil {
			fmt.Println("error", err)
			os.Exit(2)
		}
		for i := 0; i < 5; i++ {
			if _, err := db.Exec("INSERT INTO t(v) VALUES ('after the checkpoint')"); err != nil {
				fmt.Println("error", err)
				os.Exit(2)
			}
		}
		fmt.Println("ready")
		os.Exit(0) // no Close: the WAL, -shm and spool stay as a crash leaves them
	}
	os.Exit(3)
}

// child is a running helper process.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
	line  string // its "ready" line
}

// startHelper runs TestHelperProcess as a child in mode on the database
// at path.
func startHelper(t *testing.T, mode, path string, env ...string) *testutil.Child {
	t.Helper()
	env = append([]string{helperEnv + "=" + mode, "BOP_VFS_PATH=" + path}, env...)
	return testutil.StartChild(t, "TestHelperProcess", 30*time.Second, env...)
}

func startChild(t *testing.T, mode, path string, env ...string) *child {
	t.Helper()
	h := startHelper(t, mode, path, env...)
	c := &child{cmd: h.Cmd, stdin: h.Stdin, out: bufio.NewReader(h.Stdout)}
	for {
		line, err := c.out.ReadString('\n')
		if err != nil {
			t.Fatalf("child %s: no ready line: %v (got %q)", mode, err, line)
		}
		if strings.HasPrefix(line, "error") {
			t.Fatalf("child %s: %s", mode, line)
		}
		if strings.HasPrefix(line, "ready") {
			c.line = strings.TrimSpace(line)
			return c
		}
	}
}

// finish closes the child's stdin and waits for a clean exit.
func (c *child) finish(t *testing.T) {
	t.Helper()
	c.stdin.Close()
	rest, _ := io.ReadAll(c.out)
	if err := c.cmd.Wait(); err != nil {
		t.Fatalf("child: %v (%s)", err, rest)
	}
}

func TestSecondWriterProcessOwnedElsewhere(t *testing.T) {
	path := filepath.Join(t.TempDir(), "owned.db")
	c := startChild(t, "hold", path)
	pid := strings.TrimPrefix(c.line, "ready ")

	v := newVFS(t, Config{})
	// database/sql: the error surfaces at the first use of the pool.
	db := openDB(t, v, path)
	_, err := db.Exec("SELECT 1")
	if !errors.Is(err, ErrOwnedElsewhere) {
		t.Fatalf("open while another process owns it: %v, want ErrOwnedElsewhere", err)
	}
	if !strings.Contains(err.Error(), "pid "+pid) {
		t.Fatalf("error does not name the owner (pid %s): %v", pid, err)
	}
	var serr *sqlite3.Error
	if !errors.As(err, &serr) || serr.Code() != sqlite3.CANTOPEN {
		t.Fatalf("want a CANTOPEN *sqlite3.Error, got %T %v", err, err)
	}
	// The plain API reports the same.
	if _, err := sqlite3.Open(dsn(path, v.Name())); !errors.Is(err, ErrOwnedElsewhere) {
		t.Fatalf("sqlite3.Open: %v", err)
	}
	// Read-only opens are refused too: the owner's WAL is not ours to read.
	if _, err := sqlite3.OpenFlags(dsn(path, v.Name()), sqlite3.OPEN_READONLY); !errors.Is(err, ErrOwnedElsewhere) {
		t.Fatalf("read-only open: %v", err)
	}

	// Once the owner closes, the database opens, with the owner's row.
	c.finish(t)
	db2 := openDB(t, v, path)
	if n := queryInt(t, db2, "SELECT count(*) FROM t WHERE v = 'child'"); n != 1 {
		t.Fatalf("%d child rows", n)
	}
	checkReplay(t, v, path, db2)
}

// A crash (the owner exits without closing) is not an outside change: the
// next open recovers, capturing what the WAL holds past the spool.
func TestCrashedOwnerRecovers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "crash.db")
	const rows = 300
	c := startChild(t, "crash", path, fmt.Sprintf("BOP_VFS_ROWS=%d", rows))
	// The child exits right after "ready"; its flock goes with it.
	io.ReadAll(c.out)
	c.cmd.Wait()
	// It left the seal open (no clean close) and busy (it checkpointed
	// less than a second before exiting): the main file's identity is
	// unknown, the WAL decides.
	raw, err := os.ReadFile(filepath.Join(path+"-bop", sealFileName))
	if err != nil {
		t.Fatal(err)
	}
	st, ok, err := decodeSealFile(raw)
	if err != nil || !ok || !st.open || !st.busy {
		t.Fatalf("seal after the crash: %+v %v %v, want open and busy", st, ok, err)
	}
	if _, err := os.Stat(path + "-wal"); err != nil {
		t.Fatalf("the crash left no WAL: %v", err)
	}
	v := newVFS(t, Config{})
	db := openDB(t, v, path)
	var n int64
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := db.QueryRow("SELECT count(*) FROM t").Scan(&n)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrOwnedElsewhere) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n != rows+5 {
		t.Fatalf("%d rows after the crash, want %d", n, rows+5)
	}
	integrityOK(t, db)
	checkReplay(t, v, path, db)
}
