package fsstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// treeLock serialises every change of the key tree among the goroutines
// of this process (sem) and among processes (flock on the lock file; flock
// belongs to the open file description, so within a process the semaphore
// must come first). It is held only around metadata operations (stat,
// rename, link, unlink, mkdir, rmdir, reading the stamp), never while
// object bytes stream.
type treeLock struct {
	sem chan struct{}
	f   *os.File
}

func openTreeLock(path string) (*treeLock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("fsstore: open lock file: %w", err)
	}
	return &treeLock{sem: make(chan struct{}, 1), f: f}, nil
}

// lock takes the tree lock, giving up when ctx ends.
func (l *treeLock) lock(ctx context.Context) error {
	select {
	case l.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	// flock without blocking, polled: a blocked flock could not see ctx.
	wait := 20 * time.Microsecond
	for {
		ok, err := tryFlock(l.f)
		if err != nil {
			<-l.sem
			return fmt.Errorf("fsstore: lock: %w", err)
		}
		if ok {
			return nil
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			<-l.sem
			return ctx.Err()
		}
		wait = min(2*wait, 2*time.Millisecond)
	}
}

func (l *treeLock) unlock() {
	// Unlocking an flock we hold cannot fail short of a bad descriptor;
	// closing the file (or process exit) releases it in any case.
	_ = funlock(l.f)
	<-l.sem
}

func (l *treeLock) close() error { return l.f.Close() }

// stamp issues a modification time for a new object: the current time in
// microseconds, or one microsecond past the last stamp issued on this root
// if the clock has not moved on (or went backwards). Stamps are therefore
// unique across every process sharing the root, which makes ETags unique
// (see etag.go). Microseconds, not nanoseconds, so that file systems that
// keep only microseconds (some network and FUSE file systems) store the
// stamp exactly; New checks that they do.
//
// The last stamp lives in the lock file, unsynced: after a power loss it
// may roll back, but the wall clock will have moved past it by then.
func (l *treeLock) stamp(ctx context.Context) (time.Time, error) {
	if err := l.lock(ctx); err != nil {
		return time.Time{}, err
	}
	defer l.unlock()
	var b [8]byte
	n, err := l.f.ReadAt(b[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return time.Time{}, fmt.Errorf("fsstore: read stamp: %w", err)
	}
	var last int64
	if n == 8 {
		last = int64(binary.LittleEndian.Uint64(b[:]))
	}
	next := max(time.Now().UnixMicro(), last+1)
	binary.LittleEndian.PutUint64(b[:], uint64(next))
	if _, err := l.f.WriteAt(b[:], 0); err != nil {
		return time.Time{}, fmt.Errorf("fsstore: write stamp: %w", err)
	}
	return time.UnixMicro(next), nil
}
