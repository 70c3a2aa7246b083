package fault

import "sync/atomic"

// OpStats are the counters of one operation.
type OpStats struct {
	// Requests counts calls, including ones that failed (injected or
	// not) and ones rejected for a bad key.
	Requests int64
	// BytesIn counts bytes sent into the store: put bodies as the inner
	// store read them (a put that fails midway counts what it read).
	BytesIn int64
	// BytesOut counts bytes read out of the store: get bodies as the
	// caller received them.
	BytesOut int64
	// Errors counts calls that returned an error (any error, including
	// remote.ErrNotFound and remote.ErrPrecondition), plus Get bodies
	// whose reading ended in an error (once per body).
	Errors int64
}

// Stats is a snapshot of every operation's counters.
type Stats struct {
	Put, Get, Head, Delete, List OpStats
}

// Op returns the counters of op.
func (st Stats) Op(op Op) OpStats {
	switch op {
	case OpPut:
		return st.Put
	case OpGet:
		return st.Get
	case OpHead:
		return st.Head
	case OpDelete:
		return st.Delete
	case OpList:
		return st.List
	}
	return OpStats{}
}

// Total sums the counters over every operation.
func (st Stats) Total() OpStats {
	var t OpStats
	for _, o := range []OpStats{st.Put, st.Get, st.Head, st.Delete, st.List} {
		t.Requests += o.Requests
		t.BytesIn += o.BytesIn
		t.BytesOut += o.BytesOut
		t.Errors += o.Errors
	}
	return t
}

type opMeter struct {
	requests, bytesIn, bytesOut, errors atomic.Int64
}

type meter struct {
	ops [numOps]opMeter
}

func (m *meter) request(op Op) { m.ops[op].requests.Add(1) }

// fail counts an error of op and returns it.
func (m *meter) fail(op Op, err error) error {
	m.ops[op].errors.Add(1)
	return err
}

func (m *meter) snapshot(op Op) OpStats {
	o := &m.ops[op]
	return OpStats{Requests: o.requests.Load(), BytesIn: o.bytesIn.Load(), BytesOut: o.bytesOut.Load(), Errors: o.errors.Load()}
}

// Stats returns a snapshot of the counters. Each counter is read
// atomically; a snapshot taken during calls may mix their progress.
func (s *Store) Stats() Stats {
	m := &s.meter
	return Stats{
		Put: m.snapshot(OpPut), Get: m.snapshot(OpGet), Head: m.snapshot(OpHead),
		Delete: m.snapshot(OpDelete), List: m.snapshot(OpList),
	}
}

// Reset zeroes the counters (not the faults).
func (s *Store) Reset() {
	for i := range s.meter.ops {
		o := &s.meter.ops[i]
		o.requests.Store(0)
		o.bytesIn.Store(0)
		o.bytesOut.Store(0)
		o.errors.Store(0)
	}
}
