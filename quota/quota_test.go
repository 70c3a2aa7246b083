package quota

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

// checkSums verifies the accounting invariant: every level's used is the
// sum of what is under it, down to the reservations.
func checkSums(t *testing.T, p *Pool) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	var global uint64
	for _, tn := range p.tenants {
		var tenant uint64
		for _, j := range tn.jobs {
			var job uint64
			for r := range j.res {
				if r.closed {
					t.Fatalf("%s lists a closed reservation", j.lvl.name)
				}
				job += r.n
			}
			if job != j.lvl.used {
				t.Fatalf("%s: used %d, reservations hold %d", j.lvl.name, j.lvl.used, job)
			}
			tenant += job
		}
		if tenant != tn.lvl.used {
			t.Fatalf("%s: used %d, jobs hold %d", tn.lvl.name, tn.lvl.used, tenant)
		}
		global += tenant
	}
	if global != p.lvl.used {
		t.Fatalf("global: used %d, tenants hold %d", p.lvl.used, global)
	}
}

func mustJob(t *testing.T, p *Pool, tenant string, tenantLimit uint64, job string, jobLimit uint64) *Job {
	t.Helper()
	tn, ok := p.Tenant(tenant)
	if !ok {
		var err error
		if tn, err = p.NewTenant(tenant, tenantLimit); err != nil {
			t.Fatal(err)
		}
	}
	j, err := tn.NewJob(job, jobLimit)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func wantExhausted(t *testing.T, err error, level string, limit, used, requested, short uint64) *ExhaustedError {
	t.Helper()
	var e *ExhaustedError
	if !errors.As(err, &e) || !errors.Is(err, ErrExhausted) {
		t.Fatalf("got %v, want an ExhaustedError at %s", err, level)
	}
	if e.Level != level || e.Limit != limit || e.Used != used || e.Requested != requested || e.Short() != short {
		t.Fatalf("got %+v (short %d), want level %q limit %d used %d requested %d short %d",
			*e, e.Short(), level, limit, used, requested, short)
	}
	if !strings.Contains(err.Error(), level) || !strings.Contains(err.Error(), fmt.Sprintf("short by %d", short)) {
		t.Fatalf("message %q does not name %q and the shortfall", err, level)
	}
	return e
}

func wantUsed(t *testing.T, what string, got, want uint64) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: used %d, want %d", what, got, want)
	}
}

// A request counts at all three levels or none, and the refusal names the
// narrowest level without room and the shortfall.
func TestThreeLevelsAtomic(t *testing.T) {
	p := NewPool(100)
	a1 := mustJob(t, p, "acme", 60, "a1", 40)
	a2 := mustJob(t, p, "acme", 60, "a2", 0)
	b1 := mustJob(t, p, "bolt", 0, "b1", 0)
	acme, _ := p.Tenant("acme")
	bolt, _ := p.Tenant("bolt")

	r1, err := a1.Reserve(30)
	if err != nil {
		t.Fatal(err)
	}
	_, err = a1.Reserve(20) // job: 30 of 40
	wantExhausted(t, err, "job a1", 40, 30, 20, 10)
	_, err = a2.Reserve(35) // tenant: 30 of 60
	wantExhausted(t, err, "tenant acme", 60, 30, 35, 5)
	r2, err := a2.Reserve(25)
	if err != nil {
		t.Fatal(err)
	}
	_, err = b1.Reserve(46) // global: 55 of 100; job and tenant unlimited
	wantExhausted(t, err, "global", 100, 55, 46, 1)
	// The refusals changed nothing anywhere.
	wantUsed(t, "a1", a1.Used(), 30)
	wantUsed(t, "a2", a2.Used(), 25)
	wantUsed(t, "b1", b1.Used(), 0)
	wantUsed(t, "acme", acme.Used(), 55)
	wantUsed(t, "bolt", bolt.Used(), 0)
	wantUsed(t, "global", p.Used(), 55)
	checkSums(t, p)

	// Grow is atomic too: job a1 has 10 left, tenant 5.
	err = r1.Grow(6)
	wantExhausted(t, err, "tenant acme", 60, 55, 6, 1)
	if err := r1.Grow(5); err != nil {
		t.Fatal(err)
	}
	wantUsed(t, "r1", r1.Size(), 35)
	wantUsed(t, "global", p.Used(), 60)
	if s := acme.Stats(); s.Denied != 2 || s.Peak != 60 || s.Limit != 60 || s.Level != "tenant acme" {
		t.Fatalf("acme stats %+v", s)
	}
	if s := a1.Stats(); s.Denied != 1 || s.Used != 35 || s.Limit != 40 {
		t.Fatalf("a1 stats %+v", s)
	}
	r1.Close()
	r2.Close()
	for name, used := range map[string]uint64{"a1": a1.Used(), "a2": a2.Used(), "acme": acme.Used(), "global": p.Used()} {
		wantUsed(t, name, used, 0)
	}
	checkSums(t, p)
}

// Seed-review finding 11: counters near math.MaxUint64 must refuse, never
// wrap.
func TestNoWrapNearMaxUint64(t *testing.T) {
	t.Run("unlimited", func(t *testing.T) {
		p := NewPool(0)
		j := mustJob(t, p, "t", 0, "j", 0)
		r, err := j.Reserve(math.MaxUint64 - 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Grow(1); err != nil {
			t.Fatal(err)
		}
		wantUsed(t, "global", p.Used(), math.MaxUint64)
		_, err = j.Reserve(1)
		wantExhausted(t, err, "job j", 0, math.MaxUint64, 1, 1)
		err = r.Grow(math.MaxUint64)
		wantExhausted(t, err, "job j", 0, math.MaxUint64, math.MaxUint64, math.MaxUint64)
		wantUsed(t, "global", p.Used(), math.MaxUint64)
		// Another job: the tenant's counter is what would wrap.
		j2 := mustJob(t, p, "t", 0, "j2", 0)
		_, err = j2.Reserve(2)
		wantExhausted(t, err, "tenant t", 0, math.MaxUint64, 2, 2)
		// Another tenant: the pool's.
		j3 := mustJob(t, p, "u", 0, "j3", 0)
		_, err = j3.Reserve(math.MaxUint64)
		wantExhausted(t, err, "global", 0, math.MaxUint64, math.MaxUint64, math.MaxUint64)
		r.Close()
		wantUsed(t, "global", p.Used(), 0)
		checkSums(t, p)
	})
	t.Run("limited", func(t *testing.T) {
		// used + n wraps to 4, which a naive "used+n <= limit" admits.
		p := NewPool(100)
		j := mustJob(t, p, "t", 100, "j", 100)
		r, err := j.Reserve(10)
		if err != nil {
			t.Fatal(err)
		}
		_, err = j.Reserve(math.MaxUint64 - 5)
		e := wantExhausted(t, err, "job j", 100, 10, math.MaxUint64-5, math.MaxUint64-5-90)
		if !e.Never {
			t.Fatal("a request above the whole limit is not marked Never")
		}
		err = r.Grow(math.MaxUint64)
		wantExhausted(t, err, "job j", 100, 10, math.MaxUint64, math.MaxUint64-90)
		wantUsed(t, "global", p.Used(), 10)
		// Waiting cannot help either, and must not hang.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := j.ReserveWait(ctx, math.MaxUint64-5); !errors.Is(err, ErrExhausted) || ctx.Err() != nil {
			t.Fatalf("ReserveWait(MaxUint64-5): %v", err)
		}
		r.Close()
		checkSums(t, p)
	})
	t.Run("limit lowered below use", func(t *testing.T) {
		p := NewPool(math.MaxUint64)
		j := mustJob(t, p, "t", 0, "j", 0)
		r, err := j.Reserve(math.MaxUint64)
		if err != nil {
			t.Fatal(err)
		}
		p.SetLimit(1)
		_, err = j.Reserve(math.MaxUint64)
		e := wantExhausted(t, err, "global", 1, math.MaxUint64, math.MaxUint64, math.MaxUint64) // saturates
		if !e.Never {
			t.Fatal("not marked Never")
		}
		r.Close()
		wantUsed(t, "global", p.Used(), 0)
	})
}

// Bytes return exactly once, whichever way they are released.
func TestIdempotentRelease(t *testing.T) {
	p := NewPool(1000)
	j := mustJob(t, p, "t", 0, "j", 0)
	other := mustJob(t, p, "t", 0, "other", 0)
	tn, _ := p.Tenant("t")
	keep, _ := other.Reserve(100) // must stay counted throughout

	r, _ := j.Reserve(300)
	if err := r.Release(301); !errors.Is(err, ErrOverRelease) {
		t.Fatalf("Release(301) of 300: %v", err)
	}
	wantUsed(t, "r after refused release", r.Size(), 300)
	if err := r.Release(math.MaxUint64); !errors.Is(err, ErrOverRelease) {
		t.Fatalf("Release(MaxUint64): %v", err)
	}
	if err := r.Release(100); err != nil {
		t.Fatal(err)
	}
	if err := r.Release(0); err != nil {
		t.Fatal(err)
	}
	wantUsed(t, "global", p.Used(), 300)
	r.Close()
	r.Close()
	wantUsed(t, "global after double Close", p.Used(), 100)
	if err := r.Release(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Release after Close: %v", err)
	}
	if err := r.Grow(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Grow after Close: %v", err)
	}

	// Job.ReleaseAll then the reservations' own Close: no double credit.
	r1, _ := j.Reserve(50)
	r2, _ := j.Reserve(70)
	j.ReleaseAll()
	wantUsed(t, "j after ReleaseAll", j.Used(), 0)
	r1.Close()
	if err := r2.Release(70); !errors.Is(err, ErrClosed) {
		t.Fatalf("Release after ReleaseAll: %v", err)
	}
	wantUsed(t, "tenant", tn.Used(), 100)
	r3, err := j.Reserve(20) // the job stays open after ReleaseAll
	if err != nil {
		t.Fatal(err)
	}
	j.Close()
	j.Close()
	r3.Close()
	wantUsed(t, "tenant after Job.Close", tn.Used(), 100)
	if _, err := j.Reserve(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Reserve on a closed job: %v", err)
	}
	// The id is free again.
	j2, err := tn.NewJob("j", 0)
	if err != nil {
		t.Fatal(err)
	}
	r4, _ := j2.Reserve(5)
	tn.Close()
	tn.Close()
	r4.Close()
	keep.Close()
	wantUsed(t, "global after Tenant.Close", p.Used(), 0)
	if _, err := tn.NewJob("x", 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("NewJob on a closed tenant: %v", err)
	}
	if _, err := other.Reserve(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Reserve on a job of a closed tenant: %v", err)
	}
	checkSums(t, p)
}

func TestNames(t *testing.T) {
	p := NewPool(0)
	if _, err := p.NewTenant("", 0); err == nil {
		t.Fatal("empty tenant name accepted")
	}
	tn, _ := p.NewTenant("a", 0)
	if _, err := p.NewTenant("a", 0); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate tenant: %v", err)
	}
	if _, err := tn.NewJob("", 0); err == nil {
		t.Fatal("empty job id accepted")
	}
	j, _ := tn.NewJob("1", 0)
	if _, err := tn.NewJob("1", 0); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate job: %v", err)
	}
	if got, ok := tn.Job("1"); !ok || got != j || j.ID() != "1" || tn.Name() != "a" {
		t.Fatal("lookup")
	}
	tn.Close()
	if _, ok := p.Tenant("a"); ok {
		t.Fatal("closed tenant still listed")
	}
	if _, err := p.NewTenant("a", 0); err != nil {
		t.Fatalf("reuse of a closed tenant's name: %v", err)
	}
}

// waitFor polls until cond holds (a waiter has registered, say).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

type result struct {
	r   *Reservation
	err error
}

func TestReserveWaitWakesOnRelease(t *testing.T) {
	p := NewPool(100)
	j := mustJob(t, p, "t", 0, "j", 0)
	j2 := mustJob(t, p, "t", 0, "j2", 0)
	held, _ := j.Reserve(80)
	done := make(chan result, 1)
	go func() {
		r, err := j2.ReserveWait(context.Background(), 50)
		done <- result{r, err}
	}()
	waitFor(t, "the waiter", func() bool { return p.Stats().Waiting == 1 })
	if s := j2.Stats(); s.Waiting != 1 {
		t.Fatalf("job stats while waiting: %+v", s)
	}
	select {
	case res := <-done:
		t.Fatalf("ReserveWait returned before room was made: %+v", res)
	default:
	}
	if err := held.Release(20); err != nil { // 60 used: still no room for 50
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	select {
	case res := <-done:
		t.Fatalf("ReserveWait returned without room: %+v", res)
	default:
	}
	if err := held.Release(10); err != nil { // 50 used: room
		t.Fatal(err)
	}
	res := <-done
	if res.err != nil || res.r.Size() != 50 {
		t.Fatalf("ReserveWait: %v", res.err)
	}
	wantUsed(t, "global", p.Used(), 100)
	if s := p.Stats(); s.Waiting != 0 {
		t.Fatalf("waiting %d after success", s.Waiting)
	}
	// GrowWait likewise.
	go func() { done <- result{nil, res.r.GrowWait(context.Background(), 30)} }()
	waitFor(t, "the grower", func() bool { return p.Stats().Waiting == 1 })
	held.Close()
	if r := <-done; r.err != nil || res.r.Size() != 80 {
		t.Fatalf("GrowWait: %v", r.err)
	}
	res.r.Close()
	wantUsed(t, "global", p.Used(), 0)
	checkSums(t, p)
}

func TestReserveWaitHonoursContext(t *testing.T) {
	p := NewPool(100)
	j := mustJob(t, p, "t", 50, "j", 0)
	held, _ := j.Reserve(50)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan result, 1)
	go func() {
		r, err := j.ReserveWait(ctx, 10)
		done <- result{r, err}
	}()
	waitFor(t, "the waiter", func() bool { return p.Stats().Waiting == 1 })
	cancel()
	res := <-done
	if res.r != nil || !errors.Is(res.err, context.Canceled) || !errors.Is(res.err, ErrExhausted) {
		t.Fatalf("cancelled ReserveWait: %+v", res)
	}
	if !strings.Contains(res.err.Error(), "tenant t") {
		t.Fatalf("cancelled wait does not say what it waited for: %v", res.err)
	}
	// GrowWait: 40 more in tenant u, then 20 more would pass the global
	// 100 (but could fit after others release, so it waits).
	k := mustJob(t, p, "u", 0, "k", 0)
	rk, _ := k.Reserve(40)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if err := rk.GrowWait(ctx2, 20); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrExhausted) {
		t.Fatalf("GrowWait past deadline: %v", err)
	}
	if s := p.Stats(); s.Waiting != 0 || s.Used != 90 {
		t.Fatalf("after cancelled waits: %+v", s)
	}
	// An already-cancelled context still gets room that is free.
	if r, err := k.ReserveWait(ctx, 10); err != nil || r.Size() != 10 {
		t.Fatalf("ReserveWait with room and a done ctx: %v", err)
	}
	wantUsed(t, "global", p.Used(), 100)
	held.Close()
	k.Close()
	wantUsed(t, "global", p.Used(), 0)
	checkSums(t, p)
}

// A request bigger than a whole limit fails at once instead of waiting
// for room that cannot come.
func TestReserveWaitNeverFits(t *testing.T) {
	p := NewPool(100)
	j := mustJob(t, p, "t", 80, "j", 60)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		n     uint64
		level string
	}{{61, "job j"}, {81, "tenant t"}, {101, "job j"}} {
		_, err := j.ReserveWait(ctx, tc.n)
		var e *ExhaustedError
		if !errors.As(err, &e) || !e.Never || ctx.Err() != nil {
			t.Fatalf("ReserveWait(%d): %v", tc.n, err)
		}
	}
	j.SetLimit(0)
	_, err := j.ReserveWait(ctx, 81)
	wantExhausted(t, err, "tenant t", 80, 0, 81, 1)
	tn, _ := p.Tenant("t")
	tn.SetLimit(0)
	_, err = j.ReserveWait(ctx, 101)
	wantExhausted(t, err, "global", 100, 0, 101, 1)
	// GrowWait counts what the reservation already holds.
	r, _ := j.Reserve(70)
	err = r.GrowWait(ctx, 31)
	if e := wantExhausted(t, err, "global", 100, 70, 31, 1); !e.Never {
		t.Fatal("GrowWait beyond the limit with its own bytes not marked Never")
	}
	r.Close()
}

// Lowering a limit under a waiter makes it fail; raising one lets it in;
// closing its job ends its wait.
func TestWaitersSeeLimitChangesAndClose(t *testing.T) {
	p := NewPool(100)
	j := mustJob(t, p, "t", 0, "j", 0)
	held, _ := j.Reserve(100)
	done := make(chan result, 1)
	wait := func(n uint64) {
		go func() {
			r, err := j.ReserveWait(context.Background(), n)
			done <- result{r, err}
		}()
		waitFor(t, "the waiter", func() bool { return p.Stats().Waiting == 1 })
	}

	wait(40)
	p.SetLimit(30)
	res := <-done
	var e *ExhaustedError
	if !errors.As(res.err, &e) || !e.Never || e.Level != "global" {
		t.Fatalf("waiter after the limit fell below its request: %v", res.err)
	}

	p.SetLimit(100)
	wait(40)
	p.SetLimit(140)
	if res := <-done; res.err != nil || res.r.Size() != 40 {
		t.Fatalf("waiter after the limit rose: %v", res.err)
	}

	wait(1)
	j.Close()
	if res := <-done; !errors.Is(res.err, ErrClosed) {
		t.Fatalf("waiter after Job.Close: %v", res.err)
	}
	held.Close()
	wantUsed(t, "global", p.Used(), 0)
	checkSums(t, p)
}

// Many goroutines reserve, grow, release and wait across tenants and
// jobs. No level ever exceeds its limit, the sums hold throughout, and
// after everything is released every level is exactly 0.
func TestConcurrentExactZero(t *testing.T) {
	const tenants, jobsPer, workers, ops = 3, 3, 4, 300
	p := NewPool(1000)
	var jobs []*Job
	for ti := range tenants {
		tn, _ := p.NewTenant(fmt.Sprint("t", ti), 500)
		for ji := range jobsPer {
			j, _ := tn.NewJob(fmt.Sprint("j", ji), 250)
			jobs = append(jobs, j)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(jobs)*workers)
	for ji, j := range jobs {
		for w := range workers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(ji), uint64(w)))
				var mine []*Reservation
				for range ops {
					n := uint64(rng.IntN(120))
					switch op := rng.IntN(6); {
					case op == 0 && len(mine) > 0:
						i := rng.IntN(len(mine))
						mine[i].Close()
						mine = append(mine[:i], mine[i+1:]...)
					case op == 1 && len(mine) > 0:
						r := mine[rng.IntN(len(mine))]
						if err := r.Release(min(n, r.Size())); err != nil {
							errs <- err
							return
						}
					case op == 2 && len(mine) > 0:
						err := mine[rng.IntN(len(mine))].Grow(n)
						if err != nil && !errors.Is(err, ErrExhausted) {
							errs <- err
							return
						}
					case op == 3:
						ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(3))*time.Millisecond)
						r, err := j.ReserveWait(ctx, n)
						cancel()
						if err == nil {
							mine = append(mine, r)
						} else if !errors.Is(err, ErrExhausted) {
							errs <- err
							return
						}
					default:
						r, err := j.Reserve(n)
						if err == nil {
							mine = append(mine, r)
						} else if !errors.Is(err, ErrExhausted) {
							errs <- err
							return
						}
					}
				}
				for _, r := range mine {
					r.Close()
					r.Close()
				}
			})
		}
	}
	// Check the invariants while the workers run.
	stop := make(chan struct{})
	checked := make(chan struct{})
	go func() {
		defer close(checked)
		for {
			select {
			case <-stop:
				return
			default:
			}
			checkSums(t, p)
			time.Sleep(time.Millisecond)
		}
	}()
	wg.Wait()
	close(stop)
	<-checked
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	checkSums(t, p)
	if s := p.Stats(); s.Used != 0 || s.Waiting != 0 || s.Peak > 1000 || s.Peak == 0 {
		t.Fatalf("global after all released: %+v", s)
	}
	for ti := range tenants {
		tn, _ := p.Tenant(fmt.Sprint("t", ti))
		if s := tn.Stats(); s.Used != 0 || s.Waiting != 0 || s.Peak > 500 {
			t.Fatalf("%+v", s)
		}
	}
	for _, j := range jobs {
		if s := j.Stats(); s.Used != 0 || s.Peak > 250 {
			t.Fatalf("%+v", s)
		}
	}
	if p.Stats().Denied == 0 {
		t.Fatal("no request was refused: the limits did not bite, the test proves nothing")
	}
}
