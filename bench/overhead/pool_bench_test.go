package main

import (
	"context"
	"fmt"
	"testing"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
	"github.com/cc-relay/caddy-cc-relay/keypool"
	"github.com/cc-relay/caddy-cc-relay/selector"
)

// BenchmarkPoolAcquireSettle is the relay's per-request selection and
// accounting through keypool's exported API only: Acquire (pick + reserve)
// then Settle with usage, at 1, 10, 100 and 1000 keys, serial and parallel.
// The run command uses it when keypool has no BenchmarkAcquireSettle, or
// with -micro-own.
func BenchmarkPoolAcquireSettle(b *testing.B) {
	result := keypool.Result{Status: 200, Usage: keypool.Usage{
		InputTokens: 1203, CacheReadInputTokens: 31250, OutputTokens: 28, HaveInput: true, HaveOutput: true,
	}}
	poolBench(b, true, func(b testing.TB, p *keypool.Pool, req *keypool.Request, res *keypool.Reservation, i uint64) bool {
		req.Session = 1 + i%32
		if err := p.Acquire(context.Background(), req, res); err != nil {
			b.Error(err)
			return false
		}
		res.Settle(result)
		return true
	})
}

// BenchmarkPoolAcquire is selection plus reservation alone through the
// exported API (no sticky sessions, nothing settled inside the timed loop:
// the limits are far above what a run can reserve). The run command uses it
// when keypool has no BenchmarkAcquire, or with -micro-own.
func BenchmarkPoolAcquire(b *testing.B) {
	poolBench(b, false, func(b testing.TB, p *keypool.Pool, req *keypool.Request, res *keypool.Reservation, _ uint64) bool {
		if err := p.Acquire(context.Background(), req, res); err != nil {
			b.Error(err)
			return false
		}
		return true
	})
}

// poolBench runs step for every strategy at 1, 10, 100 and 1000 keys,
// serial and parallel (each goroutine with its own request and
// reservation, on one shared pool).
func poolBench(b *testing.B, sticky bool, step func(b testing.TB, p *keypool.Pool, req *keypool.Request, res *keypool.Reservation, i uint64) bool) {
	strategies := []selector.Strategy{selector.LeastLoaded, selector.RoundRobin, selector.Weighted, selector.Priority, selector.Random}
	for _, s := range strategies {
		for _, n := range []int{1, 10, 100, 1000} {
			b.Run(fmt.Sprintf("%v/keys=%d/serial", s, n), func(b *testing.B) {
				p := benchPool(b, s, n, sticky)
				req := keypool.Request{Model: "claude-sonnet-4-5-20250929", Bytes: 4096}
				var res keypool.Reservation
				b.ReportAllocs()
				i := uint64(0)
				for b.Loop() {
					i++
					if !step(b, p, &req, &res, i) {
						return
					}
				}
			})
			b.Run(fmt.Sprintf("%v/keys=%d/parallel", s, n), func(b *testing.B) {
				p := benchPool(b, s, n, sticky)
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					req := keypool.Request{Model: "claude-sonnet-4-5-20250929", Bytes: 4096}
					var res keypool.Reservation
					i := uint64(0)
					for pb.Next() {
						i++
						if !step(b, p, &req, &res, i) {
							return
						}
					}
				})
			})
		}
	}
}

// benchPool is a pool of n keys with limits far above what a run uses.
func benchPool(b *testing.B, s selector.Strategy, n int, sticky bool) *keypool.Pool {
	ks := make([]keypool.KeyConfig, n)
	for i := range ks {
		ks[i] = keypool.KeyConfig{
			Name:   fmt.Sprintf("bench-%04d", i),
			Limits: keypool.Limits{RPM: benchRPM, ITPM: benchITPM, OTPM: benchOTPM},
			Weight: 1 + i%3, Priority: i % 2,
		}
	}
	p, err := keypool.NewState(clock.Real{}).NewPool(keypool.Config{Keys: ks, Strategy: s, Sticky: sticky, Seed: 1,
		TokenEstimateRatio: keypool.DefaultTokenEstimateRatio, StickyTTL: 3600e9, StickyMaxSessions: 100000, DefaultCooldown: 10e9, SpendCapPark: 3600e9})
	if err != nil {
		b.Fatal(err)
	}
	return p
}
