package keypool

import (
	"testing"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
)

// boundsPool has one key with every limit configured.
func boundsPool(t *testing.T) (*Pool, *clock.Fake) {
	t.Helper()
	return newPool(t, Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{RPM: 100, ITPM: 100000, OTPM: 10000}}}})
}

var absurd = Usage{InputTokens: 1e12, CacheCreationInputTokens: 1e12, CacheReadInputTokens: 1e12, OutputTokens: 1e12, HaveInput: true, HaveOutput: true}

// One response with absurd usage charges no more than the request could
// have used: input what the body could hold (or the bucket), output its
// max_tokens; and it teaches the estimator nothing.
func TestAbsurdUsageIsBounded(t *testing.T) {
	p, clk := boundsPool(t)
	r := acquire(t, p, Request{Model: sonnet, Bytes: 4000, MaxTokens: 1000})
	r.Settle(Result{Status: 200, Usage: absurd})
	// Input: max(4000 bytes + slack, 100000 capacity) = the whole bucket.
	wantLevel(t, p, "a", sonnet, kindInput, 0, 1e-6)
	wantLevel(t, p, "a", sonnet, kindOutput, 9000, 1e-6)
	if e := p.Snapshot().Estimator; len(e) != 0 {
		t.Fatalf("the estimator learned from an absurd response: %+v", e)
	}
	tot := p.Snapshot().Keys[0].Totals
	if tot.InputTokens > maxUsageField || tot.OutputTokens > 1000 {
		t.Fatalf("totals not bounded: %+v", tot)
	}
	// The next request is estimated as before (4 bytes a token).
	clk.Advance(time.Minute)
	if r2 := acquire(t, p, Request{Model: sonnet, Bytes: 4000}); r2.Estimate() != 1000 {
		t.Fatalf("estimate after the outlier %d, want 1000", r2.Estimate())
	}
}

// Without max_tokens, and streamed (Charge, then Settle), output still
// drives the bucket at most one capacity into debt.
func TestAbsurdStreamedUsageDebtIsBounded(t *testing.T) {
	p, clk := boundsPool(t)
	r := acquire(t, p, Request{Model: sonnet, Bytes: 400000})
	r.Charge(Usage{InputTokens: 1e12, HaveInput: true, OutputTokens: 1, HaveOutput: true})
	r.Charge(Usage{InputTokens: 1e12, HaveInput: true, OutputTokens: 1e15, HaveOutput: true})
	r.Settle(Result{Status: 200, Usage: absurd})
	wantLevel(t, p, "a", sonnet, kindInput, -100000, 1e-6)
	wantLevel(t, p, "a", sonnet, kindOutput, -10000, 1e-6)
	// Two minutes later the budgets are full again.
	clk.Advance(2 * time.Minute)
	acquire(t, p, Request{Model: sonnet, Bytes: 4000})
}

// A header's remaining count can push the level down, but not past one
// capacity of debt (it cannot be below zero by the upstream's own count;
// what was charged later may be).
func TestLearnedLimitIsCapped(t *testing.T) {
	p, clk := newPool(t, Config{Keys: keys("a")})
	r := acquire(t, p, Request{Model: sonnet, Bytes: 4000})
	observe(r, clk, 200,
		"anthropic-ratelimit-input-tokens-limit", "1000000000000000",
		"anthropic-ratelimit-input-tokens-remaining", "1000000000000000",
		"anthropic-ratelimit-requests-limit", "9223372036854775807",
		"anthropic-ratelimit-requests-remaining", "9223372036854775807")
	r.Settle(ok200())
	b := p.Snapshot().Keys[0].Budgets[0]
	if b.InputTokens.Learned != maxLearnedTPM || b.Requests.Learned != maxLearnedRPM {
		t.Fatalf("learned limits %d, %d: not capped", b.InputTokens.Learned, b.Requests.Learned)
	}
	// A count beyond int64 is capped too, not taken as absent.
	r = acquire(t, p, Request{Model: sonnet, Bytes: 4000})
	observe(r, clk, 200, "anthropic-ratelimit-output-tokens-limit", "99999999999999999999999")
	r.Settle(ok200())
	if b := p.Snapshot().Keys[0].Budgets[0]; b.OutputTokens.Learned != maxLearnedTPM {
		t.Fatalf("output limit beyond int64 learned as %d", b.OutputTokens.Learned)
	}
	if b.InputTokens.Learned != maxLearnedTPM || b.Requests.Learned != maxLearnedRPM {
		t.Fatalf("learned limits %d, %d: not capped", b.InputTokens.Learned, b.Requests.Learned)
	}
	if b.InputTokens.Remaining > maxLearnedTPM || b.Requests.Remaining > maxLearnedRPM {
		t.Fatalf("remaining beyond the cap: %+v", b)
	}
}

// Dates from the upstream, however far ahead, give a cooldown of at most
// MaxCooldown: never an overflow (which would read as the past), never
// ignored.
func TestFarDatesAreCappedNotIgnored(t *testing.T) {
	far := "9999-12-31T23:59:59Z"
	for _, c := range []struct {
		name string
		kv   []string
	}{
		{"retry-after date", []string{"retry-after", "Fri, 31 Dec 9999 23:59:59 GMT"}},
		{"retry-after seconds", []string{"retry-after", "1e300"}},
		{"reset", []string{"anthropic-ratelimit-requests-remaining", "0", "anthropic-ratelimit-requests-reset", far}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, clk := newPool(t, Config{Keys: keys("a")})
			r := acquire(t, p, Request{Model: sonnet})
			observe(r, clk, 429, c.kv...)
			r.Settle(Result{Status: 429})
			k := p.Snapshot().Keys[0]
			if k.State != "cooling" || k.Until == nil || !k.Until.Equal(clk.Now().Add(MaxCooldown)) {
				t.Fatalf("state %q until %v, want cooling until now+%v", k.State, k.Until, MaxCooldown)
			}
		})
	}
	// tokens-* alone (an older response) cools too, capped the same way.
	p, clk := newPool(t, Config{Keys: keys("a")})
	r := acquire(t, p, Request{Model: sonnet})
	observe(r, clk, 200, "anthropic-ratelimit-tokens-remaining", "0", "anthropic-ratelimit-tokens-reset", far)
	r.Settle(ok200())
	if k := p.Snapshot().Keys[0]; k.Until == nil || !k.Until.Equal(clk.Now().Add(MaxCooldown)) {
		t.Fatalf("tokens reset: %+v", k)
	}
	// A headers value built by hand (not parsed) is capped as well.
	p, clk = newPool(t, Config{Keys: keys("a")})
	r = acquire(t, p, Request{Model: sonnet})
	h := noHeaders()
	h.Requests = Limit{Limit: -1, Remaining: 0, Reset: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}
	r.ObserveHeaders(429, h)
	if k := p.Snapshot().Keys[0]; k.Until == nil || !k.Until.Equal(clk.Now().Add(MaxCooldown)) {
		t.Fatalf("hand-built reset: %+v", k)
	}
}

func TestConfiguredCooldownsAreCapped(t *testing.T) {
	p, clk := newPool(t, Config{Keys: keys("a"), DefaultCooldown: 1000 * time.Hour, SpendCapPark: 1000 * 24 * time.Hour})
	r := acquire(t, p, Request{Model: sonnet})
	observe(r, clk, 429)
	r.Park(time.Time{}, "spend cap reached")
	r.Settle(Result{Status: 429})
	k := p.Snapshot().Keys[0]
	if k.State != "parked" || !k.Until.Equal(clk.Now().Add(MaxPark)) {
		t.Fatalf("park %+v, want until now+%v", k, MaxPark)
	}
	if c := k.Budgets[0].CoolingUntil; c == nil || !c.Equal(clk.Now().Add(MaxCooldown)) {
		t.Fatalf("cooldown until %v, want now+%v", c, MaxCooldown)
	}
}

// A spend-cap date far ahead parks for MaxPark, visibly.
func TestParkIsCappedAndVisible(t *testing.T) {
	p, clk := newPool(t, Config{Keys: keys("a")})
	r := acquire(t, p, Request{Model: sonnet})
	r.Park(time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC), "spend cap reached")
	r.Settle(Result{Status: 429})
	k := p.Snapshot().Keys[0]
	if k.State != "parked" || k.Until == nil || !k.Until.Equal(clk.Now().Add(MaxPark)) || k.Reason != "spend cap reached" {
		t.Fatalf("park %+v, want parked until now+%v with its reason", k, MaxPark)
	}
	clk.Advance(MaxPark)
	acquire(t, p, Request{Model: sonnet})
}

// Enable gives back a usable key: no park, no cooldown, no debt.
func TestEnableRestoresAUsableBudget(t *testing.T) {
	p, clk := boundsPool(t)
	r := acquire(t, p, Request{Model: sonnet, Bytes: 400000})
	observe(r, clk, 429, "retry-after", "3600")
	r.Park(clk.Now().Add(time.Hour), "spend cap reached")
	r.Settle(Result{Status: 200, Usage: absurd})
	r.Disable("upstream 401")
	if !p.Enable("a") {
		t.Fatal("Enable: unknown key")
	}
	for k := range numKinds {
		if l := level(t, p, "a", sonnet, k); l < 0 {
			t.Fatalf("%s level %v after Enable", kindNames[k], l)
		}
	}
	if k := p.Snapshot().Keys[0]; k.State != "ok" {
		t.Fatalf("state after Enable %+v", k)
	}
	// Usable: the next request is admitted within seconds of refill.
	clk.Advance(time.Second)
	acquire(t, p, Request{Model: sonnet, Bytes: 400})
}

// A reload that lowers a key's configured limits clamps its budget into
// the new capacity: the old debt must not last for hours at the new rate.
func TestReloadClampsBudgetToNewLimits(t *testing.T) {
	clkPool, clk := newPool(t, Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{ITPM: 1000000}}}})
	st := clkPool.st
	r := acquire(t, clkPool, Request{Model: sonnet, Bytes: 4000000})
	r.Settle(Result{Status: 200, Usage: Usage{InputTokens: 2000000, HaveInput: true}})
	wantLevel(t, clkPool, "a", sonnet, kindInput, -1000000, 1e-6)
	p2, err := newPoolOn(st, Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{ITPM: 1000}}}})
	if err != nil {
		t.Fatal(err)
	}
	clkPool.Close()
	wantLevel(t, p2, "a", sonnet, kindInput, -1000, 1e-6)
	clk.Advance(2 * time.Minute)
	wantLevel(t, p2, "a", sonnet, kindInput, 1000, 1e-6)
}

// A reload that drops a configured limit leaves the learned one: the
// budget is clamped into that capacity.
func TestReloadToLearnedLimitClamps(t *testing.T) {
	p, clk := newPool(t, Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{ITPM: 1000000}}}})
	r := acquire(t, p, Request{Model: sonnet, Bytes: 4000000})
	observe(r, clk, 200, "anthropic-ratelimit-input-tokens-limit", "1000")
	r.Settle(Result{Status: 200, Usage: Usage{InputTokens: 2000000, HaveInput: true}})
	wantLevel(t, p, "a", sonnet, kindInput, -1000000, 1e-6)
	p2, err := newPoolOn(p.st, Config{Keys: keys("a")})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	wantLevel(t, p2, "a", sonnet, kindInput, -1000, 1e-6)
}

// A request body far larger than the bucket is admitted at a full bucket
// (as upstream) and leaves at most one capacity of debt.
func TestHugeRequestDebtIsBounded(t *testing.T) {
	p, _ := boundsPool(t)
	r := acquire(t, p, Request{Model: sonnet, Bytes: 40_000_000}) // 10M tokens estimated
	wantLevel(t, p, "a", sonnet, kindInput, -100000, 1e-6)
	if r.Estimate() != 200000 {
		t.Fatalf("reserved %d, want the 200000 that fit", r.Estimate())
	}
	// Settling corrects what was reserved to what was used.
	r.Settle(Result{Status: 200, Usage: Usage{InputTokens: 50000, HaveInput: true}})
	wantLevel(t, p, "a", sonnet, kindInput, 50000, 1e-6)
}
