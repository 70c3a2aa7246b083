package wal

import (
	"encoding/binary"
	"math/rand/v2"
	"runtime"
	"testing"

	"golang.org/x/sys/cpu"
)

// TestChecksumForms holds the block forms (the vector one this CPU uses,
// and the Go form of the same algebra) to the scalar steps, for every
// SQLite page size, a frame header in front, odd lengths and seeds.
func TestChecksumForms(t *testing.T) {
	if runtime.GOARCH == "amd64" && cpu.X86.HasAVX2 && checksumBlocks == nil {
		t.Fatal("this CPU has AVX2 but the vector checksum is not in use")
	}
	tab := newCksumTable()
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 65536+cksumBlock+64+32)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	lengths := []int{0, 8, 504, 512, 520, 1024, 1536 + 8, 4096, 4096 + 24, 8192, 16384, 32768, 65536, 65536 + 512 + 56}
	for n := 8; n < 2048; n += 8 * (1 + rng.IntN(13)) {
		lengths = append(lengths, n)
	}
	seeds := [][2]uint32{{0, 0}, {1, 2}, {0xffffffff, 0xffffffff}, {rng.Uint32(), rng.Uint32()}}
	for _, n := range lengths {
		for _, off := range []int{0, 1, 3, 8, 17, 24, 31} { // unaligned starts too
			b := buf[off : off+n]
			for _, s := range seeds {
				want := walChecksumScalar(false, b, s)
				if got := walChecksum(false, b, s); got != want {
					t.Fatalf("len %d off %d seed %v: walChecksum %v, scalar %v", n, off, s, got, want)
				}
				k := n &^ (cksumBlock - 1)
				mid := checksumBlocksGeneric(tab, b[:k], s)
				if got := walChecksumScalar(false, b[k:], mid); got != want {
					t.Fatalf("len %d off %d seed %v: generic blocks %v, scalar %v", n, off, s, got, want)
				}
				if checksumBlocks != nil && k > 0 {
					if got, gen := checksumBlocks(b[:k], s), mid; got != gen {
						t.Fatalf("len %d off %d seed %v: vector blocks %v, generic %v", n, off, s, got, gen)
					}
				}
				// Big-endian words keep the scalar steps.
				if got, want := walChecksum(true, b, s), walChecksumScalar(true, b, s); got != want {
					t.Fatalf("big-endian len %d: %v, want %v", n, got, want)
				}
			}
		}
	}
}

// TestChecksumKnownFrame checks the checksum against SQLite's definition
// written out step by step (not the unrolled loop), on a page whose words
// make every coefficient count.
func TestChecksumKnownFrame(t *testing.T) {
	page := make([]byte, 4096)
	for i := 0; i < len(page); i += 4 {
		binary.LittleEndian.PutUint32(page[i:], uint32(i)*2654435761)
	}
	s0, s1 := uint32(7), uint32(11)
	for i := 0; i < len(page); i += 8 {
		s0 += binary.LittleEndian.Uint32(page[i:]) + s1
		s1 += binary.LittleEndian.Uint32(page[i+4:]) + s0
	}
	if got := walChecksum(false, page, [2]uint32{7, 11}); got != [2]uint32{s0, s1} {
		t.Fatalf("got %v, want %v", got, [2]uint32{s0, s1})
	}
}

func FuzzChecksum(f *testing.F) {
	// Random bytes: with zeros a wrong coefficient or a dropped chunk
	// would add nothing and go unseen.
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{520, 1024, 4096 + 24} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		f.Add(b, rng.Uint32(), uint32(0xffffffff))
	}
	f.Fuzz(func(t *testing.T, b []byte, s0, s1 uint32) {
		b = b[:len(b)&^7]
		s := [2]uint32{s0, s1}
		if got, want := walChecksum(false, b, s), walChecksumScalar(false, b, s); got != want {
			t.Fatalf("len %d: %v, want %v", len(b), got, want)
		}
	})
}

func BenchmarkChecksum(b *testing.B) {
	page := make([]byte, 4096)
	for i := range page {
		page[i] = byte(i * 7)
	}
	for _, form := range []struct {
		name string
		fn   func([]byte, [2]uint32) [2]uint32
	}{
		{"scalar", func(p []byte, s [2]uint32) [2]uint32 { return walChecksumScalar(false, p, s) }},
		{"dispatch", func(p []byte, s [2]uint32) [2]uint32 { return walChecksum(false, p, s) }},
	} {
		b.Run(form.name, func(b *testing.B) {
			b.SetBytes(int64(len(page)))
			var s [2]uint32
			for b.Loop() {
				s = form.fn(page, s)
			}
		})
	}
}

// pageChecksum (a frame verified from its page's own sum) equals
// frameChecksum for every page size, both byte orders, any state.
func TestPageChecksum(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	for ps := 512; ps <= 65536; ps *= 2 {
		page := make([]byte, ps)
		pow := stepPower(uint32(ps / 8))
		for range 8 {
			for i := range page {
				page[i] = byte(rng.Uint32())
			}
			var hdr frameHeader
			for i := range hdr {
				hdr[i] = byte(rng.Uint32())
			}
			prev := [2]uint32{rng.Uint32(), rng.Uint32()}
			for _, be := range []bool{false, true} {
				sum := walChecksum(be, page, [2]uint32{})
				if got, want := pageChecksum(be, &hdr, sum, pow, prev), frameChecksum(be, &hdr, page, prev); got != want {
					t.Fatalf("page size %d, big-endian %v: %08x, want %08x", ps, be, got, want)
				}
			}
		}
	}
}
