package vfs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bopstore/bop/internal/testutil"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fsstore"
	"github.com/bopstore/bop/wal"
)

// plainDatabase builds a database of about mb MiB with stock SQLite (the
// default VFS), in WAL mode, checkpointed and closed: a single file.
func plainDatabase(t *testing.T, path string, mb int) {
	t.Helper()
	db := openDB(t, nil, path, "journal_mode(wal)")
	db.SetMaxOpenConns(1)
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, k INT, v BLOB)")
	mustExec(t, db, "CREATE INDEX t_k ON t(k)")
	rows := mb * 1024 / 2 // ~2 KiB per row with the index
	for done := 0; done < rows; done += 5000 {
		mustExec(t, db, "INSERT INTO t(k, v) SELECT abs(random()) % 1000, randomblob(1900) FROM generate_series(1, ?)", min(5000, rows-done))
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + "-wal"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("plain close left a WAL: %v", err)
	}
}

// checkAdopted verifies that the spool's first record is the whole
// original file: an image record of every page, replaying to its bytes.
func checkAdopted(t *testing.T, v *VFS, path, original string) {
	t.Helper()
	d := stateOf(t, v, path)
	h, err := d.spool.Header(1)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(original)
	if err != nil {
		t.Fatal(err)
	}
	pages := uint32(fi.Size() / int64(h.PageSize))
	if h.Kind != wal.KindImage || h.DBPages != pages || h.NPages != pages {
		t.Fatalf("first record %+v, want an image of all %d pages", h, pages)
	}
	out := filepath.Join(t.TempDir(), "image.db")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	for rec, err := range d.spool.Records(1, 1) {
		if err != nil {
			t.Fatal(err)
		}
		for pg, err := range rec.Pages() {
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt(pg.Data, int64(pg.Pgno-1)*int64(rec.PageSize))
		}
	}
	f.Close()
	if err := sameFiles(original, out); err != nil {
		t.Fatalf("the image record is not the adopted file: %v", err)
	}
	if d.meta.Origin != originAdopted {
		t.Fatalf("origin %q", d.meta.Origin)
	}
}

func adoptTest(t *testing.T, mb int) {
	dir := t.TempDir()
	path := filepath.Join(dir, "adopt.db")
	plainDatabase(t, path, mb)
	original := filepath.Join(dir, "original.db")
	copyFile(t, path, original)
	rows := queryInt(t, openDB(t, nil, original), "SELECT count(*) FROM t")

	// The store is offline: nothing is published, so the spool keeps the
	// image record for checkAdopted (TestEndToEndAdoption publishes one).
	v := newVFS(t, offline(Config{}))
	db := openDB(t, v, path)
	if n := queryInt(t, db, "SELECT count(*) FROM t"); n != rows {
		t.Fatalf("%d rows after adoption, want %d", n, rows)
	}
	checkAdopted(t, v, path, original)
	mustExec(t, db, "UPDATE t SET k = k + 1 WHERE id % 7 = 0")
	mustExec(t, db, "INSERT INTO t(k, v) VALUES (1, 'after adoption')")
	integrityOK(t, db)
	checkReplay(t, v, path, db)

	// The next open is not an adoption: the state is there.
	db.Close()
	v2 := newVFS(t, offline(Config{}))
	db2 := openDB(t, v2, path)
	if n := queryInt(t, db2, "SELECT count(*) FROM t"); n != rows+1 {
		t.Fatalf("%d rows after reopen", n)
	}
	checkAdopted(t, v2, path, original)
	checkReplay(t, v2, path, db2)
}

func TestAdoptExistingDatabase(t *testing.T) { adoptTest(t, 2) }

func TestHeavyAdopt100MB(t *testing.T) {
	testutil.Heavy(t)
	adoptTest(t, 100)
}

func TestAdoptRefusals(t *testing.T) {
	t.Run("not sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "junk.db")
		os.WriteFile(path, []byte(strings.Repeat("not a database ", 1000)), 0o644)
		err := openErr(t, path)
		if !errContains(err, "not an SQLite database") {
			t.Fatalf("%v", err)
		}
		if _, err := os.Stat(filepath.Join(path+"-bop", metaFileName)); !errors.Is(err, os.ErrNotExist) {
			t.Fatal("a refused adoption left meta.json behind")
		}
	})
	t.Run("hot journal", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "hot.db")
		plainDatabase(t, path, 1)
		j := append(append([]byte{}, journalMagic...), make([]byte, 512)...)
		os.WriteFile(path+"-journal", j, 0o644)
		if err := openErr(t, path); !errContains(err, "unfinished transaction") {
			t.Fatalf("%v", err)
		}
	})
	t.Run("partial page", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "cut.db")
		plainDatabase(t, path, 1)
		f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		f.Write([]byte("tail"))
		f.Close()
		if err := openErr(t, path); !errContains(err, "not a whole number") {
			t.Fatalf("%v", err)
		}
	})
}

// remoteWithDatabase creates a store holding database layout (a takeover
// record and head), as another node would have left it.
func remoteWithDatabase(t *testing.T, storeDir string, layout remote.Layout) {
	t.Helper()
	store, err := fsstore.New(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	takeOver(t, store, layout, "other-node", false, false)
}

// The first open of a name the store already has: a file with data is an
// adoption conflict (ErrRemoteHasDatabase); an empty or missing file opens
// the database from the store, which needs the writer role: refused while
// the other writer's lease is fresh, taken over when forced.
func TestFirstOpenWhenRemoteHasDatabase(t *testing.T) {
	storeDir := t.TempDir()
	remoteWithDatabase(t, storeDir, remote.Layout{Tenant: "default", DB: "shared.db"})
	cfg := Config{Remote: "file://" + storeDir}

	// Adoption of an existing file.
	dir := t.TempDir()
	path := filepath.Join(dir, "shared.db")
	plainDatabase(t, path, 1)
	v := newVFS(t, cfg)
	db := openDB(t, v, path)
	if _, err := db.Exec("SELECT 1"); !errors.Is(err, ErrRemoteHasDatabase) {
		t.Fatalf("adoption: %v, want ErrRemoteHasDatabase", err)
	}
	db.Close()
	// A new, empty database of the same name: the store's, owned by
	// other-node.
	empty := filepath.Join(t.TempDir(), "shared.db")
	db2 := openDB(t, v, empty)
	if _, err := db2.Exec("SELECT 1"); !errors.Is(err, ErrOwnedElsewhere) || !strings.Contains(err.Error(), "other-node") {
		t.Fatalf("empty database while other-node holds the lease: %v, want ErrOwnedElsewhere naming it", err)
	}
	db2.Close()
	// Forced: opened from the store (it has no page yet), writable.
	db3, err := openDBURI(t, dsn(empty, v.Name())+"&bop_force_takeover=1")
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, db3, "CREATE TABLE t(a)")
	mustExec(t, db3, "INSERT INTO t VALUES (1)")
	if s := statusOf(t, db3); s.Origin != originTakeover || s.Fenced || s.Publisher != "running" {
		t.Fatalf("status after a forced open from the store: %+v", s)
	}
	checkReplay(t, v, empty, db3)
	// Another name is fine.
	db4 := openDB(t, v, filepath.Join(t.TempDir(), "other.db"))
	mustExec(t, db4, "CREATE TABLE t(a)")
}
