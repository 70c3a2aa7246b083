package manifest

import (
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/ncruces/go-sqlite3"
)

var updateTemplate = flag.Bool("update-template", false, "rewrite "+templateFile+" from the migrations")

// buildTemplate makes the file a new catalog starts from the slow way: an
// empty file switched to WAL, every migration run, user_version set,
// checkpointed into the file.
func buildTemplate(t *testing.T) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tmpl.db")
	conn, err := sqlite3.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	stmts := []string{"PRAGMA journal_mode = WAL", "BEGIN"}
	stmts = append(stmts, migrations...)
	stmts = append(stmts, fmt.Sprintf("PRAGMA user_version = %d", SchemaVersion), "COMMIT")
	for _, s := range stmts {
		if err := conn.Exec(s); err != nil {
			t.Fatalf("%.40q: %v", s, err)
		}
	}
	if err := conn.Close(); err != nil { // checkpoints and removes the WAL
		t.Fatal(err)
	}
	if _, err := os.Stat(path + "-wal"); err == nil {
		t.Fatal("the template's WAL outlived its close")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The embedded template is exactly what the migrations make: a change to
// the schema without a new template fails here (go test ./manifest -run
// TestCatalogTemplate -update-template writes it).
func TestCatalogTemplate(t *testing.T) {
	want := buildTemplate(t)
	if again := buildTemplate(t); !bytes.Equal(again, want) {
		t.Fatal("building the template twice gave different bytes")
	}
	if *updateTemplate {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		zw.Write(want)
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(templateFile, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s: %d bytes (%d uncompressed)", templateFile, buf.Len(), len(want))
		return
	}
	got, err := catalogTemplate()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s (%d bytes) is not what the migrations make (%d bytes): run go test ./manifest -run TestCatalogTemplate -update-template", templateFile, len(got), len(want))
	}
}

// A crash while the template was being written leaves catalog.db.new (torn
// or whole) and no catalog.db: the next Open writes the template again
// over it, and the catalog opens as new. A catalog file is only ever the
// whole template (renamed into place after its fsync).
func TestTemplateLeftoverRewritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	if err := os.WriteFile(path+".new", []byte("SQLite format 3\x00 torn"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Open(path, Options{Layout: testLayout, PageSize: testPageSize, ChunkPages: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if tip := c.Tip(); tip.PageSize != testPageSize || tip.Seq != 0 {
		t.Fatalf("new catalog over a leftover: %+v", tip)
	}
	if _, err := os.Stat(path + ".new"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s.new after the open: %v", path, err)
	}
	want, err := catalogTemplate()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The file is the template; the meta row is in the WAL.
	if !bytes.Equal(got, want) {
		t.Fatalf("catalog.db (%d bytes) is not the template (%d bytes)", len(got), len(want))
	}
}
