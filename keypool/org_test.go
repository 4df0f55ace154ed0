package keypool

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
	"github.com/cc-relay/caddy-cc-relay/selector"
)

func TestConfiguredOrgSharesOneBudget(t *testing.T) {
	p, clk := newPool(t, Config{Keys: []KeyConfig{
		{Name: "a", Org: "X", Limits: Limits{RPM: 4}},
		{Name: "b", Org: "X"}, // inherits the organization's limit
		{Name: "c", Limits: Limits{RPM: 1}},
	}})
	used := map[string]int{}
	for i := 0; i < 5; i++ {
		used[acquire(t, p, Request{Model: sonnet}).KeyName()]++
	}
	if used["a"]+used["b"] != 4 || used["c"] != 1 || used["a"] == 0 || used["b"] == 0 {
		t.Fatalf("reservations %v: want 4 across a and b (one budget of 4), 1 on c", used)
	}
	refused(t, p, Request{Model: sonnet})
	s := p.Snapshot()
	for _, k := range s.Keys[:2] {
		if k.Org != "X" || k.Budgets[0].Requests.Configured != 4 || k.Budgets[0].Requests.Remaining != 0 {
			t.Fatalf("snapshot of %s: %+v", k.Name, k)
		}
	}
	clk.Advance(15 * time.Second) // one request at 4/min
	acquire(t, p, Request{Model: sonnet})
	refused(t, p, Request{Model: sonnet})
}

func TestLearnedOrganizationMergesBudgets(t *testing.T) {
	p, clk := newPool(t, Config{Strategy: selector.Priority, Keys: []KeyConfig{
		{Name: "a", Priority: 0}, {Name: "b", Priority: 1},
	}})
	lim := func(rem string) []string {
		return []string{"anthropic-ratelimit-requests-limit", "10", "anthropic-ratelimit-requests-remaining", rem}
	}
	ra := acquireOn(t, p, "a", Request{Model: sonnet})
	observe(ra, clk, 200, append(lim("8"), "anthropic-organization-id", "org-1")...)
	ra.Settle(ok200())
	rb := acquireOn(t, p, "b", Request{Model: sonnet})
	observe(rb, clk, 200, lim("3")...)
	rb.Settle(ok200())
	wantLevel(t, p, "a", sonnet, kindRequests, 8, 1e-9)
	wantLevel(t, p, "b", sonnet, kindRequests, 3, 1e-9)
	// b's next response names the same organization: one budget, with the
	// more pessimistic of the two views.
	rb = acquireOn(t, p, "b", Request{Model: sonnet})
	observe(rb, clk, 200, "anthropic-organization-id", "org-1")
	rb.Settle(ok200())
	wantLevel(t, p, "a", sonnet, kindRequests, 2, 1e-9)
	wantLevel(t, p, "b", sonnet, kindRequests, 2, 1e-9)
	for i := 0; i < 2; i++ {
		acquire(t, p, Request{Model: sonnet})
	}
	refused(t, p, Request{Model: sonnet})
	s := p.Snapshot()
	if s.Keys[0].Org != "org-1" || s.Keys[1].Org != "org-1" {
		t.Fatalf("orgs %q %q, want org-1", s.Keys[0].Org, s.Keys[1].Org)
	}
	// A 429 on one key now cools the other too.
	clk.Advance(time.Minute)
	r := acquireOn(t, p, "b", Request{Model: sonnet})
	observe(r, clk, 429, "retry-after", "20")
	nc := refused(t, p, Request{Model: sonnet})
	if !durNear(nc.RetryAfter, 20*time.Second) {
		t.Fatalf("RetryAfter %v", nc.RetryAfter)
	}
}

// Merging compares the two views at the same moment: a budget drained long
// ago has refilled since, and must not win over one drained just now.
func TestLearnedOrganizationMergeComparesLevelsNow(t *testing.T) {
	p, clk := newPool(t, Config{Keys: keys("a", "b")})
	lim := func(rem string) []string {
		return []string{"anthropic-ratelimit-requests-limit", "60", "anthropic-ratelimit-requests-remaining", rem}
	}
	ra := acquireOn(t, p, "a", Request{Model: sonnet})
	observe(ra, clk, 200, append(lim("59"), "anthropic-organization-id", "org-1")...)
	ra.Settle(ok200())
	rb := acquireOn(t, p, "b", Request{Model: sonnet})
	observe(rb, clk, 200, lim("59")...)
	rb.Settle(ok200())
	// a's budget is drained at t0.
	for i := 0; i < 59; i++ {
		acquireOn(t, p, "a", Request{Model: sonnet}).Settle(ok200())
	}
	wantLevel(t, p, "a", sonnet, kindRequests, 0, 1e-9)
	clk.Advance(50 * time.Second)
	// b's budget is drained to 20 now, while a's has refilled to 50.
	for i := 0; i < 40; i++ {
		acquireOn(t, p, "b", Request{Model: sonnet}).Settle(ok200())
	}
	wantLevel(t, p, "b", sonnet, kindRequests, 20, 1e-9)
	// A response without rate-limit headers names b's organization.
	rb = acquireOn(t, p, "b", Request{Model: sonnet})
	observe(rb, clk, 200, "anthropic-organization-id", "org-1")
	wantLevel(t, p, "a", sonnet, kindRequests, 19, 1e-6)
	wantLevel(t, p, "b", sonnet, kindRequests, 19, 1e-6)
	rb.Settle(ok200())
}

func TestMergeCarriesCooldownReason(t *testing.T) {
	p, clk := newPool(t, Config{Keys: keys("a", "b")})
	ra := acquireOn(t, p, "a", Request{Model: sonnet})
	observe(ra, clk, 200, "anthropic-organization-id", "org-1")
	rb := acquireOn(t, p, "b", Request{Model: sonnet})
	observe(rb, clk, 429, "retry-after", "40")
	rb2 := acquireOn(t, p, "b", Request{Model: haiku})
	observe(rb2, clk, 200, "anthropic-organization-id", "org-1")
	for _, k := range p.Snapshot().Keys {
		if k.State != "cooling" || !strings.Contains(k.Reason, "429") {
			t.Fatalf("key %s: state %q reason %q after merging a cooling org", k.Name, k.State, k.Reason)
		}
	}
	if nc := refused(t, p, Request{Model: sonnet}); !durNear(nc.RetryAfter, 40*time.Second) {
		t.Fatalf("RetryAfter %v", nc.RetryAfter)
	}
}

func TestKeyMovesToAnotherLearnedOrganization(t *testing.T) {
	p, clk := newPool(t, Config{Keys: keys("a", "b")})
	ra := acquireOn(t, p, "a", Request{Model: sonnet})
	observe(ra, clk, 200, "anthropic-organization-id", "org-1")
	rb := acquireOn(t, p, "b", Request{Model: sonnet})
	observe(rb, clk, 200, "anthropic-organization-id", "org-1")
	// a's key was moved to another organization upstream.
	ra = acquireOn(t, p, "a", Request{Model: sonnet})
	observe(ra, clk, 200, "anthropic-organization-id", "org-2")
	observe(rb, clk, 429, "retry-after", "30")
	// b's organization cools; a is elsewhere now.
	for i := 0; i < 3; i++ {
		if r := acquire(t, p, Request{Model: sonnet}); r.KeyName() != "a" {
			t.Fatalf("reserved %s", r.KeyName())
		}
	}
	s := p.Snapshot()
	if s.Keys[0].Org != "org-2" || s.Keys[1].Org != "org-1" {
		t.Fatalf("orgs %q %q", s.Keys[0].Org, s.Keys[1].Org)
	}
}

// A key whose organization id changes keeps what it knows of its budget:
// the new id does not hand out a full bucket.
func TestOrgIDChangeKeepsBudget(t *testing.T) {
	p, clk := newPool(t, Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{RPM: 10}}}})
	var rs []*Reservation
	for range 10 {
		rs = append(rs, acquire(t, p, Request{Model: sonnet}))
	}
	observe(rs[0], clk, 200, "anthropic-organization-id", "org-1")
	observe(rs[1], clk, 200, "anthropic-organization-id", "org-2")
	for _, r := range rs {
		r.Settle(ok200())
	}
	if k := p.Snapshot().Keys[0]; k.Org != "org-2" {
		t.Fatalf("org %q, want org-2", k.Org)
	}
	refused(t, p, Request{Model: sonnet})
	wantLevel(t, p, "a", sonnet, kindRequests, 0, 1e-9)
}

// Organizations learned from responses are bounded and freed: an upstream
// naming a new id on every response, and keys leaving the configuration,
// leave no trail of organizations behind.
func TestLearnedOrgsAreBounded(t *testing.T) {
	clk := clock.NewFake(t0)
	st := NewState(clk)
	p, err := newPoolOn(st, Config{Keys: keys("a", "b")})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		r := acquire(t, p, Request{Model: sonnet})
		observe(r, clk, 200, "anthropic-organization-id", fmt.Sprintf("org-%d", i))
		r.Settle(ok200())
	}
	st.mu.Lock()
	n := len(st.orgs)
	st.mu.Unlock()
	// Each key: its own "key:" org plus the id it settled on, twice over.
	if n > 6 {
		t.Fatalf("%d organizations after 1000 ids, want a handful", n)
	}
	// A reload without b, then closing the old pool, forgets b's.
	p2, err := newPoolOn(st, Config{Keys: keys("a")})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	st.mu.Lock()
	defer st.mu.Unlock()
	for name, o := range st.orgs {
		if o != st.keys["a"].org && o != st.keys["a"].org.resolve() {
			t.Errorf("organization %q outlived every key that used it", name)
		}
	}
	_ = p2
}
