//go:build !linux

package checkpoint

import "os"

// writeScratch is what writePages reuses between calls.
type writeScratch struct{ buf []byte }

// writePages writes pages back to back at off: copied into one buffer,
// one write.
func writePages(f *os.File, off int64, pages [][]byte, sc *writeScratch) error {
	if len(pages) == 1 {
		_, err := f.WriteAt(pages[0], off)
		return err
	}
	b := sc.buf[:0]
	for _, p := range pages {
		b = append(b, p...)
	}
	sc.buf = b
	_, err := f.WriteAt(b, off)
	return err
}

// startWriteback does nothing here: the final fsync writes the file back
// (on Linux it starts a restored region's write-back early).
func startWriteback(f *os.File, off, n int64) {}
