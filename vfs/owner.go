package vfs

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// Ownership: one process owns a database. The owner holds an exclusive,
// non-blocking flock on <db>-bop/lock for as long as any connection of the
// process has the database open; the file's content says who it is. The
// kernel drops the flock when the process dies, however it dies, so a
// crashed owner never blocks the next one.
//
// Invariant: while a process holds the flock, no other process running bop
// opens the database (openOwner fails with ErrOwnedElsewhere), so at most
// one process captures and publishes its transactions.

// Owner describes the process that owns a database.
type Owner struct {
	PID     int       `json:"pid"`
	Host    string    `json:"host"`
	Started time.Time `json:"started"`
	Writer  string    `json:"writer"`
	VFS     string    `json:"vfs"`
	// ReadOnly: the process opened the database read-only (it takes no
	// writer role). LastWriter is then the writer id of the last
	// read-write owner before it, carried forward so that a read-only
	// open after a crash does not hide the crashed writer's id from the
	// next read-write open (ownerLock.prevWriter).
	ReadOnly   bool   `json:"read_only,omitempty"`
	LastWriter string `json:"last_writer,omitempty"`
}

// writerID is the writer id of the last read-write owner as of o: its own,
// or the one it carried forward.
func (o Owner) writerID() string {
	if o.ReadOnly {
		return o.LastWriter
	}
	return o.Writer
}

// wasWriter reports whether id is a writer id this folder's owner o may
// have held: its own (a read-only first connection takes the writer role
// when a read-write one follows, without rewriting the lock file) or the
// one it carried forward.
func (o Owner) wasWriter(id string) bool {
	return id != "" && (id == o.Writer || id == o.LastWriter)
}

func (o Owner) String() string {
	return fmt.Sprintf("pid %d on %s (writer %s, since %s)", o.PID, o.Host, o.Writer, o.Started.UTC().Format(time.RFC3339))
}

// ownerLock is a held ownership lock.
type ownerLock struct {
	f     *os.File
	owner Owner
	// prev is the owner named in the file when the lock was taken: the
	// last process that owned the database here. It is dead or has let go
	// (we hold the flock), so a remote lease held by its writer id is
	// ours to take over at once (a crash must not block its own restart
	// for LeaseTTL).
	prev Owner
}

// prevWrote reports whether writer id was held by a previous owner of
// this folder (which is gone: we hold the flock), so that a remote lease
// it holds is ours to take over.
func (l *ownerLock) prevWrote(id string) bool { return l.prev.wasWriter(id) }

// maxOwnerFile bounds what is read of a lock file written by someone else.
const maxOwnerFile = 4096

// openOwner takes the ownership lock of the database whose lock file is
// path, or fails with ErrOwnedElsewhere naming the holder.
func openOwner(path string, me Owner) (*ownerLock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("bop: open lock file: %w", err)
	}
	ok, err := tryLockFile(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("bop: lock %s: %w", path, err)
	}
	if !ok {
		b := make([]byte, maxOwnerFile)
		n, _ := f.ReadAt(b, 0)
		f.Close()
		other, derr := decodeOwner(b[:n])
		if derr != nil {
			return nil, fmt.Errorf("%w: %s is locked by another process (owner unknown: %v)", ErrOwnedElsewhere, path, derr)
		}
		return nil, fmt.Errorf("%w: %s", ErrOwnedElsewhere, other)
	}
	old := make([]byte, maxOwnerFile)
	n, _ := f.ReadAt(old, 0)
	prev, _ := decodeOwner(old[:n])
	if me.ReadOnly {
		me.LastWriter = prev.writerID()
	}
	b, err := json.Marshal(me)
	if err != nil {
		f.Close()
		return nil, err
	}
	b = append(b, '\n')
	// Informational only (no fsync): it names us to a process that finds
	// the file locked.
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt(b, 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("bop: write lock file %s: %w", path, err)
	}
	return &ownerLock{f: f, owner: me, prev: prev}, nil
}

// decodeOwner parses a lock file's content.
func decodeOwner(b []byte) (Owner, error) {
	var o Owner
	s := strings.TrimSpace(string(b))
	if s == "" {
		return o, errors.New("lock file is empty")
	}
	if err := json.Unmarshal([]byte(s), &o); err != nil {
		return o, fmt.Errorf("lock file is not owner JSON: %v", err)
	}
	return o, nil
}

// close releases the lock. The file stays (removing it would let a second
// process lock a new file while a third still holds the old one).
func (l *ownerLock) close() error {
	return l.f.Close()
}
