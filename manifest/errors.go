package manifest

import (
	"errors"
	"fmt"
)

// Sentinel errors. They are wrapped with context; callers test with
// errors.Is.
var (
	// ErrFenced: another writer has taken over the database. A fenced
	// writer stops writing: it never overwrites a record, and every later
	// Publish fails with this error until a new Takeover.
	ErrFenced = errors.New("manifest: fenced: another writer owns the database")

	// ErrOwnedElsewhere: an open for writing found another writer that
	// published or renewed the head within the lease TTL, or that won a
	// takeover race. The error text names the owner.
	ErrOwnedElsewhere = errors.New("manifest: database owned by another writer")

	// ErrUnsafeStore: the store let two conditional creates of one key both
	// succeed (or ignored If-Match), so it cannot fence writers.
	ErrUnsafeStore = errors.New("manifest: store does not enforce conditional writes")

	// ErrCorrupt: bytes read from the store or from the catalog failed
	// their integrity check or do not parse. The error names the key.
	ErrCorrupt = errors.New("manifest: corrupt")

	// ErrSchemaTooNew: the catalog file was written by a newer version of
	// bop; this version refuses to open it rather than misread it.
	ErrSchemaTooNew = errors.New("manifest: catalog schema is newer than this version of bop")

	// ErrFormatTooNew: a remote head, record, pin or snapshot carries a
	// format number newer than this version understands.
	ErrFormatTooNew = errors.New("manifest: remote format is newer than this version of bop")

	// ErrBadRecord: a record breaks an invariant of the catalog (seq gap,
	// txid going backwards, unknown object, ...). Nothing is written.
	ErrBadRecord = errors.New("manifest: invalid record")

	// ErrBadPage: a page number of 0 or above MaxPgno.
	ErrBadPage = errors.New("manifest: invalid page number")

	// ErrSnapshotTooOld: the requested boundary is older than the history
	// the catalog keeps.
	ErrSnapshotTooOld = errors.New("manifest: snapshot too old")

	// ErrDiverged: the local catalog's newest record differs from the
	// remote record of the same seq: the local history forked and must be
	// rebuilt from the remote (OpenRemote), never republished.
	ErrDiverged = errors.New("manifest: local catalog diverged from the remote log")

	// ErrBehind: the remote log no longer holds the records after the local
	// tip (they are only in a newer catalog snapshot): rebuild with
	// OpenRemote.
	ErrBehind = errors.New("manifest: local catalog is behind the remote snapshot")

	// ErrLeaseConflict: a lease overlaps one held by another holder. The
	// error names the holder.
	ErrLeaseConflict = errors.New("manifest: lease conflict")

	// ErrNotWriter: the Writer has not taken over (or has released).
	ErrNotWriter = errors.New("manifest: not the writer: call Takeover first")

	// ErrJobNotFound: no job with that id.
	ErrJobNotFound = errors.New("manifest: job not found")

	// ErrJobTransition: a job state change the job state machine forbids
	// (backwards, out of a final state, abandoning a published job,
	// completing an unpublished one). Nothing is written.
	ErrJobTransition = errors.New("manifest: forbidden job state transition")
)

// corruptf builds an ErrCorrupt error naming where the bad bytes came from.
func corruptf(where, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrCorrupt, where, fmt.Sprintf(format, args...))
}
