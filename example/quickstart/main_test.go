package main

import (
	"database/sql"
	"path/filepath"
	"testing"

	bop "github.com/bopstore/bop/vfs"
)

// The quickstart runs twice on one folder, like a user running it twice:
// the second run reopens the database and finds the first run's row.
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
	var n int
	if err := db.QueryRow("SELECT count(*) FROM notes").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("%d notes after two runs, want 2", n)
	}
}
