package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bopstore/bop/delta"
	"github.com/bopstore/bop/internal/testutil"
	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/backend"
	bop "github.com/bopstore/bop/vfs"
	_ "github.com/ncruces/go-sqlite3/driver"
)

// cli runs the command line and returns its exit status and output.
func cli(t testing.TB, ctx context.Context, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, &stdout, &stderr)
	t.Logf("bop %s -> %d\n%s%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	return code, stdout.String(), stderr.String()
}

var vfsSeq atomic.Int64

// liveDB is a database written through the bop VFS.
type liveDB struct {
	db   *sql.DB
	path string
}

// openLive opens dir/app.db through a new bop VFS whose store is
// storeURL (empty: the embedded default, as the quickstart uses it).
func openLive(t testing.TB, dir, storeURL string, cfg bop.Config) *liveDB {
	t.Helper()
	cfg.Remote = storeURL
	cfg.DisableIMDS = true
	name := fmt.Sprintf("bopcli%d", vfsSeq.Add(1))
	v, err := bop.Register(name, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	path := filepath.Join(dir, "app.db")
	db, err := sql.Open("sqlite3", "file:"+path+"?vfs="+name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	mustExec(t, db, "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
	return &liveDB{db: db, path: path}
}

func mustExec(t testing.TB, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// insert adds n rows in one transaction.
func (l *liveDB) insert(t testing.TB, n int) {
	t.Helper()
	tx, err := l.db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		if _, err := tx.Exec("INSERT INTO t(body) VALUES (printf('row %d %s', random(), hex(randomblob(40))))"); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// publish publishes everything committed and waits for it.
func (l *liveDB) publish(t testing.TB) {
	t.Helper()
	var s string
	if err := l.db.QueryRow("PRAGMA bop_checkpoint").Scan(&s); err != nil {
		t.Fatalf("PRAGMA bop_checkpoint: %v", err)
	}
}

// digest is the content of table t and the page count, as one string.
func digest(t testing.TB, db *sql.DB) string {
	t.Helper()
	var n, pages int64
	var all string
	if err := db.QueryRow("SELECT count(*), coalesce(group_concat(id || ':' || body, ','), '') FROM (SELECT * FROM t ORDER BY id)").Scan(&n, &all); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow("PRAGMA page_count").Scan(&pages); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d rows, %d pages, %s", n, pages, all)
}

// openPlain opens a restored file with SQLite's default VFS.
func openPlain(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	var s string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&s); err != nil || s != "ok" {
		t.Fatalf("integrity_check of %s: %q, %v", path, s, err)
	}
	return db
}

// stockIntegrity runs the sqlite3 command line tool on path, if present.
func stockIntegrity(t testing.TB, path string) {
	t.Helper()
	if _, err := os.Stat("/usr/bin/sqlite3"); err != nil {
		t.Log("no /usr/bin/sqlite3: stock integrity_check skipped")
		return
	}
	out, err := exec.Command("/usr/bin/sqlite3", path, "PRAGMA integrity_check").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("sqlite3 %s 'PRAGMA integrity_check': %q, %v", path, out, err)
	}
}

var boundaryRow = regexp.MustCompile(`(?m)^\s*(\d+)\s+(\d+)\s+\S+\s+publish\s+(\d+)`)

// publishTxids parses the txids of publish records from 'bop boundaries'.
func publishTxids(t testing.TB, out string) []uint64 {
	t.Helper()
	var txids []uint64
	for _, m := range boundaryRow.FindAllStringSubmatch(out, -1) {
		n, err := strconv.ParseUint(m[2], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		txids = append(txids, n)
	}
	return txids
}

func fileURL(dir string) string { return "file://" + filepath.ToSlash(dir) }

// TestRestoreMatchesLive is the end-to-end path a user takes: a database
// written through vfs=bop with the quickstart's defaults (embedded store
// in app.db-bop/store, tenant "default", name "app.db"), published twice;
// the CLI must find the database without -db, list both boundaries,
// restore the newest to a file equal to the live database (stock sqlite3
// agrees it is sound) and the older one to the older content.
func TestRestoreMatchesLive(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	live := openLive(t, dir, "", bop.Config{})
	storeURL := fileURL(filepath.Join(dir, "app.db-bop", "store"))

	live.insert(t, 60)
	live.publish(t)
	first := digest(t, live.db)
	live.insert(t, 40)
	mustExec(t, live.db, "UPDATE t SET body = 'changed' WHERE id % 7 = 0")
	live.publish(t)
	newest := digest(t, live.db)
	if first == newest {
		t.Fatal("the two states are equal: the test would prove nothing")
	}

	code, out, _ := cli(t, ctx, "boundaries", storeURL)
	if code != 0 {
		t.Fatalf("boundaries exited %d", code)
	}
	txids := publishTxids(t, out)
	// Our two publishes (the table's creation goes out with the first:
	// the publisher's first cycle only recovers).
	if len(txids) < 2 {
		t.Fatalf("boundaries lists publish txids %v, want at least 2", txids)
	}
	tFirst, tNewest := txids[len(txids)-2], txids[len(txids)-1]

	outNew := filepath.Join(t.TempDir(), "new.db")
	if code, out, _ := cli(t, ctx, "restore", "-o", outNew, storeURL); code != 0 {
		t.Fatalf("restore exited %d", code)
	} else if !strings.Contains(out, fmt.Sprintf("txid %d ", tNewest)) {
		t.Fatalf("restore output does not name txid %d:\n%s", tNewest, out)
	}
	stockIntegrity(t, outNew)
	if got := digest(t, openPlain(t, outNew)); got != newest {
		t.Fatalf("restored newest:\n%.200s\nlive:\n%.200s", got, newest)
	}

	// A txid between boundaries rounds down; use tNewest-1 when that is
	// still above tFirst, else tFirst itself.
	ask := tFirst
	if tNewest-1 > tFirst {
		ask = tNewest - 1
	}
	outOld := filepath.Join(t.TempDir(), "old.db")
	if code, out, _ := cli(t, ctx, "restore", "-txid", strconv.FormatUint(ask, 10), "-o", outOld, "-db", "app.db", storeURL); code != 0 {
		t.Fatalf("restore -txid exited %d", code)
	} else if ask != tFirst && !strings.Contains(out, "rounded down") {
		t.Fatalf("restore of txid %d (between boundaries) does not say it rounded down:\n%s", ask, out)
	}
	stockIntegrity(t, outOld)
	if got := digest(t, openPlain(t, outOld)); got != first {
		t.Fatalf("restored txid %d:\n%.200s\nwant:\n%.200s", ask, got, first)
	}

	// The output exists now: refused without -f, replaced with it.
	if code, _, errOut := cli(t, ctx, "restore", "-o", outOld, storeURL); code != 1 || !strings.Contains(errOut, "exists") {
		t.Fatalf("restore onto an existing file: exit %d, %q", code, errOut)
	}
	if code, _, _ := cli(t, ctx, "restore", "-f", "-o", outOld, storeURL); code != 0 {
		t.Fatalf("restore -f exited %d", code)
	}
	if got := digest(t, openPlain(t, outOld)); got != newest {
		t.Fatal("restore -f did not replace the file with the newest state")
	}

	// Status reports the newest boundary and the objects it reads.
	code, out, _ = cli(t, ctx, "status", storeURL)
	if code != 0 {
		t.Fatalf("status exited %d", code)
	}
	for _, want := range []string{"default/app.db", fmt.Sprintf("newest boundary  txid %d,", tNewest), "epoch 1", "publish", "stored"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q", want)
		}
	}
	if m := regexp.MustCompile(`objects\s+(\d+) read`).FindStringSubmatch(out); m == nil || m[1] == "0" {
		t.Errorf("status shows no objects read by the newest boundary")
	}

	// Verify passes on a sound store, for the newest and for every boundary.
	for _, args := range [][]string{{"verify", storeURL}, {"verify", "-all", storeURL}, {"verify", "-txid", strconv.FormatUint(tFirst, 10), storeURL}} {
		code, out, _ := cli(t, ctx, args...)
		if code != 0 || !strings.Contains(out, " 0 failed") {
			t.Fatalf("%v: exit %d", args, code)
		}
	}

	// -time before the first publish has nothing; now has the newest.
	if code, _, errOut := cli(t, ctx, "restore", "-time", "2000-01-01T00:00:00Z", "-o", filepath.Join(t.TempDir(), "x.db"), storeURL); code != 1 || !strings.Contains(errOut, "no boundary published at or before") {
		t.Fatalf("restore -time in the past: exit %d, %q", code, errOut)
	}
	outNow := filepath.Join(t.TempDir(), "now.db")
	if code, _, _ := cli(t, ctx, "restore", "-time", time.Now().Add(time.Minute).UTC().Format(time.RFC3339), "-o", outNow, storeURL); code != 0 {
		t.Fatalf("restore -time now exited %d", code)
	}
	if got := digest(t, openPlain(t, outNow)); got != newest {
		t.Fatal("restore -time now is not the newest state")
	}
}

// TestVerifyDetectsCorruption flips one byte inside a page frame of a
// stored object: verify must name the object and exit 1, and restore
// must refuse (no output file) rather than write the wrong page.
func TestVerifyDetectsCorruption(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	storeDir := filepath.Join(t.TempDir(), "store")
	live := openLive(t, dir, fileURL(storeDir), bop.Config{})
	live.insert(t, 50)
	live.publish(t)
	if code, _, _ := cli(t, ctx, "verify", fileURL(storeDir)); code != 0 {
		t.Fatalf("verify of a sound store exited %d", code)
	}

	objDir := filepath.Join(storeDir, "default", "app.db", "obj")
	ents, err := os.ReadDir(objDir)
	if err != nil || len(ents) == 0 {
		t.Fatalf("no objects in %s: %v", objDir, err)
	}
	// Damage every object: whichever the newest boundary reads is hit.
	for _, e := range ents {
		p := filepath.Join(objDir, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		off := delta.FrameOffset(4096, 0) + 200 // inside the first page
		if int64(len(b)) <= off {
			t.Fatalf("%s is only %d bytes", p, len(b))
		}
		b[off] ^= 0x40
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	code, out, errOut := cli(t, ctx, "verify", fileURL(storeDir))
	if code != 1 {
		t.Fatalf("verify of a damaged store exited %d, want 1", code)
	}
	if !strings.Contains(out, "FAILED default/app.db/obj/") || !strings.Contains(errOut, "verification failed") {
		t.Fatalf("verify does not name the damaged object:\n%s%s", out, errOut)
	}
	outPath := filepath.Join(t.TempDir(), "r.db")
	if code, _, _ := cli(t, ctx, "restore", "-o", outPath, fileURL(storeDir)); code != 1 {
		t.Fatalf("restore from a damaged store exited %d, want 1", code)
	}
	if _, err := os.Stat(outPath); !os.IsNotExist(err) {
		t.Fatalf("restore from a damaged store left %s (stat: %v)", outPath, err)
	}

	// A missing object is named too (here already while the catalog is
	// built: without a catalog snapshot it reads each delta's directory).
	for _, e := range ents {
		os.Remove(filepath.Join(objDir, e.Name()))
	}
	code, out, errOut = cli(t, ctx, "verify", fileURL(storeDir))
	if code != 1 || !strings.Contains(out+errOut, "default/app.db/obj/") || !strings.Contains(out+errOut, "not found") {
		t.Fatalf("verify with the objects deleted: exit %d\n%s%s", code, out, errOut)
	}
}

// TestBackendOptions: S3 credentials come from the environment, the
// metadata service is kept out by the flag or by AWS_EC2_METADATA_DISABLED,
// and half a key pair is an error.
func TestBackendOptions(t *testing.T) {
	for _, c := range []struct {
		flag             bool
		env, key, secret string
		imds, wantErr    bool
	}{
		{flag: false, env: "", imds: false},
		{flag: true, env: "", imds: true},
		{flag: false, env: "true", imds: true},
		{flag: false, env: "TRUE", imds: true},
		{flag: false, env: "false", imds: false},
		{key: "AK", secret: "SK"},
		{key: "AK", wantErr: true},
		{secret: "SK", wantErr: true},
	} {
		t.Setenv("AWS_EC2_METADATA_DISABLED", c.env)
		t.Setenv("AWS_ACCESS_KEY_ID", c.key)
		t.Setenv("AWS_SECRET_ACCESS_KEY", c.secret)
		t.Setenv("AWS_SESSION_TOKEN", "")
		sf := storeFlags{noIMDS: c.flag}
		opts, err := sf.backendOptions()
		if (err != nil) != c.wantErr {
			t.Errorf("%+v: err %v", c, err)
			continue
		}
		if err == nil && (opts.DisableIMDS != c.imds || opts.AccessKey != c.key || opts.SecretKey != c.secret) {
			t.Errorf("%+v: got %+v", c, opts)
		}
	}
}

// TestBadInput: every mistake exits non-zero with a message that says
// what is wrong; usage mistakes exit 2, failures 1.
func TestBadInput(t *testing.T) {
	ctx := context.Background()
	empty := t.TempDir()
	missing := filepath.Join(t.TempDir(), "nope")
	notDir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notDir, []byte("x"), 0o644)

	// A store with one database, for the name errors.
	dir := t.TempDir()
	storeDir := filepath.Join(t.TempDir(), "store")
	live := openLive(t, dir, fileURL(storeDir), bop.Config{})
	live.publish(t)

	cases := []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "Usage"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"help", "frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"restore"}, 2, "missing STORE_URL"},
		{[]string{"status"}, 2, "missing STORE_URL"},
		{[]string{"boundaries"}, 2, "missing STORE_URL"},
		{[]string{"verify"}, 2, "missing STORE_URL"},
		{[]string{"restore", "-txid", "abc", fileURL(storeDir)}, 2, `invalid value "abc" for flag -txid`},
		{[]string{"restore", "-txid", "-5", fileURL(storeDir)}, 2, "invalid value"},
		{[]string{"restore", "-txid", "3", "-time", "2026-01-01T00:00:00Z", fileURL(storeDir)}, 2, "not both"},
		{[]string{"restore", "-time", "yesterday", fileURL(storeDir)}, 2, "RFC 3339"},
		{[]string{"restore", "-bogus", fileURL(storeDir)}, 2, "flag provided but not defined: -bogus"},
		{[]string{"status", fileURL(storeDir), "extra"}, 2, "want one STORE_URL"},
		{[]string{"status", fileURL(storeDir), "-db", "app.db"}, 2, "flags go before the URL"},
		{[]string{"status", "ftp://host/x"}, 2, `unsupported scheme "ftp"`},
		{[]string{"status", "relative/dir"}, 2, "no scheme"},
		{[]string{"status", "s3://bucket:9000/x"}, 2, "has a port"},
		{[]string{"status", "-tenant", "Bad", fileURL(storeDir)}, 2, "-tenant"},
		{[]string{"status", "-db", "../x", fileURL(storeDir)}, 2, "-db"},
		{[]string{"status", fileURL(empty)}, 1, `no database of tenant "default"`},
		{[]string{"boundaries", fileURL(empty)}, 1, "no database"},
		{[]string{"verify", fileURL(empty)}, 1, "no database"},
		{[]string{"restore", "-o", filepath.Join(empty, "x.db"), fileURL(empty)}, 1, "no database"},
		{[]string{"databases", fileURL(empty)}, 1, "no database"},
		{[]string{"status", fileURL(missing)}, 1, "no such file or directory"},
		{[]string{"status", fileURL(notDir)}, 1, "not a directory"},
		{[]string{"status", "-db", "other.db", fileURL(storeDir)}, 1, "no database default/other.db"},
		{[]string{"status", "-tenant", "acme", fileURL(storeDir)}, 1, `no database of tenant "acme"`},
		{[]string{"restore", "-o", filepath.Join(missing, "x.db"), fileURL(storeDir)}, 1, "output folder"},
		{[]string{"version", "x"}, 2, "no arguments"},
		{[]string{"restore", "-txid", "0", fileURL(storeDir)}, 2, "txid 0 is the empty database"},
		{[]string{"verify", "-txid", "0", fileURL(storeDir)}, 2, "txid 0 is the empty database"},
		{[]string{"restore", "-txid", "99999", "-o", filepath.Join(empty, "x.db"), fileURL(storeDir)}, 1, "txid 99999 is past the newest boundary"},
		{[]string{"verify", "-txid", "99999", fileURL(storeDir)}, 1, "txid 99999 is past the newest boundary"},
	}
	for _, c := range cases {
		code, out, errOut := cli(t, ctx, c.args...)
		if code != c.code || !strings.Contains(out+errOut, c.want) {
			t.Errorf("bop %q: exit %d, want %d with %q; stderr:\n%s", c.args, code, c.code, c.want, errOut)
		}
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("a command on a missing file:// store created it (stat: %v)", err)
	}
}

// TestSeveralDatabases: without -db a store with two databases is a usage
// error naming both; 'databases' lists them.
func TestSeveralDatabases(t *testing.T) {
	ctx := context.Background()
	storeDir := filepath.Join(t.TempDir(), "store")
	for _, sub := range []string{"a", "b"} {
		d := filepath.Join(t.TempDir(), sub)
		os.MkdirAll(d, 0o755)
		l := openLive(t, d, fileURL(storeDir), bop.Config{Name: "db-" + sub})
		l.insert(t, 3)
		l.publish(t)
	}
	code, _, errOut := cli(t, ctx, "status", fileURL(storeDir))
	if code != 2 || !strings.Contains(errOut, "db-a, db-b") || !strings.Contains(errOut, "-db") {
		t.Fatalf("status without -db on two databases: exit %d, %q", code, errOut)
	}
	code, out, _ := cli(t, ctx, "databases", fileURL(storeDir))
	if code != 0 || out != "default/db-a\ndefault/db-b\n" {
		t.Fatalf("databases: exit %d, %q", code, out)
	}
	if code, out, _ := cli(t, ctx, "status", "-db", "db-b", fileURL(storeDir)); code != 0 || !strings.Contains(out, "default/db-b") {
		t.Fatalf("status -db db-b: exit %d", code)
	}
}

// TestCancelled: a cancelled context (what SIGINT does) stops the command
// with exit 1 and leaves no output file.
func TestCancelled(t *testing.T) {
	dir := t.TempDir()
	storeDir := filepath.Join(t.TempDir(), "store")
	live := openLive(t, dir, fileURL(storeDir), bop.Config{})
	live.insert(t, 20)
	live.publish(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	outPath := filepath.Join(t.TempDir(), "r.db")
	code, _, errOut := cli(t, ctx, "restore", "-o", outPath, fileURL(storeDir))
	if code != 1 || !strings.Contains(errOut, "interrupted") {
		t.Fatalf("restore with a cancelled context: exit %d, %q", code, errOut)
	}
	if _, err := os.Stat(outPath); !os.IsNotExist(err) {
		t.Fatalf("a cancelled restore left %s", outPath)
	}
	ents, _ := os.ReadDir(filepath.Dir(outPath))
	if len(ents) != 0 {
		t.Fatalf("a cancelled restore left files: %v", ents)
	}
}

func TestHelpAndVersion(t *testing.T) {
	ctx := context.Background()
	code, out, _ := cli(t, ctx, "help")
	if code != 0 {
		t.Fatalf("help exited %d", code)
	}
	for _, c := range commands {
		if !strings.Contains(out, "\t"+c.name) {
			t.Errorf("help lacks %s", c.name)
		}
	}
	for _, c := range commands {
		code, out, _ := cli(t, ctx, "help", c.name)
		if code != 0 || !strings.Contains(out, "Usage: bop "+c.name) {
			t.Errorf("help %s: exit %d", c.name, code)
		}
	}
	if code, out, _ := cli(t, ctx, "restore", "-h"); code != 0 || !strings.Contains(out, "-txid") {
		t.Errorf("restore -h: exit %d", code)
	}
	if code, out, _ := cli(t, ctx, "version"); code != 0 || !strings.HasPrefix(out, "bop ") {
		t.Errorf("version: exit %d, %q", code, out)
	}
}

// TestS3 runs restore, status, boundaries and verify against versitygw,
// with credentials from the environment as a user passes them and the
// metadata service disabled by the flag.
func TestS3(t *testing.T) {
	srv := testutil.S3Server(t)
	ctx := context.Background()
	prefix := fmt.Sprintf("cmd-bop-%d", time.Now().UnixNano())
	storeURL := fmt.Sprintf("s3://%s/%s?endpoint=%s&region=%s&path_style=true", srv.Bucket, prefix, srv.Endpoint, srv.Region)
	t.Cleanup(func() {
		s, err := backend.Open(context.Background(), storeURL, backend.Options{AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, DisableIMDS: true})
		if err != nil {
			return
		}
		var keys []string
		s.List(context.Background(), "", func(info remote.ObjectInfo) error { keys = append(keys, info.Key); return nil })
		for _, k := range keys {
			s.Delete(context.Background(), k)
		}
	})
	live := openLive(t, t.TempDir(), storeURL, bop.Config{S3AccessKey: srv.AccessKey, S3SecretKey: srv.SecretKey})
	live.insert(t, 40)
	live.publish(t)
	want := digest(t, live.db)

	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	t.Setenv("AWS_SESSION_TOKEN", "")
	out := filepath.Join(t.TempDir(), "r.db")
	if code, _, _ := cli(t, ctx, "restore", "-no-imds", "-o", out, storeURL); code != 0 {
		t.Fatalf("restore from S3 exited %d", code)
	}
	stockIntegrity(t, out)
	if got := digest(t, openPlain(t, out)); got != want {
		t.Fatalf("restored from S3:\n%.200s\nwant:\n%.200s", got, want)
	}
	for _, cmd := range []string{"status", "boundaries", "verify", "databases"} {
		if code, _, _ := cli(t, ctx, cmd, "-no-imds", storeURL); code != 0 {
			t.Errorf("%s on S3 exited %d", cmd, code)
		}
	}
	// Half a key pair is refused, not silently replaced by the default chain.
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	if code, _, errOut := cli(t, ctx, "status", "-no-imds", storeURL); code != 1 || !strings.Contains(errOut, "set together") {
		t.Errorf("status with half a key pair: exit %d, %q", code, errOut)
	}
}

// objectFiles lists the object files of the database in a file:// store.
func objectFiles(t testing.TB, storeDir string) map[string]bool {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(storeDir, "default", "app.db", "obj"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	m := map[string]bool{}
	for _, de := range des {
		m[de.Name()] = true
	}
	return m
}

// TestDamagedStore: with the object of one publish gone, every command
// still runs on the log before it: status, boundaries and verify report
// the damage and exit 1, restore refuses the newest boundary (and any
// past the damage) naming the newest one it can serve, and restores that
// one to the content the live database had then.
func TestDamagedStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	storeDir := filepath.Join(t.TempDir(), "store")
	url := fileURL(storeDir)
	live := openLive(t, dir, url, bop.Config{})
	var digests []string
	var damaged string
	for i := range 4 {
		before := objectFiles(t, storeDir)
		live.insert(t, 50)
		live.publish(t)
		digests = append(digests, digest(t, live.db))
		if i == 2 {
			for name := range objectFiles(t, storeDir) {
				if !before[name] {
					damaged = name
				}
			}
		}
	}
	if damaged == "" {
		t.Fatal("the third publish added no object")
	}
	live.db.Close()
	code, out, _ := cli(t, ctx, "boundaries", url)
	txids := publishTxids(t, out)
	if code != 0 || len(txids) != 4 {
		t.Fatalf("boundaries of the intact store: exit %d, publishes %v", code, txids)
	}
	if err := os.Remove(filepath.Join(storeDir, "default", "app.db", "obj", damaged)); err != nil {
		t.Fatal(err)
	}

	before := fmt.Sprintf("the newest boundary before it is txid %d", txids[1])
	if code, out, errOut := cli(t, ctx, "status", url); code != 1 || !strings.Contains(out, "DAMAGED") || !strings.Contains(errOut, before) {
		t.Errorf("status: exit %d, want 1 with DAMAGED and %q", code, before)
	}
	code, out, errOut := cli(t, ctx, "boundaries", url)
	if got := publishTxids(t, out); code != 1 || !slices.Equal(got, txids[:2]) || !strings.Contains(errOut, damaged) {
		t.Errorf("boundaries: exit %d, publishes %v; want 1, %v and the missing object named", code, got, txids[:2])
	}
	if code, out, _ := cli(t, ctx, "verify", url); code != 1 || !strings.Contains(out, "FAILED log from seq") || !strings.Contains(out, damaged) {
		t.Errorf("verify: exit %d, want 1 with the damaged log named", code)
	}
	out1 := filepath.Join(t.TempDir(), "newest.db")
	if code, _, errOut := cli(t, ctx, "restore", "-o", out1, url); code != 1 || !strings.Contains(errOut, before) {
		t.Errorf("restore of the newest: exit %d, want 1 with %q", code, before)
	}
	if code, _, errOut := cli(t, ctx, "restore", "-txid", strconv.FormatUint(txids[2], 10), "-o", out1, url); code != 1 || !strings.Contains(errOut, "damaged") {
		t.Errorf("restore -txid %d (past the damage): exit %d, want 1", txids[2], code)
	}
	if code, _, errOut := cli(t, ctx, "restore", "-time", time.Now().UTC().Format(time.RFC3339Nano), "-o", out1, url); code != 1 || !strings.Contains(errOut, "-txid") {
		t.Errorf("restore -time on a damaged store: exit %d, want 1 pointing to -txid", code)
	}
	if _, err := os.Stat(out1); !os.IsNotExist(err) {
		t.Errorf("a refused restore left %s (stat: %v)", out1, err)
	}
	out2 := filepath.Join(t.TempDir(), "second.db")
	if code, _, _ := cli(t, ctx, "restore", "-txid", strconv.FormatUint(txids[1], 10), "-o", out2, url); code != 0 {
		t.Fatalf("restore -txid %d (before the damage): exit %d", txids[1], code)
	}
	if got := digest(t, openPlain(t, out2)); got != digests[1] {
		t.Errorf("restored txid %d: %.80s, want %.80s", txids[1], got, digests[1])
	}
}

// TestDamagedSnapshot: a catalog snapshot that head names but that is
// corrupt is only a copy of the log: the commands build the catalog from
// the whole log, status and verify report the snapshot and exit 1,
// boundaries and restore warn and work.
func TestDamagedSnapshot(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	storeDir := filepath.Join(t.TempDir(), "store")
	url := fileURL(storeDir)
	live := openLive(t, dir, url, bop.Config{})
	var digests []string
	for range 3 {
		live.insert(t, 50)
		live.publish(t)
		digests = append(digests, digest(t, live.db))
	}
	live.db.Close()

	// Another node takes the (released) database over and uploads a
	// snapshot of its catalog, as a writer does every 1,000 records.
	store, err := backend.Open(ctx, url, backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	layout, err := remote.NewLayout("", "app.db")
	if err != nil {
		t.Fatal(err)
	}
	cat, err := manifest.OpenRemote(ctx, store, layout, filepath.Join(t.TempDir(), "catalog.db"), manifest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	w, err := manifest.NewWriter(store, layout, cat, "maintenance", manifest.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Takeover(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := w.UploadSnapshot(ctx); err != nil {
		t.Fatal(err)
	}
	snapKey := layout.Snapshot(cat.Tip().Seq)
	snapFile := filepath.Join(storeDir, filepath.FromSlash(snapKey))
	b, err := os.ReadFile(snapFile)
	if err != nil {
		t.Fatal(err)
	}
	code, out, _ := cli(t, ctx, "boundaries", url)
	txids := publishTxids(t, out)
	if code != 0 || len(txids) != 3 {
		t.Fatalf("boundaries of the intact store: exit %d, publishes %v", code, txids)
	}
	b[len(b)/2] ^= 0x08
	if err := os.WriteFile(snapFile, b, 0o644); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := cli(t, ctx, "status", url)
	t.Logf("status:\n%s%s", out, errOut)
	if code != 1 || !strings.Contains(out, "DAMAGED") || !strings.Contains(out, snapKey) || !strings.Contains(errOut, "rebuilt from the whole log") {
		t.Errorf("status: exit %d, want 1 with DAMAGED naming %s\n%s%s", code, snapKey, out, errOut)
	}
	if code, out, _ := cli(t, ctx, "verify", url); code != 1 || !strings.Contains(out, "FAILED "+snapKey) || !strings.Contains(out, ", 0 failed") {
		t.Errorf("verify: exit %d, want 1 with the snapshot named and every object verified\n%s", code, out)
	}
	code, out, errOut = cli(t, ctx, "boundaries", url)
	if got := publishTxids(t, out); code != 0 || !slices.Equal(got, txids) || !strings.Contains(errOut, "warning") || !strings.Contains(errOut, snapKey) {
		t.Errorf("boundaries: exit %d, publishes %v; want 0, %v and a warning naming %s", code, got, txids, snapKey)
	}
	for i, txid := range txids {
		out := filepath.Join(t.TempDir(), "restored.db")
		args := []string{"restore", "-txid", strconv.FormatUint(txid, 10), "-o", out, url}
		if i == len(txids)-1 {
			args = []string{"restore", "-o", out, url} // the newest
		}
		if code, _, errOut := cli(t, ctx, args...); code != 0 || !strings.Contains(errOut, "warning") {
			t.Fatalf("%v: exit %d, want 0 with a warning: %s", args, code, errOut)
		}
		if got := digest(t, openPlain(t, out)); got != digests[i] {
			t.Errorf("restored txid %d: %.80s, want %.80s", txid, got, digests[i])
		}
	}
}

// TestReadOnlyStore: every command works on a store it may not write to,
// and none creates anything in it (a file:// store copied from S3 has no
// "#bop" folder; a read-only mount cannot get one).
func TestReadOnlyStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	storeDir := filepath.Join(t.TempDir(), "store")
	live := openLive(t, dir, fileURL(storeDir), bop.Config{})
	live.insert(t, 20)
	live.publish(t)
	want := digest(t, live.db)
	live.db.Close()
	if err := os.RemoveAll(filepath.Join(storeDir, "#bop")); err != nil {
		t.Fatal(err)
	}
	list := func() []string {
		var names []string
		filepath.WalkDir(storeDir, func(p string, d os.DirEntry, err error) error {
			names = append(names, p)
			return err
		})
		return names
	}
	tree := list()
	url := "file://localhost" + filepath.ToSlash(storeDir) // RFC 8089's form works too
	out := filepath.Join(t.TempDir(), "r.db")
	for _, args := range [][]string{
		{"databases", url},
		{"status", url},
		{"boundaries", url},
		{"verify", "-all", url},
		{"restore", "-o", out, url},
	} {
		if code, _, _ := cli(t, ctx, args...); code != 0 {
			t.Fatalf("bop %v: exit %d", args, code)
		}
		if got := list(); !slices.Equal(got, tree) {
			t.Fatalf("bop %v changed the store: %v, was %v", args, got, tree)
		}
	}
	if got := digest(t, openPlain(t, out)); got != want {
		t.Errorf("restored: %.80s, want %.80s", got, want)
	}
}
