package remote

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// bodyStore records the body of its one Put.
type bodyStore struct {
	Store
	size int64 // the body's length by seeking to its end
	got  []byte
}

func (s *bodyStore) Put(_ context.Context, _ string, r io.Reader, _ PutOptions) (PutResult, error) {
	s.size = -1
	if sk, ok := r.(io.Seeker); ok {
		s.size, _ = sk.Seek(0, io.SeekEnd)
		sk.Seek(0, io.SeekStart)
	}
	var err error
	s.got, err = io.ReadAll(r)
	return PutResult{Size: int64(len(s.got))}, err
}

type filePutStore struct {
	bodyStore
	took *os.File
}

func (s *filePutStore) PutFile(_ context.Context, _ string, f *os.File, _ PutOptions) (PutResult, error) {
	s.took = f
	return PutResult{}, nil
}

// PutFile hands the file to a FilePutter; any other store gets a body of
// exactly the file's bytes from offset 0, whatever the file's offset, that
// a backend can seek in and size (s3store sends such a body in sections).
func TestPutFileFallback(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	want := bytes.Repeat([]byte("0123456789"), 1000)
	if err := os.WriteFile(path, want, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(1234, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	var plain bodyStore
	if _, err := PutFile(context.Background(), &plain, "k", f, PutOptions{Size: int64(len(want))}); err != nil {
		t.Fatal(err)
	}
	if plain.size != int64(len(want)) || !bytes.Equal(plain.got, want) {
		t.Fatalf("body of %d bytes (seek end %d), want the file's %d", len(plain.got), plain.size, len(want))
	}
	var fp filePutStore
	if _, err := PutFile(context.Background(), &fp, "k", f, PutOptions{Size: int64(len(want))}); err != nil {
		t.Fatal(err)
	}
	if fp.took != f || fp.got != nil {
		t.Fatal("a FilePutter was not handed the file")
	}
}
