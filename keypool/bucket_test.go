package keypool

import (
	"testing"
	"time"
)

// These are unit tests of the unexported bucket type itself; the pool's
// behaviour is tested through its public API elsewhere.

func TestBucketContinuousRefill(t *testing.T) {
	var b bucket
	now := t0.UnixNano()
	b.refill(now, 60)
	if !b.init || b.level != 60 {
		t.Fatalf("a new bucket starts full: level %v init %v", b.level, b.init)
	}
	b.charge(60)
	if b.admits(60, 1) {
		t.Fatal("an empty bucket admitted a request")
	}
	// 60/min refills one per second, continuously.
	steps := []struct {
		after time.Duration
		want  float64
	}{{500 * time.Millisecond, 0.5}, {500 * time.Millisecond, 1}, {29 * time.Second, 30}, {45 * time.Second, 60}}
	for _, s := range steps {
		now += int64(s.after)
		b.refill(now, 60)
		if !near(b.level, s.want, 1e-9) {
			t.Fatalf("after +%v level %v, want %v", s.after, b.level, s.want)
		}
	}
	// Time never runs backwards and the level never exceeds capacity.
	b.charge(10)
	b.refill(now-int64(time.Minute), 60)
	if b.level != 50 {
		t.Fatalf("refill with an earlier time changed the level to %v", b.level)
	}
	// A capacity lowered by a reload clamps the level.
	b.refill(now, 20)
	if b.level != 20 {
		t.Fatalf("level %v above the new capacity 20", b.level)
	}
	// An unknown capacity leaves everything alone and admits.
	var u bucket
	u.refill(now, 0)
	if u.init || !u.admits(0, 1e9) || u.wait(0, 1e9, 0) != 0 || u.headroom(0) != 1 {
		t.Fatalf("a bucket without a limit must admit: %+v", u)
	}
}

func TestBucketOversizedRequestLeavesDebt(t *testing.T) {
	var b bucket
	now := t0.UnixNano()
	b.refill(now, 100)
	b.charge(1)
	if b.admits(100, 250) {
		t.Fatal("a request larger than the bucket was admitted while it was not full")
	}
	if w := time.Duration(b.wait(100, 250, 0)); w != 600*time.Millisecond {
		t.Fatalf("wait for full %v, want 600ms", w)
	}
	now += int64(600 * time.Millisecond)
	b.refill(now, 100)
	if !b.admits(100, 250) {
		t.Fatal("a full bucket must admit an oversized request")
	}
	b.charge(250)
	if b.level != -150 {
		t.Fatalf("level %v, want debt -150", b.level)
	}
	if b.admits(100, 1) {
		t.Fatal("a bucket in debt admitted a request")
	}
	// Paying the debt back and refilling to 1 takes 151 tokens at 100/min.
	if w := time.Duration(b.wait(100, 1, 0)); w != 90600*time.Millisecond {
		t.Fatalf("wait %v, want 90.6s", w)
	}
	if h := b.headroom(100); h != 0 {
		t.Fatalf("headroom in debt %v, want 0", h)
	}
}

func TestPoolOversizedRequestAdmittedWhenFull(t *testing.T) {
	p, clk := newPool(t, Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{ITPM: 6000}}}})
	// 40000 bytes at 4 bytes/token is 10000 tokens, more than the bucket.
	r := acquire(t, p, Request{Model: sonnet, Bytes: 40000})
	if r.Estimate() != 10000 {
		t.Fatalf("estimate %d, want 10000", r.Estimate())
	}
	wantLevel(t, p, "a", sonnet, kindInput, -4000, 1e-6)
	nc := refused(t, p, Request{Model: sonnet, Bytes: 4})
	// -4000 back to 1 at 100 tokens/s.
	if want := 40010 * time.Millisecond; !durNear(nc.RetryAfter, want) {
		t.Fatalf("RetryAfter %v, want %v", nc.RetryAfter, want)
	}
	r.Settle(Result{Status: 200, Usage: Usage{InputTokens: 10000, HaveInput: true}})
	// The big one again needs a full bucket: 100 s from -4000.
	if ra, _ := p.RetryAfter(sonnet, 40000); !durNear(ra, 100*time.Second) {
		t.Fatalf("RetryAfter for an oversized request %v, want 100s", ra)
	}
	clk.Advance(99 * time.Second)
	refused(t, p, Request{Model: sonnet, Bytes: 40000})
	clk.Advance(time.Second)
	acquire(t, p, Request{Model: sonnet, Bytes: 40000})
}

func TestConfiguredLimitsBite(t *testing.T) {
	p, clk := newPool(t, Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{RPM: 3}}}})
	for i := 0; i < 3; i++ {
		acquire(t, p, Request{Model: sonnet}).Settle(ok200())
	}
	nc := refused(t, p, Request{Model: sonnet})
	if !durNear(nc.RetryAfter, 20*time.Second) || nc.NoKeys {
		t.Fatalf("RetryAfter %v NoKeys %v, want 20s", nc.RetryAfter, nc.NoKeys)
	}
	clk.Advance(20 * time.Second)
	acquire(t, p, Request{Model: sonnet})
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
