// Command quickstart shows bop on one machine with no server: it opens a
// SQLite database through the bop VFS, whose remote store is the embedded
// default (a local directory next to the database), writes a row, reads the
// rows back and prints PRAGMA bop_status.
//
//	go run ./example/quickstart             # uses $TMPDIR/bop-quickstart
//	go run ./example/quickstart -dir ./qs   # or any folder
//
// Run it twice: the second run reopens the same database and adds a row.
// Look into the folder afterwards: app.db is a plain SQLite file, app.db-bop/
// holds bop's state (docs/arch/vfs.md) and app.db-bop/store/ the embedded
// remote store.
package main

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"path/filepath"

	bop "github.com/bopstore/bop/vfs"
	_ "github.com/ncruces/go-sqlite3/driver"
)

func main() {
	dir := flag.String("dir", filepath.Join(os.TempDir(), "bop-quickstart"), "folder for the database and its bop state")
	flag.Parse()
	// A zero Config: async durability, the embedded local store.
	if _, err := bop.Register("bop", bop.Config{}); err != nil {
		log.Fatal(err)
	}
	if err := run(*dir, "bop"); err != nil {
		log.Fatal(err)
	}
}

// run opens dir/app.db through the registered bop VFS named vfsName.
func run(dir, vfsName string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	path, err := filepath.Abs(filepath.Join(dir, "app.db"))
	if err != nil {
		return err
	}
	// A URI, escaped: a folder named with '#' or '?' must not cut the path.
	uri := url.URL{Scheme: "file", Path: path, RawQuery: url.Values{"vfs": {vfsName}}.Encode()}
	db, err := sql.Open("sqlite3", uri.String())
	if err != nil {
		return err
	}
	defer db.Close()

	if _, err := db.Exec(`CREATE TABLE IF NOT EXISTS notes(
		id INTEGER PRIMARY KEY,
		body TEXT NOT NULL,
		created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ')))`); err != nil {
		return err
	}
	var n int
	if err := db.QueryRow("SELECT count(*) FROM notes").Scan(&n); err != nil {
		return err
	}
	if _, err := db.Exec("INSERT INTO notes(body) VALUES (?)", fmt.Sprintf("hello from bop, run %d", n+1)); err != nil {
		return err
	}

	rows, err := db.Query("SELECT id, body, created FROM notes ORDER BY id")
	if err != nil {
		return err
	}
	fmt.Printf("database %s (journal mode %s):\n", path, journalMode(db))
	for rows.Next() {
		var id int
		var body, created string
		if err := rows.Scan(&id, &body, &created); err != nil {
			return err
		}
		fmt.Printf("  %d  %s  %s\n", id, created, body)
	}
	if err := rows.Err(); err != nil {
		return err
	}

	// Publishing runs in the background (every second by default);
	// PRAGMA bop_checkpoint publishes now and waits, so the status below
	// shows the row as published to the store.
	var published string
	if err := db.QueryRow("PRAGMA bop_checkpoint").Scan(&published); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	fmt.Printf("PRAGMA bop_checkpoint: %s\n", published)

	var status string
	if err := db.QueryRow("PRAGMA bop_status").Scan(&status); err != nil {
		return err
	}
	var pretty bytes.Buffer
	json.Indent(&pretty, []byte(status), "", "  ")
	fmt.Printf("PRAGMA bop_status:\n%s\n", pretty.String())
	return db.Close()
}

func journalMode(db *sql.DB) string {
	var m string
	db.QueryRow("PRAGMA journal_mode").Scan(&m)
	return m
}
