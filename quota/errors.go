package quota

import (
	"errors"
	"fmt"
	"math"
)

var (
	// ErrExhausted: a level has no room for the request. The error is an
	// *ExhaustedError saying which level and by how much.
	ErrExhausted = errors.New("quota: exhausted")
	// ErrOverRelease: Release asked to return more than the reservation
	// holds. Nothing was released.
	ErrOverRelease = errors.New("quota: release exceeds reservation")
	// ErrClosed: the job or tenant (or the reservation's job) is closed.
	ErrClosed = errors.New("quota: closed")
	// ErrExists: a tenant or job of that name already exists.
	ErrExists = errors.New("quota: already exists")
)

// ExhaustedError reports a refused request. errors.Is(err, ErrExhausted)
// holds for it.
type ExhaustedError struct {
	Level     string // "global", "tenant <name>" or "job <id>"
	Limit     uint64 // the level's limit; 0 means no limit (the counter's ceiling is math.MaxUint64)
	Used      uint64 // bytes in use at the level when the request was refused
	Requested uint64 // bytes asked for
	Never     bool   // the request exceeds the level's whole limit: waiting cannot help
}

// Short returns how many bytes the level lacked, saturating at
// math.MaxUint64.
func (e *ExhaustedError) Short() uint64 {
	ceiling := e.Limit
	if ceiling == 0 {
		ceiling = math.MaxUint64
	}
	if e.Used >= ceiling { // the limit was lowered below what is in use
		over := e.Used - ceiling
		if e.Requested > math.MaxUint64-over {
			return math.MaxUint64
		}
		return e.Requested + over
	}
	free := ceiling - e.Used
	if e.Requested <= free {
		return 0
	}
	return e.Requested - free
}

func (e *ExhaustedError) Error() string {
	limit := fmt.Sprint(e.Limit)
	if e.Limit == 0 {
		limit = "no limit (counter at most 2^64-1)"
	}
	msg := fmt.Sprintf("quota: %s exhausted: requested %d bytes with %d in use, limit %s: short by %d",
		e.Level, e.Requested, e.Used, limit, e.Short())
	if e.Never {
		msg += " (more than the whole limit: cannot be satisfied by waiting)"
	}
	return msg
}

func (e *ExhaustedError) Unwrap() error { return ErrExhausted }
