package keypool

import "testing"

// admitAll acquires on sonnet until the pool refuses (the fake clock
// stands still: no refill) and returns how many it admitted.
func admitAll(t *testing.T, p *Pool, bytes int) int {
	t.Helper()
	n := 0
	for ; n < 100; n++ {
		var r Reservation
		if err := p.Acquire(t.Context(), &Request{Model: sonnet, Bytes: bytes}, &r); err != nil {
			return n
		}
	}
	t.Fatal("the pool admitted 100 requests on a limit of 10")
	return n
}

// Two requests admitted in order a, b; b reaches the upstream first and
// its response says 9 left (a not counted yet, still on its way). Raising
// the level to 9 would let the pool admit 9 more: 11 in the minute against
// the upstream's 10, and the 11th meets a 429.
func TestSyncCountsEarlierUnansweredRequests(t *testing.T) {
	p, clk := newPool(t, Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{RPM: 10}}}})
	a := acquire(t, p, Request{Model: sonnet})
	b := acquire(t, p, Request{Model: sonnet})
	observe(b, clk, 200, "anthropic-ratelimit-requests-limit", "10", "anthropic-ratelimit-requests-remaining", "9")
	if n := admitAll(t, p, 40); 2+n > 10 {
		t.Fatalf("admitted %d in the minute, the upstream's limit is 10", 2+n)
	}
	// a's response, now: the upstream counted b, then a. It changes
	// nothing that would admit more.
	observe(a, clk, 200, "anthropic-ratelimit-requests-limit", "10", "anthropic-ratelimit-requests-remaining", "8")
	refused(t, p, Request{Model: sonnet})
}

// The same for input tokens: the earlier request's estimate is held until
// it is answered.
func TestSyncCountsEarlierUnansweredInput(t *testing.T) {
	p, clk := newPool(t, Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{ITPM: 10000}}}})
	a := acquire(t, p, Request{Model: sonnet, Bytes: 16000}) // 4000 estimated
	b := acquire(t, p, Request{Model: sonnet, Bytes: 4000})  // 1000 estimated
	wantLevel(t, p, "a", sonnet, kindInput, 5000, 1e-6)
	// The upstream saw b, not yet a: 9000 left.
	observe(b, clk, 200, "anthropic-ratelimit-input-tokens-limit", "10000", "anthropic-ratelimit-input-tokens-remaining", "9000")
	// a's 4000 may still come: raising to 9000 would admit 4000 tokens
	// the upstream does not have.
	wantLevelAtMost(t, p, "a", sonnet, kindInput, 5000, "after b's headers, a still unanswered")
	// a's response: the upstream counted b, then a.
	observe(a, clk, 200, "anthropic-ratelimit-input-tokens-limit", "10000", "anthropic-ratelimit-input-tokens-remaining", "5000")
	wantLevelAtMost(t, p, "a", sonnet, kindInput, 5000, "after a's headers")
}

// The order seen in bench/quota: a is admitted before b, the upstream
// sees b first, and a's response still arrives first. When b's response
// comes a is answered, but b's remaining does not count it: what was
// unanswered at b's admission still bounds the raise.
func TestSyncCountsEarlierRequestsAnsweredFirst(t *testing.T) {
	p, clk := newPool(t, Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{RPM: 10}}}})
	a := acquire(t, p, Request{Model: sonnet})
	b := acquire(t, p, Request{Model: sonnet})
	// The upstream counted b, then a: 8 left after a, 9 after b.
	observe(a, clk, 200, "anthropic-ratelimit-requests-limit", "10", "anthropic-ratelimit-requests-remaining", "8")
	observe(b, clk, 200, "anthropic-ratelimit-requests-limit", "10", "anthropic-ratelimit-requests-remaining", "9")
	if n := admitAll(t, p, 40); 2+n > 10 {
		t.Fatalf("admitted %d in the minute, the upstream's limit is 10", 2+n)
	}
}

// A response to a request admitted with nothing unanswered ahead raises
// the level as far as the upstream reports: the rule takes no more than
// it must.
func TestSyncRaisesWhenNothingWasUnansweredAhead(t *testing.T) {
	p, clk := newPool(t, Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{RPM: 10}}}})
	a := acquire(t, p, Request{Model: sonnet})
	a.Settle(ok200()) // answered without headers; the upstream never counted it
	b := acquire(t, p, Request{Model: sonnet})
	wantLevel(t, p, "a", sonnet, kindRequests, 8, 1e-9)
	observe(b, clk, 200, "anthropic-ratelimit-requests-limit", "10", "anthropic-ratelimit-requests-remaining", "9")
	wantLevel(t, p, "a", sonnet, kindRequests, 9, 1e-9)
	b.Settle(ok200())
}

// The sums return to zero however reservations end, in any order, and
// each reservation holds what was unanswered at its admission.
func TestUnansweredSumsReturnToZero(t *testing.T) {
	p, clk := newPool(t, Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{RPM: 100}}}})
	var rs []*Reservation
	for range 3 {
		rs = append(rs, acquire(t, p, Request{Model: sonnet, Bytes: 4000}))
	}
	passive := acquire(t, p, Request{Model: sonnet, Passive: true})
	observe(rs[1], clk, 200, "anthropic-ratelimit-requests-remaining", "98")
	for range 2 {
		rs = append(rs, acquire(t, p, Request{Model: sonnet, Bytes: 4000}))
	}
	for i, want := range []float64{0, 1, 2, 2, 3} {
		if got := rs[i].wait.ahead[kindRequests]; got != want {
			t.Fatalf("reservation %d: %v requests unanswered at its admission, want %v", i, got, want)
		}
	}
	if got, want := rs[4].wait.ahead[kindInput], 3*rs[0].est; !near(got, want, 1e-9) {
		t.Fatalf("input unanswered at the 5th's admission: %v, want %v", got, want)
	}
	rs[0].Settle(Result{Status: 0})
	observe(rs[4], clk, 529)
	for _, i := range []int{4, 1, 3, 2} {
		rs[i].Settle(ok200())
	}
	rs[2].Settle(ok200()) // again: nothing
	passive.Settle(ok200())
	b := p.members[0].ks.org.resolve().budget(p.classIndexOf(sonnet))
	if b.unanswered != (unanswered{}) {
		t.Fatalf("unanswered sums %v once all are settled, want zero", b.unanswered)
	}
}
