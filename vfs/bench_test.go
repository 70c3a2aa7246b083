package vfs

import (
	"path/filepath"
	"strings"
	"testing"
)

// go test -bench: the overhead of bop on commits, against the default
// VFS. The numbers that count are bench/vfs's (child processes, CPU and
// wall, interleaved); these are for profiling (-cpuprofile).

var benchText = strings.Repeat("0123456789", 10)

func benchInserts(b *testing.B, useBop bool, perTxn int) {
	var v *VFS
	if useBop {
		v = newVFS(b, Config{SpoolLimit: -1})
	}
	path := filepath.Join(b.TempDir(), "bench.db")
	db := openDB(b, v, path, "journal_mode(wal)", "synchronous(normal)")
	db.SetMaxOpenConns(1)
	mustExec(b, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v TEXT)")
	if perTxn > 1 {
		mustExec(b, db, "CREATE INDEX t_k ON t(k)")
	}
	b.ResetTimer()
	id := 0
	for i := 0; i < b.N; i++ {
		tx, err := db.Begin()
		if err != nil {
			b.Fatal(err)
		}
		st, err := tx.Prepare("INSERT INTO t(id, k, v) VALUES (?, ?, ?)")
		if err != nil {
			b.Fatal(err)
		}
		for j := 0; j < perTxn; j++ {
			id++
			if _, err := st.Exec(id, (id*7919)%1000003, benchText); err != nil {
				b.Fatal(err)
			}
		}
		st.Close()
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCommit1000RowsPlain(b *testing.B) { benchInserts(b, false, 1000) }
func BenchmarkCommit1000RowsBop(b *testing.B)   { benchInserts(b, true, 1000) }
func BenchmarkCommit1RowPlain(b *testing.B)     { benchInserts(b, false, 1) }
func BenchmarkCommit1RowBop(b *testing.B)       { benchInserts(b, true, 1) }

// BenchmarkReopen opens an existing database (the local state, the
// catalog, the takeover of its own lease) and closes it again (a release
// record), the fixed cost of a process that opens a database it made
// before. For profiling: go test ./vfs -run - -bench Reopen -cpuprofile.
func BenchmarkReopen(b *testing.B) {
	v := newVFS(b, Config{})
	path := filepath.Join(b.TempDir(), "reopen.db")
	db := openDB(b, v, path, "journal_mode(wal)", "synchronous(normal)")
	mustExec(b, db, "CREATE TABLE t(x)")
	mustExec(b, db, "INSERT INTO t VALUES (1)")
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		db := openDB(b, v, path, "journal_mode(wal)", "synchronous(normal)")
		if err := db.Ping(); err != nil {
			b.Fatal(err)
		}
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
