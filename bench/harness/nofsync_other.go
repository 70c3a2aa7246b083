//go:build !linux

package harness

import "errors"

func disableFsync() error {
	return errors.New("harness: BOP_BENCH_NOFSYNC: Linux only")
}
