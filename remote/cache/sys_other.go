//go:build !unix

package cache

import (
	"fmt"
	"os"
)

// lockDir opens the lock file. Without flock, keeping one Cache per
// directory is the caller's duty on this platform.
func lockDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	return f, nil
}
