//go:build !linux

package checkpoint

import "os"

// preallocate sizes f (sparse).
func preallocate(f *os.File, size int64) error { return f.Truncate(size) }
