package fault

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bopstore/bop/remote"
)

// ErrInjected is wrapped by every error the wrapper makes up.
var ErrInjected = errors.New("fault: injected error")

// Op names a Store method.
type Op uint8

const (
	OpPut Op = iota
	OpGet
	OpHead
	OpDelete
	OpList
	numOps
)

var opNames = [numOps]string{"put", "get", "head", "delete", "list"}

func (o Op) String() string {
	if o < numOps {
		return opNames[o]
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Config is the initial fault setup; the setters change it later.
type Config struct {
	// Seed seeds the ErrorRate draws.
	Seed uint64
	// Latency is added before each call of an operation.
	Latency map[Op]time.Duration
	// ErrorRate is the chance, in [0, 1], that a call of an operation
	// fails with ErrInjected without reaching the inner store.
	ErrorRate map[Op]float64
	// IgnoreConditions drops IfNoneMatch and IfMatch from every Put.
	IgnoreConditions bool
}

// Kind is what a scripted Fault does.
type Kind uint8

const (
	// Fail makes the call fail with ErrInjected before it reaches the
	// inner store.
	Fail Kind = iota + 1
	// LoseResponse lets the call reach the inner store, then discards
	// its result and returns ErrInjected: a put that landed although the
	// caller saw it fail.
	LoseResponse
	// TruncateError (OpGet only) ends the body after Keep bytes with an
	// error wrapping ErrInjected and io.ErrUnexpectedEOF.
	TruncateError
	// TruncateEOF (OpGet only) ends the body after Keep bytes with a
	// clean io.EOF, while the ObjectInfo still gives the full size.
	TruncateEOF
)

// Fault is a scripted fault. It counts the calls that match it (same Op,
// key or List prefix starting with Prefix) from the moment it is injected
// and fires on the Nth; a Sticky fault fires on every later one too, a
// one-shot fault is then gone. A truncation fires on a body shorter than
// Keep without effect.
type Fault struct {
	Kind   Kind
	Op     Op
	Prefix string
	Nth    int // 1 is the next matching call; 0 means 1
	Sticky bool
	Keep   int64 // truncations: bytes delivered before the body ends
}

type armed struct {
	Fault
	seen int
}

// Store is a remote.Store wrapping another with faults and counters. Safe
// for concurrent use.
type Store struct {
	inner remote.Store
	meter meter

	mu        sync.Mutex
	rng       *rand.Rand
	latency   [numOps]time.Duration
	errorRate [numOps]float64
	ignore    bool
	faults    []*armed
	outage    atomic.Bool // read by every body Read, so not under mu
}

var _ remote.Store = (*Store)(nil)

// New wraps inner.
func New(inner remote.Store, cfg Config) *Store {
	s := &Store{inner: inner, rng: rand.New(rand.NewPCG(cfg.Seed, 0x6661756c74)), ignore: cfg.IgnoreConditions}
	for op, d := range cfg.Latency {
		if op < numOps {
			s.latency[op] = d
		}
	}
	for op, p := range cfg.ErrorRate {
		if op < numOps {
			s.errorRate[op] = p
		}
	}
	return s
}

// Inner returns the wrapped store, for checking what really landed.
func (s *Store) Inner() remote.Store { return s.inner }

// SetLatency sets the delay added before each call of op.
func (s *Store) SetLatency(op Op, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if op < numOps {
		s.latency[op] = d
	}
}

// SetErrorRate sets the chance that a call of op fails.
func (s *Store) SetErrorRate(op Op, p float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if op < numOps {
		s.errorRate[op] = p
	}
}

// SetIgnoreConditions turns dropping of IfNoneMatch/IfMatch on or off.
func (s *Store) SetIgnoreConditions(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ignore = on
}

// SetOutage starts (true) or ends (false) an outage.
func (s *Store) SetOutage(on bool) { s.outage.Store(on) }

// Inject arms a scripted fault.
func (s *Store) Inject(f Fault) error {
	switch {
	case f.Op >= numOps:
		return fmt.Errorf("fault: unknown op %d", f.Op)
	case f.Kind < Fail || f.Kind > TruncateEOF:
		return fmt.Errorf("fault: unknown kind %d", f.Kind)
	case (f.Kind == TruncateError || f.Kind == TruncateEOF) && f.Op != OpGet:
		return fmt.Errorf("fault: truncation applies to get, not %s", f.Op)
	case f.Keep < 0 || f.Nth < 0:
		return fmt.Errorf("fault: negative Keep or Nth")
	}
	if f.Nth == 0 {
		f.Nth = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &armed{Fault: f})
	return nil
}

// ClearFaults disarms every scripted fault (not latency, error rates,
// ignored conditions or an outage).
func (s *Store) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// plan is what happens to one call, decided when it starts.
type plan struct {
	latency  time.Duration
	fail     error // fail before reaching the inner store
	lose     bool  // reach the inner store, then fail
	truncate *Fault
	ignore   bool
}

// decide counts the call against every armed fault and draws its random
// error. The draw happens whenever the rate is positive, so the sequence
// of draws depends only on the sequence of calls.
func (s *Store) decide(op Op, key string) plan {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := plan{latency: s.latency[op], ignore: s.ignore}
	if rate := s.errorRate[op]; rate > 0 && s.rng.Float64() < rate {
		p.fail = fmt.Errorf("fault: %s %q: random error: %w", op, key, ErrInjected)
	}
	kept := s.faults[:0]
	for _, f := range s.faults {
		if f.Op != op || !strings.HasPrefix(key, f.Prefix) {
			kept = append(kept, f)
			continue
		}
		f.seen++
		fires := f.seen == f.Nth || f.Sticky && f.seen > f.Nth
		if fires {
			switch f.Kind {
			case Fail:
				p.fail = fmt.Errorf("fault: %s %q: call %d failed: %w", op, key, f.seen, ErrInjected)
			case LoseResponse:
				p.lose = true
			case TruncateError, TruncateEOF:
				t := f.Fault
				p.truncate = &t
			}
		}
		if !fires || f.Sticky {
			kept = append(kept, f)
		}
	}
	clear(s.faults[len(kept):])
	s.faults = kept
	if s.outage.Load() {
		p.fail = fmt.Errorf("fault: %s %q: outage: %w", op, key, ErrInjected)
	}
	return p
}

// begin runs the common prologue of a call that passed key validation:
// decide its faults, wait out the latency, and fail it if the plan says so.
func (s *Store) begin(ctx context.Context, op Op, key string) (plan, error) {
	p := s.decide(op, key)
	if p.latency > 0 {
		t := time.NewTimer(p.latency)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return p, fmt.Errorf("fault: %s %q: %w", op, key, ctx.Err())
		}
	}
	if p.fail != nil {
		return p, p.fail
	}
	return p, nil
}

// Put passes the put on, counting the body bytes the inner store reads.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, opts remote.PutOptions) (remote.PutResult, error) {
	s.meter.request(OpPut)
	if err := remote.ValidateKey(key); err != nil {
		return remote.PutResult{}, s.meter.fail(OpPut, fmt.Errorf("fault: put: %w", err))
	}
	p, err := s.begin(ctx, OpPut, key)
	if err != nil {
		return remote.PutResult{}, s.meter.fail(OpPut, err)
	}
	if p.ignore {
		opts.IfNoneMatch, opts.IfMatch = false, ""
	}
	if r == nil {
		r = strings.NewReader("")
	}
	res, err := s.inner.Put(ctx, key, &countingReader{r: r, m: &s.meter}, opts)
	if err != nil {
		return remote.PutResult{}, s.meter.fail(OpPut, err)
	}
	if p.lose {
		return remote.PutResult{}, s.meter.fail(OpPut, fmt.Errorf("fault: put %q: response lost after the store applied it: %w", key, ErrInjected))
	}
	return res, nil
}

// Get passes the get on and wraps the body to count it and, if planned,
// truncate it.
func (s *Store) Get(ctx context.Context, key string, off, length int64) (io.ReadCloser, remote.ObjectInfo, error) {
	s.meter.request(OpGet)
	if err := remote.ValidateKey(key); err != nil {
		return nil, remote.ObjectInfo{}, s.meter.fail(OpGet, fmt.Errorf("fault: get: %w", err))
	}
	p, err := s.begin(ctx, OpGet, key)
	if err != nil {
		return nil, remote.ObjectInfo{}, s.meter.fail(OpGet, err)
	}
	rc, info, err := s.inner.Get(ctx, key, off, length)
	if err != nil {
		return nil, info, s.meter.fail(OpGet, err)
	}
	if p.lose {
		rc.Close()
		return nil, remote.ObjectInfo{}, s.meter.fail(OpGet, fmt.Errorf("fault: get %q: response lost: %w", key, ErrInjected))
	}
	b := &body{s: s, key: key, rc: rc, limit: -1}
	if p.truncate != nil {
		b.limit, b.cleanEOF = p.truncate.Keep, p.truncate.Kind == TruncateEOF
	}
	return b, info, nil
}

// Head passes the head on.
func (s *Store) Head(ctx context.Context, key string) (remote.ObjectInfo, error) {
	s.meter.request(OpHead)
	if err := remote.ValidateKey(key); err != nil {
		return remote.ObjectInfo{}, s.meter.fail(OpHead, fmt.Errorf("fault: head: %w", err))
	}
	p, err := s.begin(ctx, OpHead, key)
	if err != nil {
		return remote.ObjectInfo{}, s.meter.fail(OpHead, err)
	}
	info, err := s.inner.Head(ctx, key)
	if err != nil {
		return info, s.meter.fail(OpHead, err)
	}
	if p.lose {
		return remote.ObjectInfo{}, s.meter.fail(OpHead, fmt.Errorf("fault: head %q: response lost: %w", key, ErrInjected))
	}
	return info, nil
}

// Delete passes the delete on.
func (s *Store) Delete(ctx context.Context, key string) error {
	s.meter.request(OpDelete)
	if err := remote.ValidateKey(key); err != nil {
		return s.meter.fail(OpDelete, fmt.Errorf("fault: delete: %w", err))
	}
	p, err := s.begin(ctx, OpDelete, key)
	if err != nil {
		return s.meter.fail(OpDelete, err)
	}
	if err := s.inner.Delete(ctx, key); err != nil {
		return s.meter.fail(OpDelete, err)
	}
	if p.lose {
		return s.meter.fail(OpDelete, fmt.Errorf("fault: delete %q: response lost after the store applied it: %w", key, ErrInjected))
	}
	return nil
}

// List passes the listing on; faults match on the prefix.
func (s *Store) List(ctx context.Context, prefix string, fn func(remote.ObjectInfo) error) error {
	s.meter.request(OpList)
	if err := remote.ValidatePrefix(prefix); err != nil {
		return s.meter.fail(OpList, fmt.Errorf("fault: list: %w", err))
	}
	p, err := s.begin(ctx, OpList, prefix)
	if err != nil {
		return s.meter.fail(OpList, err)
	}
	if err := s.inner.List(ctx, prefix, fn); err != nil {
		return s.meter.fail(OpList, err)
	}
	if p.lose {
		return s.meter.fail(OpList, fmt.Errorf("fault: list %q: response lost: %w", prefix, ErrInjected))
	}
	return nil
}

// countingReader counts the put body bytes the inner store reads.
type countingReader struct {
	r io.Reader
	m *meter
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.m.ops[OpPut].bytesIn.Add(int64(n))
	return n, err
}

// body wraps a Get body: it counts bytes out, truncates if planned, fails
// during an outage, and counts one error if the body ends in one.
type body struct {
	s        *Store
	key      string
	rc       io.ReadCloser
	limit    int64 // bytes left before the truncation; -1: none
	cleanEOF bool
	end      error // once set, every Read returns it
}

func (b *body) Read(p []byte) (int, error) {
	if b.end != nil {
		return 0, b.end
	}
	if b.s.outage.Load() {
		return 0, b.finish(fmt.Errorf("fault: read %q: outage: %w", b.key, ErrInjected))
	}
	if b.limit == 0 {
		// At the cut. Only if data is left is this a truncation: peek
		// one byte to tell.
		var one [1]byte
		n, err := b.rc.Read(one[:])
		switch {
		case n == 0 && err == io.EOF:
			return 0, b.finish(io.EOF)
		case n == 0 && err != nil:
			return 0, b.finish(err)
		case n == 0:
			return 0, nil // io.Reader allows (0, nil); ask again
		case b.cleanEOF:
			return 0, b.finish(io.EOF)
		default:
			return 0, b.finish(fmt.Errorf("fault: read %q: body truncated: %w", b.key, errors.Join(ErrInjected, io.ErrUnexpectedEOF)))
		}
	}
	if b.limit > 0 && int64(len(p)) > b.limit {
		p = p[:b.limit]
	}
	n, err := b.rc.Read(p)
	b.s.meter.ops[OpGet].bytesOut.Add(int64(n))
	if b.limit > 0 {
		b.limit -= int64(n)
	}
	if err != nil {
		return n, b.finish(err)
	}
	return n, nil
}

// finish records how the body ended, counting an error once.
func (b *body) finish(err error) error {
	b.end = err
	if err != io.EOF {
		b.s.meter.ops[OpGet].errors.Add(1)
	}
	return err
}

func (b *body) Close() error { return b.rc.Close() }
