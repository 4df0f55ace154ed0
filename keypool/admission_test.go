package keypool

import (
	"math"
	"testing"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
)

// Tests for admission behaviours found by the load benchmark (bench/quota).

// setLevel brings the named key's organization bucket of the given kind
// to v through the public API, as the upstream does: a one-byte probe on
// the key whose response headers say v of the configured limit remain,
// settled without usage (which neither charges nor calibrates anything).
// v is whole; a multiple of 1000 only raises the level (the
// upstream rounds token counts down to thousands, so such a header lowers
// a level only to v+999).
func setLevel(t testing.TB, p *Pool, name, model string, kind int, v int64) {
	t.Helper()
	h := noHeaders()
	limit := p.members[memberIndex(t, p, name)].caps[kind]
	if limit <= 0 {
		t.Fatalf("setLevel: %s has no configured %s limit", name, kindNames[kind])
	}
	*[]*Limit{&h.Requests, &h.InputTokens, &h.OutputTokens}[kind] = Limit{Limit: int64(limit), Remaining: v}
	r := acquireOn(t, p, name, Request{Model: model, Bytes: 1})
	r.ObserveHeaders(200, h)
	r.Settle(Result{Status: 200})
	wantLevel(t, p, name, model, kind, float64(v), 0)
}

// estimates is what the estimator of model's class says now about a body
// of the given size: the reservation, the whole prompt and the margin.
func estimates(p *Pool, model string, bytes int) (est, whole, margin float64) {
	st := p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	e := &st.est[p.classIndexOf(model)]
	r := p.cfg.TokenEstimateRatio
	return e.estimate(bytes, r), e.whole(bytes, r), e.margin()
}

// pendingOut is the output that requests in flight on the named key's
// organization are still expected to produce, for model's class.
func pendingOut(t testing.TB, p *Pool, name, model string) float64 {
	t.Helper()
	i := memberIndex(t, p, name)
	st := p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	return p.members[i].ks.org.resolve().budget(p.classIndexOf(model)).pendingOut
}

func reserved(r *Reservation) float64 {
	st := r.p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	return r.est
}

func coolingState(p *Pool) string { return p.Snapshot().Keys[0].State }

// 1. tokens-remaining 0 is the tighter per-kind bucket rounded down to
// thousands: with the per-kind triples present the buckets follow them and
// nothing cools; with only tokens-* it is still a cooldown until its reset.
func TestTokensRemainingZeroWithPerKindHeadersDoesNotCool(t *testing.T) {
	reset := t0.Add(25 * time.Second)
	tokens := []string{
		"anthropic-ratelimit-tokens-limit", "8000",
		"anthropic-ratelimit-tokens-remaining", "0",
		"anthropic-ratelimit-tokens-reset", rfc3339(reset),
	}
	input := []string{
		"anthropic-ratelimit-input-tokens-limit", "20000",
		"anthropic-ratelimit-input-tokens-remaining", "15000",
		"anthropic-ratelimit-input-tokens-reset", rfc3339(t0.Add(15 * time.Second)),
	}
	output := []string{
		"anthropic-ratelimit-output-tokens-limit", "8000",
		"anthropic-ratelimit-output-tokens-remaining", "0",
		"anthropic-ratelimit-output-tokens-reset", rfc3339(reset),
	}
	cat := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		kv     []string
		output bool
	}{
		{"input and output", cat(input, output, tokens), true},
		{"input only", cat(input, tokens), false},
		{"output only", cat(output, tokens), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, clk := newPool(t, Config{Keys: keys("a")})
			r := acquire(t, p, Request{Model: sonnet, Bytes: 4000})
			observe(r, clk, 200, tc.kv...)
			r.Settle(ok200())
			if s := coolingState(p); s != "ok" {
				t.Fatalf("state %q after a 200 with tokens-remaining 0 and per-kind headers, want ok", s)
			}
			// Admitted at once, not a minute later.
			acquire(t, p, Request{Model: sonnet, Bytes: 4}).Settle(ok200())
			// The output bucket follows its rounded 0 instead: under 1000.
			if o := level(t, p, "a", sonnet, kindOutput); tc.output && (o > 999 || o <= 0) {
				t.Fatalf("output level %v, want synced into the rounded (0, 999]", o)
			}
		})
	}
	t.Run("tokens only", func(t *testing.T) {
		p, clk := newPool(t, Config{Keys: keys("a")})
		r := acquire(t, p, Request{Model: sonnet, Bytes: 4000})
		observe(r, clk, 200, tokens...)
		r.Settle(ok200())
		if s := coolingState(p); s != "cooling" {
			t.Fatalf("state %q, want cooling until tokens-reset", s)
		}
		if nc := refused(t, p, Request{Model: sonnet, Bytes: 4}); nc.RetryAfter < 25*time.Second {
			t.Fatalf("RetryAfter %v, want >= 25s", nc.RetryAfter)
		}
		clk.Advance(25 * time.Second)
		acquire(t, p, Request{Model: sonnet, Bytes: 4})
	})
}

// 2. A header sync that leaves the input level where it was (it lay within
// the rounding) has not replaced the estimate by the real charge: usage
// must still do it, or the level stays up to 999 tokens above the truth.
func TestSyncWithinRoundingThenUsageReplacesEstimate(t *testing.T) {
	p, obs := learnedPool(t)
	r := acquire(t, p, Request{Model: sonnet, Bytes: 4})
	obs(r, 200, "anthropic-ratelimit-input-tokens-remaining", "10000")
	r.Settle(ok200()) // no usage: the estimator stays uncalibrated
	wantLevel(t, p, "a", sonnet, kindInput, 10000, 1e-9)

	// Estimated 500, really 900: the upstream has 9100 left, says 9000.
	r = acquire(t, p, Request{Model: sonnet, Bytes: 2000})
	wantLevel(t, p, "a", sonnet, kindInput, 9500, 1e-9)
	obs(r, 200, "anthropic-ratelimit-input-tokens-remaining", "9000")
	// 9500 lies in 9000..9999: the sync leaves it.
	wantLevel(t, p, "a", sonnet, kindInput, 9500, 1e-9)
	u := Usage{InputTokens: 900, CacheReadInputTokens: 50, HaveInput: true}
	r.Charge(u)
	wantLevel(t, p, "a", sonnet, kindInput, 9100, 1e-9)
	r.Settle(Result{Status: 200, Usage: u})
	wantLevel(t, p, "a", sonnet, kindInput, 9100, 1e-9)

	// A sync that moved the level already counts the real input: usage
	// then charges nothing more.
	r = acquire(t, p, Request{Model: sonnet, Bytes: 2000})
	est := reserved(r)
	wantLevel(t, p, "a", sonnet, kindInput, 9100-est, 1e-6)
	// Really 2300: 6800 left, said 6000; the level comes down to 6999.
	obs(r, 200, "anthropic-ratelimit-input-tokens-remaining", "6000")
	wantLevel(t, p, "a", sonnet, kindInput, 6999, 1e-9)
	r.Settle(Result{Status: 200, Usage: Usage{InputTokens: 2300, HaveInput: true}})
	wantLevel(t, p, "a", sonnet, kindInput, 6999, 1e-9)
}

// 3. Admission asks for the estimate plus three times its calibrated mean
// error (at most 50%); the reservation is the estimate alone.
func TestAdmissionPadsEstimateByCalibratedError(t *testing.T) {
	p, _ := newPool(t, Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{ITPM: 6000}}}})
	// Uncalibrated: no margin; the first estimate (1000) is 10% short.
	r := acquire(t, p, Request{Model: sonnet, Bytes: 4000})
	if got := reserved(r); got != 1000 {
		t.Fatalf("uncalibrated estimate %v", got)
	}
	r.Settle(Result{Status: 200, Usage: Usage{InputTokens: 1100, HaveInput: true}})
	est, _, m := estimates(p, sonnet, 4000)
	if !near(est, 1100, 1e-6) || !near(m, 3.0/11, 1e-9) {
		t.Fatalf("calibrated estimate %v margin %v, want 1100 and 3/11", est, m)
	}
	need := est * (1 + m) // 1400

	// Enough for the estimate, not for its margin: refused, and told to
	// come back when the padded amount has refilled (100 tokens/s).
	setLevel(t, p, "a", sonnet, kindInput, 1300)
	nc := refused(t, p, Request{Model: sonnet, Bytes: 4000})
	if want := time.Duration((need - 1300) / 100 * float64(time.Second)); !durNear(nc.RetryAfter, want) {
		t.Fatalf("RetryAfter %v, want %v (until %v tokens)", nc.RetryAfter, want, need)
	}
	if ra, _ := p.RetryAfter(sonnet, 4000); !durNear(ra, nc.RetryAfter) {
		t.Fatalf("Pool.RetryAfter %v, want %v", ra, nc.RetryAfter)
	}

	// With the padded amount there it is admitted, and charged only the
	// estimate.
	setLevel(t, p, "a", sonnet, kindInput, int64(math.Ceil(need)))
	r = acquire(t, p, Request{Model: sonnet, Bytes: 4000})
	if got := reserved(r); !near(got, est, 1e-9) || r.Estimate() != int64(est) {
		t.Fatalf("reserved %v (Estimate %d), want the estimate %v", got, r.Estimate(), est)
	}
	wantLevel(t, p, "a", sonnet, kindInput, math.Ceil(need)-est, 1e-6)
}

func TestAdmissionMarginCappedAtHalf(t *testing.T) {
	p, _ := newPool(t, Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{ITPM: 6000}}}})
	// The fixed ratio guessed 1000 for what was 100: an error of 900%.
	acquire(t, p, Request{Model: sonnet, Bytes: 4000}).Settle(Result{Status: 200, Usage: Usage{InputTokens: 100, HaveInput: true}})
	est, _, m := estimates(p, sonnet, 4000)
	if !near(est, 100, 1e-9) || m != 0.5 {
		t.Fatalf("estimate %v margin %v, want 100 and the 0.5 cap", est, m)
	}
	setLevel(t, p, "a", sonnet, kindInput, 140)
	refused(t, p, Request{Model: sonnet, Bytes: 4000})
	setLevel(t, p, "a", sonnet, kindInput, 160)
	r := acquire(t, p, Request{Model: sonnet, Bytes: 4000})
	if got := reserved(r); !near(got, 100, 1e-9) {
		t.Fatalf("reserved %v, want 100", got)
	}
	wantLevel(t, p, "a", sonnet, kindInput, 60, 1e-9)
}

// calibrateCached teaches the sonnet estimator 4 bytes per prompt token of
// which a tenth is charged (the rest is read from the cache), with no
// estimate error (no margin): a body of n bytes is estimated n/40 and its
// whole prompt n/4.
func calibrateCached(t *testing.T, p *Pool, name string) {
	t.Helper()
	acquireOn(t, p, name, Request{Model: sonnet, Bytes: 4000}).Settle(Result{Status: 200, Usage: Usage{
		InputTokens: 80, CacheCreationInputTokens: 20, CacheReadInputTokens: 900, HaveInput: true,
	}})
	est, whole, m := estimates(p, sonnet, 4000)
	if !near(est, 100, 1e-9) || !near(whole, 1000, 1e-9) || m != 0 {
		t.Fatalf("calibration: estimate %v whole %v margin %v", est, whole, m)
	}
}

// 4. A session that starts, or moves to another organization, writes its
// whole prompt to a new cache: it is priced (and admitted) at the whole
// prompt, not at the share that cache hits keep low. Within its cache
// scope it keeps the cached price.
func TestStickyOutsideCacheScopePricedWhole(t *testing.T) {
	p, clk := newPool(t, Config{Sticky: true, Keys: []KeyConfig{
		{Name: "a1", Org: "A"}, {Name: "a2", Org: "A"},
		{Name: "b", Org: "B", Limits: Limits{ITPM: 60000}},
	}})
	calibrateCached(t, p, "a1")

	r := acquireOn(t, p, "a1", Request{Model: sonnet, Bytes: 4000, Session: 1})
	if r.Sticky != StickyNew || !near(reserved(r), 1000, 1e-9) {
		t.Fatalf("new session: %v reserved %v, want new at the whole 1000", r.Sticky, reserved(r))
	}
	r = acquire(t, p, Request{Model: sonnet, Bytes: 4000, Session: 1})
	if r.Sticky != StickyHit || r.KeyName() != "a1" || !near(reserved(r), 100, 1e-9) {
		t.Fatalf("%v on %s reserved %v, want a hit on a1 at 100", r.Sticky, r.KeyName(), reserved(r))
	}
	r.Disable("revoked")
	r = acquire(t, p, Request{Model: sonnet, Bytes: 4000, Session: 1})
	if r.Sticky != StickyScope || r.KeyName() != "a2" || !near(reserved(r), 100, 1e-9) {
		t.Fatalf("%v on %s reserved %v, want a scope move to a2 at 100", r.Sticky, r.KeyName(), reserved(r))
	}
	r.Disable("revoked")

	// Org B has 700 input tokens: enough for the cached price, not for
	// the whole prompt the move writes.
	setLevel(t, p, "b", sonnet, kindInput, 700)
	// The retry hint waits for the whole price (300 tokens at 1000/s),
	// not for the cached one that is already there.
	if nc := refused(t, p, Request{Model: sonnet, Bytes: 4000, Session: 1}); nc.RetryAfter < 290*time.Millisecond {
		t.Fatalf("RetryAfter %v, want about 300ms", nc.RetryAfter)
	}
	clk.Advance(300 * time.Millisecond) // 1000 tokens at 1000/s
	r = acquire(t, p, Request{Model: sonnet, Bytes: 4000, Session: 1})
	if r.Sticky != StickyMoved || r.KeyName() != "b" || !near(reserved(r), 1000, 1e-9) {
		t.Fatalf("%v on %s reserved %v, want moved to b at the whole 1000", r.Sticky, r.KeyName(), reserved(r))
	}
	wantLevel(t, p, "b", sonnet, kindInput, 0, 1e-6)
}

// 5. The pin remembers the session's last body size and model class: a
// warm turn is priced at least at what its body added (or at its whole
// prompt when the body shrank: the conversation was rewritten), and a side
// request of another class does not overwrite what the pin remembers.
func TestStickyWarmTurnPricedByGrowth(t *testing.T) {
	p, _ := newPool(t, Config{Sticky: true, Keys: []KeyConfig{{Name: "a", Limits: Limits{ITPM: 60000}}}})
	calibrateCached(t, p, "a")
	turn := func(model string, bytes int, want float64) *Reservation {
		t.Helper()
		r := acquire(t, p, Request{Model: model, Bytes: bytes, Session: 5})
		if got := reserved(r); !near(got, want, 1e-9) {
			t.Fatalf("%s %d bytes: reserved %v, want %v", model, bytes, got, want)
		}
		// Answered before the next turn, as a conversation goes: an
		// unanswered one would keep setLevel's probe from raising.
		r.Settle(ok200())
		return r
	}
	turn(sonnet, 4000, 1000) // new: whole
	// Grew by 8000 bytes: 2000 tokens written, more than the 300 estimate.
	if r := turn(sonnet, 12000, 2000); r.Sticky != StickyHit {
		t.Fatalf("%v, want a hit", r.Sticky)
	}
	// A small Haiku side request in the same session (its own class,
	// uncalibrated: 2000/4) leaves the pin's size and class alone...
	turn(haiku, 2000, 500)
	// ...so the next Sonnet turn is still priced by its growth (4000
	// bytes, 1000 tokens) rather than at the 400 estimate.
	turn(sonnet, 16000, 1000)
	// Small growth: the estimate is the floor.
	turn(sonnet, 16400, 410)
	// Shorter than the last turn: rewritten, priced whole.
	turn(sonnet, 8000, 2000)

	// Admission asks for the growth price too: 1500 left is enough for the
	// 400 estimate of a 16000-byte body, not for the 2000 its 8000 new
	// bytes cost.
	setLevel(t, p, "a", sonnet, kindInput, 1500)
	refused(t, p, Request{Model: sonnet, Bytes: 16000, Session: 5})
	setLevel(t, p, "a", sonnet, kindInput, 2000)
	turn(sonnet, 16000, 2000)
}

// 6. Output is charged upstream as it is generated, but a stream reports
// it at its end: the output that requests in flight are expected to
// produce counts against output admission until they report or settle.
func TestInFlightOutputCountsAgainstAdmission(t *testing.T) {
	p, clk := newPool(t, Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{OTPM: 60000}}}})
	// Learn the mean output: 3000 tokens.
	acquire(t, p, Request{Model: sonnet, Bytes: 4}).Settle(Result{Status: 200, Usage: Usage{OutputTokens: 3000, HaveOutput: true}})
	clk.Advance(3 * time.Second)
	wantLevel(t, p, "a", sonnet, kindOutput, 60000, 1e-9)

	var streams []*Reservation
	for i := 0; i < 20; i++ {
		streams = append(streams, acquire(t, p, Request{Model: sonnet, Bytes: 4}))
	}
	if got := pendingOut(t, p, "a", sonnet); !near(got, 60000, 1e-6) {
		t.Fatalf("pending output %v, want 20 x 3000", got)
	}
	// The bucket is full, but the streams in flight will drain it.
	nc := refused(t, p, Request{Model: sonnet, Bytes: 4})
	if !durNear(nc.RetryAfter, time.Millisecond) {
		t.Fatalf("RetryAfter %v, want 1ms (1 token above what is pending, at 1000/s)", nc.RetryAfter)
	}
	// Progress reports move output from pending to charged: no change.
	for _, r := range streams {
		r.Charge(Usage{OutputTokens: 2500, HaveOutput: true})
	}
	wantLevel(t, p, "a", sonnet, kindOutput, 10000, 1e-6)
	if got := pendingOut(t, p, "a", sonnet); !near(got, 10000, 1e-6) {
		t.Fatalf("pending output %v after progress, want 20 x 500", got)
	}
	refused(t, p, Request{Model: sonnet, Bytes: 4})
	// They end shorter than expected: nothing is pending any more.
	for _, r := range streams {
		r.Settle(Result{Status: 200, Usage: Usage{OutputTokens: 2500, HaveOutput: true}})
	}
	if got := pendingOut(t, p, "a", sonnet); !near(got, 0, 1e-6) {
		t.Fatalf("pending output %v after settling, want 0", got)
	}
	wantLevel(t, p, "a", sonnet, kindOutput, 10000, 1e-6)
	r := acquire(t, p, Request{Model: sonnet, Bytes: 4})
	// The mean followed the shorter responses; a failed request teaches
	// it nothing and leaves nothing pending.
	if r.outRes >= 3000 || r.outRes <= 2500 {
		t.Fatalf("expected output %v, want between 2500 and 3000", r.outRes)
	}
	mean := r.outRes
	r.Settle(Result{Status: 0})
	if got := pendingOut(t, p, "a", sonnet); !near(got, 0, 1e-6) {
		t.Fatalf("pending output %v after a failed request, want 0", got)
	}
	// A stream longer than expected never makes pending negative.
	r = acquire(t, p, Request{Model: sonnet, Bytes: 4})
	if r.outRes != mean {
		t.Fatalf("expected output %v after a failure, want %v", r.outRes, mean)
	}
	r.Charge(Usage{OutputTokens: 5000, HaveOutput: true})
	if got := pendingOut(t, p, "a", sonnet); !near(got, 0, 1e-6) {
		t.Fatalf("pending output %v after a long stream, want 0", got)
	}
	r.Settle(Result{Status: 200, Usage: Usage{OutputTokens: 6000, HaveOutput: true}})
	if got := pendingOut(t, p, "a", sonnet); !near(got, 0, 1e-6) {
		t.Fatalf("pending output %v after settling a long stream, want 0", got)
	}
}

// A stream whose response reveals that its key shares an organization
// with another carries its pending output to the merged budget.
func TestPendingOutputFollowsOrganizationMerge(t *testing.T) {
	p, clk := newPool(t, Config{Keys: keys("a", "b")})
	learn := func(r *Reservation, c *clock.Fake) {
		observe(r, c, 200, "anthropic-organization-id", "org-x",
			"anthropic-ratelimit-output-tokens-limit", "60000",
			"anthropic-ratelimit-output-tokens-remaining", "60000")
	}
	r := acquireOn(t, p, "b", Request{Model: sonnet, Bytes: 4})
	learn(r, clk)
	r.Settle(Result{Status: 200, Usage: Usage{OutputTokens: 3000, HaveOutput: true}})

	s := acquireOn(t, p, "a", Request{Model: sonnet, Bytes: 4})
	old := s.bud
	if got := pendingOut(t, p, "a", sonnet); got != 3000 {
		t.Fatalf("pending output %v on a's own budget, want 3000", got)
	}
	learn(s, clk) // a is in org-x too: its budget merges into b's
	if got := pendingOut(t, p, "b", sonnet); got != 3000 {
		t.Fatalf("pending output %v on the merged budget, want 3000", got)
	}
	s.Settle(Result{Status: 200, Usage: Usage{OutputTokens: 1000, HaveOutput: true}})
	p.st.mu.Lock()
	left := old.pendingOut
	p.st.mu.Unlock()
	if got := pendingOut(t, p, "b", sonnet); got != 0 || left != 0 {
		t.Fatalf("pending output %v on the merged budget, %v on a's old one; want 0 and 0", got, left)
	}
}
