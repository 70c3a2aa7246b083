package wal

import "golang.org/x/sys/cpu"

func init() {
	if cpu.X86.HasAVX2 {
		t := newCksumTable()
		checksumBlocks = func(b []byte, s [2]uint32) [2]uint32 {
			s0, s1 := checksumBlocksAVX2(b, s[0], s[1], t)
			return [2]uint32{s0, s1}
		}
	}
}

// checksumBlocksAVX2 is checksumBlocksGeneric with AVX2 (cksum_amd64.s).
//
//go:noescape
func checksumBlocksAVX2(b []byte, s0, s1 uint32, t *cksumTable) (r0, r1 uint32)
