package fault

import (
	"errors"
	"testing"

	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/storetest"
)

// TestLateConformance: while passing, Late is a correct Store (the whole
// key space is under its prefix, so every Put goes through its own path).
func TestLateConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) remote.Store { return NewLate(newInner(t), "") }, storetest.Options{})
}

// A held Put times out without reaching the store and lands when Land is
// called: a create then wins over nothing, a second late create of the
// same key is refused by the store.
func TestLateHoldAndLand(t *testing.T) {
	l := NewLate(newInner(t), "log/")
	if _, err := l.Land(t.Context()); !errors.Is(err, ErrNothingHeld) {
		t.Fatalf("Land with nothing held: %v", err)
	}
	l.Hold()
	create := remote.PutOptions{IfNoneMatch: true}
	if _, err := put(t, l, "log/1", "one", create); !errors.Is(err, ErrHeld) || !errors.Is(err, ErrInjected) {
		t.Fatalf("held put: %v, want ErrHeld", err)
	}
	if _, err := put(t, l, "log/1", "uno", create); !errors.Is(err, ErrHeld) {
		t.Fatalf("second held put: %v", err)
	}
	// Outside the prefix nothing is held.
	if _, err := put(t, l, "head", "h", remote.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := get(t, l.Inner(), "log/1"); !errors.Is(err, remote.ErrNotFound) {
		t.Fatalf("held put reached the store: %v", err)
	}
	if got, err := get(t, l, "head"); err != nil || got != "h" {
		t.Fatalf("put outside the prefix: %q, %v", got, err)
	}
	l.Pass(false)
	errs, err := l.Land(t.Context())
	if err != nil || len(errs) != 2 || errs[0] != nil || !errors.Is(errs[1], remote.ErrPrecondition) {
		t.Fatalf("Land: %v %v, want [nil ErrPrecondition]", errs, err)
	}
	if got, err := get(t, l.Inner(), "log/1"); err != nil || got != "one" {
		t.Fatalf("after Land: %q, %v; want the first request's body", got, err)
	}
	if _, err := l.Land(t.Context()); !errors.Is(err, ErrNothingHeld) {
		t.Fatalf("second Land: %v", err)
	}
	if err := l.OneBodyPerKey(); err == nil {
		t.Fatal("two different bodies offered for log/1, OneBodyPerKey says none")
	}
	if o := l.Offered("log/1"); len(o) != 2 || string(o[0]) != "one" || string(o[1]) != "uno" {
		t.Fatalf("Offered: %q", o)
	}
	if o := l.Offered("head"); o != nil {
		t.Fatalf("Offered outside the prefix: %q", o)
	}
}

// Pass(true): the held request lands just before the retry of its key, so
// the retry of a create finds the key taken; a held request for another
// key stays held.
func TestLateLandFirst(t *testing.T) {
	l := NewLate(newInner(t), "log/")
	create := remote.PutOptions{IfNoneMatch: true}
	l.Hold()
	put(t, l, "log/1", "a", create)
	put(t, l, "log/2", "b", create)
	l.Pass(true)
	if _, err := put(t, l, "log/1", "a", create); !errors.Is(err, remote.ErrPrecondition) {
		t.Fatalf("retry after the late create landed: %v, want ErrPrecondition", err)
	}
	if got, err := get(t, l.Inner(), "log/1"); err != nil || got != "a" {
		t.Fatalf("log/1: %q, %v", got, err)
	}
	if _, err := get(t, l.Inner(), "log/2"); !errors.Is(err, remote.ErrNotFound) {
		t.Fatalf("log/2 landed with the retry of log/1: %v", err)
	}
	if err := l.OneBodyPerKey(); err != nil {
		t.Fatalf("same bytes offered again: %v", err)
	}
	if errs, err := l.Land(t.Context()); err != nil || len(errs) != 1 || errs[0] != nil {
		t.Fatalf("Land of log/2: %v %v", errs, err)
	}
}

// HoldRefusing: the first Put is held, later ones are refused with 412
// while the key still reads as missing.
func TestLateHoldRefusing(t *testing.T) {
	l := NewLate(newInner(t), "log/")
	l.HoldRefusing()
	create := remote.PutOptions{IfNoneMatch: true}
	if _, err := put(t, l, "log/1", "a", create); !errors.Is(err, ErrHeld) {
		t.Fatalf("first put: %v, want ErrHeld", err)
	}
	if _, err := put(t, l, "log/1", "a", create); !errors.Is(err, remote.ErrPrecondition) {
		t.Fatalf("retry while the first is in flight: %v, want ErrPrecondition", err)
	}
	if _, err := get(t, l, "log/1"); !errors.Is(err, remote.ErrNotFound) {
		t.Fatalf("key during the in-flight create: %v", err)
	}
	// Hold (not refusing) holds every request again.
	l.Hold()
	if _, err := put(t, l, "log/1", "a", create); !errors.Is(err, ErrHeld) {
		t.Fatalf("put under Hold: %v, want ErrHeld", err)
	}
	l.Pass(false)
	if errs, err := l.Land(t.Context()); err != nil || len(errs) != 2 || errs[0] != nil || !errors.Is(errs[1], remote.ErrPrecondition) {
		t.Fatalf("Land: %v %v", errs, err)
	}
}

// LandRefused passes only when every landed request lost its race.
func TestLateLandRefused(t *testing.T) {
	l := NewLate(newInner(t), "log/")
	if err := l.LandRefused(t.Context()); !errors.Is(err, ErrNothingHeld) {
		t.Fatalf("nothing held: %v", err)
	}
	create := remote.PutOptions{IfNoneMatch: true}
	l.Hold()
	if _, err := put(t, l, "log/1", "late", create); !errors.Is(err, ErrHeld) {
		t.Fatal(err)
	}
	l.Pass(false)
	if _, err := put(t, l, "log/1", "winner", create); err != nil {
		t.Fatal(err)
	}
	if err := l.LandRefused(t.Context()); err != nil {
		t.Fatalf("a late create of a taken key: %v", err)
	}
	l.Hold()
	if _, err := put(t, l, "log/2", "late", create); !errors.Is(err, ErrHeld) {
		t.Fatal(err)
	}
	l.Pass(false)
	if err := l.LandRefused(t.Context()); err == nil {
		t.Fatal("a late create that landed (log/2 was free) passed as refused")
	}
}
