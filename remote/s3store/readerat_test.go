package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/bopstore/bop/remote"
)

// TestReaderAtBodies: seekable bodies (bytes.Reader, *os.File,
// io.SectionReader) go up in sections, from their current position,
// around the threshold and over several parts; the result is the same as
// for a stream, and the body ends up read to its end.
func TestReaderAtBodies(t *testing.T) {
	s := newTestStore(t, smallParts)
	const th = MinPartSize
	dir := t.TempDir()
	for i, size := range []int64{0, 1, th - 1, th, th + 1, 3*th - 1} {
		const skip = 100 // the body starts 100 bytes into the reader
		data := make([]byte, skip+size)
		(&gen{seed: uint64(100 + i), size: -1}).Read(data)
		want := data[skip:]
		path := filepath.Join(dir, fmt.Sprint(i))
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		bodies := map[string]readerAtBody{
			"bytes":   bytes.NewReader(data),
			"file":    f,
			"section": io.NewSectionReader(bytes.NewReader(data), 0, int64(len(data))),
		}
		for name, r := range bodies {
			if name == "section" && size >= th {
				continue // as bytes.Reader; keeps the race pass short
			}
			if _, err := r.Seek(skip, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			key := fmt.Sprintf("ra/%s-%d", name, size)
			for _, declared := range []int64{-1, size} {
				res, err := s.Put(t.Context(), key, r.(io.Reader), remote.PutOptions{Size: declared})
				if err != nil {
					t.Fatalf("Put(%s, %d bytes, size %d): %v", name, size, declared, err)
				}
				if res.Size != size || res.XXH64 != xxhash.Sum64(want) {
					t.Errorf("Put(%s, %d bytes): %+v, want xxh64 %016x", name, size, res, xxhash.Sum64(want))
				}
				if pos, _ := r.Seek(0, io.SeekCurrent); pos != int64(len(data)) {
					t.Errorf("Put(%s): body left at %d, want its end %d", name, pos, len(data))
				}
				rc, info, err := s.Get(t.Context(), key, 0, -1)
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(rc)
				rc.Close()
				if err != nil || !bytes.Equal(got, want) || info.ETag != res.ETag {
					t.Fatalf("Get(%s): %d bytes, %v; etag %q want %q", key, len(got), err, info.ETag, res.ETag)
				}
				r.Seek(skip, io.SeekStart)
			}
			// A wrong announced size fails and stores nothing new.
			if _, err := s.Put(t.Context(), key+"-bad", r.(io.Reader), remote.PutOptions{Size: size + 1}); err == nil {
				t.Errorf("Put(%s) with a wrong size succeeded", name)
			}
			if _, err := s.Head(t.Context(), key+"-bad"); !errors.Is(err, remote.ErrNotFound) {
				t.Errorf("a failed Put stored %s-bad: %v", key, err)
			}
		}
	}
}

// shrinking claims size bytes but fails reads past cut, like a file
// truncated during the Put.
type shrinking struct {
	*bytes.Reader
	cut int64
}

func (s *shrinking) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > s.cut {
		n := max(0, s.cut-off)
		if n > int64(len(p)) {
			n = int64(len(p))
		}
		copy(p, make([]byte, n))
		s.Reader.ReadAt(p[:n], off)
		return int(n), io.EOF
	}
	return s.Reader.ReadAt(p, off)
}

func (s *shrinking) Read(p []byte) (int, error) { return 0, errors.New("not used") }

// TestReaderAtShrinks: a seekable body that ends before its size fails
// the Put, in one PutObject or in parts, and the upload is aborted.
func TestReaderAtShrinks(t *testing.T) {
	s := newTestStore(t, smallParts)
	for _, size := range []int64{1000, 3 * MinPartSize} {
		data := make([]byte, size)
		r := &shrinking{Reader: bytes.NewReader(data), cut: size - 10}
		key := fmt.Sprintf("shrink/%d", size)
		// In parts, the hashing pass or the part's own upload may see the
		// early end first; either fails the Put.
		_, err := s.Put(t.Context(), key, r, remote.PutOptions{Size: -1})
		if err == nil || size <= MinPartSize && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("Put of a body that ends early: %v; want io.ErrUnexpectedEOF", err)
		}
		if _, err := s.Head(t.Context(), key); !errors.Is(err, remote.ErrNotFound) {
			t.Errorf("Head(%s): %v; want ErrNotFound", key, err)
		}
	}
	if ups := pendingUploads(t, t.Context(), s); len(ups) != 0 {
		t.Errorf("uploads left: %v", ups)
	}
}

// cancelAt cancels a context when anything reads at or past an offset.
type cancelAt struct {
	*bytes.Reader
	at     int64
	cancel func()
}

func (c *cancelAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > c.at {
		c.cancel()
	}
	return c.Reader.ReadAt(p, off)
}

// TestReaderAtCancel: cancelling a sectioned multipart Put returns
// context.Canceled, stores nothing and leaves no upload.
func TestReaderAtCancel(t *testing.T) {
	s := newTestStore(t, smallParts)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	r := &cancelAt{Reader: bytes.NewReader(make([]byte, 4*MinPartSize)), at: 2 * MinPartSize, cancel: cancel}
	_, err := s.Put(ctx, "cancelled", r, remote.PutOptions{Size: -1})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Put: %v; want context.Canceled", err)
	}
	if _, err := s.Head(t.Context(), "cancelled"); !errors.Is(err, remote.ErrNotFound) {
		t.Errorf("Head after a cancelled Put: %v; want ErrNotFound", err)
	}
	if ups := pendingUploads(t, t.Context(), s); len(ups) != 0 {
		t.Errorf("uploads left: %v", ups)
	}
}
