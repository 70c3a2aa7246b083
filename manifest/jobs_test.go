package manifest

import (
	"errors"
	"fmt"
	"testing"
)

// Every pair of job states: the allowed moves (written out here, apart
// from jobMoves) succeed; every other move — backwards, out of a final
// state, published to abandoned, completing an unpublished job, a final
// state through SaveProgress, a non-final one through FinishJob — fails
// with ErrJobTransition and leaves the row exactly as it was.
func TestJobTransitions(t *testing.T) {
	states := []JobState{JobPlanned, JobStaged, JobUploaded, JobPublished, JobCompleted, JobAbandoned}
	allowed := map[[2]JobState]bool{
		{JobPlanned, JobPlanned}: true, {JobPlanned, JobStaged}: true, {JobPlanned, JobUploaded}: true,
		{JobPlanned, JobPublished}: true, {JobPlanned, JobAbandoned}: true,
		{JobStaged, JobStaged}: true, {JobStaged, JobUploaded}: true, {JobStaged, JobPublished}: true,
		{JobStaged, JobAbandoned}:  true,
		{JobUploaded, JobUploaded}: true, {JobUploaded, JobPublished}: true, {JobUploaded, JobAbandoned}: true,
		{JobPublished, JobCompleted}: true,
	}
	// reach drives a new job to state st along allowed moves.
	reach := map[JobState][]JobState{
		JobPlanned:   nil,
		JobStaged:    {JobStaged},
		JobUploaded:  {JobStaged, JobUploaded},
		JobPublished: {JobStaged, JobUploaded, JobPublished},
		JobCompleted: {JobStaged, JobUploaded, JobPublished, JobCompleted},
		JobAbandoned: {JobStaged, JobAbandoned},
	}
	c := newTestCatalog(t, 4)
	move := func(id string, st JobState, via func() bool) error {
		useFinish := st.Finished()
		if via != nil {
			useFinish = via()
		}
		if useFinish {
			return c.FinishJob(id, st, "why")
		}
		return c.SaveProgress(id, st, "phase of "+string(st), []byte(st))
	}
	n := 0
	forbidden := 0
	for _, from := range states {
		for _, to := range states {
			// Each move through the function meant for it, and the
			// wrong function too (always forbidden).
			for _, wrong := range []bool{false, true} {
				n++
				id := fmt.Sprintf("job-%d", n)
				name := fmt.Sprintf("%s->%s", from, to)
				if wrong {
					name += "/wrong-call"
				}
				t.Run(name, func(t *testing.T) {
					if err := c.CreateJob(id, "test", []byte("plan")); err != nil {
						t.Fatal(err)
					}
					for _, st := range reach[from] {
						if err := move(id, st, nil); err != nil {
							t.Fatalf("reaching %s: %v", from, err)
						}
					}
					before, err := c.GetJob(id)
					if err != nil || before.State != from {
						t.Fatalf("job in %s, want %s: %v", before.State, from, err)
					}
					err = move(id, to, func() bool { return to.Finished() != wrong })
					after, gerr := c.GetJob(id)
					if gerr != nil {
						t.Fatal(gerr)
					}
					if allowed[[2]JobState{from, to}] && !wrong {
						if err != nil || after.State != to {
							t.Fatalf("allowed move: %v, state %s", err, after.State)
						}
						if !from.CanMoveTo(to) {
							t.Fatal("CanMoveTo disagrees")
						}
						return
					}
					forbidden++
					if !errors.Is(err, ErrJobTransition) {
						t.Fatalf("forbidden move: %v, want ErrJobTransition", err)
					}
					if !wrong && from.CanMoveTo(to) {
						t.Fatal("CanMoveTo allows a forbidden move")
					}
					if after.State != before.State || after.Phase != before.Phase || string(after.Progress) != string(before.Progress) ||
						after.LastError != before.LastError || !after.UpdatedAt.Equal(before.UpdatedAt) {
						t.Fatalf("a refused move changed the row: %+v -> %+v", before, after)
					}
				})
			}
		}
	}
	// 36 pairs twice, 13 of the 72 allowed.
	if forbidden != 72-len(allowed) {
		t.Fatalf("%d forbidden moves checked, want %d", forbidden, 72-len(allowed))
	}
	for _, bad := range []JobState{"", "running", "Published"} {
		if err := c.CreateJob("job-bad-"+string(bad), "test", nil); err != nil {
			t.Fatal(err)
		}
		if err := c.SaveProgress("job-bad-"+string(bad), bad, "x", nil); !errors.Is(err, ErrJobTransition) {
			t.Fatalf("unknown state %q: %v", bad, err)
		}
		if err := c.FinishJob("job-bad-"+string(bad), bad, "x"); !errors.Is(err, ErrJobTransition) {
			t.Fatalf("unknown final state %q: %v", bad, err)
		}
	}
	if err := c.SaveProgress("nope", JobStaged, "x", nil); !errors.Is(err, ErrJobNotFound) {
		t.Fatalf("unknown job: %v", err)
	}
}

// CompletePublishedLazy ends a job from any state that may move to
// published (or from published), with its phase and progress, releasing
// its leases; from completed or abandoned it is refused and changes
// nothing.
func TestCompletePublishedLazy(t *testing.T) {
	c := newTestCatalog(t, 4)
	for i, from := range []JobState{JobPlanned, JobStaged, JobUploaded, JobPublished, JobCompleted, JobAbandoned} {
		id := fmt.Sprintf("job-%d", i)
		if err := c.CreateJob(id, "test", []byte("plan")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.RegisterLease(Lease{Holder: id, Kind: "spool", MinTxid: uint64(10 * i), MaxTxid: uint64(10*i + 5)}); err != nil {
			t.Fatal(err)
		}
		switch from {
		case JobPlanned:
		case JobCompleted:
			must(t, c.SaveProgress(id, JobPublished, "p", nil))
			must(t, c.FinishJob(id, JobCompleted, ""))
		case JobAbandoned:
			must(t, c.FinishJob(id, JobAbandoned, "why"))
		default:
			must(t, c.SaveProgress(id, from, "p", []byte("old")))
		}
		before, err := c.GetJob(id)
		must(t, err)
		err = c.CompletePublishedLazy(id, "published seq 7", []byte(`{"seq":7}`))
		after, gerr := c.GetJob(id)
		must(t, gerr)
		ls, lerr := c.Leases("spool")
		must(t, lerr)
		held := false
		for _, l := range ls {
			held = held || l.Holder == id
		}
		if from.Finished() {
			if !errors.Is(err, ErrJobTransition) || after.State != before.State || after.Phase != before.Phase {
				t.Fatalf("from %s: %v, now %s %q", from, err, after.State, after.Phase)
			}
			continue
		}
		if err != nil || after.State != JobCompleted || after.Phase != "published seq 7" || string(after.Progress) != `{"seq":7}` || held {
			t.Fatalf("from %s: %v, now %+v, lease held %v", from, err, after, held)
		}
	}
}
