package harness

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// The filter is for the whole process and cannot be undone: the test runs
// it in a child (this test binary again), which reports by its exit code.
func TestDisableFsync(t *testing.T) {
	if os.Getenv("BOP_HARNESS_NOFSYNC_CHILD") == "1" {
		os.Exit(nofsyncChild())
	}
	// Without the filter, fsync of a closed descriptor fails.
	if err := unix.Fsync(-1); !errors.Is(err, unix.EBADF) {
		t.Fatalf("fsync(-1) = %v, want EBADF", err)
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestDisableFsync$")
	cmd.Env = append(os.Environ(), "BOP_HARNESS_NOFSYNC_CHILD=1", "BOP_HARNESS_NOFSYNC_DIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

// nofsyncChild switches fsync off and checks, in threads other than the
// one that did it too, that fsync and fdatasync no longer run (they
// succeed on a descriptor that does not exist) while other calls do.
func nofsyncChild() int {
	if err := disableFsync(); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 1
	}
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			if err := unix.Fsync(-1); err != nil {
				errs <- errors.New("fsync(-1) ran: " + err.Error())
				return
			}
			if err := unix.Fdatasync(-1); err != nil {
				errs <- errors.New("fdatasync(-1) ran: " + err.Error())
				return
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			return 1
		}
	}
	path := filepath.Join(os.Getenv("BOP_HARNESS_NOFSYNC_DIR"), "f")
	if err := os.WriteFile(path, []byte("x"), 0o644); err != nil {
		os.Stderr.WriteString("write: " + err.Error() + "\n")
		return 1
	}
	if _, err := os.Stat(filepath.Join(os.Getenv("BOP_HARNESS_NOFSYNC_DIR"), "missing")); !errors.Is(err, os.ErrNotExist) {
		os.Stderr.WriteString("other calls changed too\n")
		return 1
	}
	return 0
}
