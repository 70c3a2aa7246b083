package walgen

import (
	"database/sql"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	_ "github.com/ncruces/go-sqlite3/driver"
)

// Cross-check against SQLite itself: the header and every frame of a WAL
// SQLite wrote carry the checksums this package computes.
func TestChecksumMatchesSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db")
	db, err := sql.Open("sqlite3", "file:"+path+"?_pragma=journal_mode(wal)&_pragma=wal_autocheckpoint(0)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, q := range []string{"CREATE TABLE t(v)", "INSERT INTO t SELECT randomblob(900) FROM generate_series(1,50)", "UPDATE t SET v = 1"} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	be := binary.BigEndian.Uint32(b) == MagicBE
	ck := Checksum(be, b[:24], [2]uint32{})
	if ck[0] != binary.BigEndian.Uint32(b[24:]) || ck[1] != binary.BigEndian.Uint32(b[28:]) {
		t.Fatal("header checksum differs from SQLite's")
	}
	ps := int(binary.BigEndian.Uint32(b[8:]))
	n := 0
	for off := 32; off+24+ps <= len(b); off += 24 + ps {
		ck = Checksum(be, b[off:off+8], ck)
		ck = Checksum(be, b[off+24:off+24+ps], ck)
		if ck[0] != binary.BigEndian.Uint32(b[off+16:]) || ck[1] != binary.BigEndian.Uint32(b[off+20:]) {
			t.Fatalf("frame %d checksum differs from SQLite's", n+1)
		}
		n++
	}
	if n < 10 {
		t.Fatalf("only %d frames", n)
	}
	// And a WAL this package writes has the same header layout.
	w := New(ps, binary.BigEndian.Uint32(b[16:]), binary.BigEndian.Uint32(b[20:]), func([]byte, int64) error { return nil })
	w.CkptSeq = binary.BigEndian.Uint32(b[12:])
	w.BigEndian = be
	if h := w.HeaderBytes(); string(h) != string(b[:32]) {
		t.Fatalf("header differs from SQLite's")
	}
}
