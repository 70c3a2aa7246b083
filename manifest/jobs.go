package manifest

import (
	"fmt"
	"time"

	"github.com/ncruces/go-sqlite3"
)

// JobState is a durable job's state. A job moves forward through
// planned -> staged -> uploaded -> published -> completed, or to
// abandoned from a state before published. jobMoves is the whole state
// machine; SaveProgress and FinishJob refuse anything else with
// ErrJobTransition.
type JobState string

const (
	JobPlanned   JobState = "planned"
	JobStaged    JobState = "staged"
	JobUploaded  JobState = "uploaded"
	JobPublished JobState = "published"
	JobCompleted JobState = "completed"
	JobAbandoned JobState = "abandoned"
)

// jobMoves lists, for each state, the states a job in it may move to.
// Invariants it keeps:
//   - no state goes back (a resumed job continues, it never restarts a
//     phase it passed);
//   - published is the commit point (the job's record is in the log):
//     such a job may only become completed, never abandoned, and it is
//     published once (its progress holds the record's seq);
//   - completed needs published first; completed and abandoned are
//     final;
//   - a state may repeat before published (progress within a phase:
//     staged after each action).
//
// A job may skip states forward: a plan with no objects goes from planned
// to uploaded, and a resumed job whose record is found in the log goes
// to published from any earlier state.
var jobMoves = map[JobState][]JobState{
	JobPlanned:   {JobPlanned, JobStaged, JobUploaded, JobPublished, JobAbandoned},
	JobStaged:    {JobStaged, JobUploaded, JobPublished, JobAbandoned},
	JobUploaded:  {JobUploaded, JobPublished, JobAbandoned},
	JobPublished: {JobCompleted},
	JobCompleted: nil,
	JobAbandoned: nil,
}

// Finished reports whether the state is terminal.
func (s JobState) Finished() bool { return s == JobCompleted || s == JobAbandoned }

// Valid reports whether s is one of the job states.
func (s JobState) Valid() bool {
	_, ok := jobMoves[s]
	return ok
}

// CanMoveTo reports whether a job in state s may move to next.
func (s JobState) CanMoveTo(next JobState) bool {
	for _, m := range jobMoves[s] {
		if m == next {
			return true
		}
	}
	return false
}

// Job is a durable job record (checkpoint, compaction, GC...). Every
// phase transition is one catalog transaction, so a crash at any point
// leaves the last saved phase for the restart to resume or abandon.
type Job struct {
	ID        string
	Kind      string
	State     JobState
	Phase     string
	Progress  []byte
	Plan      []byte
	CreatedAt time.Time // written once, by CreateJob
	StartedAt time.Time // written once, by the first StartJob; zero before
	UpdatedAt time.Time
	LastError string
}

// CreateJob records a new job in state planned with its plan.
func (c *Catalog) CreateJob(id, kind string, plan []byte) error {
	if id == "" || kind == "" {
		return fmt.Errorf("manifest: job needs an id and a kind")
	}
	if err := c.lock(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	return c.tx(func() error { return c.createJobLocked(id, kind, plan, false) })
}

func (c *Catalog) createJobLocked(id, kind string, plan []byte, started bool) error {
	if exists, err := c.queryOne("SELECT 1 FROM jobs WHERE id = ?", []any{id}, func(*sqlite3.Stmt) error { return nil }); err != nil {
		return err
	} else if exists {
		return fmt.Errorf("manifest: job %s already exists", id)
	}
	now := c.now().UnixMilli()
	var startedAt any
	if started {
		startedAt = now
	}
	if err := c.exec(`INSERT INTO jobs (id, kind, state, plan, created_at, started_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		id, kind, string(JobPlanned), plan, now, startedAt, now); err != nil {
		return err
	}
	if err := c.logChange("job create", id+" "+kind); err != nil {
		return err
	}
	if started {
		return c.logChange("job start", id)
	}
	return nil
}

// NewJob is a job StartNewJob records.
type NewJob struct {
	ID, Kind string
	// Lease, if set, is registered first (Holder is set to ID): an
	// overlapping lease of another holder fails with ErrLeaseConflict and
	// nothing is recorded.
	Lease *Lease
	// ObjectIDs fresh object ids are reserved (as AllocateObjectIDs).
	ObjectIDs int
	// Plan returns the job's plan given the first reserved id (0 when
	// ObjectIDs is 0). An error records nothing.
	Plan func(firstID uint64) ([]byte, error)
}

// StartNewJob registers the job's lease, reserves its object ids,
// records it (state planned, with its plan) and starts it, in one durable
// transaction: all of it or none of it survives a crash, and it is
// durable when StartNewJob returns, before anything of the job is
// uploaded (ids are never reused for other content). It returns the first
// reserved id.
func (c *Catalog) StartNewJob(j NewJob) (uint64, error) {
	if j.ID == "" || j.Kind == "" || j.Plan == nil || j.ObjectIDs < 0 {
		return 0, fmt.Errorf("manifest: new job needs an id, a kind and a plan")
	}
	if j.Lease != nil {
		l := *j.Lease
		l.Holder = j.ID
		if l.Kind == "" || l.MinTxid > l.MaxTxid {
			return 0, fmt.Errorf("manifest: job %s: bad lease %+v", j.ID, l)
		}
		j.Lease = &l
	}
	if err := c.lock(); err != nil {
		return 0, err
	}
	defer c.mu.Unlock()
	var first uint64
	err := c.tx(func() error {
		if j.Lease != nil {
			if _, err := c.registerLeaseLocked(*j.Lease); err != nil {
				return err
			}
		}
		if j.ObjectIDs > 0 {
			var err error
			if first, err = c.allocateObjectIDsLocked(j.ObjectIDs); err != nil {
				return err
			}
		}
		plan, err := j.Plan(first)
		if err != nil {
			return err
		}
		return c.createJobLocked(j.ID, j.Kind, plan, true)
	})
	if err != nil {
		return 0, err // the reservation rolled back with the transaction
	}
	if j.ObjectIDs > 0 {
		c.meta.nextObjectID = first + uint64(j.ObjectIDs) // committed
	}
	return first, nil
}

// StartJob marks the job started. started_at is set only the first time:
// a resumed job keeps its original start.
func (c *Catalog) StartJob(id string) error {
	if err := c.lock(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	now := c.now().UnixMilli()
	return c.tx(func() error {
		if err := c.exec("UPDATE jobs SET started_at = coalesce(started_at, ?), updated_at = ? WHERE id = ?", now, now, id); err != nil {
			return err
		}
		if c.conn.Changes() != 1 {
			return fmt.Errorf("%w: %s", ErrJobNotFound, id)
		}
		return c.logChange("job start", id)
	})
}

// SaveProgress records a job's state, phase and progress, durably. It
// never touches created_at or started_at. The state must be an allowed
// move from the job's current one (see jobMoves) and not final (FinishJob
// ends jobs): else ErrJobTransition and nothing changes.
func (c *Catalog) SaveProgress(id string, state JobState, phase string, progress []byte) error {
	return c.saveProgress(id, state, phase, progress, false)
}

// SaveProgressLazy is SaveProgress committed without an fsync (see
// txLazy): a process crash keeps it, a power loss may lose it (and later
// lazy commits), leaving the job in an earlier saved state. Only for
// progress whose loss makes the job repeat work it can repeat.
func (c *Catalog) SaveProgressLazy(id string, state JobState, phase string, progress []byte) error {
	return c.saveProgress(id, state, phase, progress, true)
}

func (c *Catalog) saveProgress(id string, state JobState, phase string, progress []byte, lazy bool) error {
	if !state.Valid() {
		return fmt.Errorf("%w: job %s: unknown state %q", ErrJobTransition, id, state)
	}
	if state.Finished() {
		return fmt.Errorf("%w: job %s: %s is a final state: use FinishJob", ErrJobTransition, id, state)
	}
	if err := c.lock(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	return c.txFor(lazy)(func() error {
		cur, err := c.jobStateLocked(id)
		if err != nil {
			return err
		}
		if !cur.CanMoveTo(state) {
			return fmt.Errorf("%w: job %s: %s -> %s", ErrJobTransition, id, cur, state)
		}
		if err := c.exec("UPDATE jobs SET state = ?, phase = ?, progress = ?, updated_at = ? WHERE id = ?",
			string(state), phase, progress, c.now().UnixMilli(), id); err != nil {
			return err
		}
		return c.logChange("job progress", fmt.Sprintf("%s %s %s", id, state, phase))
	})
}

// FinishJob ends a job, durably: completed (only from published), or
// abandoned with the error that ended it (only before published: a
// published job's record is committed in the log). The leases the job
// holds (holder = its id) are released in the same transaction: a
// finished job holds none. A forbidden move is ErrJobTransition and
// changes nothing.
func (c *Catalog) FinishJob(id string, state JobState, lastErr string) error {
	return c.finishJob(id, state, lastErr, false)
}

// FinishJobLazy is FinishJob committed without an fsync (see txLazy): a
// power loss may lose it, leaving the job unfinished in its earlier saved
// state, with its leases. Only for a job whose finish is idempotent, e.g.
// a published one (the restart finishes it again).
func (c *Catalog) FinishJobLazy(id string, state JobState, lastErr string) error {
	return c.finishJob(id, state, lastErr, true)
}

// CompletePublishedLazy ends a job whose publish record is in the catalog
// (the caller found it there, or applied it) in one lazy commit: the job
// moves through published (if not there yet) to completed, with its final
// phase and progress, and its leases are released. It saves a separate
// commit of the published state: losing this one (a power loss) leaves
// the job in its earlier saved state, and since its record is in the
// catalog, recovery marks it published and finishes it again, exactly as
// after losing a lazy published save.
func (c *Catalog) CompletePublishedLazy(id, phase string, progress []byte) error {
	if err := c.lock(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	return c.txLazy(func() error {
		cur, err := c.jobStateLocked(id)
		if err != nil {
			return err
		}
		if cur != JobPublished && !cur.CanMoveTo(JobPublished) {
			return fmt.Errorf("%w: job %s: %s -> %s", ErrJobTransition, id, cur, JobCompleted)
		}
		if err := c.exec("UPDATE jobs SET state = ?, phase = ?, progress = ?, last_error = '', updated_at = ? WHERE id = ?",
			string(JobCompleted), phase, progress, c.now().UnixMilli(), id); err != nil {
			return err
		}
		if err := c.releaseJobLeasesLocked(id); err != nil {
			return err
		}
		return c.logChange("job finish", fmt.Sprintf("%s %s %s", id, JobCompleted, phase))
	})
}

// releaseJobLeasesLocked drops the leases job id holds (inside a
// transaction).
func (c *Catalog) releaseJobLeasesLocked(id string) error {
	if err := c.exec("DELETE FROM leases WHERE holder = ?", id); err != nil {
		return err
	}
	if n := c.conn.Changes(); n > 0 {
		return c.logChange("lease release", fmt.Sprintf("%d of %s", n, id))
	}
	return nil
}

func (c *Catalog) finishJob(id string, state JobState, lastErr string, lazy bool) error {
	if !state.Finished() {
		return fmt.Errorf("%w: job %s: %q is not a final state", ErrJobTransition, id, state)
	}
	if err := c.lock(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	return c.txFor(lazy)(func() error {
		cur, err := c.jobStateLocked(id)
		if err != nil {
			return err
		}
		if !cur.CanMoveTo(state) {
			return fmt.Errorf("%w: job %s: %s -> %s", ErrJobTransition, id, cur, state)
		}
		if err := c.exec("UPDATE jobs SET state = ?, last_error = ?, updated_at = ? WHERE id = ?",
			string(state), lastErr, c.now().UnixMilli(), id); err != nil {
			return err
		}
		if err := c.releaseJobLeasesLocked(id); err != nil {
			return err
		}
		return c.logChange("job finish", fmt.Sprintf("%s %s %s", id, state, lastErr))
	})
}

func (c *Catalog) jobStateLocked(id string) (JobState, error) {
	var st JobState
	found, err := c.queryOne("SELECT state FROM jobs WHERE id = ?", []any{id}, func(s *sqlite3.Stmt) error {
		st = JobState(s.ColumnText(0))
		return nil
	})
	if err != nil {
		return "", err
	}
	if !found {
		return "", fmt.Errorf("%w: %s", ErrJobNotFound, id)
	}
	return st, nil
}

const jobCols = "id, kind, state, phase, progress, plan, created_at, started_at, updated_at, last_error"

func scanJob(s *sqlite3.Stmt) Job {
	j := Job{ID: s.ColumnText(0), Kind: s.ColumnText(1), State: JobState(s.ColumnText(2)), Phase: s.ColumnText(3),
		Progress: s.ColumnBlob(4, nil), Plan: s.ColumnBlob(5, nil), CreatedAt: time.UnixMilli(s.ColumnInt64(6)),
		UpdatedAt: time.UnixMilli(s.ColumnInt64(8)), LastError: s.ColumnText(9)}
	if s.ColumnType(7) != sqlite3.NULL {
		j.StartedAt = time.UnixMilli(s.ColumnInt64(7))
	}
	return j
}

// GetJob returns one job.
func (c *Catalog) GetJob(id string) (Job, error) {
	if err := c.lock(); err != nil {
		return Job{}, err
	}
	defer c.mu.Unlock()
	var j Job
	found, err := c.queryOne("SELECT "+jobCols+" FROM jobs WHERE id = ?", []any{id}, func(s *sqlite3.Stmt) error {
		j = scanJob(s)
		return nil
	})
	if err != nil {
		return Job{}, err
	}
	if !found {
		return Job{}, fmt.Errorf("%w: %s", ErrJobNotFound, id)
	}
	return j, nil
}

// UnfinishedJobs returns every job not completed or abandoned, oldest
// first: what a restart resumes or abandons.
func (c *Catalog) UnfinishedJobs() ([]Job, error) {
	if err := c.lock(); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	var out []Job
	err := c.query("SELECT "+jobCols+" FROM jobs WHERE state NOT IN ('completed', 'abandoned') ORDER BY created_at, id", nil,
		func(s *sqlite3.Stmt) error { out = append(out, scanJob(s)); return nil })
	return out, err
}
