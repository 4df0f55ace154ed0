package keypool

import (
	"math"
	"testing"
	"time"
)

// FuzzObserveHeaders feeds a pool arbitrary rate-limit values of the kind
// anthropic.ParseRateLimits returns (counts from -1 up, resets anywhere up
// to MaxCooldown ahead, a retry-after between 0 and MaxCooldown): syncing,
// cooling and settling must never panic, and the pool must stay
// observable. (anthropic's FuzzParseRateLimits checks that the parser keeps
// to that range whatever the headers say.)
func FuzzObserveHeaders(f *testing.F) {
	f.Add(int64(50), int64(49), int64(30), int64(40000), int64(39000), int64(8000), int64(0), int64(30), true, 429)
	f.Add(int64(-1), int64(-1), int64(0), int64(-1), int64(-1), int64(-1), int64(-1), int64(0), false, 200)
	f.Add(int64(math.MaxInt64), int64(0), int64(math.MinInt64), int64(math.MaxInt64), int64(math.MaxInt64), int64(1), int64(0), int64(math.MaxInt64), true, 429)
	f.Add(int64(10), int64(0), int64(math.MaxInt64), int64(0), int64(0), int64(0), int64(0), int64(-5), true, 529)
	f.Fuzz(func(t *testing.T, rl, rr, resetSecs, il, ir, ol, orr, retrySecs int64, hasRetry bool, status int) {
		st := NewState(nil)
		pool, err := newPoolOn(st, Config{Keys: []KeyConfig{{Name: "k"}}})
		if err != nil {
			t.Fatal(err)
		}
		now := st.clock.Now()
		count := func(v int64) int64 { return max(v, -1) }
		// A reset of 0 seconds stands for an absent one; others reach
		// back 272 years (a Duration's range), forward to the cap.
		reset := time.Time{}
		if resetSecs != 0 {
			reset = now.Add(time.Duration(min(max(resetSecs, -1<<33), int64(MaxCooldown/time.Second))) * time.Second)
		}
		h := RateLimitHeaders{
			Requests:     Limit{Limit: count(rl), Remaining: count(rr), Reset: reset},
			InputTokens:  Limit{Limit: count(il), Remaining: count(ir), Reset: reset},
			OutputTokens: Limit{Limit: count(ol), Remaining: count(orr)},
			Tokens:       Limit{Limit: -1, Remaining: -1},
		}
		if hasRetry {
			h.RetryAfter = time.Duration(min(max(retrySecs, 0), int64(MaxCooldown/time.Second))) * time.Second
			h.HasRetryAfter = true
		}
		var res Reservation
		if err := pool.Acquire(t.Context(), &Request{Model: "claude-sonnet-4-5", Bytes: 100}, &res); err != nil {
			t.Fatal(err)
		}
		res.ObserveHeaders(status, h)
		res.Settle(Result{Status: status})
		_ = pool.Snapshot()
	})
}
