package checkpoint

import (
	"os"
	"syscall"
)

// preallocate gives f its final size with its blocks allocated in one
// go (fallocate), so that the parallel, out-of-order chunk writes of a
// restore land in contiguous extents instead of filling holes one by
// one. Where fallocate is not supported it falls back to a sparse
// Truncate.
func preallocate(f *os.File, size int64) error {
	if size > 0 {
		if err := syscall.Fallocate(int(f.Fd()), 0, 0, size); err == nil {
			return nil
		}
	}
	return f.Truncate(size)
}
