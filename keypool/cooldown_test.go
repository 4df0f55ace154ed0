package keypool

import (
	"testing"
	"time"

	"github.com/cc-relay/caddy-cc-relay/selector"
)

func TestUpstream429CoolsOrgClassForRetryAfter(t *testing.T) {
	p, clk := newPool(t, Config{Keys: []KeyConfig{
		{Name: "a1", Org: "A"}, {Name: "a2", Org: "A"},
	}})
	r := acquire(t, p, Request{Model: sonnet, Bytes: 400})
	observe(r, clk, 429, "retry-after", "30")
	r.Settle(Result{Status: 429})
	// Both keys of the organization are out for Sonnet...
	nc := refused(t, p, Request{Model: sonnet})
	if !durNear(nc.RetryAfter, 30*time.Second) || nc.NoKeys {
		t.Fatalf("RetryAfter %v NoKeys %v, want 30s", nc.RetryAfter, nc.NoKeys)
	}
	if ra, noKeys := p.RetryAfter(sonnet, 400); !durNear(ra, 30*time.Second) || noKeys {
		t.Fatalf("Pool.RetryAfter %v %v", ra, noKeys)
	}
	// ...and other model classes are not.
	for _, m := range []string{haiku, opus} {
		acquire(t, p, Request{Model: m}).Settle(ok200())
	}
	s := p.Snapshot()
	for _, k := range s.Keys {
		if k.State != "cooling" || k.Totals.RateLimited > 1 {
			t.Fatalf("key %s state %q", k.Name, k.State)
		}
	}
	if s.Keys[0].Totals.RateLimited+s.Keys[1].Totals.RateLimited != 1 {
		t.Fatalf("rate_limited totals %+v %+v", s.Keys[0].Totals, s.Keys[1].Totals)
	}
	clk.Advance(30*time.Second - time.Millisecond)
	refused(t, p, Request{Model: sonnet})
	clk.Advance(time.Millisecond)
	acquire(t, p, Request{Model: sonnet})
	if st := p.Snapshot().Keys[0].State; st != "ok" {
		t.Fatalf("state %q after the cooldown", st)
	}
}

func TestUpstream429RetryAfterAtLeastOneSecond(t *testing.T) {
	p, clk := newPool(t, Config{Keys: keys("a")})
	r := acquire(t, p, Request{Model: sonnet})
	observe(r, clk, 429, "retry-after", "0")
	if nc := refused(t, p, Request{Model: sonnet}); !durNear(nc.RetryAfter, time.Second) {
		t.Fatalf("RetryAfter %v, want 1s", nc.RetryAfter)
	}
}

func TestUpstream429FallsBackToResetOfExhaustedBucket(t *testing.T) {
	p, clk := newPool(t, Config{Keys: keys("a")})
	r := acquire(t, p, Request{Model: sonnet, Bytes: 400})
	observe(r, clk, 429,
		"anthropic-ratelimit-requests-limit", "50",
		"anthropic-ratelimit-requests-remaining", "3",
		"anthropic-ratelimit-requests-reset", rfc3339(t0.Add(5*time.Second)),
		"anthropic-ratelimit-input-tokens-limit", "30000",
		"anthropic-ratelimit-input-tokens-remaining", "0",
		"anthropic-ratelimit-input-tokens-reset", rfc3339(t0.Add(17*time.Second)))
	r.Settle(Result{Status: 429})
	nc := refused(t, p, Request{Model: sonnet, Bytes: 4})
	if !durNear(nc.RetryAfter, 17*time.Second) {
		t.Fatalf("RetryAfter %v, want 17s (reset of the exhausted input bucket)", nc.RetryAfter)
	}
	clk.Advance(17 * time.Second)
	acquire(t, p, Request{Model: sonnet, Bytes: 4})
}

func TestUpstream429FallsBackToDefaultCooldown(t *testing.T) {
	p, clk := newPool(t, Config{Keys: keys("a"), DefaultCooldown: 7 * time.Second})
	r := acquire(t, p, Request{Model: sonnet})
	observe(r, clk, 429)
	r.Settle(Result{Status: 429})
	if nc := refused(t, p, Request{Model: sonnet}); !durNear(nc.RetryAfter, 7*time.Second) {
		t.Fatalf("RetryAfter %v, want DefaultCooldown 7s", nc.RetryAfter)
	}
	k := p.Snapshot().Keys[0]
	if k.State != "cooling" || k.Reason == "" || k.Budgets[0].CoolReason == "" {
		t.Fatalf("snapshot %+v", k)
	}
	clk.Advance(7 * time.Second)
	acquire(t, p, Request{Model: sonnet})

	// The default DefaultCooldown is 10s.
	p2, clk2 := newPool(t, Config{Keys: keys("a")})
	r = acquire(t, p2, Request{Model: sonnet})
	observe(r, clk2, 429)
	if nc := refused(t, p2, Request{Model: sonnet}); !durNear(nc.RetryAfter, 10*time.Second) {
		t.Fatalf("RetryAfter %v, want 10s", nc.RetryAfter)
	}
}

// RetryAfter is the earliest time any key can admit: one key cooling for
// 30s and another out of requests refilling in 12s make 12s, not 30s.
func TestRetryAfterEarliestOverAllKeysAndBudgets(t *testing.T) {
	p, clk := newPool(t, Config{Strategy: selector.Priority, Keys: []KeyConfig{
		{Name: "cool", Priority: 0},
		{Name: "rpm", Priority: 1, Limits: Limits{RPM: 5}},
	}})
	r := acquire(t, p, Request{Model: sonnet})
	if r.KeyName() != "cool" {
		t.Fatalf("priority picked %s", r.KeyName())
	}
	observe(r, clk, 429, "retry-after", "30")
	r.Settle(Result{Status: 429})
	for i := 0; i < 5; i++ {
		if r := acquire(t, p, Request{Model: sonnet}); r.KeyName() != "rpm" {
			t.Fatalf("reserved %s while it cools down", r.KeyName())
		}
	}
	nc := refused(t, p, Request{Model: sonnet})
	if !durNear(nc.RetryAfter, 12*time.Second) {
		t.Fatalf("RetryAfter %v, want 12s", nc.RetryAfter)
	}
	if ra, _ := p.RetryAfter(sonnet, 0); !durNear(ra, 12*time.Second) {
		t.Fatalf("Pool.RetryAfter %v, want 12s", ra)
	}
	clk.Advance(12 * time.Second)
	if r := acquire(t, p, Request{Model: sonnet}); r.KeyName() != "rpm" {
		t.Fatalf("reserved %s", r.KeyName())
	}
	// Now rpm needs 12s again and cool 18s: still 12s.
	if nc := refused(t, p, Request{Model: sonnet}); !durNear(nc.RetryAfter, 12*time.Second) {
		t.Fatalf("RetryAfter %v, want 12s", nc.RetryAfter)
	}
	// Cooling and out of budget at once: the later of the two counts.
	r2, clk2 := newPool(t, Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{RPM: 1}}}})
	r = acquire(t, r2, Request{Model: sonnet})
	observe(r, clk2, 429, "retry-after", "5")
	if nc := refused(t, r2, Request{Model: sonnet}); !durNear(nc.RetryAfter, time.Minute) {
		t.Fatalf("RetryAfter %v, want 60s (the refill outlasts the cooldown)", nc.RetryAfter)
	}
}

func TestRetryAfterCountsOutputDebtAndPark(t *testing.T) {
	p, clk := newPool(t, Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{OTPM: 600}}}})
	r := acquire(t, p, Request{Model: sonnet})
	r.Settle(Result{Status: 200, Usage: Usage{OutputTokens: 900, HaveOutput: true}})
	// -300 back above 0 (to 1 token) at 10 tokens/s.
	if nc := refused(t, p, Request{Model: sonnet}); !durNear(nc.RetryAfter, 30100*time.Millisecond) {
		t.Fatalf("RetryAfter %v, want 30.1s", nc.RetryAfter)
	}
	clk.Advance(31 * time.Second)
	r = acquire(t, p, Request{Model: sonnet})
	r.Park(time.Time{}, "spend cap")
	r.Settle(Result{Status: 400})
	nc := refused(t, p, Request{Model: sonnet})
	if !durNear(nc.RetryAfter, time.Hour) {
		t.Fatalf("RetryAfter %v, want the default SpendCapPark of 1h", nc.RetryAfter)
	}
	if k := p.Snapshot().Keys[0]; k.State != "parked" || k.Reason != "spend cap" {
		t.Fatalf("snapshot %+v", k)
	}
	r.Park(clk.Now().Add(2*time.Hour), "until the 1st")
	if nc := refused(t, p, Request{Model: sonnet}); !durNear(nc.RetryAfter, 2*time.Hour) {
		t.Fatalf("RetryAfter %v, want 2h", nc.RetryAfter)
	}
}

func TestDisabledKeys(t *testing.T) {
	p, _ := newPool(t, Config{Keys: keys("a", "b")})
	r := acquire(t, p, Request{Model: sonnet})
	first := r.KeyName()
	r.Disable("401 invalid x-api-key")
	r.Settle(Result{Status: 401})
	for i := 0; i < 10; i++ {
		if r := acquire(t, p, Request{Model: sonnet}); r.KeyName() == first {
			t.Fatalf("disabled key %s reserved", first)
		}
	}
	s := p.Snapshot()
	for _, k := range s.Keys {
		if k.Name == first && (k.State != "disabled" || k.Reason != "401 invalid x-api-key") {
			t.Fatalf("snapshot %+v", k)
		}
	}
	r = acquire(t, p, Request{Model: sonnet})
	r.Disable("403")
	nc := refused(t, p, Request{Model: sonnet})
	if !nc.NoKeys || nc.Error() != "no enabled upstream key" {
		t.Fatalf("all keys disabled: %+v %q", nc, nc.Error())
	}
	if _, noKeys := p.RetryAfter(sonnet, 0); !noKeys {
		t.Fatal("RetryAfter did not report noKeys")
	}
	if !p.Enable(first) || p.Enable("nope") {
		t.Fatal("Enable result")
	}
	if r := acquire(t, p, Request{Model: sonnet}); r.KeyName() != first {
		t.Fatalf("reserved %s, want the re-enabled %s", r.KeyName(), first)
	}
}

func TestEnableClearsCoolingAndPark(t *testing.T) {
	p, clk := newPool(t, Config{Keys: []KeyConfig{{Name: "a", Org: "A"}, {Name: "b", Org: "A"}}})
	r := acquire(t, p, Request{Model: sonnet})
	observe(r, clk, 429, "retry-after", "60")
	r2 := acquire(t, p, Request{Model: haiku})
	r2.Park(time.Time{}, "spend cap")
	refused(t, p, Request{Model: sonnet})
	refused(t, p, Request{Model: haiku})
	if !p.Enable("b") {
		t.Fatal("Enable")
	}
	// b shares a's organization: the whole organization is back.
	acquire(t, p, Request{Model: sonnet})
	acquire(t, p, Request{Model: haiku})
	for _, k := range p.Snapshot().Keys {
		if k.State != "ok" {
			t.Fatalf("key %s state %q after Enable", k.Name, k.State)
		}
	}
}
