package keypool

import (
	"testing"
	"time"

	"github.com/cc-relay/caddy-cc-relay/selector"
)

// A request that only some keys can serve (its model is not on the
// others' upstream) never goes elsewhere, whatever the strategy, its
// session pin or the others' capacity says.
func TestOnlyRestrictsKeys(t *testing.T) {
	for _, st := range []selector.Strategy{selector.LeastLoaded, selector.RoundRobin, selector.Priority, selector.Random} {
		ks := keys("anthropic", "bedrock")
		ks[1].Limits = Limits{RPM: 2}
		p, _ := newPool(t, Config{Keys: ks, Strategy: st, Sticky: true})
		only := []bool{false, true}
		for range 2 {
			r := acquire(t, p, Request{Model: sonnet, Bytes: 100, Only: only, Session: 7})
			if keyOf(r) != "bedrock" {
				t.Fatalf("%v: got %q", st, keyOf(r))
			}
			r.Settle(Result{Status: 200})
		}
		// bedrock's 2 RPM are spent; anthropic has room but cannot serve.
		nc := refused(t, p, Request{Model: sonnet, Bytes: 100, Only: only, Session: 7})
		if nc.NoKeys || nc.RetryAfter <= 0 {
			t.Fatalf("%v: %+v", st, nc)
		}
		// Without the restriction the pinned session moves to anthropic.
		if r := acquire(t, p, Request{Model: sonnet, Bytes: 100, Session: 7}); keyOf(r) != "anthropic" {
			t.Fatalf("%v: got %q", st, keyOf(r))
		}
	}
}

func TestAttemptsExcludeKeyAndOrg(t *testing.T) {
	p, _ := newPool(t, Config{Keys: []KeyConfig{
		{Name: "a1", Org: "A"}, {Name: "a2", Org: "A"}, {Name: "b1", Org: "B"},
	}})
	a := &Attempts{}
	if a.N() != 0 || (*Attempts)(nil).N() != 0 {
		t.Fatal("N of a fresh Attempts")
	}
	first := acquireOn(t, p, "a1", Request{Model: sonnet, Attempts: a})
	if a.N() != 1 {
		t.Fatalf("N = %d after one attempt", a.N())
	}
	a.ExcludeKey(first)
	first.Settle(Result{Status: 401})
	seen := map[string]int{}
	for i := 0; i < 30; i++ {
		r := acquire(t, p, Request{Model: sonnet, Attempts: a})
		seen[r.KeyName()]++
		r.Settle(ok200())
	}
	if seen["a1"] != 0 || seen["a2"] == 0 || seen["b1"] == 0 {
		t.Fatalf("retries after ExcludeKey(a1): %v", seen)
	}
	// A 429 on a2 rules out all of organization A.
	r := acquireOn(t, p, "a2", Request{Model: sonnet, Attempts: a})
	a.ExcludeOrg(r)
	r.Settle(Result{Status: 429})
	for i := 0; i < 10; i++ {
		if r := acquire(t, p, Request{Model: sonnet, Attempts: a}); r.KeyName() != "b1" {
			t.Fatalf("retry after ExcludeOrg(A) reserved %s", r.KeyName())
		}
	}
	// Everything excluded: refused at once, without waiting.
	rb := acquire(t, p, Request{Model: sonnet, Attempts: a})
	a.ExcludeKey(rb)
	nc := refused(t, p, Request{Model: sonnet, Attempts: a})
	if nc.NoKeys {
		t.Fatal("exclusion reported as no keys")
	}
	// A fresh request is not affected.
	acquireOn(t, p, "a1", Request{Model: sonnet})
}

// An organization learned after ExcludeOrg still counts as excluded.
func TestAttemptsExcludeOrgFollowsMerge(t *testing.T) {
	p, clk := newPool(t, Config{Keys: keys("a", "b", "c")})
	a := &Attempts{}
	ra := acquireOn(t, p, "a", Request{Model: sonnet, Attempts: a})
	a.ExcludeOrg(ra)
	observe(ra, clk, 429, "anthropic-organization-id", "org-1", "retry-after", "1")
	rb := acquireOn(t, p, "b", Request{Model: sonnet})
	observe(rb, clk, 200, "anthropic-organization-id", "org-1")
	clk.Advance(2 * time.Second)
	for i := 0; i < 10; i++ {
		if r := acquire(t, p, Request{Model: sonnet, Attempts: a}); r.KeyName() != "c" {
			t.Fatalf("reserved %s in the excluded organization", r.KeyName())
		}
	}
}

// With no limits known every key looks the same: least_loaded spreads
// concurrent requests by what each has in flight.
func TestLeastLoadedSpreadsConcurrentReservations(t *testing.T) {
	for _, n := range []int{2, 4, 10, 16} {
		names := make([]string, n)
		for i := range names {
			names[i] = string(rune('a'+i%26)) + string(rune('0'+i/26))
		}
		p, _ := newPool(t, Config{Keys: keys(names...)})
		for i := 0; i < 3*n; i++ {
			acquire(t, p, Request{Model: sonnet, Bytes: 1000})
		}
		for _, k := range p.Snapshot().Keys {
			if k.InFlight != 3 {
				t.Fatalf("%d keys: key %s has %d in flight, want 3 each", n, k.Name, k.InFlight)
			}
		}
	}
	// Large pools sample: the most loaded key stays near the mean.
	names := make([]string, 100)
	for i := range names {
		names[i] = "k" + string(rune('A'+i/10)) + string(rune('0'+i%10))
	}
	p, _ := newPool(t, Config{Keys: keys(names...), Seed: 1})
	for i := 0; i < 500; i++ {
		acquire(t, p, Request{Model: sonnet})
	}
	maxF, minF := 0, 1<<30
	for _, k := range p.Snapshot().Keys {
		maxF, minF = max(maxF, k.InFlight), min(minF, k.InFlight)
	}
	if maxF > 8 {
		t.Fatalf("100 keys, 500 requests: max %d in flight (min %d), want <= 8", maxF, minF)
	}
}

// Limits known: least_loaded prefers the key with the most headroom.
func TestLeastLoadedPrefersHeadroom(t *testing.T) {
	p, _ := newPool(t, Config{Keys: []KeyConfig{
		{Name: "small", Limits: Limits{RPM: 10}},
		{Name: "big", Limits: Limits{RPM: 1000}},
	}})
	for i := 0; i < 20; i++ {
		r := acquire(t, p, Request{Model: sonnet})
		r.Settle(ok200())
	}
	if got := level(t, p, "small", sonnet, kindRequests); got < 9 {
		t.Fatalf("small key drained to %v while big had room", got)
	}
}

func TestStrategiesThroughPool(t *testing.T) {
	cfg := func(s selector.Strategy) Config {
		return Config{Strategy: s, Seed: 3, Keys: []KeyConfig{
			{Name: "a", Weight: 3, Priority: 1}, {Name: "b", Weight: 1, Priority: 0}, {Name: "c", Weight: 1, Priority: 1},
		}}
	}
	count := func(s selector.Strategy) map[string]int {
		p, _ := newPool(t, cfg(s))
		m := map[string]int{}
		for i := 0; i < 500; i++ {
			r := acquire(t, p, Request{Model: sonnet})
			m[r.KeyName()]++
			r.Settle(ok200())
		}
		return m
	}
	if m := count(selector.RoundRobin); m["a"] != 167 || m["b"] != 167 || m["c"] != 166 {
		t.Fatalf("round_robin %v", m)
	}
	if m := count(selector.Weighted); m["a"] != 300 || m["b"] != 100 || m["c"] != 100 {
		t.Fatalf("weighted %v", m)
	}
	if m := count(selector.Priority); m["b"] != 500 {
		t.Fatalf("priority %v", m)
	}
	if m := count(selector.Random); m["a"] < 120 || m["b"] < 120 || m["c"] < 120 {
		t.Fatalf("random %v", m)
	}
	p, _ := newPool(t, cfg(selector.Weighted))
	if p.Len() != 3 || p.Name(1) != "b" || p.Snapshot().Strategy != "weighted" {
		t.Fatalf("Len %d Name(1) %q", p.Len(), p.Name(1))
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
