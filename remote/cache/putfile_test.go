package cache

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fsstore"
)

func getAll(t *testing.T, s remote.Store, key string) []byte {
	t.Helper()
	rc, _, err := s.Get(t.Context(), key, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func stagedFile(t *testing.T, dir string, b []byte) *os.File {
	t.Helper()
	path := filepath.Join(dir, "staging")
	os.Remove(path)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// PutFile passes through to a store that takes the file (fsstore: the
// object is the file itself) and drops the key's cached blocks; over a
// store that cannot take files it is a plain Put.
func TestPutFilePassesThrough(t *testing.T) {
	dir := t.TempDir()
	fs, err := fsstore.New(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	c := newCache(t, fs, Config{})
	key := objKey(t, 1)
	if _, err := c.Put(t.Context(), key, bytes.NewReader([]byte("old bytes")), remote.PutOptions{Size: 9}); err != nil {
		t.Fatal(err)
	}
	if got := getAll(t, c, key); string(got) != "old bytes" { // now cached
		t.Fatalf("got %q", got)
	}
	f := stagedFile(t, dir, []byte("new bytes!"))
	if _, err := c.PutFile(t.Context(), key, f, remote.PutOptions{Size: 10}); err != nil {
		t.Fatal(err)
	}
	si, err := os.Stat(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	oi, err := os.Stat(filepath.Join(fs.Root(), filepath.FromSlash(key)))
	if err != nil || !os.SameFile(si, oi) {
		t.Fatalf("the object is not the staged file (%v)", err)
	}
	if got := getAll(t, c, key); string(got) != "new bytes!" {
		t.Fatalf("after PutFile the cache serves %q", got)
	}

	// Over a store without PutFile (the metering wrapper): one Put.
	m, _ := newMetered(t)
	c2 := newCache(t, m, Config{})
	f2 := stagedFile(t, dir, []byte("copied"))
	before := m.Stats().Put.Requests
	if _, err := c2.PutFile(t.Context(), key, f2, remote.PutOptions{Size: 6}); err != nil {
		t.Fatal(err)
	}
	if n := m.Stats().Put.Requests - before; n != 1 {
		t.Fatalf("%d puts reached the inner store", n)
	}
	if got := getAll(t, c2, key); string(got) != "copied" {
		t.Fatalf("got %q", got)
	}
}
