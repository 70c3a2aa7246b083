package delta

import (
	"fmt"
	"io"

	"github.com/cespare/xxhash/v2"
)

// verifyBlock bounds the memory Verify uses besides the directory.
const verifyBlock = 64 << 10

// Verify checks the whole object of size bytes behind r: header,
// directory, trailer, every frame against its directory entry, and the
// content hash over every byte before the trailer. It reads sequentially
// in blocks of at most 64 KiB (or one frame, if larger) and holds only
// that block and the directory.
func Verify(r io.ReaderAt, size int64) error {
	o, err := Open(r, size)
	if err != nil {
		return err
	}
	return o.Verify()
}

// Verify checks every byte of an opened object (see the function Verify).
func (o *Object) Verify() error {
	ps := o.h.PageSize
	fs := FrameSize(ps)
	perBlock := max(1, verifyBlock/fs)
	buf := make([]byte, perBlock*fs)
	content := xxhash.New()

	// Header.
	if err := readFull(o.r, buf[:HeaderSize], 0); err != nil {
		return fmt.Errorf("delta: verify object %d: header: %w", o.h.ObjectID, err)
	}
	content.Write(buf[:HeaderSize])

	// Frames, a block of whole frames at a time.
	for i := int64(0); i < int64(len(o.entries)); i += perBlock {
		n := min(perBlock, int64(len(o.entries))-i)
		block := buf[:n*fs]
		if err := readFull(o.r, block, FrameOffset(ps, uint32(i))); err != nil {
			return fmt.Errorf("delta: verify object %d: frames from %d: %w", o.h.ObjectID, i, err)
		}
		for j := range n {
			e := o.entries[i+j]
			_, sum, err := DecodeFrame(block[j*fs:(j+1)*fs], e.Pgno, ps)
			if err != nil {
				return fmt.Errorf("delta: verify object %d: frame %d: %w", o.h.ObjectID, e.Index, err)
			}
			if sum != e.Hash {
				return fmt.Errorf("%w: verify object %d: page %d: frame hash %016x, directory says %016x",
					ErrCorrupt, o.h.ObjectID, e.Pgno, sum, e.Hash)
			}
		}
		content.Write(block)
	}

	// Directory section, in blocks.
	end := o.size - TrailerSize
	for off := DirOffset(ps, o.h.PageCount); off < end; {
		block := buf[:min(int64(len(buf)), end-off)]
		if err := readFull(o.r, block, off); err != nil {
			return fmt.Errorf("delta: verify object %d: directory: %w", o.h.ObjectID, err)
		}
		content.Write(block)
		off += int64(len(block))
	}

	if got := content.Sum64(); got != o.hash {
		return fmt.Errorf("%w: object %d: content hash %016x, trailer says %016x", ErrCorrupt, o.h.ObjectID, got, o.hash)
	}
	return nil
}
