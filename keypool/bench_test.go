package keypool

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
	"github.com/cc-relay/caddy-cc-relay/selector"
)

// benchPool has n keys with limits far above what a benchmark can use, so
// every pick does the full budget arithmetic and never runs out.
func benchPool(b *testing.B, n int, s selector.Strategy) *Pool {
	return benchPoolClock(b, n, s, clock.Real{})
}

// tickClock moves 1 µs per reading: the pool's own cost without the
// platform's time.Now (about 70 ns on a kvm-clock VM).
type tickClock struct {
	clock.Real
	ns atomic.Int64
}

func (c *tickClock) Now() time.Time { return time.Unix(0, t0.UnixNano()+c.ns.Add(1000)) }

func benchPoolClock(b *testing.B, n int, s selector.Strategy, c clock.Clock) *Pool {
	ks := make([]KeyConfig, n)
	for i := range ks {
		ks[i] = KeyConfig{
			Name:     fmt.Sprintf("key-%04d", i),
			Limits:   Limits{RPM: 1 << 40, ITPM: 1 << 50, OTPM: 1 << 50},
			Weight:   1 + i%3,
			Priority: i % 2,
		}
	}
	p, err := newPoolOn(NewState(c), Config{Keys: ks, Strategy: s, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	return p
}

var benchResult = Result{Status: 200, Usage: Usage{
	InputTokens: 1200, CacheReadInputTokens: 30000, OutputTokens: 300, HaveInput: true, HaveOutput: true,
}}

var benchStrategies = []selector.Strategy{selector.LeastLoaded, selector.RoundRobin, selector.Weighted, selector.Priority, selector.Random}

// serialRequests runs Acquire (and Settle with usage, when settle is set)
// in b's loop over a fresh pool of n keys.
func serialRequests(b *testing.B, s selector.Strategy, n int, settle bool) {
	p := benchPool(b, n, s)
	ctx := context.Background()
	req := Request{Model: "claude-sonnet-4-5-20250929", Bytes: 120000}
	var res Reservation
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Acquire(ctx, &req, &res); err != nil {
			b.Fatal(err)
		}
		if settle {
			res.Settle(benchResult)
		}
	}
}

// parallelRequests is serialRequests from GOMAXPROCS goroutines sharing
// one pool, each with its own request and reservation.
func parallelRequests(b *testing.B, s selector.Strategy, n int, settle bool) {
	p := benchPool(b, n, s)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		req := Request{Model: "claude-sonnet-4-5-20250929", Bytes: 120000}
		var res Reservation
		for pb.Next() {
			if err := p.Acquire(ctx, &req, &res); err != nil {
				b.Error(err)
				return
			}
			if settle {
				res.Settle(benchResult)
			}
		}
	})
}

// BenchmarkAcquireSettle is one request's whole life in the pool: Acquire
// then Settle with usage.
func BenchmarkAcquireSettle(b *testing.B) {
	for _, s := range benchStrategies {
		for _, n := range []int{1, 10, 100, 1000} {
			b.Run(fmt.Sprintf("%v/keys=%d/serial", s, n), func(b *testing.B) { serialRequests(b, s, n, true) })
			b.Run(fmt.Sprintf("%v/keys=%d/parallel", s, n), func(b *testing.B) { parallelRequests(b, s, n, true) })
		}
	}
}

// BenchmarkAcquireSettleSticky adds a session pin lookup to every request.
func BenchmarkAcquireSettleSticky(b *testing.B) {
	ks := make([]KeyConfig, 100)
	for i := range ks {
		ks[i] = KeyConfig{Name: fmt.Sprintf("key-%04d", i), Limits: Limits{RPM: 1 << 40, ITPM: 1 << 50, OTPM: 1 << 50}}
	}
	p, err := newPoolOn(NewState(clock.Real{}), Config{Keys: ks, Sticky: true})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	req := Request{Model: "claude-sonnet-4-5", Bytes: 120000}
	var res Reservation
	b.ReportAllocs()
	i := uint64(0)
	for b.Loop() {
		i++
		req.Session = 1 + i%1000
		if err := p.Acquire(ctx, &req, &res); err != nil {
			b.Fatal(err)
		}
		res.Settle(benchResult)
	}
}

// BenchmarkAcquireSettleTickClock is BenchmarkAcquireSettle at 100 keys
// with a clock that costs next to nothing to read.
func BenchmarkAcquireSettleTickClock(b *testing.B) {
	for _, s := range []selector.Strategy{selector.LeastLoaded, selector.RoundRobin, selector.Weighted, selector.Priority, selector.Random} {
		b.Run(fmt.Sprintf("%v/keys=100", s), func(b *testing.B) {
			p := benchPoolClock(b, 100, s, &tickClock{})
			ctx := context.Background()
			req := Request{Model: "claude-sonnet-4-5-20250929", Bytes: 120000}
			var res Reservation
			b.ReportAllocs()
			for b.Loop() {
				if err := p.Acquire(ctx, &req, &res); err != nil {
					b.Fatal(err)
				}
				res.Settle(benchResult)
			}
		})
	}
}

// BenchmarkAcquire is selection plus reservation alone (what a request pays
// before it is forwarded): the limits are so large that reservations never
// run a key dry, so nothing is settled inside the timed loop.
func BenchmarkAcquire(b *testing.B) {
	for _, s := range benchStrategies {
		for _, n := range []int{1, 10, 100, 1000} {
			b.Run(fmt.Sprintf("%v/keys=%d/serial", s, n), func(b *testing.B) { serialRequests(b, s, n, false) })
			b.Run(fmt.Sprintf("%v/keys=%d/parallel", s, n), func(b *testing.B) { parallelRequests(b, s, n, false) })
		}
	}
}

// BenchmarkWaitPass is one pass over the wait queue (what a Settle costs
// while requests wait) with n waiters on a drained pool of 16 keys: every
// waiter is tried and holds ahead.
func BenchmarkWaitPass(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("waiters=%d", n), func(b *testing.B) {
			clk := clock.NewFake(t0)
			ks := make([]KeyConfig, 16)
			for i := range ks {
				ks[i] = KeyConfig{Name: fmt.Sprintf("key-%02d", i), Limits: Limits{RPM: 1, ITPM: 1 << 20}}
			}
			p, err := newPoolOn(NewState(clk), Config{Keys: ks, MaxWait: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			for range ks {
				acquire(b, p, Request{Model: sonnet, Bytes: 4000})
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for i := range n {
				startAcquire(ctx, p, Request{Model: sonnet, Bytes: 4000, Client: fmt.Sprint("c", i%8)})
				clk.BlockUntil(i + 1)
			}
			st := p.st
			class := p.classIndexOf(sonnet)
			now := clk.Now().UnixNano()
			b.ReportAllocs()
			for b.Loop() {
				st.mu.Lock()
				st.dispatch(class, now)
				st.mu.Unlock()
			}
		})
	}
}
