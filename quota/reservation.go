package quota

import (
	"context"
	"fmt"
)

// Reservation holds bytes of one job, counted at the job, its tenant and
// the pool. It is safe for concurrent use.
type Reservation struct {
	j      *Job
	n      uint64 // bytes held; guarded by the pool's mutex
	closed bool
}

// Reserve reserves n bytes at all three levels, or none and returns an
// *ExhaustedError naming the first level without room. A Reservation of
// 0 bytes is allowed (it can Grow later).
func (j *Job) Reserve(n uint64) (*Reservation, error) {
	return j.acquire(context.Background(), nil, n, false)
}

// ReserveWait is Reserve, but waits until n bytes fit or ctx ends. A
// request larger than some level's whole limit fails at once with an
// *ExhaustedError whose Never is set. If n fits right away it succeeds
// even when ctx is already done. When ctx ends the error wraps both
// ctx.Err() and the last refusal.
func (j *Job) ReserveWait(ctx context.Context, n uint64) (*Reservation, error) {
	return j.acquire(ctx, nil, n, true)
}

// Grow adds n bytes to r at all three levels, or none (an
// *ExhaustedError).
func (r *Reservation) Grow(n uint64) error {
	_, err := r.j.acquire(context.Background(), r, n, false)
	return err
}

// GrowWait is Grow, but waits like ReserveWait. Bytes r already holds
// stay held while it waits, so a growth that would need more than a
// level's whole limit together with them fails at once.
func (r *Reservation) GrowWait(ctx context.Context, n uint64) error {
	_, err := r.j.acquire(ctx, r, n, true)
	return err
}

// Size returns the bytes r holds.
func (r *Reservation) Size() uint64 {
	p := r.j.t.p
	p.mu.Lock()
	defer p.mu.Unlock()
	return r.n
}

// Release returns n of r's bytes. Asking for more than r holds is
// ErrOverRelease and releases nothing: counters never wrap and bytes are
// never credited twice. Release on a closed reservation is ErrClosed.
func (r *Reservation) Release(n uint64) error {
	p := r.j.t.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if n == 0 {
		return nil
	}
	if r.closed {
		return fmt.Errorf("%w: release %d bytes of a closed reservation of %s", ErrClosed, n, r.j.lvl.name)
	}
	if n > r.n {
		return fmt.Errorf("%w: release %d bytes of a reservation holding %d (%s)", ErrOverRelease, n, r.n, r.j.lvl.name)
	}
	r.n -= n
	for _, l := range r.j.levelsLocked() {
		l.sub(n)
	}
	p.broadcastLocked()
	return nil
}

// Close returns every byte r still holds and closes it. Closing twice, or
// after Job.Close, Job.ReleaseAll or Tenant.Close, does nothing.
func (r *Reservation) Close() {
	p := r.j.t.p
	p.mu.Lock()
	defer p.mu.Unlock()
	r.closeLocked()
}

func (r *Reservation) closeLocked() {
	if r.closed {
		return
	}
	for _, l := range r.j.levelsLocked() {
		l.sub(r.n)
	}
	r.n = 0
	r.closed = true
	delete(r.j.res, r)
	r.j.t.p.broadcastLocked()
}

// admitLocked decides whether n more bytes fit for a requester already
// holding held bytes under this job. A level where it can never fit is
// reported first, then the narrowest level without room now.
func (j *Job) admitLocked(held, n uint64) (*level, *ExhaustedError) {
	lv := j.levelsLocked()
	for _, l := range lv {
		if l.never(held, n) {
			return l, l.exhausted(n, true)
		}
	}
	for _, l := range lv {
		if !l.fits(n) {
			return l, l.exhausted(n, false)
		}
	}
	return nil, nil
}

// acquire admits n bytes for r (nil: a new reservation), waiting for room
// if wait is set.
func (j *Job) acquire(ctx context.Context, r *Reservation, n uint64, wait bool) (*Reservation, error) {
	p := j.t.p
	p.mu.Lock()
	defer p.mu.Unlock()
	waiting := false
	defer func() { // runs before the Unlock above
		if waiting {
			for _, l := range j.levelsLocked() {
				l.waiting--
			}
		}
	}()
	for {
		if j.closed {
			return nil, fmt.Errorf("%w: %s", ErrClosed, j.lvl.name)
		}
		if r != nil && r.closed {
			return nil, fmt.Errorf("%w: grow a closed reservation of %s", ErrClosed, j.lvl.name)
		}
		var held uint64
		if r != nil {
			held = r.n
		}
		l, refused := j.admitLocked(held, n)
		if refused == nil {
			if r == nil {
				r = &Reservation{j: j}
				j.res[r] = struct{}{}
			}
			r.n += n // r.n <= j.lvl.used, which just passed fits(n)
			for _, l := range j.levelsLocked() {
				l.add(n)
			}
			return r, nil
		}
		if !wait || refused.Never {
			l.denied++
			return nil, refused
		}
		if err := ctx.Err(); err != nil {
			l.denied++
			return nil, fmt.Errorf("quota: gave up waiting for %d bytes: %w: %w", n, err, refused)
		}
		if !waiting {
			waiting = true
			for _, l := range j.levelsLocked() {
				l.waiting++
			}
		}
		wake := p.wake
		p.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-wake:
		}
		p.mu.Lock()
	}
}
