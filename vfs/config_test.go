package vfs

import (
	"database/sql"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRegisterValidation(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"", Config{}, "reserved"},
		{"os", Config{}, "reserved"},
		{"bopbad1", Config{Remote: "ftp://x/y"}, "unsupported scheme"},
		{"bopbad2", Config{Remote: "file://relative"}, "Config.Remote"},
		{"bopbad3", Config{Tenant: "Bad Tenant"}, "Config.Tenant"},
		{"bopbad4", Config{Name: "UPPER.db"}, "Config.Name"},
		{"bopbad5", Config{CacheBytes: -1}, "negative"},
		{"bopbad6", Config{CheckpointInterval: -1}, "negative"},
		{"bopbad7", Config{S3AccessKey: "a"}, "together"},
		{"bopbad8", Config{Durability: 7}, "want Async or Sync"},
		{"bopbad9", Config{MaxLag: -1}, "negative"},
		{"bopbad10", Config{LeaseTTL: time.Nanosecond}, "below the minimum"},
		{"bopbad11", Config{LeaseTTL: 999 * time.Millisecond}, "below the minimum"},
	} {
		v, err := Register(c.name, c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			if v != nil {
				v.Close()
			}
			t.Fatalf("Register(%q, %+v): %v, want %q", c.name, c.cfg, err, c.want)
		}
	}
	v := newVFS(t, Config{})
	if _, err := Register(v.Name(), Config{}); err == nil || !strings.Contains(err.Error(), "already registered") {
		t.Fatalf("duplicate name: %v", err)
	}
}

func TestDatabaseNames(t *testing.T) {
	v := newVFS(t, Config{})
	dir := t.TempDir()
	// A file name that is not a store name: a clear error asking for one.
	db := openDB(t, v, filepath.Join(dir, "My Data.db"))
	_, err := db.Exec("SELECT 1")
	if err == nil || !strings.Contains(err.Error(), "set Config.Name or add bop_name") {
		t.Fatalf("bad file name: %v", err)
	}
	// bop_name in the URI names it.
	path := filepath.Join(dir, "My Data.db")
	named, err := openDBURI(t, "file:"+path+"?vfs="+v.Name()+"&bop_name=mydata")
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, named, "CREATE TABLE t(a)")
	if s := queryString(t, named, "SELECT json_extract(?, '$.name')", queryString(t, named, "PRAGMA bop_status")); s != "mydata" {
		t.Fatalf("name %q", s)
	}
	named.Close()
	// Reopened under another name: refused (it would be another remote
	// database).
	other, _ := openDBURI(t, "file:"+path+"?vfs="+v.Name()+"&bop_name=another")
	if _, err := other.Exec("SELECT 1"); err == nil || !strings.Contains(err.Error(), "belongs to database default/mydata") {
		t.Fatalf("renamed: %v", err)
	}
}

func TestOneNamePerStore(t *testing.T) {
	store := t.TempDir()
	v := newVFS(t, Config{Remote: "file://" + store, Name: "same"})
	a := openDB(t, v, filepath.Join(t.TempDir(), "a.db"))
	mustExec(t, a, "CREATE TABLE t(a)")
	b := openDB(t, v, filepath.Join(t.TempDir(), "b.db"))
	if _, err := b.Exec("SELECT 1"); err == nil || !strings.Contains(err.Error(), "already open as") {
		t.Fatalf("second database with the same name: %v", err)
	}
}

func TestOneVFSPerDatabase(t *testing.T) {
	v1 := newVFS(t, Config{})
	v2 := newVFS(t, Config{})
	path := filepath.Join(t.TempDir(), "x.db")
	a := openDB(t, v1, path)
	mustExec(t, a, "CREATE TABLE t(a)")
	b := openDB(t, v2, path)
	if _, err := b.Exec("SELECT 1"); err == nil || !strings.Contains(err.Error(), "through VFS") {
		t.Fatalf("second VFS on one file: %v", err)
	}
}

// Close keeps open databases usable and unregisters the VFS when the last
// one closes; new opens are refused meanwhile.
func TestCloseWhileOpen(t *testing.T) {
	v := newVFS(t, Config{})
	path := filepath.Join(t.TempDir(), "c.db")
	db := openDB(t, v, path)
	db.SetMaxOpenConns(1)
	mustExec(t, db, "CREATE TABLE t(a)")
	v.Close()
	mustExec(t, db, "INSERT INTO t VALUES (1)")
	other := openDB(t, v, filepath.Join(t.TempDir(), "d.db"))
	if _, err := other.Exec("SELECT 1"); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("open after Close: %v", err)
	}
	other.Close()
	db.Close()
	if vfsFind(v.Name()) != nil {
		t.Fatal("VFS still registered after its last database closed")
	}
}

// A database in a folder whose name holds URI characters ('#', '?', '%',
// a space) opens with the embedded default store: the store's file URL is
// escaped (it used to be cut at the '#' and refused as a fragment).
func TestFolderNameNeedsEscaping(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a #b?c%d")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "app.db")
	v := newVFS(t, Config{})
	uri := url.URL{Scheme: "file", Path: path, RawQuery: url.Values{"vfs": {v.Name()}}.Encode()}
	db, err := openDBURI(t, uri.String())
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, db, "CREATE TABLE t(v)")
	mustExec(t, db, "INSERT INTO t VALUES (1)")
	queryInt(t, db, "PRAGMA bop_checkpoint")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, n := restoreRows(t, path, 0); n != 1 {
		t.Fatalf("%d rows restored, want 1", n)
	}
}

// A second connection naming another store database (bop_name) for a file
// already open in the process is refused, not silently given the first
// name; naming the same one is fine.
func TestSecondConnectionOtherName(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.db")
	v := newVFS(t, Config{})
	open := func(name string) (*sql.DB, error) {
		t.Helper()
		uri := url.URL{Scheme: "file", Path: path, RawQuery: url.Values{"vfs": {v.Name()}, "bop_name": {name}}.Encode()}
		db, err := openDBURI(t, uri.String())
		if err != nil {
			t.Fatal(err)
		}
		_, err = db.Exec("CREATE TABLE IF NOT EXISTS t(v)")
		return db, err
	}
	first, err := open("orders")
	if err != nil {
		t.Fatal(err)
	}
	first.SetMaxIdleConns(1)
	if _, err := open("orders"); err != nil {
		t.Fatalf("a second connection with the same name: %v", err)
	}
	if _, err := open("invoices"); err == nil || !strings.Contains(err.Error(), `open in this process as database "orders"`) {
		t.Fatalf("a second connection with another name: %v", err)
	}
}
