package fsstore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bopstore/bop/remote"
)

// Sweep removes temp files that no live writer holds: those of Puts whose
// process died (or that failed to clean up). A writer keeps an exclusive
// flock on its temp file until it is done, and the kernel drops the flock
// when the process dies, so a temp file Sweep can lock has no writer, in
// this process or any other, whatever its age. Sweep only removes names; a
// crashed create-if-absent may have linked the same file to its key, which
// keeps it. New calls Sweep; long-running programs may call it again.
func (s *Store) Sweep(ctx context.Context) (removed int, err error) {
	if s.readOnly {
		return 0, fmt.Errorf("fsstore: sweep: %w", remote.ErrReadOnly)
	}
	des, err := os.ReadDir(s.tmp)
	if err != nil {
		return 0, fmt.Errorf("fsstore: sweep: %w", err)
	}
	for _, de := range des {
		if err := ctx.Err(); err != nil {
			return removed, fmt.Errorf("fsstore: sweep: %w", err)
		}
		name := filepath.Join(s.tmp, de.Name())
		f, err := os.OpenFile(name, os.O_RDONLY|syscallNoFollow, 0)
		if notFound(err) {
			continue // finished meanwhile
		}
		if err != nil {
			return removed, fmt.Errorf("fsstore: sweep: %w", err)
		}
		ok, err := tryFlock(f)
		if err == nil && ok {
			if uerr := unlink(name); uerr == nil {
				removed++
			} else if !notFound(uerr) {
				err = uerr
			}
		}
		f.Close()
		if err != nil {
			return removed, fmt.Errorf("fsstore: sweep %s: %w", name, err)
		}
	}
	return removed, nil
}
