package keypool

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
)

// waitPool has one key at 6 requests a minute (one every 10 s), drained.
func waitPool(t *testing.T, maxWait time.Duration) (*Pool, *clock.Fake, []*Reservation) {
	t.Helper()
	p, clk := newPool(t, Config{MaxWait: maxWait, Keys: []KeyConfig{{Name: "a", Limits: Limits{RPM: 6}}}})
	var held []*Reservation
	for i := 0; i < 6; i++ {
		held = append(held, acquire(t, p, Request{Model: sonnet}))
	}
	return p, clk, held
}

func waiting(p *Pool) int { return p.Snapshot().Waiting }

func TestWaitAdmitsInArrivalOrderAsCapacityRefills(t *testing.T) {
	p, clk, held := waitPool(t, 30*time.Second)
	first := startAcquire(context.Background(), p, Request{Model: sonnet, Bytes: 1})
	clk.BlockUntil(1) // first is parked, at the head
	second := startAcquire(context.Background(), p, Request{Model: sonnet, Bytes: 2})
	clk.BlockUntil(2) // second is parked behind it
	if n := waiting(p); n != 2 {
		t.Fatalf("%d waiting, want 2", n)
	}
	// One request refills in 10 s: it goes to the first to arrive.
	clk.Advance(10 * time.Second)
	got := await(t, first)
	if got.err != nil || got.res.KeyName() != "a" || got.res.bytes != 1 {
		t.Fatalf("first waiter: %+v", got)
	}
	if _, done := pendingResult(second); done {
		t.Fatal("second waiter admitted without capacity")
	}
	// Capacity handed back (a request the upstream never saw) wakes the
	// next in line at once.
	held[0].Settle(Result{Status: 0})
	got = await(t, second)
	if got.err != nil || got.res.bytes != 2 {
		t.Fatalf("second waiter: %+v", got)
	}
	if n := waiting(p); n != 0 {
		t.Fatalf("%d still waiting", n)
	}
}

func TestWaitHeadWakesOnRefillTimer(t *testing.T) {
	p, clk, _ := waitPool(t, time.Minute)
	ch := startAcquire(context.Background(), p, Request{Model: sonnet})
	clk.BlockUntil(1)
	clk.Advance(9 * time.Second)
	if _, done := pendingResult(ch); done {
		t.Fatal("admitted before the refill")
	}
	clk.Advance(time.Second)
	if got := await(t, ch); got.err != nil {
		t.Fatal(got.err)
	}
}

func TestWaitTimesOut(t *testing.T) {
	p, clk, _ := waitPool(t, 5*time.Second)
	ch := startAcquire(context.Background(), p, Request{Model: sonnet})
	clk.BlockUntil(1)
	clk.Advance(5 * time.Second)
	got := await(t, ch)
	var nc *NoCapacityError
	if !errors.As(got.err, &nc) || nc.NoKeys {
		t.Fatalf("err %v, want *NoCapacityError", got.err)
	}
	if !durNear(nc.RetryAfter, 5*time.Second) {
		t.Fatalf("RetryAfter %v, want 5s (10s refill, 5s waited)", nc.RetryAfter)
	}
	if n := waiting(p); n != 0 {
		t.Fatalf("%d still waiting after the timeout", n)
	}
	if n := clk.Pending(); n != 0 {
		t.Fatalf("%d timers left behind", n)
	}
}

func TestWaitCancelLeavesAtOnceAndPassesTheTurn(t *testing.T) {
	p, clk, held := waitPool(t, time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	first := startAcquire(ctx, p, Request{Model: sonnet, Bytes: 1})
	clk.BlockUntil(1)
	second := startAcquire(context.Background(), p, Request{Model: sonnet, Bytes: 2})
	clk.BlockUntil(2)
	cancel()
	got := await(t, first) // no time passes
	if !errors.Is(got.err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", got.err)
	}
	// The second is now first in line: capacity goes to it.
	held[0].Settle(Result{Status: 0})
	got = await(t, second)
	if got.err != nil || got.res.bytes != 2 {
		t.Fatalf("second waiter: %+v", got)
	}
	if n := waiting(p); n != 0 {
		t.Fatalf("%d waiting", n)
	}
}

func TestWaitCancelBeforeParking(t *testing.T) {
	p, _, _ := waitPool(t, time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var r Reservation
	var err error
	within(t, "Acquire with a cancelled context", func() {
		err = p.Acquire(ctx, &Request{Model: sonnet}, &r)
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	if n := waiting(p); n != 0 {
		t.Fatalf("%d waiting", n)
	}
}

func TestRetriesNeverWait(t *testing.T) {
	p, clk, held := waitPool(t, time.Minute)
	a := &Attempts{}
	a.ExcludeKey(held[0]) // any earlier attempt
	a.n = 1
	var nc *NoCapacityError
	within(t, "a retry", func() {
		var r Reservation
		err := p.Acquire(context.Background(), &Request{Model: sonnet, Attempts: a}, &r)
		if !errors.As(err, &nc) {
			t.Errorf("retry: %v, want *NoCapacityError at once", err)
		}
	})
	if n := clk.Pending(); n != 0 || waiting(p) != 0 {
		t.Fatalf("a retry waited: %d timers, %d waiting", n, waiting(p))
	}
	if nc.RetryAfter <= 0 {
		t.Fatalf("RetryAfter %v", nc.RetryAfter)
	}
}

// A request whose model class has capacity must not queue behind waiters
// for another class: their budgets are separate.
func TestWaitQueueIsPerModelClass(t *testing.T) {
	p, clk, _ := waitPool(t, time.Minute)
	sonnetWaiter := startAcquire(context.Background(), p, Request{Model: sonnet})
	clk.BlockUntil(1)
	ch := startAcquire(context.Background(), p, Request{Model: haiku})
	got := await(t, ch)
	if got.err != nil || got.res.Class() != "haiku" {
		t.Fatalf("haiku behind a sonnet waiter: %+v", got)
	}
	// Haiku also waits in its own line, behind nobody.
	for i := 0; i < 5; i++ {
		acquire(t, p, Request{Model: haiku})
	}
	hw := startAcquire(context.Background(), p, Request{Model: haiku})
	clk.BlockUntil(2)
	if n := waiting(p); n != 2 {
		t.Fatalf("%d waiting, want 2", n)
	}
	clk.Advance(10 * time.Second)
	for _, ch := range []<-chan acqResult{sonnetWaiter, hw} {
		if got := await(t, ch); got.err != nil {
			t.Fatal(got.err)
		}
	}
}

// Waiting with no key enabled is pointless: refused at once.
func TestNoKeysDoesNotWait(t *testing.T) {
	p, clk := newPool(t, Config{MaxWait: time.Minute, Keys: keys("a")})
	acquire(t, p, Request{Model: sonnet}).Disable("revoked")
	var nc *NoCapacityError
	within(t, "Acquire with every key disabled", func() {
		var r Reservation
		err := p.Acquire(context.Background(), &Request{Model: sonnet}, &r)
		errors.As(err, &nc)
	})
	if nc == nil || !nc.NoKeys || clk.Pending() != 0 {
		t.Fatalf("err %+v, %d timers", nc, clk.Pending())
	}
}

func TestEnableWakesWaiters(t *testing.T) {
	p, clk := newPool(t, Config{MaxWait: time.Minute, Keys: keys("a", "b")})
	r := acquire(t, p, Request{Model: sonnet})
	observe(r, clk, 429, "retry-after", "600")
	r2 := acquire(t, p, Request{Model: sonnet})
	observe(r2, clk, 429, "retry-after", "600")
	ch := startAcquire(context.Background(), p, Request{Model: sonnet})
	clk.BlockUntil(1)
	p.Enable("b")
	if got := await(t, ch); got.err != nil || got.res.KeyName() != "b" {
		t.Fatalf("%+v", got)
	}
}
