package checkpoint

import (
	"errors"
	"fmt"
)

// Sentinel errors. They are wrapped with context (job, action, txids);
// callers test with errors.Is.
var (
	// ErrFenced: another writer took the database over. The publisher
	// stops for good (it never retries a publish); it also wraps
	// manifest.ErrFenced.
	ErrFenced = errors.New("checkpoint: fenced")

	// ErrBadPlan: a stored plan or progress that does not parse or breaks
	// its own rules. The job is abandoned.
	ErrBadPlan = errors.New("checkpoint: invalid plan")

	// ErrDiverged: the catalog (the remote log) holds transactions the
	// local spool does not continue from: the remote moved on without
	// this node, or the spool lost transactions that were never
	// published. The publisher stops; the VFS quarantines and rebuilds.
	ErrDiverged = errors.New("checkpoint: local spool and remote log diverged")

	// ErrClosed: the publisher is closed.
	ErrClosed = errors.New("checkpoint: publisher closed")

	// ErrCrash is what a test Hook returns to simulate the process dying
	// at that point: the publisher stops at once and cleans up nothing
	// (no lease released, no job finished, staging files left), exactly
	// as a SIGKILL would leave things. Every later call fails with it.
	ErrCrash = errors.New("checkpoint: simulated crash")

	// ErrNothingPublished: Restore of a database with no publish.
	ErrNothingPublished = errors.New("checkpoint: nothing published")
)

// permanentError marks an error that no retry of the same job can cure
// (a refused record, a corrupt spool range, a lease held by someone else,
// a quota that cannot fit): the job is abandoned and the next cycle plans
// afresh.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

func isPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

func errorf(format string, args ...any) error { return fmt.Errorf("checkpoint: "+format, args...) }
