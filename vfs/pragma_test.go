package vfs

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
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
	// Publishing only on request (and the publisher's first cycle).
	v := newVFS(t, Config{CheckpointInterval: time.Hour, PublishBytes: -1})
	path := filepath.Join(t.TempDir(), "status.db")
	db := openDB(t, v, path)
	mustExec(t, db, "CREATE TABLE t(a)")
	status := func() Status { return statusOf(t, db) }
	waitUntil(t, "the first publish", func() bool { s := status(); return s.PublishedTxid >= 1 && !s.Publishing })
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
	if s.PublishedTxid >= s.Txid || s.LagTxns != s.Txid-s.PublishedTxid || s.SpoolBytes <= 0 || s.LagSeconds <= 0 || s.LastPublish.IsZero() {
		t.Fatalf("status %+v", s)
	}
	if !strings.Contains(s.Owner, "pid "+strconv.Itoa(os.Getpid())) || !strings.HasPrefix(s.Remote, "file://") {
		t.Fatalf("status %+v", s)
	}
	if s.Publisher != "running" || s.Fenced || s.RemoteError != "" || s.CaptureError != "" || s.Backpressure != "" || s.PublishError != "" {
		t.Fatalf("status %+v", s)
	}
	vs, err := v.Status(path)
	if err != nil || vs.Txid != s.Txid {
		t.Fatalf("VFS.Status: %+v %v", vs, err)
	}
	if _, err := v.Status(filepath.Join(t.TempDir(), "nope.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("status of a database not open: %v", err)
	}

	// bop_checkpoint publishes everything and returns the boundary.
	if got := queryString(t, db, "PRAGMA bop_checkpoint"); got != strconv.FormatUint(s.Txid, 10) {
		t.Fatalf("bop_checkpoint returned %s, want %d", got, s.Txid)
	}
	if s := status(); s.PublishedTxid != s.Txid || s.LagTxns != 0 || s.LagSeconds != 0 {
		t.Fatalf("status after bop_checkpoint: %+v", s)
	}
	if _, err := db.Exec("PRAGMA bop_nonsense"); err == nil || !strings.Contains(err.Error(), "unknown pragma bop_nonsense") {
		t.Fatalf("bop_nonsense: %v", err)
	}
	// SQLite's own pragmas still work through the VFS.
	if n := queryInt(t, db, "PRAGMA page_size"); n != 4096 {
		t.Fatalf("page_size %d", n)
	}
}
