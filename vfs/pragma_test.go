package vfs

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestJournalModeRefused(t *testing.T) {
	v := newVFS(t, Config{})
	path := filepath.Join(t.TempDir(), "jm.db")
	db := openDB(t, v, path)
	db.SetMaxOpenConns(1)
	mustExec(t, db, "CREATE TABLE t(a)")
	for _, m := range []string{"delete", "DELETE", "truncate", "persist", "memory", "off", "'delete'"} {
		_, err := db.Exec("PRAGMA journal_mode=" + m)
		if err == nil || !strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), "WAL") {
			t.Fatalf("journal_mode=%s: %v, want a clear refusal", m, err)
		}
		if got := queryString(t, db, "PRAGMA journal_mode"); got != "wal" {
			t.Fatalf("after journal_mode=%s the mode is %q", m, got)
		}
	}
	for _, q := range []string{"PRAGMA journal_mode=wal", "PRAGMA main.journal_mode=WAL", "PRAGMA journal_mode"} {
		if got := queryString(t, db, q); got != "wal" {
			t.Fatalf("%s: %q", q, got)
		}
	}
	mustExec(t, db, "INSERT INTO t VALUES (1)")
	checkReplay(t, v, path, db)

	// A DSN asking for another mode fails the open.
	bad := openDB(t, v, filepath.Join(t.TempDir(), "bad.db"), "journal_mode(delete)")
	if _, err := bad.Exec("SELECT 1"); err == nil || !strings.Contains(err.Error(), "journal_mode=delete refused") {
		t.Fatalf("DSN journal_mode(delete): %v", err)
	}
}

func TestStatusPragma(t *testing.T) {
	v := newVFS(t, Config{})
	path := filepath.Join(t.TempDir(), "status.db")
	db := openDB(t, v, path)
	mustExec(t, db, "CREATE TABLE t(a)")
	status := func() Status {
		var s Status
		if err := json.Unmarshal([]byte(queryString(t, db, "PRAGMA bop_status")), &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	s0 := status()
	for i := 0; i < 5; i++ {
		mustExec(t, db, "INSERT INTO t VALUES (?)", i)
	}
	s := status()
	if s.Txid != s0.Txid+5 {
		t.Fatalf("txid %d after 5 commits from %d", s.Txid, s0.Txid)
	}
	if txid := queryString(t, db, "PRAGMA bop_txid"); txid != strconv.FormatUint(s.Txid, 10) {
		t.Fatalf("bop_txid %s, status txid %d", txid, s.Txid)
	}
	if s.Mode != "primary" || s.Durability != "async" || s.Name != "status.db" || s.Tenant != "default" || s.Origin != "new" {
		t.Fatalf("status %+v", s)
	}
	if s.PublishedTxid != 0 || s.LagTxns != s.Txid || s.SpoolBytes <= 0 || s.LagSeconds <= 0 {
		t.Fatalf("status %+v", s)
	}
	if !strings.Contains(s.Owner, "pid "+strconv.Itoa(os.Getpid())) || !strings.HasPrefix(s.Remote, "file://") {
		t.Fatalf("status %+v", s)
	}
	if s.Publisher == "running" || s.RemoteError != "" || s.CaptureError != "" || s.Backpressure != "" {
		t.Fatalf("status %+v", s)
	}
	vs, err := v.Status(path)
	if err != nil || vs.Txid != s.Txid {
		t.Fatalf("VFS.Status: %+v %v", vs, err)
	}
	if _, err := v.Status(filepath.Join(t.TempDir(), "nope.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("status of a database not open: %v", err)
	}

	_, err = db.Exec("PRAGMA bop_checkpoint")
	if err == nil || !strings.Contains(err.Error(), ErrNotAvailable.Error()) {
		t.Fatalf("bop_checkpoint: %v, want not available", err)
	}
	if _, err := db.Exec("PRAGMA bop_nonsense"); err == nil || !strings.Contains(err.Error(), "unknown pragma bop_nonsense") {
		t.Fatalf("bop_nonsense: %v", err)
	}
	// SQLite's own pragmas still work through the VFS.
	if n := queryInt(t, db, "PRAGMA page_size"); n != 4096 {
		t.Fatalf("page_size %d", n)
	}
}
