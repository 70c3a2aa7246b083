package fault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"github.com/bopstore/bop/remote"
)

// ErrHeld is the error a Late store answers a held Put with: to the caller
// the request timed out, yet the store may still apply it. It wraps
// ErrInjected.
var ErrHeld = fmt.Errorf("fault: request timed out (it may still be applied): %w", ErrInjected)

// ErrNothingHeld is returned by Late.Land when no request is held.
var ErrNothingHeld = errors.New("fault: no request was held")

// Late is a remote.Store wrapping another to model requests a store
// applies after their client gave up (a timeout whose request is still in
// flight). While holding (Hold), a Put of a key under the prefix is kept
// back, not applied, and answered with ErrHeld. The held requests reach
// the inner store later, in the order they were made: all at once when
// Land is called or, after Pass(true), each just before the next Put of
// its key. Calls outside the prefix, and every Get, Head, Delete and List,
// go straight to the inner store.
//
// Late also records every body offered for each key under the prefix,
// held or not, so a test can check a writer never offered two different
// bodies for one key (OneBodyPerKey).
//
// Safe for concurrent use.
type Late struct {
	inner  remote.Store
	prefix string

	mu        sync.Mutex
	holding   bool
	refusing  bool // while holding with a request held, Puts get ErrPrecondition
	landFirst bool // while passing, held requests for a key land before its next Put
	held      []heldPut
	offered   map[string][][]byte
}

type heldPut struct {
	key  string
	body []byte
	opts remote.PutOptions
}

var _ remote.Store = (*Late)(nil)

// NewLate wraps inner; only Puts of keys starting with prefix are ever held
// or recorded. It starts passing every request through.
func NewLate(inner remote.Store, prefix string) *Late {
	return &Late{inner: inner, prefix: prefix, offered: map[string][][]byte{}}
}

// Inner returns the wrapped store: what a second client, or the store
// itself, sees.
func (l *Late) Inner() remote.Store { return l.inner }

// Hold starts holding: from now on each Put under the prefix is kept back
// and answered with ErrHeld.
func (l *Late) Hold() {
	l.mu.Lock()
	l.holding, l.refusing = true, false
	l.mu.Unlock()
}

// HoldRefusing is Hold, except that once a request is held, every later
// Put under the prefix is refused with remote.ErrPrecondition instead of
// being held: what versitygw answers a conditional create while an
// earlier create of the key is still in flight, although the key reads
// as missing.
func (l *Late) HoldRefusing() {
	l.mu.Lock()
	l.holding, l.refusing = true, true
	l.mu.Unlock()
}

// Pass stops holding: Puts reach the inner store again. Requests already
// held stay held until Land or, if landFirst, each lands just before the
// next Put of its key (the late request wins the race with the retry).
func (l *Late) Pass(landFirst bool) {
	l.mu.Lock()
	l.holding, l.landFirst = false, landFirst
	l.mu.Unlock()
}

// Land applies every held request now, in order, and returns one error per
// request (nil where it was applied). With nothing held it returns
// ErrNothingHeld: a test that expected a late request would otherwise
// pass without one.
func (l *Late) Land(ctx context.Context) ([]error, error) {
	l.mu.Lock()
	held := l.held
	l.held = nil
	l.mu.Unlock()
	if len(held) == 0 {
		return nil, ErrNothingHeld
	}
	errs := make([]error, len(held))
	for i, h := range held {
		_, errs[i] = l.inner.Put(ctx, h.key, bytes.NewReader(h.body), h.opts)
	}
	return errs, nil
}

// LandRefused lands every held request (Land) and reports an error unless
// the store refused each of them with remote.ErrPrecondition: what a test
// expects when the requests came too late to win their race.
func (l *Late) LandRefused(ctx context.Context) error {
	errs, err := l.Land(ctx)
	if err != nil {
		return err
	}
	for i, err := range errs {
		if !errors.Is(err, remote.ErrPrecondition) {
			return fmt.Errorf("fault: late request %d of %d was not refused: %v", i+1, len(errs), err)
		}
	}
	return nil
}

// Offered returns every body offered for key, in order, held or not
// (nil for a key outside the prefix). The slices must not be modified.
func (l *Late) Offered(key string) [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([][]byte(nil), l.offered[key]...)
}

// OneBodyPerKey returns an error naming the keys for which two different
// bodies were offered, or nil: a writer that retries a request of unknown
// outcome must offer the same bytes again, never new ones.
func (l *Late) OneBodyPerKey() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var bad []string
	for key, bodies := range l.offered {
		for _, b := range bodies[1:] {
			if !bytes.Equal(b, bodies[0]) {
				bad = append(bad, key)
				break
			}
		}
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	return fmt.Errorf("fault: two different bodies were offered for %s", strings.Join(bad, ", "))
}

// Put holds, refuses or passes on a Put under the prefix (see Late); any
// other Put goes straight to the inner store.
func (l *Late) Put(ctx context.Context, key string, r io.Reader, opts remote.PutOptions) (remote.PutResult, error) {
	if !strings.HasPrefix(key, l.prefix) {
		return l.inner.Put(ctx, key, r, opts)
	}
	if r == nil {
		r = strings.NewReader("")
	}
	body, err := io.ReadAll(r)
	if err != nil {
		return remote.PutResult{}, fmt.Errorf("fault: put %q: read body: %w", key, err)
	}
	l.mu.Lock()
	l.offered[key] = append(l.offered[key], body)
	if l.holding {
		if l.refusing && len(l.held) > 0 {
			l.mu.Unlock()
			return remote.PutResult{}, fmt.Errorf("fault: put %q: an earlier request is in flight: %w (%w)", key, remote.ErrPrecondition, ErrInjected)
		}
		l.held = append(l.held, heldPut{key: key, body: body, opts: opts})
		l.mu.Unlock()
		return remote.PutResult{}, fmt.Errorf("fault: put %q: %w", key, ErrHeld)
	}
	var late []heldPut
	if l.landFirst {
		late = l.takeHeldLocked(key)
	}
	l.mu.Unlock()
	for _, h := range late {
		// A late request's outcome reaches no one: its client gave up.
		l.inner.Put(ctx, h.key, bytes.NewReader(h.body), h.opts)
	}
	return l.inner.Put(ctx, key, bytes.NewReader(body), opts)
}

// takeHeldLocked removes and returns the held requests for key.
func (l *Late) takeHeldLocked(key string) []heldPut {
	var out, keep []heldPut
	for _, h := range l.held {
		if h.key == key {
			out = append(out, h)
		} else {
			keep = append(keep, h)
		}
	}
	l.held = keep
	return out
}

// Get passes the get on.
func (l *Late) Get(ctx context.Context, key string, off, length int64) (io.ReadCloser, remote.ObjectInfo, error) {
	return l.inner.Get(ctx, key, off, length)
}

// Head passes the head on.
func (l *Late) Head(ctx context.Context, key string) (remote.ObjectInfo, error) {
	return l.inner.Head(ctx, key)
}

// Delete passes the delete on.
func (l *Late) Delete(ctx context.Context, key string) error { return l.inner.Delete(ctx, key) }

// List passes the listing on.
func (l *Late) List(ctx context.Context, prefix string, fn func(remote.ObjectInfo) error) error {
	return l.inner.List(ctx, prefix, fn)
}
