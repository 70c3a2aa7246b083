package vfs

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bopstore/bop/checkpoint"
	"github.com/bopstore/bop/internal/testutil"
	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fsstore"
)

// Tests with writers in other processes (this test binary run as
// TestHelperProcess): two writers of one store database, fencing and
// quarantine; SIGKILL of a committing, publishing writer.

// publishingChild is the child process of these tests. Its VFS publishes
// to BOP_VFS_REMOTE every BOP_VFS_INTERVAL_MS; BOP_VFS_FORCE=1 forces the
// takeover.
//
//	repl:   open BOP_VFS_PATH, print "ready" (or "openerr <error>" and
//	        exit), then run commands from stdin, one per line, answering
//	        "ok [value]" or "err [fenced] <error>":
//	        exec <sql> | query <sql> (first column of the first row) | close
//	commit: open, then commit rows with ids from BOP_VFS_START on, in
//	        autocommit statements and small transactions, with an explicit
//	        publish now and then, printing "c <id>" for every row whose
//	        commit returned; until killed.
func publishingChild(mode, path string) {
	interval, _ := strconv.Atoi(os.Getenv("BOP_VFS_INTERVAL_MS"))
	cfg := Config{Remote: os.Getenv("BOP_VFS_REMOTE"), CheckpointInterval: time.Duration(interval) * time.Millisecond,
		ForceTakeover: os.Getenv("BOP_VFS_FORCE") == "1"}
	v, err := Register("bopchild", cfg)
	if err != nil {
		fmt.Println("openerr", err)
		os.Exit(2)
	}
	db, err := sql.Open("sqlite3", dsn(path, v.Name()))
	if err == nil {
		_, err = db.Exec("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
	}
	if err != nil {
		fmt.Println("openerr", oneLine(err))
		os.Exit(0)
	}
	if mode == "commit" {
		commitLoop(db)
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	for in.Scan() {
		cmd, arg, _ := strings.Cut(in.Text(), " ")
		var res string
		switch cmd {
		case "exec":
			_, err = db.Exec(arg)
		case "query":
			var x any
			if err = db.QueryRow(arg).Scan(&x); err == nil {
				if b, ok := x.([]byte); ok {
					x = string(b)
				}
				res = fmt.Sprint(x)
			}
		case "close":
			err = db.Close()
		default:
			err = fmt.Errorf("unknown command %q", cmd)
		}
		switch {
		case err == nil:
			fmt.Println("ok", res)
		case errors.Is(err, ErrFenced):
			fmt.Println("err fenced", oneLine(err))
		default:
			fmt.Println("err", oneLine(err))
		}
	}
	os.Exit(0)
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", " ") }

func commitLoop(db *sql.DB) {
	db.SetMaxOpenConns(1)
	id, _ := strconv.Atoi(os.Getenv("BOP_VFS_START"))
	rng := mrand.New(mrand.NewPCG(uint64(os.Getpid()), uint64(time.Now().UnixNano())))
	fail := func(err error) {
		fmt.Println("error", oneLine(err))
		os.Exit(2)
	}
	for {
		switch r := rng.IntN(100); {
		case r < 5:
			if _, err := db.Exec("PRAGMA bop_checkpoint"); err != nil {
				fail(err)
			}
		case r < 15:
			tx, err := db.Begin()
			if err != nil {
				fail(err)
			}
			n := 2 + rng.IntN(20)
			for i := 0; i < n; i++ {
				if _, err := tx.Exec("INSERT INTO t(id, v) VALUES (?, randomblob(?))", id+i, 10+rng.IntN(6000)); err != nil {
					fail(err)
				}
			}
			if err := tx.Commit(); err != nil {
				fail(err)
			}
			for i := 0; i < n; i++ {
				fmt.Println("c", id+i)
			}
			id += n
		default:
			if _, err := db.Exec("INSERT INTO t(id, v) VALUES (?, randomblob(?))", id, 10+rng.IntN(3000)); err != nil {
				fail(err)
			}
			fmt.Println("c", id)
			id++
		}
	}
}

// replChild is a running repl child.
type replChild struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
	first string // "ready" or "openerr ..."
}

func spawn(t *testing.T, mode, path string, env ...string) *replChild {
	t.Helper()
	h := startHelper(t, mode, path, env...)
	c := &replChild{t: t, cmd: h.Cmd, stdin: h.Stdin, out: bufio.NewScanner(h.Stdout)}
	c.out.Buffer(make([]byte, 1<<20), 1<<20)
	return c
}

// startRepl starts a repl child and returns it once it is ready (or its
// open failed: first says how).
func startRepl(t *testing.T, path string, env ...string) *replChild {
	t.Helper()
	c := spawn(t, "repl", path, env...)
	for c.out.Scan() {
		line := c.out.Text()
		if strings.HasPrefix(line, "ready") || strings.HasPrefix(line, "openerr") {
			c.first = line
			return c
		}
	}
	t.Fatalf("child: no ready line (%v)", c.out.Err())
	return nil
}

// do runs a command and returns the answer line.
func (c *replChild) do(cmd string) string {
	c.t.Helper()
	if _, err := fmt.Fprintln(c.stdin, cmd); err != nil {
		c.t.Fatalf("child: %s: %v", cmd, err)
	}
	if !c.out.Scan() {
		c.t.Fatalf("child: %s: no answer (%v)", cmd, c.out.Err())
	}
	return c.out.Text()
}

// ok runs a command that must succeed and returns its value.
func (c *replChild) ok(cmd string) string {
	c.t.Helper()
	line := c.do(cmd)
	rest, ok := strings.CutPrefix(line, "ok")
	if !ok {
		c.t.Fatalf("child: %s: %s", cmd, line)
	}
	return strings.TrimSpace(rest)
}

func (c *replChild) status() Status {
	c.t.Helper()
	var s Status
	if err := json.Unmarshal([]byte(c.ok("query PRAGMA bop_status")), &s); err != nil {
		c.t.Fatal(err)
	}
	return s
}

// finish closes the child's stdin and waits for it to exit.
func (c *replChild) finish() {
	c.t.Helper()
	c.stdin.Close()
	for c.out.Scan() {
	}
	if err := c.cmd.Wait(); err != nil {
		c.t.Fatalf("child: %v", err)
	}
}

// Two processes start as writers of one database in one store, in
// different local folders. Without force the second is refused
// (ErrOwnedElsewhere naming the first); forced, it takes over and the
// first is fenced: its next publish fails, its commits fail with
// ErrFenced, its reads work. A transaction the first committed locally
// after the takeover never reaches the store: when the first folder is
// reopened (after the winner published more), its state is quarantined
// (the local-only row is in the quarantine folder) and rebuilt from the
// store, and the log holds no record of the first writer after the
// winner's takeover.
func TestTwoWritersFencedAndQuarantined(t *testing.T) {
	storeDir := t.TempDir()
	remoteURL := "file://" + storeDir
	env := []string{"BOP_VFS_REMOTE=" + remoteURL, "BOP_VFS_INTERVAL_MS=3600000"}
	pathA := filepath.Join(t.TempDir(), "app.db")
	pathB := filepath.Join(t.TempDir(), "app.db")

	a := startRepl(t, pathA, env...)
	if a.first != "ready" {
		t.Fatalf("writer A: %s", a.first)
	}
	a.ok("exec INSERT INTO t(id, v) VALUES (1, 'a1')")
	a.ok("query PRAGMA bop_checkpoint")
	aWriter := a.status().Writer

	refused := startRepl(t, pathB, env...)
	if !strings.HasPrefix(refused.first, "openerr") || !strings.Contains(refused.first, ErrOwnedElsewhere.Error()) ||
		!strings.Contains(refused.first, aWriter) {
		t.Fatalf("second writer without force: %q, want ErrOwnedElsewhere naming %s", refused.first, aWriter)
	}
	refused.finish()

	b := startRepl(t, pathB, append(env, "BOP_VFS_FORCE=1")...)
	if b.first != "ready" {
		t.Fatalf("writer B, forced: %s", b.first)
	}
	if got := b.ok("query SELECT group_concat(v) FROM t"); got != "a1" {
		t.Fatalf("B opened from the store and reads %q", got)
	}
	bWriter := b.status().Writer

	// A has not talked to the store since: its commit is local only.
	a.ok("exec INSERT INTO t(id, v) VALUES (2, 'a-local-only')")
	if line := a.do("query PRAGMA bop_checkpoint"); !strings.Contains(line, "fenced") {
		t.Fatalf("A's publish after B's takeover: %s", line)
	}
	if line := a.do("exec INSERT INTO t(id, v) VALUES (3, 'a-refused')"); !strings.HasPrefix(line, "err fenced") {
		t.Fatalf("A's commit after it was fenced: %s, want ErrFenced", line)
	}
	if got := a.ok("query SELECT group_concat(v) FROM t"); got != "a1,a-local-only" {
		t.Fatalf("A reads %q", got)
	}
	if s := a.status(); !s.Fenced || s.Publisher != "fenced" {
		t.Fatalf("A's status: %+v", s)
	}
	b.ok("exec INSERT INTO t(id, v) VALUES (10, 'b1')")
	b.ok("exec INSERT INTO t(id, v) VALUES (11, 'b2')")
	b.ok("query PRAGMA bop_checkpoint")
	b.ok("close")
	b.finish()
	a.ok("close")
	a.finish()

	// A's folder reopened: quarantined, rebuilt from the store.
	v := newVFS(t, Config{Remote: remoteURL})
	db := openDB(t, v, pathA)
	db.SetMaxOpenConns(1)
	if got := queryString(t, db, "SELECT group_concat(v) FROM t"); got != "a1,b1,b2" {
		t.Fatalf("A reopened reads %q, want the store's rows", got)
	}
	s := statusOf(t, db)
	if s.Quarantine == "" || s.Origin != originTakeover || s.Fenced {
		t.Fatalf("A reopened: %+v", s)
	}
	// The quarantine holds A's image, WAL and spool; the local-only row.
	for _, n := range []string{"app.db", "spool", "meta.json", "reason.json"} {
		if _, err := os.Stat(filepath.Join(s.Quarantine, n)); err != nil {
			t.Fatalf("quarantine: %v", err)
		}
	}
	qcopy := filepath.Join(t.TempDir(), "q.db")
	copyFile(t, filepath.Join(s.Quarantine, "app.db"), qcopy)
	if _, err := os.Stat(filepath.Join(s.Quarantine, "app.db-wal")); err == nil {
		copyFile(t, filepath.Join(s.Quarantine, "app.db-wal"), qcopy+"-wal")
	}
	if n := queryInt(t, openDB(t, nil, qcopy), "SELECT count(*) FROM t WHERE v = 'a-local-only'"); n != 1 {
		t.Fatalf("the quarantined database holds %d local-only rows, want 1", n)
	}
	mustExec(t, db, "INSERT INTO t(id, v) VALUES (20, 'a2')")
	b2 := newBoundaries(t)
	b2.publish(db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	store, err := fsstore.New(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	layout := remote.Layout{Tenant: DefaultTenant, DB: "app.db"}
	cat, err := manifest.OpenRemote(context.Background(), store, layout, filepath.Join(t.TempDir(), "catalog.db"), manifest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	rows, err := cat.Publishes(1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	takeover := uint64(0)
	for _, r := range rows {
		if r.Kind == manifest.KindTakeover && r.Writer == bWriter {
			takeover = r.Seq
		}
		if takeover != 0 && r.Writer == aWriter {
			t.Fatalf("log/%d (%s) by the fenced writer %s after %s's takeover at seq %d", r.Seq, r.Kind, aWriter, bWriter, takeover)
		}
	}
	if takeover == 0 {
		t.Fatalf("no takeover record by %s", bWriter)
	}
	checkLog(t, cat, "")
	b2.check(store, layout, cat)
	restored := filepath.Join(t.TempDir(), "tip.db")
	if _, err := checkpoint.Restore(context.Background(), checkpoint.RestoreOptions{Store: store, Catalog: cat, Path: restored}); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, openDB(t, nil, restored), "SELECT group_concat(v) FROM t"); got != "a1,b1,b2,a2" {
		t.Fatalf("the store's tip holds %q", got)
	}
}

// SIGKILL of a child that commits through vfs=bop while publishing every
// few milliseconds (and on request), at random moments. After each kill
// the folder is reopened here (the crashed writer's lease is taken over at
// once: the lock file names it): every row the child saw committed is in
// the database, a final publish makes the store's tip equal to the live
// file, the log publishes every transaction exactly once, and no job,
// staging file or lease is left.
func TestCrashSIGKILLThroughVFS(t *testing.T) { crashLoop(t, 3) }

func TestHeavyCrashSIGKILLThroughVFS(t *testing.T) {
	testutil.Heavy(t)
	crashLoop(t, 30)
}

func crashLoop(t *testing.T, kills int) {
	storeDir := t.TempDir()
	remoteURL := "file://" + storeDir
	path := filepath.Join(t.TempDir(), "app.db")
	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 3))
	committed := map[int]bool{}
	states := map[string]int{} // unfinished job states found after kills
	next := 1
	for k := 0; k < kills; k++ {
		c := spawn(t, "commit", path, "BOP_VFS_REMOTE="+remoteURL, "BOP_VFS_INTERVAL_MS="+strconv.Itoa(1+rng.IntN(20)),
			"BOP_VFS_START="+strconv.Itoa(next))
		target := 1 + rng.IntN(200)
		seen := 0
		read := func() bool {
			if !c.out.Scan() {
				return false
			}
			line := c.out.Text()
			id, err := strconv.Atoi(strings.TrimPrefix(line, "c "))
			if err != nil || !strings.HasPrefix(line, "c ") {
				t.Fatalf("child: %s", line)
			}
			committed[id] = true
			seen++
			return true
		}
		for seen < target && read() {
		}
		time.Sleep(time.Duration(rng.IntN(15)) * time.Millisecond)
		c.cmd.Process.Kill()
		for read() {
		}
		c.cmd.Wait()
		unfinishedJobs(t, path, states)
		next = checkAfterKill(t, remoteURL, storeDir, path, committed)
	}
	t.Logf("%d kills, %d rows committed, unfinished jobs found at kills: %v", kills, len(committed), states)
}

// unfinishedJobs counts the states of the jobs a killed writer left.
func unfinishedJobs(t *testing.T, path string, states map[string]int) {
	t.Helper()
	cp := filepath.Join(path+"-bop", "catalog.db")
	if _, err := os.Stat(cp); err != nil {
		return
	}
	cat, err := manifest.Open(cp, manifest.Options{})
	if err != nil {
		t.Fatalf("the catalog after a kill: %v", err)
	}
	defer cat.Close()
	jobs, err := cat.UnfinishedJobs()
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) == 0 {
		states["none"]++
	}
	for _, j := range jobs {
		states[string(j.State)]++
	}
}

// checkAfterKill reopens the folder, checks it and closes it cleanly; it
// returns the next free row id.
func checkAfterKill(t *testing.T, remoteURL, storeDir, path string, committed map[int]bool) int {
	t.Helper()
	v := newVFS(t, Config{Remote: remoteURL})
	db := openDB(t, v, path)
	db.SetMaxOpenConns(1)
	have := map[int]bool{}
	rows, err := db.Query("SELECT id FROM t")
	if err != nil {
		t.Fatal(err)
	}
	next := 1
	for rows.Next() {
		var id int
		rows.Scan(&id)
		have[id] = true
		next = max(next, id+1)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for id := range committed {
		if !have[id] {
			t.Fatalf("row %d was committed before the kill and is gone", id)
		}
	}
	integrityOK(t, db)
	checkReplay(t, v, path, db)
	b := newBoundaries(t)
	b.publish(db)
	if err := db.Close(); err != nil {
		t.Fatalf("close after the kill: %v", err)
	}
	store, err := fsstore.New(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	layout := remote.Layout{Tenant: DefaultTenant, DB: "app.db"}
	cat, err := manifest.Open(filepath.Join(path+"-bop", "catalog.db"), manifest.Options{Layout: layout,
		Directories: manifest.StoreDirectories{Store: store}})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	b.check(store, layout, nil) // from the store alone
	checkLog(t, cat, "")
	if jobs, err := cat.UnfinishedJobs(); err != nil || len(jobs) != 0 {
		t.Fatalf("unfinished jobs after a clean close: %v %v", jobs, err)
	}
	if ls, err := cat.Leases(checkpoint.LeaseKind); err != nil || len(ls) != 0 {
		t.Fatalf("leases after a clean close: %v %v", ls, err)
	}
	if names, _ := os.ReadDir(filepath.Join(path+"-bop", "staging")); len(names) != 0 {
		t.Fatalf("staging holds %d files after a clean close", len(names))
	}
	return next
}

// A quarantine interrupted by a crash (quarantine.pending written, only
// meta.json moved) is finished by the next open, which then opens the
// database from the store: the local state ends up whole in the
// quarantine folder.
func TestQuarantineResumedAfterCrash(t *testing.T) {
	r := fsRemote(t)
	cfg := r.config(Config{})
	path := filepath.Join(t.TempDir(), "app.db")
	db := openDB(t, newVFS(t, cfg), path)
	mustExec(t, db, "CREATE TABLE t(v)")
	mustExec(t, db, "INSERT INTO t VALUES ('published')")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	dir := path + "-bop"
	q := filepath.Join(dir, quarantineDir, "20260101T000000.000000000Z")
	if err := os.MkdirAll(q, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, quarantinePending), []byte(`{"dir":"`+q+`","catalog":false}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, metaFileName), filepath.Join(q, metaFileName)); err != nil {
		t.Fatal(err)
	}
	v := newVFS(t, cfg)
	db2 := openDB(t, v, path)
	if got := queryString(t, db2, "SELECT group_concat(v) FROM t"); got != "published" {
		t.Fatalf("reopened after the interrupted quarantine: %q", got)
	}
	for _, n := range []string{"app.db", "spool", "seal", metaFileName} {
		if _, err := os.Stat(filepath.Join(q, n)); err != nil {
			t.Fatalf("the resumed quarantine lacks %s: %v", n, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, quarantinePending)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s left behind: %v", quarantinePending, err)
	}
	if s := statusOf(t, db2); s.Origin != originTakeover {
		t.Fatalf("status %+v", s)
	}
	mustExec(t, db2, "INSERT INTO t VALUES ('after')")
	checkReplay(t, v, path, db2)
}

// A catalog that does not match the store's log (here: another store's
// catalog of a database with the same name) is quarantined with the rest
// and rebuilt from the store.
func TestDivergedCatalogRebuilt(t *testing.T) {
	r1, r2 := fsRemote(t), fsRemote(t)
	create := func(r remoteStore, row string) string {
		path := filepath.Join(t.TempDir(), "app.db")
		db := openDB(t, newVFS(t, r.config(Config{})), path)
		mustExec(t, db, "CREATE TABLE t(v)")
		mustExec(t, db, "INSERT INTO t VALUES (?)", row)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		return path
	}
	path1 := create(r1, "one")
	path2 := create(r2, "two")
	copyFile(t, filepath.Join(path2+"-bop", "catalog.db"), filepath.Join(path1+"-bop", "catalog.db"))
	v := newVFS(t, r1.config(Config{}))
	db := openDB(t, v, path1)
	if got := queryString(t, db, "SELECT group_concat(v) FROM t"); got != "one" {
		t.Fatalf("after the rebuild: %q", got)
	}
	s := statusOf(t, db)
	if s.Quarantine == "" {
		t.Fatalf("no quarantine: %+v", s)
	}
	if _, err := os.Stat(filepath.Join(s.Quarantine, "catalog.db")); err != nil {
		t.Fatalf("the diverged catalog was not quarantined: %v", err)
	}
	checkReplay(t, v, path1, db)
}
