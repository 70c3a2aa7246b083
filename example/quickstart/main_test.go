package main

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/bopstore/bop/checkpoint"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/backend"
	bop "github.com/bopstore/bop/vfs"
)

// The quickstart runs twice on one folder, like a user running it twice:
// the second run reopens the database and finds the first run's row, and
// the embedded store alone restores both rows.
func TestQuickstart(t *testing.T) {
	if _, err := bop.Register("bop", bop.Config{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for i := 0; i < 2; i++ {
		if err := run(dir, "bop"); err != nil {
			t.Fatalf("run %d: %v", i+1, err)
		}
	}
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "app.db")+"?vfs=bop")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if n := countNotes(t, db); n != 2 {
		t.Fatalf("%d notes after two runs, want 2", n)
	}

	// Restore from the store alone (the quickstart published before it
	// printed its status) into a plain file, read with the default VFS.
	ctx := context.Background()
	st, err := backend.Open(ctx, "file://"+filepath.Join(dir, "app.db-bop", "store"), backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	layout, err := remote.NewLayout(bop.DefaultTenant, "app.db")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "restored.db")
	if _, err := checkpoint.Restore(ctx, checkpoint.RestoreOptions{Store: st, Layout: layout, Path: out}); err != nil {
		t.Fatal(err)
	}
	plain, err := sql.Open("sqlite3", "file:"+out)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if n := countNotes(t, plain); n != 2 {
		t.Fatalf("restored database has %d notes, want 2", n)
	}
}

func countNotes(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow("SELECT count(*) FROM notes").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
