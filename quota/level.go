package quota

import "math"

// level is one budget: the pool's, a tenant's or a job's. All fields are
// guarded by the pool's mutex.
//
// Invariant: used is the sum of the bytes held by the reservations under
// this level (for the pool: every reservation; for a tenant: its jobs';
// for a job: its own). It may exceed limit only after SetLimit lowered
// the limit; nothing new is admitted until it is back under.
type level struct {
	name    string
	limit   uint64 // 0: no limit
	used    uint64
	peak    uint64
	waiting int    // callers blocked in a wait under this level
	denied  uint64 // requests refused at this level
}

// ceiling is the most the counter may hold.
func (l *level) ceiling() uint64 {
	if l.limit == 0 {
		return math.MaxUint64
	}
	return l.limit
}

// fits reports whether n more bytes fit, without overflow: n <= ceiling -
// used is evaluated only once used <= ceiling is known.
func (l *level) fits(n uint64) bool {
	if n == 0 {
		return true
	}
	c := l.ceiling()
	return l.used <= c && n <= c-l.used
}

// never reports whether n more bytes can never fit while held bytes (of
// the requester itself, which will not be released during its wait) stay
// reserved: more than the whole limit. An unlimited level can always
// eventually fit, since n <= MaxUint64.
func (l *level) never(held, n uint64) bool {
	if l.limit == 0 || n == 0 {
		return false
	}
	return held > l.limit || n > l.limit-held
}

func (l *level) exhausted(n uint64, never bool) *ExhaustedError {
	return &ExhaustedError{Level: l.name, Limit: l.limit, Used: l.used, Requested: n, Never: never}
}

// add and sub keep the counters; callers have checked fits (add) or that
// the bytes are held (sub), so neither can wrap.
func (l *level) add(n uint64) {
	l.used += n
	l.peak = max(l.peak, l.used)
}

func (l *level) sub(n uint64) { l.used -= n }

func (l *level) stats() Stats {
	return Stats{Level: l.name, Limit: l.limit, Used: l.used, Peak: l.peak, Waiting: l.waiting, Denied: l.denied}
}

// Stats describes one level.
type Stats struct {
	Level   string // "global", "tenant <name>" or "job <id>"
	Limit   uint64 // 0: no limit
	Used    uint64 // bytes held by reservations under this level
	Peak    uint64 // highest Used seen
	Waiting int    // callers blocked in ReserveWait/GrowWait under this level
	Denied  uint64 // requests refused at this level
}
