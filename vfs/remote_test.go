package vfs

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fault"
	"github.com/bopstore/bop/remote/fsstore"
	"github.com/bopstore/bop/wal"
)

// With async durability an unreachable remote does not stop the database:
// it opens, takes writes, and the status says what is wrong.
func TestUnreachableRemoteAsync(t *testing.T) {
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	// Port 1 on loopback: connection refused at once.
	v := newVFS(t, Config{
		Remote:      "s3://bop-unreachable/prefix?endpoint=http://127.0.0.1:1&region=us-east-1&path_style=true",
		S3AccessKey: "test", S3SecretKey: "test", DisableIMDS: true,
	})
	path := filepath.Join(t.TempDir(), "offline.db")
	db := openDB(t, v, path)
	mustExec(t, db, "CREATE TABLE t(a)")
	mustExec(t, db, "INSERT INTO t VALUES (1), (2)")
	var s Status
	if err := json.Unmarshal([]byte(queryString(t, db, "PRAGMA bop_status")), &s); err != nil {
		t.Fatal(err)
	}
	if s.RemoteError == "" || !strings.Contains(s.RemoteError, "127.0.0.1:1") {
		t.Fatalf("status does not report the unreachable remote: %+v", s)
	}
	if s.Txid < 2 {
		t.Fatalf("status %+v", s)
	}
	d := stateOf(t, v, path)
	if d.meta.RemoteChecked {
		t.Fatal("meta says the remote was checked")
	}
	checkReplay(t, v, path, db)
}

// A damaged record in the spool (confirmed, so it cannot be a torn tail)
// fails the open with an error naming the segment file and the txid.
func TestCorruptSpoolRefused(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "corrupt.db")
	bopDatabaseWith(t, path, offline(Config{})) // txid 1: page 1 (direct), then CREATE, INSERT; nothing published
	spoolDir := filepath.Join(path+"-bop", "spool")
	names, _ := filepath.Glob(filepath.Join(spoolDir, "*.seg"))
	if len(names) != 1 {
		t.Fatalf("segments %v", names)
	}
	seg := names[0]
	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	// Find the header of txid 2 and flip a byte of its DBPages field.
	var magic [4]byte
	binary.LittleEndian.PutUint32(magic[:], 0x43455242)
	off := -1
	for i := 0; ; {
		j := bytes.Index(b[i:], magic[:])
		if j < 0 {
			break
		}
		if binary.LittleEndian.Uint64(b[i+j+8:]) == 2 {
			off = i + j
			break
		}
		i += j + 1
	}
	if off < 0 {
		t.Fatal("record of txid 2 not found")
	}
	b[off+20] ^= 0xff
	if err := os.WriteFile(seg, b, 0o644); err != nil {
		t.Fatal(err)
	}
	err = openErr(t, path)
	if !errors.Is(err, wal.ErrCorrupt) || !strings.Contains(err.Error(), seg) || !strings.Contains(err.Error(), "txid 2") {
		t.Fatalf("open with a corrupt spool: %v, want wal.ErrCorrupt naming %s and txid 2", err, seg)
	}
}

// The first open asks a real S3 server (versitygw, via scripts/test.sh)
// whether it has the database: no, so it opens with the remote checked;
// yes (another node created it): an adoption is refused, an empty file
// needs the writer role, which the other node's lease keeps.
func TestS3RemoteAtFirstOpen(t *testing.T) {
	r := s3Remote(t)
	v := newVFS(t, r.config(Config{}))
	path := filepath.Join(t.TempDir(), "s3.db")
	db := openDB(t, v, path)
	mustExec(t, db, "CREATE TABLE t(a)")
	var s Status
	if err := json.Unmarshal([]byte(queryString(t, db, "PRAGMA bop_status")), &s); err != nil {
		t.Fatal(err)
	}
	if s.RemoteError != "" || !stateOf(t, v, path).meta.RemoteChecked {
		t.Fatalf("status %+v: the remote was not checked", s)
	}

	takeOver(t, r.store, remote.Layout{Tenant: "default", DB: "taken.db"}, "other-node", false, false)
	// A file with data: adoption would fork the store's history.
	takenPath := filepath.Join(t.TempDir(), "taken.db")
	plainDatabase(t, takenPath, 1)
	taken := openDB(t, v, takenPath)
	if _, err := taken.Exec("SELECT 1"); !errors.Is(err, ErrRemoteHasDatabase) {
		t.Fatalf("adoption of a name the S3 store has: %v, want ErrRemoteHasDatabase", err)
	}
	// An empty one opens from the store, which other-node owns.
	empty := openDB(t, v, filepath.Join(t.TempDir(), "taken.db"))
	if _, err := empty.Exec("SELECT 1"); !errors.Is(err, ErrOwnedElsewhere) {
		t.Fatalf("open of a name the S3 store has, owned by other-node: %v, want ErrOwnedElsewhere", err)
	}
}

// An async database whose store is down when it opens: the open succeeds,
// commits go on locally, the status shows the store's error; once the
// store is back the publisher takes the writer role and publishes
// everything. With sync durability the same open fails clearly.
func TestStoreDownAtOpen(t *testing.T) {
	var fs *fault.Store
	cfg := Config{CheckpointInterval: 20 * time.Millisecond}
	cfg.wrapStore = func(s remote.Store) remote.Store {
		fs = fault.New(s, fault.Config{})
		fs.SetOutage(true)
		return fs
	}
	v := newVFS(t, cfg)
	path := filepath.Join(t.TempDir(), "down.db")
	db := openDB(t, v, path)
	db.SetMaxOpenConns(1)
	mustExec(t, db, "CREATE TABLE t(a)")
	mustExec(t, db, "INSERT INTO t VALUES (1), (2)")
	s := statusOf(t, db)
	// Txid 1 holds the writes that turned WAL mode on; CREATE TABLE and
	// the INSERT follow, as one group or two (async durability coalesces).
	if s.RemoteError == "" || s.PublishedTxid != 0 || s.Txid < 2 || s.LagTxns != s.Txid || s.Publisher != "running" {
		t.Fatalf("status with the store down: %+v", s)
	}
	fs.SetOutage(false)
	waitUntil(t, "publishing after the store came back", func() bool {
		s := statusOf(t, db)
		return s.PublishedTxid == s.Txid && s.RemoteError == ""
	})
	mustExec(t, db, "INSERT INTO t VALUES (3)")
	checkReplay(t, v, path, db)

	sync := cfg
	sync.Durability = Sync
	vs := newVFS(t, sync)
	sdb := openDB(t, vs, filepath.Join(t.TempDir(), "down-sync.db"))
	if _, err := sdb.Exec("SELECT 1"); err == nil || !strings.Contains(err.Error(), "durability is sync") {
		t.Fatalf("sync open with the store down: %v, want a clear error", err)
	}
}

// bop_force_takeover acts when a database is opened: a connection asking
// for it while the database is open in this process and fenced is refused
// with ErrFenced saying what to do, not left to fail every commit as if it
// had not asked.
func TestForceOnFencedOpenDatabase(t *testing.T) {
	storeDir := t.TempDir()
	v := newVFS(t, Config{Remote: "file://" + storeDir, CheckpointInterval: time.Hour})
	path := filepath.Join(t.TempDir(), "app.db")
	db := openDB(t, v, path)
	db.SetMaxOpenConns(1)
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
	queryString(t, db, "PRAGMA bop_checkpoint")

	// Another node takes the database over by force.
	store, err := fsstore.New(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	takeOver(t, store, remote.Layout{Tenant: DefaultTenant, DB: "app.db"}, "other-node", true, true)
	mustExec(t, db, "INSERT INTO t(v) VALUES ('local only')")
	if _, err := db.Exec("PRAGMA bop_checkpoint"); err == nil || !strings.Contains(err.Error(), "fenced") {
		t.Fatalf("publish after the other node's takeover: %v, want fenced", err)
	}

	forced, err := openDBURI(t, dsn(path, v.Name())+"&bop_force_takeover=1")
	if err != nil {
		t.Fatal(err)
	}
	_, err = forced.Exec("SELECT 1")
	if !errors.Is(err, ErrFenced) || !strings.Contains(err.Error(), "close every connection") {
		t.Fatalf("a forced connection to the fenced open database: %v, want ErrFenced saying to reopen", err)
	}
	// Without force a connection joins (and its commits fail fenced).
	plain, err := openDBURI(t, dsn(path, v.Name()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Exec("INSERT INTO t(v) VALUES ('refused')"); !errors.Is(err, ErrFenced) {
		t.Fatalf("a commit of the fenced database: %v, want ErrFenced", err)
	}
}
