package wal

import "encoding/binary"

// SQLite's WAL checksum (walChecksumBytes) takes the data as 32-bit words
// x0, x1, ... two at a time:
//
//	s0 += x[2i] + s1
//	s1 += x[2i+1] + s0
//
// Every byte capture sees committed passes through it once, which made it
// the largest single cost of capture (bench/RESULTS-vfs.md, session 11).
// Step by step it is a chain of dependent additions (about 16 GB/s here);
// but the step is linear in (s0, s1): with M = [[1 1] [1 2]],
//
//	(s0, s1) <- M·(s0, s1) + (x[2i], x[2i]+x[2i+1])
//
// so a block of 64 steps (512 bytes) is
//
//	(s0, s1) <- M^64·(s0, s1) + Σ_i M^(63-i)·(x[2i], x[2i]+x[2i+1])
//
// a fixed 2x2 matrix on the state plus two dot products of the block's
// 128 words with fixed coefficients, all modulo 2^32 as SQLite's unsigned
// arithmetic is. The dot products have no chain: vector multiplies do
// them (cksum_amd64.s). The state is kept as 8 lanes whose sum is the
// scalar state, so the matrix applies lane by lane and the lanes are summed
// once at the end. Any length is a number of whole blocks, then scalar
// steps for the rest; big-endian words (a WAL written on a big-endian
// machine: only read at reconciliation) always take the scalar steps.

// walChecksum continues SQLite's WAL checksum over b, whose length must be
// a multiple of 8.
func walChecksum(bigEndian bool, b []byte, s [2]uint32) [2]uint32 {
	if !bigEndian && len(b) >= cksumBlock && checksumBlocks != nil {
		n := len(b) &^ (cksumBlock - 1)
		s = checksumBlocks(b[:n], s)
		b = b[n:]
	}
	return walChecksumScalar(bigEndian, b, s)
}

const (
	cksumBlock = 512            // bytes per block
	cksumSteps = cksumBlock / 8 // steps (word pairs) per block
)

// checksumBlocks, when the CPU has a vector form, continues the
// little-endian checksum over whole blocks (len(b) a multiple of
// cksumBlock). Nil otherwise.
var checksumBlocks func(b []byte, s [2]uint32) [2]uint32

// cksumTable holds a block's coefficients, laid out for 8-lane vectors:
// chunk j (words 8j..8j+7 of the block) is coef[16j:16j+8] for s0 and
// coef[16j+8:16j+16] for s1; m is M^64, row by row.
type cksumTable struct {
	coef [2 * cksumSteps * 2]uint32
	m    [4]uint32
}

// newCksumTable computes the coefficients: step i's contribution is
// M^(63-i) applied to (x[2i], x[2i]+x[2i+1]).
func newCksumTable() *cksumTable {
	var t cksumTable
	pow := [cksumSteps + 1][4]uint32{{1, 0, 0, 1}} // M^k, row by row
	for k := 1; k <= cksumSteps; k++ {
		p := pow[k-1]
		// M^k = M^(k-1)·M, M = [[1 1] [1 2]].
		pow[k] = [4]uint32{p[0] + p[1], p[0] + 2*p[1], p[2] + p[3], p[2] + 2*p[3]}
	}
	var ca, cb [2 * cksumSteps]uint32
	for i := 0; i < cksumSteps; i++ {
		p := pow[cksumSteps-1-i]
		ca[2*i], ca[2*i+1] = p[0]+p[1], p[1]
		cb[2*i], cb[2*i+1] = p[2]+p[3], p[3]
	}
	for j := 0; j < 2*cksumSteps/8; j++ {
		copy(t.coef[16*j:16*j+8], ca[8*j:8*j+8])
		copy(t.coef[16*j+8:16*j+16], cb[8*j:8*j+8])
	}
	t.m = pow[cksumSteps]
	return &t
}

// checksumBlocksGeneric is what the vector form computes, in Go: the
// tests hold both to walChecksumScalar.
func checksumBlocksGeneric(t *cksumTable, b []byte, s [2]uint32) [2]uint32 {
	for ; len(b) >= cksumBlock; b = b[cksumBlock:] {
		s0 := t.m[0]*s[0] + t.m[1]*s[1]
		s1 := t.m[2]*s[0] + t.m[3]*s[1]
		for j := 0; j < 2*cksumSteps/8; j++ {
			for l := 0; l < 8; l++ {
				x := binary.LittleEndian.Uint32(b[4*(8*j+l):])
				s0 += t.coef[16*j+l] * x
				s1 += t.coef[16*j+8+l] * x
			}
		}
		s = [2]uint32{s0, s1}
	}
	return s
}

// walChecksumScalar is walChecksum one step at a time, unrolled by 4
// word pairs: the form every length, byte order and CPU can take.
func walChecksumScalar(bigEndian bool, b []byte, s [2]uint32) [2]uint32 {
	s0, s1 := s[0], s[1]
	if bigEndian {
		for len(b) >= 32 {
			_ = b[31]
			s0 = s0 + binary.BigEndian.Uint32(b[0:]) + s1
			s1 = s1 + binary.BigEndian.Uint32(b[4:]) + s0
			s0 = s0 + binary.BigEndian.Uint32(b[8:]) + s1
			s1 = s1 + binary.BigEndian.Uint32(b[12:]) + s0
			s0 = s0 + binary.BigEndian.Uint32(b[16:]) + s1
			s1 = s1 + binary.BigEndian.Uint32(b[20:]) + s0
			s0 = s0 + binary.BigEndian.Uint32(b[24:]) + s1
			s1 = s1 + binary.BigEndian.Uint32(b[28:]) + s0
			b = b[32:]
		}
		for len(b) >= 8 {
			s0 = s0 + binary.BigEndian.Uint32(b[0:]) + s1
			s1 = s1 + binary.BigEndian.Uint32(b[4:]) + s0
			b = b[8:]
		}
		return [2]uint32{s0, s1}
	}
	for len(b) >= 32 {
		_ = b[31]
		s0 = s0 + binary.LittleEndian.Uint32(b[0:]) + s1
		s1 = s1 + binary.LittleEndian.Uint32(b[4:]) + s0
		s0 = s0 + binary.LittleEndian.Uint32(b[8:]) + s1
		s1 = s1 + binary.LittleEndian.Uint32(b[12:]) + s0
		s0 = s0 + binary.LittleEndian.Uint32(b[16:]) + s1
		s1 = s1 + binary.LittleEndian.Uint32(b[20:]) + s0
		s0 = s0 + binary.LittleEndian.Uint32(b[24:]) + s1
		s1 = s1 + binary.LittleEndian.Uint32(b[28:]) + s0
		b = b[32:]
	}
	for len(b) >= 8 {
		s0 = s0 + binary.LittleEndian.Uint32(b[0:]) + s1
		s1 = s1 + binary.LittleEndian.Uint32(b[4:]) + s0
		b = b[8:]
	}
	return [2]uint32{s0, s1}
}

// A page's part of a frame's checksum. The checksum is linear in its
// state, so over n bytes (n/8 steps) it is
//
//	F(s, data) = M^(n/8)·s + F(0, data)
//
// Capture, reading pages back (ReadBack), keeps F(0, page) of each frame
// it has seen whole: a frame whose header SQLite rewrites later
// (walRewriteChecksums) is verified from its header and that sum, without
// reading the page again (pageChecksum, TestPageChecksum).

// stepPower returns M^k, row by row.
func stepPower(k uint32) [4]uint32 {
	r := [4]uint32{1, 0, 0, 1}
	m := [4]uint32{1, 1, 1, 2}
	for ; k > 0; k >>= 1 {
		if k&1 != 0 {
			r = mul2(r, m)
		}
		m = mul2(m, m)
	}
	return r
}

func mul2(a, b [4]uint32) [4]uint32 {
	return [4]uint32{
		a[0]*b[0] + a[1]*b[2], a[0]*b[1] + a[1]*b[3],
		a[2]*b[0] + a[3]*b[2], a[2]*b[1] + a[3]*b[3],
	}
}

// pageChecksum is frameChecksum for a page whose own sum F(0, page) is
// sum, with pow = stepPower(pageSize/8).
func pageChecksum(bigEndian bool, hdr *frameHeader, sum [2]uint32, pow [4]uint32, prev [2]uint32) [2]uint32 {
	s := walChecksum(bigEndian, hdr[:8], prev)
	return [2]uint32{pow[0]*s[0] + pow[1]*s[1] + sum[0], pow[2]*s[0] + pow[3]*s[1] + sum[1]}
}
