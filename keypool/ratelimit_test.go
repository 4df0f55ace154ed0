package keypool

import (
	"testing"
	"time"
)

// learnedPool is one key whose limits the first response teaches:
// 10 requests, 10000 input and 10000 output tokens a minute.
func learnedPool(t *testing.T) (*Pool, func(r *Reservation, status int, kv ...string)) {
	t.Helper()
	p, clk := newPool(t, Config{Keys: keys("a")})
	obs := func(r *Reservation, status int, kv ...string) {
		kv = append([]string{
			"anthropic-ratelimit-requests-limit", "10",
			"anthropic-ratelimit-input-tokens-limit", "10000",
			"anthropic-ratelimit-output-tokens-limit", "10000",
		}, kv...)
		observe(r, clk, status, kv...)
	}
	return p, obs
}

func TestSyncCorrectsDownAndUp(t *testing.T) {
	p, clk := newPool(t, Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{RPM: 100}}}})
	r := acquire(t, p, Request{Model: sonnet})
	wantLevel(t, p, "a", sonnet, kindRequests, 99, 1e-9)
	// Someone else uses the organization too: the upstream has 50 left.
	observe(r, clk, 200, "anthropic-ratelimit-requests-limit", "100", "anthropic-ratelimit-requests-remaining", "50")
	r.Settle(ok200())
	wantLevel(t, p, "a", sonnet, kindRequests, 50, 1e-9)

	// Down again, then up: the local view had drifted low (e.g. after a
	// reservation was charged that the upstream never counted).
	// (The 40 are answered: one still unanswered, admitted before r,
	// might not have reached the upstream, and would cap the raise.)
	for i := 0; i < 40; i++ {
		acquire(t, p, Request{Model: sonnet}).Settle(ok200())
	}
	r = acquire(t, p, Request{Model: sonnet})
	wantLevel(t, p, "a", sonnet, kindRequests, 9, 1e-9)
	observe(r, clk, 200, "anthropic-ratelimit-requests-limit", "100", "anthropic-ratelimit-requests-remaining", "30")
	wantLevel(t, p, "a", sonnet, kindRequests, 30, 1e-9)
}

func TestSyncNeverRefillsExhaustedBucket(t *testing.T) {
	p, obs := learnedPool(t)
	r := acquire(t, p, Request{Model: sonnet, Bytes: 4000}) // 1000 tokens
	obs(r, 200,
		"anthropic-ratelimit-requests-remaining", "9",
		"anthropic-ratelimit-input-tokens-remaining", "9000",
		"anthropic-ratelimit-output-tokens-remaining", "10000")
	r.Settle(Result{Status: 200, Usage: Usage{InputTokens: 1000, HaveInput: true}})
	// requests-remaining is exact (the upstream floors a continuous level):
	// 9 left means fewer than 10, so the bucket learned full must drop to 9.
	wantLevel(t, p, "a", sonnet, kindRequests, 9, 1e-9)
	// The rounded 9000 means 9000..9999 are left.
	if got := level(t, p, "a", sonnet, kindInput); got < 9000 || got >= 10000 {
		t.Fatalf("input level %v, want in [9000, 10000)", got)
	}

	// Exhaust the requests locally.
	var held []*Reservation
	for i := 0; i < 9; i++ {
		held = append(held, acquire(t, p, Request{Model: sonnet, Bytes: 40}))
	}
	refused(t, p, Request{Model: sonnet})
	// A response that says 0 left (it was the last admitted) is consistent:
	// nothing changes, nothing is admitted.
	obs(held[8], 200, "anthropic-ratelimit-requests-remaining", "0",
		"anthropic-ratelimit-input-tokens-remaining", "8000")
	wantLevel(t, p, "a", sonnet, kindRequests, 0, 1e-9)
	refused(t, p, Request{Model: sonnet})
	// An older response that says 8 were left when it was admitted (the
	// upstream had not seen the 8 that followed) justifies nothing more.
	obs(held[0], 200, "anthropic-ratelimit-requests-remaining", "8",
		"anthropic-ratelimit-input-tokens-remaining", "8000")
	wantLevel(t, p, "a", sonnet, kindRequests, 0, 1e-9)
	refused(t, p, Request{Model: sonnet})
	for _, r := range held {
		r.Settle(ok200())
	}
	refused(t, p, Request{Model: sonnet})
}

func TestSyncInputConsistentWithinRoundingStays(t *testing.T) {
	p, obs := learnedPool(t)
	r := acquire(t, p, Request{Model: sonnet, Bytes: 4})
	obs(r, 200, "anthropic-ratelimit-input-tokens-remaining", "10000")
	r.Settle(Result{Status: 200, Usage: Usage{InputTokens: 1, HaveInput: true}})
	wantLevel(t, p, "a", sonnet, kindInput, 10000, 1e-9)
	// Drain input locally to 300 tokens.
	r = acquire(t, p, Request{Model: sonnet, Bytes: 4 * 9700})
	obs(r, 200, "anthropic-ratelimit-input-tokens-remaining", "0")
	// 0 (rounded) means 0..999: the local 300 is consistent.
	wantLevel(t, p, "a", sonnet, kindInput, 300, 1e-9)
	r.Settle(Result{Status: 200, Usage: Usage{InputTokens: 9700, HaveInput: true}})
	wantLevel(t, p, "a", sonnet, kindInput, 300, 1e-9)
	// A rounded value well above the local level raises it to the
	// rounded value, no further.
	r = acquire(t, p, Request{Model: sonnet, Bytes: 400})
	wantLevel(t, p, "a", sonnet, kindInput, 200, 1e-9)
	obs(r, 200, "anthropic-ratelimit-input-tokens-remaining", "3000")
	wantLevel(t, p, "a", sonnet, kindInput, 3000, 1e-9)
	// A rounded value below the local level lowers it into range.
	r = acquire(t, p, Request{Model: sonnet, Bytes: 400})
	obs(r, 200, "anthropic-ratelimit-input-tokens-remaining", "1000")
	if got := level(t, p, "a", sonnet, kindInput); got < 1000 || got >= 2000 {
		t.Fatalf("input level %v, want in [1000, 2000)", got)
	}
}

// A response carries the remaining count as of its own admission; every
// reservation made since must still be subtracted, and refunds or
// corrections of older reservations must not be mistaken for capacity.
func TestSyncStaleRemainingSubtractsLaterReservations(t *testing.T) {
	p, clk := newPool(t, Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{RPM: 10, ITPM: 100000}}}})
	a := acquire(t, p, Request{Model: sonnet, Bytes: 4000})
	b := acquire(t, p, Request{Model: sonnet, Bytes: 4000})
	c := acquire(t, p, Request{Model: sonnet, Bytes: 4000})
	wantLevel(t, p, "a", sonnet, kindRequests, 7, 1e-9)
	// a's response says 9 left (only a counted): b and c still count.
	observe(a, clk, 200, "anthropic-ratelimit-requests-limit", "10", "anthropic-ratelimit-requests-remaining", "9")
	wantLevel(t, p, "a", sonnet, kindRequests, 7, 1e-9)
	b.Settle(ok200())
	c.Settle(ok200())
	a.Settle(ok200())
	wantLevel(t, p, "a", sonnet, kindRequests, 7, 1e-9)
}

func TestSyncIgnoresRefundsOfOlderReservations(t *testing.T) {
	p, clk := newPool(t, Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{ITPM: 100000}}}})
	x := acquire(t, p, Request{Model: sonnet, Bytes: 20000}) // 5000 estimated
	a := acquire(t, p, Request{Model: sonnet, Bytes: 4000})  // 1000 estimated
	b := acquire(t, p, Request{Model: sonnet, Bytes: 16000}) // 4000 estimated, after a
	// x turns out to be small: 1234 real input tokens.
	x.Settle(Result{Status: 200, Usage: Usage{InputTokens: 1234, HaveInput: true}})
	wantLevel(t, p, "a", sonnet, kindInput, 100000-1234-1000-4000, 1e-6)
	// The upstream saw x (1234) and a (1000) when a was admitted, not b.
	observe(a, clk, 200, "anthropic-ratelimit-input-tokens-limit", "100000",
		"anthropic-ratelimit-input-tokens-remaining", "97766")
	// The truth is 97766 - b's 4000; x's refund is already in 97766.
	wantLevelAtMost(t, p, "a", sonnet, kindInput, 93766, "after a stale header")
	a.Settle(Result{Status: 200, Usage: Usage{InputTokens: 1000, HaveInput: true}})
	b.Settle(Result{Status: 200, Usage: Usage{InputTokens: 4000, HaveInput: true}})
	wantLevelAtMost(t, p, "a", sonnet, kindInput, 93766, "after settling")
}

// A configured limit is the operator's share of the organization: the
// upstream having plenty left must not refill it.
func TestSyncDoesNotRefillConfiguredSmallerLimit(t *testing.T) {
	p, clk := newPool(t, Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{RPM: 3}}}})
	r := acquire(t, p, Request{Model: sonnet})
	r2 := acquire(t, p, Request{Model: sonnet})
	observe(r, clk, 200, "anthropic-ratelimit-requests-limit", "100", "anthropic-ratelimit-requests-remaining", "99")
	wantLevel(t, p, "a", sonnet, kindRequests, 1, 1e-9)
	// It still lowers it when the upstream has less left than that.
	observe(r2, clk, 200, "anthropic-ratelimit-requests-limit", "100", "anthropic-ratelimit-requests-remaining", "0")
	wantLevel(t, p, "a", sonnet, kindRequests, 0, 1e-9)
	refused(t, p, Request{Model: sonnet})
}

func TestTokensHeaderFallback(t *testing.T) {
	p, clk := newPool(t, Config{Keys: keys("a")})
	r := acquire(t, p, Request{Model: sonnet, Bytes: 4000})
	// An older API version: only the combined tokens-* triple.
	observe(r, clk, 200,
		"anthropic-ratelimit-tokens-limit", "20000",
		"anthropic-ratelimit-tokens-remaining", "12000",
		"anthropic-ratelimit-tokens-reset", rfc3339(t0.Add(30*time.Second)))
	s := p.Snapshot().Keys[0].Budgets[0].InputTokens
	if s.Learned != 20000 {
		t.Fatalf("input limit learned from tokens-*: %+v", s)
	}
	if got := level(t, p, "a", sonnet, kindInput); got < 12000 || got > 13000 {
		t.Fatalf("input level %v, want within the rounded 12000..13000", got)
	}
	// When input-tokens-* is present, tokens-* does not set the input level.
	r = acquire(t, p, Request{Model: sonnet, Bytes: 4000})
	observe(r, clk, 200,
		"anthropic-ratelimit-input-tokens-limit", "20000",
		"anthropic-ratelimit-input-tokens-remaining", "15000",
		"anthropic-ratelimit-tokens-limit", "8000",
		"anthropic-ratelimit-tokens-remaining", "1000")
	if got := p.Snapshot().Keys[0].Budgets[0].InputTokens.Learned; got != 20000 {
		t.Fatalf("input limit %d, want 20000 from input-tokens-*", got)
	}
}

func TestTokensRemainingZeroCoolsUntilReset(t *testing.T) {
	p, clk := newPool(t, Config{Keys: keys("a")})
	r := acquire(t, p, Request{Model: sonnet, Bytes: 4000})
	observe(r, clk, 200,
		"anthropic-ratelimit-tokens-limit", "20000",
		"anthropic-ratelimit-tokens-remaining", "0",
		"anthropic-ratelimit-tokens-reset", rfc3339(t0.Add(25*time.Second)))
	r.Settle(ok200())
	nc := refused(t, p, Request{Model: sonnet, Bytes: 4})
	if nc.RetryAfter < 25*time.Second {
		t.Fatalf("RetryAfter %v, want >= 25s (the reset)", nc.RetryAfter)
	}
	if k := p.Snapshot().Keys[0]; k.State != "cooling" || k.Until == nil || !k.Until.Equal(t0.Add(25*time.Second)) {
		t.Fatalf("snapshot state %q until %v, want cooling until the reset", k.State, k.Until)
	}
	// Another class is not affected.
	acquire(t, p, Request{Model: haiku, Bytes: 4})
	clk.Advance(25 * time.Second)
	acquire(t, p, Request{Model: sonnet, Bytes: 4})
}

func TestLimitsLearnedFromHeaders(t *testing.T) {
	p, clk := newPool(t, Config{Keys: keys("a")})
	// Nothing configured, nothing learned: no limit applies.
	for i := 0; i < 500; i++ {
		acquire(t, p, Request{Model: sonnet, Bytes: 1000}).Settle(ok200())
	}
	r := acquire(t, p, Request{Model: sonnet, Bytes: 1000})
	observe(r, clk, 200,
		"anthropic-ratelimit-requests-limit", "5",
		"anthropic-ratelimit-requests-remaining", "4",
		"anthropic-ratelimit-input-tokens-limit", "40000",
		"anthropic-ratelimit-input-tokens-remaining", "39000",
		"anthropic-ratelimit-output-tokens-limit", "8000",
		"anthropic-ratelimit-output-tokens-remaining", "8000",
	)
	r.Settle(ok200())
	s := p.Snapshot().Keys[0].Budgets[0]
	if s.Requests.Learned != 5 || s.Requests.Configured != 0 || s.InputTokens.Learned != 40000 || s.OutputTokens.Learned != 8000 {
		t.Fatalf("learned limits not recorded: %+v", s)
	}
	wantLevel(t, p, "a", sonnet, kindRequests, 4, 1e-9)
	for i := 0; i < 4; i++ {
		acquire(t, p, Request{Model: sonnet})
	}
	nc := refused(t, p, Request{Model: sonnet})
	if !durNear(nc.RetryAfter, 12*time.Second) {
		t.Fatalf("RetryAfter %v, want 12s (1 request at 5/min)", nc.RetryAfter)
	}
}

func TestConfiguredLimitWinsOverLearned(t *testing.T) {
	p, clk := newPool(t, Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{RPM: 3}}}})
	r := acquire(t, p, Request{Model: sonnet})
	observe(r, clk, 200, "anthropic-ratelimit-requests-limit", "100", "anthropic-ratelimit-requests-remaining", "99")
	r.Settle(ok200())
	s := p.Snapshot().Keys[0].Budgets[0].Requests
	if s.Configured != 3 || s.Learned != 100 {
		t.Fatalf("snapshot %+v, want configured 3 learned 100", s)
	}
	// The upstream would take 99 more, but the operator said 3 a minute.
	acquire(t, p, Request{Model: sonnet})
	acquire(t, p, Request{Model: sonnet})
	refused(t, p, Request{Model: sonnet})
}
