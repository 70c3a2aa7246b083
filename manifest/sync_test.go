package manifest

import (
	"path/filepath"
	"testing"

	"github.com/ncruces/go-sqlite3"
)

func openSyncTestCatalog(t *testing.T) *Catalog {
	c, err := Open(filepath.Join(t.TempDir(), "catalog.db"), Options{Layout: testLayout, PageSize: testPageSize, ChunkPages: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// synchronousLevel is the connection's PRAGMA synchronous (1 NORMAL, 2 FULL).
func (c *Catalog) synchronousLevel() int64 {
	var v int64
	c.queryOne("PRAGMA synchronous", nil, func(s *sqlite3.Stmt) error { v = s.ColumnInt64(0); return nil })
	return v
}

// txLazy commits with synchronous=NORMAL and restores FULL after, every
// time (the PRAGMA runs from the statement cache).
func TestTxLazySetsAndRestoresSynchronous(t *testing.T) {
	c := openSyncTestCatalog(t)
	read := c.synchronousLevel
	for i := 0; i < 4; i++ {
		var in int64
		c.mu.Lock()
		err := c.txLazy(func() error { in = read(); return nil })
		out := read()
		c.mu.Unlock()
		t.Logf("call %d: inside %d after %d err %v", i, in, out, err)
		if in != 1 || out != 2 {
			t.Errorf("call %d: inside %d after %d", i, in, out)
		}
	}
}

// A panic inside a lazy transaction (recovered by a caller, as net/http
// does) must not leave the connection at synchronous=NORMAL, nor commit
// the half-done transaction.
func TestTxLazyPanic(t *testing.T) {
	c := openSyncTestCatalog(t)
	read := c.synchronousLevel
	func() {
		defer func() { recover() }()
		c.mu.Lock()
		defer c.mu.Unlock()
		c.txLazy(func() error {
			if err := c.exec("UPDATE meta SET next_object_id = 777 WHERE id = 1"); err != nil {
				t.Fatal(err)
			}
			panic("boom")
		})
	}()
	var next int64
	c.queryOne("SELECT next_object_id FROM meta WHERE id = 1", nil, func(s *sqlite3.Stmt) error { next = s.ColumnInt64(0); return nil })
	if got := read(); got != 2 {
		t.Errorf("synchronous after a panic in txLazy: %d, want 2 (FULL)", got)
	}
	if next == 777 {
		t.Errorf("the panicking transaction was committed")
	}
}
