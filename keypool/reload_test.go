package keypool

import (
	"testing"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
	"github.com/cc-relay/caddy-cc-relay/selector"
)

func TestReloadKeepsState(t *testing.T) {
	clk := clock.NewFake(t0)
	st := NewState(clk)
	cfg1 := Config{Sticky: true, Keys: []KeyConfig{
		{Name: "limited", Limits: Limits{RPM: 10}},
		{Name: "learned"},
		{Name: "disabled"},
		{Name: "cooling", Org: "C"},
		{Name: "gone"},
	}}
	p1, err := newPoolOn(st, cfg1)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		acquireOn(t, p1, "limited", Request{Model: sonnet}).Settle(ok200())
	}
	r := acquireOn(t, p1, "learned", Request{Model: sonnet})
	observe(r, clk, 200, "anthropic-ratelimit-input-tokens-limit", "50000", "anthropic-ratelimit-input-tokens-remaining", "20000")
	r.Settle(ok200())
	acquireOn(t, p1, "disabled", Request{Model: sonnet}).Disable("401")
	r = acquireOn(t, p1, "cooling", Request{Model: sonnet})
	observe(r, clk, 429, "retry-after", "120")
	pin := acquireOn(t, p1, "limited", Request{Model: sonnet, Session: 77})
	pinGone := acquireOn(t, p1, "gone", Request{Model: sonnet, Session: 88})
	if pin.Sticky != StickyNew || pinGone.Sticky != StickyNew {
		t.Fatal("pins not new")
	}
	// An in-flight request spans the reload.
	inflight := acquireOn(t, p1, "learned", Request{Model: sonnet, Bytes: 4000})

	// Reload: new limits, "gone" removed, "new" added, order changed.
	p2, err := newPoolOn(st, Config{Sticky: true, Strategy: selector.RoundRobin, Keys: []KeyConfig{
		{Name: "new"},
		{Name: "cooling", Org: "C"},
		{Name: "disabled"},
		{Name: "learned"},
		{Name: "limited", Limits: Limits{RPM: 20}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	// Budgets carry over (5 of "limited"'s requests used); the new limit applies.
	wantLevel(t, p2, "limited", sonnet, kindRequests, 5, 1e-9)
	clk.Advance(3 * time.Second) // 1 request at 20/min
	wantLevel(t, p2, "limited", sonnet, kindRequests, 6, 1e-9)
	s := snapshotByName(p2)
	if s["learned"].Budgets[0].InputTokens.Learned != 50000 {
		t.Fatalf("learned limit lost: %+v", s["learned"].Budgets)
	}
	// Synced to at most 20999, minus the 1000 in flight, plus 3 s of refill.
	if got := level(t, p2, "learned", sonnet, kindInput); got > 20999-1000+2500 {
		t.Fatalf("learned budget level %v, want <= 22499", got)
	}
	if s["disabled"].State != "disabled" || s["disabled"].Reason != "401" {
		t.Fatalf("disabled state lost: %+v", s["disabled"])
	}
	if s["cooling"].State != "cooling" {
		t.Fatalf("cooldown lost: %+v", s["cooling"])
	}
	if s["limited"].Totals.Requests != 5 {
		t.Fatalf("totals lost: %+v", s["limited"].Totals)
	}
	// The pin survives.
	if r := acquire(t, p2, Request{Model: sonnet, Session: 77}); r.Sticky != StickyHit || r.KeyName() != "limited" || r.KeyIndex() != 4 {
		t.Fatalf("pin after reload: %v on %s (%d)", r.Sticky, r.KeyName(), r.KeyIndex())
	}
	// The in-flight reservation settles against the same budget.
	inflight.Settle(Result{Status: 0})
	if n := inFlight(p2, "learned"); n != 0 {
		t.Fatalf("in flight %d after settling across the reload", n)
	}
	if n := p2.Snapshot().StickySessions; n != 2 {
		t.Fatalf("%d sessions before closing the old pool", n)
	}

	// Closing the old pool drops what the new one does not list.
	p1.Close()
	p1.Close() // idempotent
	if _, ok := st.keys["gone"]; ok {
		t.Fatal("key gone still in the state")
	}
	if len(st.keys) != 5 {
		t.Fatalf("%d keys, want 5", len(st.keys))
	}
	// A second Close of p1 released nothing more: each key is held once, by p2.
	for name, ks := range st.keys {
		if ks.refs != 1 {
			t.Fatalf("key %s held %d times, want 1", name, ks.refs)
		}
	}
	if n := p2.Snapshot().StickySessions; n != 1 {
		t.Fatalf("%d sessions after dropping key gone, want 1", n)
	}
	// Session 88 was on the dropped key: it starts over.
	if r := acquire(t, p2, Request{Model: sonnet, Session: 88}); r.Sticky != StickyNew || r.KeyName() == "gone" {
		t.Fatalf("%v on %s", r.Sticky, r.KeyName())
	}
	// Enable clears the disabled key and the cooling organization.
	p2.Enable("disabled")
	p2.Enable("cooling")
	s = snapshotByName(p2)
	if s["disabled"].State != "ok" || s["cooling"].State != "ok" {
		t.Fatalf("after Enable: %q %q", s["disabled"].State, s["cooling"].State)
	}

	// A key that comes back later starts fresh but finds its organization.
	p3, err := newPoolOn(st, Config{Keys: []KeyConfig{{Name: "gone", Org: "C"}, {Name: "cooling", Org: "C", Limits: Limits{RPM: 1}}}})
	if err != nil {
		t.Fatal(err)
	}
	p2.Close()
	acquireOn(t, p3, "cooling", Request{Model: sonnet})
	refused(t, p3, Request{Model: sonnet}) // one budget of 1 request for org C
	p3.Close()
	if len(st.keys) != 0 || st.sticky.len() != 0 {
		t.Fatalf("%d keys, %d sessions after closing everything", len(st.keys), st.sticky.len())
	}
	if err := st.Destruct(); err != nil {
		t.Fatal(err)
	}
}

// A key whose configured organization changes starts over in the new one.
func TestReloadMovesKeyBetweenConfiguredOrgs(t *testing.T) {
	clk := clock.NewFake(t0)
	st := NewState(clk)
	p1, _ := newPoolOn(st, Config{Keys: []KeyConfig{{Name: "a", Org: "A", Limits: Limits{RPM: 1}}}})
	acquire(t, p1, Request{Model: sonnet})
	refused(t, p1, Request{Model: sonnet})
	p2, err := newPoolOn(st, Config{Keys: []KeyConfig{{Name: "a", Org: "B", Limits: Limits{RPM: 1}}}})
	if err != nil {
		t.Fatal(err)
	}
	p1.Close()
	acquire(t, p2, Request{Model: sonnet})
	if s := p2.Snapshot().Keys[0]; s.Org != "B" {
		t.Fatalf("org %q", s.Org)
	}
}

func snapshotByName(p *Pool) map[string]KeySnapshot {
	m := map[string]KeySnapshot{}
	for _, k := range p.Snapshot().Keys {
		m[k.Name] = k
	}
	return m
}
