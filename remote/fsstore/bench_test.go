package fsstore

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/bopstore/bop/remote"
)

// Put cost is dominated by the two fsyncs (file, folder); Get and Head by
// open/stat. Results: bench/RESULTS-remote-fsstore.md.

func BenchmarkPut(b *testing.B) {
	for _, size := range []int{4 << 10, 1 << 20, 16 << 20} {
		for _, cond := range []string{"plain", "ifnonematch"} {
			b.Run(fmt.Sprintf("%s/%dKiB", cond, size>>10), func(b *testing.B) {
				s := newStore(b, b.TempDir())
				body := bytes.Repeat([]byte("bop!"), size/4)
				b.SetBytes(int64(size))
				for i := 0; b.Loop(); i++ {
					opts := remote.PutOptions{Size: int64(size)}
					key := "bench/obj"
					if cond == "ifnonematch" {
						opts.IfNoneMatch = true
						key = fmt.Sprintf("bench/obj-%d", i)
					}
					if _, err := s.Put(b.Context(), key, bytes.NewReader(body), opts); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkGetRange(b *testing.B) {
	s := newStore(b, b.TempDir())
	const size = 64 << 20
	if _, err := s.Put(b.Context(), "bench/big", io.LimitReader(zeros{}, size), remote.PutOptions{Size: size}); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 4096)
	b.SetBytes(4096)
	for i := 0; b.Loop(); i++ {
		off := int64(i*7919%(size/4096)) * 4096
		rc, _, err := s.Get(b.Context(), "bench/big", off, 4096)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(rc, buf); err != nil {
			b.Fatal(err)
		}
		rc.Close()
	}
}

func BenchmarkHead(b *testing.B) {
	s := newStore(b, b.TempDir())
	if _, err := s.Put(b.Context(), "bench/h", bytes.NewReader([]byte("x")), remote.PutOptions{Size: 1}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.Head(b.Context(), "bench/h"); err != nil {
			b.Fatal(err)
		}
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// BenchmarkStagedPut is the publisher's pattern: write a staging file
// next to the store, store it under a new key, remove the staging name.
// "copy" streams it through Put; "link" hands it to PutFile.
func BenchmarkStagedPut(b *testing.B) {
	for _, size := range []int{4 << 10, 1 << 20, 16 << 20} {
		for _, how := range []string{"copy", "link"} {
			b.Run(fmt.Sprintf("%s/%dKiB", how, size>>10), func(b *testing.B) {
				dir := b.TempDir()
				s := newStore(b, filepath.Join(dir, "root"))
				body := bytes.Repeat([]byte("bop!"), size/4)
				b.SetBytes(int64(size))
				for i := 0; b.Loop(); i++ {
					path := filepath.Join(dir, "staging")
					f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := f.Write(body); err != nil {
						b.Fatal(err)
					}
					key := fmt.Sprintf("bench/obj-%d", i)
					opts := remote.PutOptions{Size: int64(size)}
					if how == "link" {
						_, err = s.PutFile(b.Context(), key, f, opts)
					} else {
						_, err = s.Put(b.Context(), key, io.NewSectionReader(f, 0, int64(size)), opts)
					}
					if err != nil {
						b.Fatal(err)
					}
					f.Close()
					os.Remove(path)
				}
			})
		}
	}
}
