package delta

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"testing"
)

// go test -run '^$' -bench . -benchmem ./delta

func benchObject(b *testing.B, kind Kind, ps uint32, n uint32) []byte {
	b.Helper()
	var buf bytes.Buffer
	enc, err := NewEncoder(&buf, Header{Kind: kind, PageSize: ps, ObjectID: 1, FirstPgno: 1, PageCount: n, MaxTxid: 1})
	if err != nil {
		b.Fatal(err)
	}
	page := make([]byte, ps)
	for i := uint32(0); i < n; i++ {
		binary.LittleEndian.PutUint32(page, 1+i)
		if err := enc.Add(1+i, page); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := enc.Close(); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkEncode streams a 16 MiB base object to io.Discard.
func BenchmarkEncode(b *testing.B) {
	for _, ps := range []uint32{4096, 65536} {
		n := uint32(16<<20) / ps
		b.Run(fmt.Sprint(ps), func(b *testing.B) {
			page := make([]byte, ps)
			b.SetBytes(int64(n) * int64(ps))
			b.ReportAllocs()
			for b.Loop() {
				enc, err := NewEncoder(io.Discard, Header{Kind: KindBase, PageSize: ps, FirstPgno: 1, PageCount: n, MaxTxid: 1})
				if err != nil {
					b.Fatal(err)
				}
				for i := uint32(0); i < n; i++ {
					binary.LittleEndian.PutUint32(page, 1+i)
					if err := enc.Add(1+i, page); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := enc.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReadPage reads pages of an in-memory 16 MiB object: the cost
// of lookup, one ReadAt and verification per page.
func BenchmarkReadPage(b *testing.B) {
	for _, kind := range []Kind{KindBase, KindDelta} {
		b.Run(kind.String(), func(b *testing.B) {
			const ps, n = 4096, 4096
			data := benchObject(b, kind, ps, n)
			o, err := Open(bytes.NewReader(data), int64(len(data)))
			if err != nil {
				b.Fatal(err)
			}
			dst := make([]byte, ps)
			b.SetBytes(ps)
			b.ReportAllocs()
			i := uint32(0)
			for b.Loop() {
				i = (i + 2654435761) % n // scattered pages
				if _, err := o.ReadPage(1+i, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOpen opens a 64 MiB base object (16384 pages): two reads and
// the directory decode.
func BenchmarkOpen(b *testing.B) {
	data := benchObject(b, KindBase, 4096, 16384)
	r := bytes.NewReader(data)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Open(r, int64(len(data))); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify checks a whole 16 MiB object.
func BenchmarkVerify(b *testing.B) {
	data := benchObject(b, KindDelta, 4096, 4096)
	r := bytes.NewReader(data)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if err := Verify(r, int64(len(data))); err != nil {
			b.Fatal(err)
		}
	}
}
