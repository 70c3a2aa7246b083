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
	now := c.now().UnixMilli()
	return c.tx(func() error {
		if exists, err := c.queryOne("SELECT 1 FROM jobs WHERE id = ?", []any{id}, func(*sqlite3.Stmt) error { return nil }); err != nil {
			return err
		} else if exists {
			return fmt.Errorf("manifest: job %s already exists", id)
		}
		if err := c.exec(`INSERT INTO jobs (id, kind, state, plan, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)`,
			id, kind, string(JobPlanned), plan, now, now); err != nil {
			return err
		}
		return c.logChange("job create", id+" "+kind)
	})
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

// SaveProgress records a job's state, phase and progress. It never
// touches created_at or started_at. The state must be an allowed move
// from the job's current one (see jobMoves) and not final (FinishJob
// ends jobs): else ErrJobTransition and nothing changes.
func (c *Catalog) SaveProgress(id string, state JobState, phase string, progress []byte) error {
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
	return c.tx(func() error {
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

// FinishJob ends a job: completed (only from published), or abandoned
// with the error that ended it (only before published: a published job's
// record is committed in the log). A forbidden move is ErrJobTransition
// and changes nothing.
func (c *Catalog) FinishJob(id string, state JobState, lastErr string) error {
	if !state.Finished() {
		return fmt.Errorf("%w: job %s: %q is not a final state", ErrJobTransition, id, state)
	}
	if err := c.lock(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	return c.tx(func() error {
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
