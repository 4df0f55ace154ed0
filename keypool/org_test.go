package keypool

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
	"github.com/cc-relay/caddy-cc-relay/selector"
)

func TestNewPoolValidation(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no keys", Config{}, "no keys"},
		{"unnamed", Config{Keys: []KeyConfig{{}}}, "without a name"},
		{"duplicate", Config{Keys: keys("a", "b", "a")}, `duplicate key name "a"`},
		{"negative rpm", Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{RPM: -1}}}}, "negative"},
		{"negative itpm", Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{ITPM: -1}}}}, "negative"},
		{"negative otpm", Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{OTPM: -5}}}}, "negative"},
		{"negative weight", Config{Keys: []KeyConfig{{Name: "a", Weight: -2}}}, "negative"},
		{"org conflict", Config{Keys: []KeyConfig{
			{Name: "a", Org: "X", Limits: Limits{RPM: 50, ITPM: 1000}},
			{Name: "b", Org: "X", Limits: Limits{ITPM: 2000}},
		}}, `keys "a" and "b" of org "X" configure different input_tokens limits`},
		{"bad class pattern", Config{Keys: keys("a"), ModelClasses: []ClassRule{{Pattern: "[", Class: "x"}}}, "model_class"},
		{"empty class", Config{Keys: keys("a"), ModelClasses: []ClassRule{{Pattern: "x*"}}}, "model_class"},
	} {
		st := NewState(clock.NewFake(t0))
		// A failing configuration changes nothing in the state.
		good, err := newPoolOn(st, Config{Keys: keys("keep")})
		if err != nil {
			t.Fatal(err)
		}
		orgs := len(st.orgs)
		p, err := newPoolOn(st, c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: NewPool = %v, %v; want error containing %q", c.name, p, err, c.want)
			continue
		}
		if len(st.keys) != 1 || len(st.orgs) != orgs || st.keys["keep"].refs != 1 {
			t.Errorf("%s: a failed NewPool changed the state: %d keys, %d orgs (had %d)", c.name, len(st.keys), len(st.orgs), orgs)
		}
		good.Close()
	}
	// keypool has no defaults: what the caller must set is refused when
	// missing, and names what is missing.
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no ratio", Config{Keys: keys("a"), DefaultCooldown: time.Second, SpendCapPark: time.Hour}, "token estimate ratio"},
		{"NaN ratio", Config{Keys: keys("a"), TokenEstimateRatio: math.NaN(), DefaultCooldown: time.Second, SpendCapPark: time.Hour}, "token estimate ratio"},
		{"sticky without ttl", Config{Keys: keys("a"), Sticky: true, StickyMaxSessions: 5, TokenEstimateRatio: 4, DefaultCooldown: time.Second, SpendCapPark: time.Hour}, "sticky"},
		{"no cooldown", Config{Keys: keys("a"), TokenEstimateRatio: 4, SpendCapPark: time.Hour}, "default cooldown"},
		{"no park", Config{Keys: keys("a"), TokenEstimateRatio: 4, DefaultCooldown: time.Second}, "spend cap park"},
	} {
		if _, err := NewState(clock.NewFake(t0)).NewPool(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: NewPool error %v, want one naming %q", c.name, err, c.want)
		}
	}
	if _, err := NewState(clock.NewFake(t0)).NewPool(Config{Keys: keys("a"), TokenEstimateRatio: 4, DefaultCooldown: time.Second, SpendCapPark: time.Hour}); err != nil {
		t.Errorf("a config setting every number (not sticky) was refused: %v", err)
	}
	// Same limits on several keys of one org, or limits on one of them, are fine.
	st := NewState(clock.NewFake(t0))
	if _, err := newPoolOn(st, Config{Keys: []KeyConfig{
		{Name: "a", Org: "X", Limits: Limits{RPM: 50}},
		{Name: "b", Org: "X", Limits: Limits{RPM: 50, ITPM: 100}},
		{Name: "c", Org: "X"},
		{Name: "d", Limits: Limits{RPM: 7}},
		{Name: "e", Limits: Limits{RPM: 8}},
	}}); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
}

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

func TestModelClassesHaveSeparateBudgets(t *testing.T) {
	p, _ := newPool(t, Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{RPM: 2, ITPM: 1000}}}})
	for i := 0; i < 2; i++ {
		r := acquire(t, p, Request{Model: sonnet, Bytes: 400})
		if r.Class() != "sonnet" {
			t.Fatalf("class %q", r.Class())
		}
	}
	refused(t, p, Request{Model: sonnet})
	// Haiku has its own budget; draining it leaves Sonnet's alone.
	for i := 0; i < 2; i++ {
		if r := acquire(t, p, Request{Model: haiku, Bytes: 2000}); r.Class() != "haiku" {
			t.Fatalf("class %q", r.Class())
		}
	}
	refused(t, p, Request{Model: haiku})
	wantLevel(t, p, "a", sonnet, kindInput, 800, 1e-9)
	wantLevel(t, p, "a", haiku, kindInput, 0, 1e-9)
	acquire(t, p, Request{Model: opus})
	if r := acquire(t, p, Request{Model: "gpt-5"}); r.Class() != "default" {
		t.Fatalf("class %q", r.Class())
	}
	if got := len(p.Snapshot().Keys[0].Budgets); got != 4 {
		t.Fatalf("%d budgets, want 4 (sonnet, haiku, opus, default)", got)
	}
}

func TestModelFamily(t *testing.T) {
	for m, want := range map[string]string{
		"claude-opus-4-1-20250805":   "opus",
		"claude-3-opus-20240229":     "opus",
		"claude-sonnet-4-5-20250929": "sonnet",
		"claude-3-7-sonnet-latest":   "sonnet",
		"claude-3-5-haiku-20241022":  "haiku",
		"claude-haiku-4-5":           "haiku",
		"":                           "default",
		"mistral":                    "default",
	} {
		if got := ModelFamily(m); got != want {
			t.Errorf("ModelFamily(%q) = %q, want %q", m, got, want)
		}
	}
}

func TestModelClassRulesOverride(t *testing.T) {
	p, _ := newPool(t, Config{
		Keys: []KeyConfig{{Name: "a", Limits: Limits{RPM: 2}}},
		ModelClasses: []ClassRule{
			{Pattern: "claude-3-7-*", Class: "legacy"},
			{Pattern: "my-finetune-*", Class: "sonnet"},
			{Pattern: "claude-haiku-4*", Class: "fast"},
		},
	})
	for m, want := range map[string]string{
		"claude-3-7-sonnet-latest": "legacy",
		"my-finetune-v2":           "sonnet",
		"claude-haiku-4-5":         "fast",
		"claude-3-5-haiku-latest":  "haiku",
		"claude-sonnet-4-5":        "sonnet",
	} {
		r := acquire(t, p, Request{Model: m})
		if r.Class() != want {
			t.Errorf("%s: class %q, want %q", m, r.Class(), want)
		}
		r.Settle(Result{Status: 0}) // refund: no request counted
	}
	// my-finetune shares the Sonnet budget.
	acquire(t, p, Request{Model: "my-finetune-v2"})
	acquire(t, p, Request{Model: sonnet})
	refused(t, p, Request{Model: "claude-sonnet-4"})
	refused(t, p, Request{Model: "my-finetune-v3"})
	acquire(t, p, Request{Model: "claude-3-7-sonnet-latest"})
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
