package quota

import (
	"fmt"
	"sync"
)

// Pool is the global budget and the root of its tenants. All state of a
// pool, its tenants, jobs and reservations is guarded by one mutex, which
// is what makes a three-level reservation atomic. Budgets change at the
// rate of staging and uploads, not per page, so one lock is no
// bottleneck.
type Pool struct {
	mu      sync.Mutex
	lvl     level
	tenants map[string]*Tenant
	// wake is closed (and replaced) whenever bytes are released, a limit
	// changes or something closes: waiters then re-check.
	wake chan struct{}
}

// NewPool returns a pool with a global limit (0: no limit).
func NewPool(limit uint64) *Pool {
	return &Pool{
		lvl:     level{name: "global", limit: limit},
		tenants: make(map[string]*Tenant),
		wake:    make(chan struct{}),
	}
}

// broadcastLocked wakes every waiter. p.mu is held.
func (p *Pool) broadcastLocked() {
	close(p.wake)
	p.wake = make(chan struct{})
}

// NewTenant adds a tenant with its own limit (0: no limit). The name must
// be non-empty and not in use.
func (p *Pool) NewTenant(name string, limit uint64) (*Tenant, error) {
	if name == "" {
		return nil, fmt.Errorf("quota: empty tenant name")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.tenants[name]; ok {
		return nil, fmt.Errorf("%w: tenant %q", ErrExists, name)
	}
	t := &Tenant{p: p, lvl: level{name: "tenant " + name, limit: limit}, name: name, jobs: make(map[string]*Job)}
	p.tenants[name] = t
	return t, nil
}

// Tenant returns the open tenant of that name.
func (p *Pool) Tenant(name string) (*Tenant, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.tenants[name]
	return t, ok
}

// SetLimit changes the global limit (0: no limit). Lowering it below what
// is in use revokes nothing; new requests fail until usage drops.
func (p *Pool) SetLimit(limit uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lvl.limit = limit
	p.broadcastLocked()
}

// Limit returns the global limit (0: no limit).
func (p *Pool) Limit() uint64 { return p.Stats().Limit }

// Used returns the bytes reserved in the whole pool.
func (p *Pool) Used() uint64 { return p.Stats().Used }

// Stats returns the global level's counters.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lvl.stats()
}

// Tenant is one tenant's budget under a Pool.
type Tenant struct {
	p      *Pool
	lvl    level
	name   string
	jobs   map[string]*Job
	closed bool
}

// Name returns the tenant's name.
func (t *Tenant) Name() string { return t.name }

// NewJob adds a job with its own limit (0: no limit). The id must be
// non-empty and not in use in this tenant.
func (t *Tenant) NewJob(id string, limit uint64) (*Job, error) {
	if id == "" {
		return nil, fmt.Errorf("quota: empty job id")
	}
	p := t.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if t.closed {
		return nil, fmt.Errorf("%w: %s", ErrClosed, t.lvl.name)
	}
	if _, ok := t.jobs[id]; ok {
		return nil, fmt.Errorf("%w: job %q in %s", ErrExists, id, t.lvl.name)
	}
	j := &Job{t: t, lvl: level{name: "job " + id, limit: limit}, id: id, res: make(map[*Reservation]struct{})}
	t.jobs[id] = j
	return j, nil
}

// Job returns the open job of that id.
func (t *Tenant) Job(id string) (*Job, bool) {
	t.p.mu.Lock()
	defer t.p.mu.Unlock()
	j, ok := t.jobs[id]
	return j, ok
}

// SetLimit changes the tenant's limit (0: no limit), like Pool.SetLimit.
func (t *Tenant) SetLimit(limit uint64) {
	t.p.mu.Lock()
	defer t.p.mu.Unlock()
	t.lvl.limit = limit
	t.p.broadcastLocked()
}

// Limit returns the tenant's limit (0: no limit).
func (t *Tenant) Limit() uint64 { return t.Stats().Limit }

// Used returns the bytes reserved by the tenant's jobs.
func (t *Tenant) Used() uint64 { return t.Stats().Used }

// Stats returns the tenant level's counters.
func (t *Tenant) Stats() Stats {
	t.p.mu.Lock()
	defer t.p.mu.Unlock()
	return t.lvl.stats()
}

// Close closes every job of the tenant (returning all their bytes) and
// removes the tenant from the pool; its name may then be reused. Closing
// twice does nothing.
func (t *Tenant) Close() {
	p := t.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if t.closed {
		return
	}
	for _, j := range t.jobs {
		j.closeLocked()
	}
	t.closed = true
	delete(p.tenants, t.name)
	p.broadcastLocked()
}

// Job is one job's budget under a Tenant. Its bytes are held by its
// Reservations.
type Job struct {
	t      *Tenant
	lvl    level
	id     string
	res    map[*Reservation]struct{} // open reservations
	closed bool
}

// ID returns the job's id.
func (j *Job) ID() string { return j.id }

// SetLimit changes the job's limit (0: no limit), like Pool.SetLimit.
func (j *Job) SetLimit(limit uint64) {
	p := j.t.p
	p.mu.Lock()
	defer p.mu.Unlock()
	j.lvl.limit = limit
	p.broadcastLocked()
}

// Limit returns the job's limit (0: no limit).
func (j *Job) Limit() uint64 { return j.Stats().Limit }

// Used returns the bytes held by the job's reservations.
func (j *Job) Used() uint64 { return j.Stats().Used }

// Stats returns the job level's counters.
func (j *Job) Stats() Stats {
	j.t.p.mu.Lock()
	defer j.t.p.mu.Unlock()
	return j.lvl.stats()
}

// ReleaseAll returns the bytes of every reservation of the job and closes
// them; the job stays open for new reservations.
func (j *Job) ReleaseAll() {
	p := j.t.p
	p.mu.Lock()
	defer p.mu.Unlock()
	j.releaseAllLocked()
}

// Close is ReleaseAll, then closes the job and removes it from its
// tenant; its id may then be reused. Closing twice does nothing.
func (j *Job) Close() {
	p := j.t.p
	p.mu.Lock()
	defer p.mu.Unlock()
	j.closeLocked()
}

func (j *Job) releaseAllLocked() {
	for r := range j.res {
		r.closeLocked()
	}
}

func (j *Job) closeLocked() {
	if j.closed {
		return
	}
	j.releaseAllLocked()
	j.closed = true
	if j.t.jobs[j.id] == j {
		delete(j.t.jobs, j.id)
	}
	j.t.p.broadcastLocked()
}

// levelsLocked returns the job's levels, narrowest first: the order in
// which a refusal is reported.
func (j *Job) levelsLocked() [3]*level {
	return [3]*level{&j.lvl, &j.t.lvl, &j.t.p.lvl}
}
