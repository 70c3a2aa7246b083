package vfstest

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"

	"github.com/ncruces/go-sqlite3"
	_ "github.com/ncruces/go-sqlite3/driver"
)

// The wrapper must forward every optional file interface: without
// FileSharedMemory SQLite silently stays out of WAL mode.
func TestWrapperKeepsWALAndForwards(t *testing.T) {
	v := New(nil)
	var events []Event
	v.Trace = func(e Event) { events = append(events, e) }
	v.Register("vfstest-self")
	path := filepath.Join(t.TempDir(), "x.db")
	db, err := sql.Open("sqlite3", "file:"+path+"?vfs=vfstest-self&_pragma=journal_mode(wal)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	var mode string
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode %q %v", mode, err)
	}
	if _, err := db.Exec("CREATE TABLE t(v); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + "-shm"); err != nil {
		t.Fatalf("no -shm: %v", err)
	}
	conn, _ := db.Conn(context.Background())
	defer conn.Close()
	conn.Raw(func(dc any) error {
		c := dc.(interface{ Raw() *sqlite3.Conn }).Raw()
		if v, err := c.FileControl("main", sqlite3.FCNTL_LOCKSTATE); err != nil {
			t.Errorf("FCNTL_LOCKSTATE not forwarded: %v %v", v, err)
		}
		if _, err := c.FileControl("main", sqlite3.FCNTL_PERSIST_WAL, true); err != nil {
			t.Errorf("FCNTL_PERSIST_WAL not forwarded: %v", err)
		}
		return nil
	})
	saw := map[EventKind]bool{}
	for _, e := range events {
		saw[e.Kind] = true
	}
	for _, k := range []EventKind{OpenMain, OpenWAL, WALWrite, PhaseTwo} {
		if !saw[k] {
			t.Errorf("no %s event", k)
		}
	}
}
