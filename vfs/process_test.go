package vfs

import (
	"bufio"
	"context"
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
	"github.com/bopstore/bop/wal"
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
//	readercrash: with publishing deferred, write rows, checkpoint them
//	       into the main file, then update them in place while a reader
//	       holds a snapshot: the passive checkpoint that follows confirms
//	       the updates but cannot copy them; print "ready", exit without
//	       closing.
//	pubcrash: open, write BOP_VFS_ROWS rows, publish them (PRAGMA
//	       bop_checkpoint, which confirms them durable), with BOP_VFS_CKPT
//	       set also copy the WAL into the main file (a passive
//	       checkpoint), print "ready" and exit without closing.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("helper process only")
	}
	path := os.Getenv("BOP_VFS_PATH")
	if mode == "repl" || mode == "commit" {
		publishingChild(mode, path) // exits
	}
	cfg := Config{}
	if mode == "readercrash" {
		cfg = Config{CheckpointInterval: time.Hour, PublishBytes: -1} // nothing published: the spool keeps its pages
	}
	v, err := Register("bophelper", cfg)
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
	case "readercrash":
		fail := func(what string, err error) {
			fmt.Println("error", what, err)
			os.Exit(2)
		}
		for _, q := range []string{
			"INSERT INTO t(v) SELECT printf('%0100d', value) FROM generate_series(1, 200)",
			"PRAGMA wal_checkpoint(TRUNCATE)",
			"INSERT INTO t(v) VALUES ('after the truncate')",
		} {
			if _, err := db.Exec(q); err != nil {
				fail(q, err)
			}
		}
		ctx := context.Background()
		reader, err := db.Conn(ctx)
		if err != nil {
			fail("reader", err)
		}
		var n int
		if _, err := reader.ExecContext(ctx, "BEGIN"); err != nil {
			fail("BEGIN", err)
		}
		if err := reader.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
			fail("read", err)
		}
		for i := 0; i < 5; i++ {
			q := fmt.Sprintf("UPDATE t SET v = printf('%%0100d', id + %d) WHERE id %% 7 = %d", 1000*(i+1), i)
			if _, err := db.Exec(q); err != nil {
				fail(q, err)
			}
		}
		if _, err := db.Exec("PRAGMA wal_checkpoint(PASSIVE)"); err != nil {
			fail("checkpoint", err)
		}
		fmt.Println("ready")
		os.Exit(0)
	case "pubinplace":
		// A full database file, then a new WAL generation whose
		// transactions change pages in place and are published (the spool
		// keeps only their headers), then a crash.
		for _, q := range []string{
			"INSERT INTO t(v) SELECT printf('%0100d', value) FROM generate_series(1, 200)",
			"PRAGMA wal_checkpoint(TRUNCATE)",
			"UPDATE t SET v = printf('%0100d', id + 1000) WHERE id % 5 = 0",
			"UPDATE t SET v = printf('%0100d', id + 2000) WHERE id % 5 = 1",
			"PRAGMA bop_checkpoint",
		} {
			if _, err := db.Exec(q); err != nil {
				fmt.Println("error", q, err)
				os.Exit(2)
			}
		}
		fmt.Println("ready")
		os.Exit(0)
	case "pubcrash":
		n, _ := strconv.Atoi(os.Getenv("BOP_VFS_ROWS"))
		stmts := make([]string, 0, n+2)
		for i := 0; i < n; i++ {
			stmts = append(stmts, fmt.Sprintf("INSERT INTO t(v) VALUES ('row %d')", i))
		}
		stmts = append(stmts, "PRAGMA bop_checkpoint")
		if os.Getenv("BOP_VFS_CKPT") != "" {
			stmts = append(stmts, "PRAGMA wal_checkpoint(PASSIVE)")
		}
		for _, q := range stmts {
			if _, err := db.Exec(q); err != nil {
				fmt.Println("error", q, err)
				os.Exit(2)
			}
		}
		fmt.Println("ready")
		os.Exit(0)
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

// A read-only open between a crash and the next read-write open keeps
// the crashed writer's id in the lock file (Owner.LastWriter): the
// read-write open still takes over its own lease at once, instead of
// failing with ErrOwnedElsewhere until the lease expires.
func TestReadOnlyOpenAfterCrashKeepsOwnLease(t *testing.T) {
	path := crashAfterPublish(t, 20, false)
	v := newVFS(t, Config{})
	ro, err := sqlite3.OpenFlags(dsn(path, v.Name()), sqlite3.OPEN_READONLY)
	if err != nil {
		t.Fatalf("read-only open after the crash: %v", err)
	}
	st, _, err := ro.Prepare("SELECT count(*) FROM t")
	if err != nil {
		t.Fatal(err)
	}
	if !st.Step() || st.ColumnInt(0) != 20 {
		t.Fatalf("read-only: %d rows (%v), want 20", st.ColumnInt(0), st.Err())
	}
	st.Close()
	if err := ro.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(path+"-bop", "lock"))
	if err != nil {
		t.Fatal(err)
	}
	if o, err := decodeOwner(raw); err != nil || !o.ReadOnly || o.LastWriter == "" {
		t.Fatalf("lock file after the read-only open: %+v (%v), want read-only with the crashed writer's id", o, err)
	}
	db := openDB(t, v, path)
	if _, err := db.Exec("INSERT INTO t(v) VALUES ('after')"); err != nil {
		t.Fatalf("read-write open after a read-only one: %v", err)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM t"); n != 21 {
		t.Fatalf("%d rows, want 21", n)
	}
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

// crashAfterPublish runs the pubcrash helper on a new database and waits
// for it to exit; it leaves rows published and confirmed, with the WAL
// and -shm as a crash leaves them.
func crashAfterPublish(t *testing.T, rows int, checkpoint bool) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "lost.db")
	env := []string{fmt.Sprintf("BOP_VFS_ROWS=%d", rows)}
	if checkpoint {
		env = append(env, "BOP_VFS_CKPT=1")
	}
	c := startChild(t, "pubcrash", path, env...)
	io.ReadAll(c.out)
	c.cmd.Wait()
	return path
}

// openAfterCrash opens path through a new bop VFS once the crashed
// owner's lock is gone, and runs q (which must return one integer).
func openAfterCrash(t *testing.T, path, q string) (*VFS, *sql.DB, int64, error) {
	t.Helper()
	v := newVFS(t, Config{})
	db := openDB(t, v, path)
	var n int64
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := db.QueryRow(q).Scan(&n)
		if !errors.Is(err, ErrOwnedElsewhere) || time.Now().After(deadline) {
			return v, db, n, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A WAL deleted (or left without a header: truncated, or zeros where
// its header was) while it held published, so confirmed, transactions
// that no checkpoint had copied into the main file: the reopen is refused,
// naming the WAL and the transactions, instead of continuing silently
// from the older main file (which would fork the published history).
func TestWALLostAfterPublish(t *testing.T) {
	for _, c := range []struct {
		name string
		lose func(wal string) error
	}{
		{"deleted", os.Remove},
		{"truncated to 0", func(p string) error { return os.Truncate(p, 0) }},
		{"truncated to 16", func(p string) error { return os.Truncate(p, 16) }},
		{"header zeroed", func(p string) error {
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt(make([]byte, 32), 0)
			return err
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := crashAfterPublish(t, 40, false)
			if err := c.lose(path + "-wal"); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(path + "-shm"); err != nil {
				t.Fatal(err)
			}
			_, _, _, err := openAfterCrash(t, path, "SELECT count(*) FROM sqlite_schema")
			if !errors.Is(err, ErrChangedOutside) || !errors.Is(err, wal.ErrLost) {
				t.Fatalf("open with the WAL %s: %v, want ErrChangedOutside and wal.ErrLost", c.name, err)
			}
			if !strings.Contains(err.Error(), "lost.db-wal is gone (missing, empty or without a header), but txid") {
				t.Fatalf("the error does not name the WAL and the transactions: %v", err)
			}
		})
	}
}

// A WAL deleted while it held confirmed transactions that changed pages
// in place (the main file's size is the same) is refused at the reopen by
// comparing pages: with nothing published ("readercrash": a reader kept
// the checkpoint from copying them), the spool still has them; published
// ("pubinplace"), the spool kept only their headers, and the comparison is
// with the pages the catalog says they published.
func TestWALLostInPlace(t *testing.T) {
	for _, mode := range []string{"readercrash", "pubinplace"} {
		t.Run(mode, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "lost.db")
			c := startChild(t, mode, path)
			io.ReadAll(c.out)
			c.cmd.Wait()
			for _, name := range []string{path + "-wal", path + "-shm"} {
				if err := os.Remove(name); err != nil {
					t.Fatal(err)
				}
			}
			_, _, _, err := openAfterCrash(t, path, "SELECT count(*) FROM t")
			if !errors.Is(err, ErrChangedOutside) || !errors.Is(err, wal.ErrLost) || !strings.Contains(err.Error(), "does not hold page") {
				t.Fatalf("open without the WAL: %v, want ErrChangedOutside and wal.ErrLost from the page comparison", err)
			}
		})
	}
}

// The same crash after a checkpoint copied the whole WAL into the main
// file (as SQLite does before it deletes the WAL at a close): without the
// WAL the main file holds everything, and the reopen goes on.
func TestWALGoneAfterCheckpoint(t *testing.T) {
	const rows = 40
	path := crashAfterPublish(t, rows, true)
	for _, name := range []string{path + "-wal", path + "-shm"} {
		if err := os.Remove(name); err != nil {
			t.Fatal(err)
		}
	}
	v, db, n, err := openAfterCrash(t, path, "SELECT count(*) FROM t")
	if err != nil {
		t.Fatal(err)
	}
	if n != rows {
		t.Fatalf("%d rows, want %d", n, rows)
	}
	integrityOK(t, db)
	mustExec(t, db, "INSERT INTO t(v) VALUES ('after')")
	checkReplay(t, v, path, db)
}
