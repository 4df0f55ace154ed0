package keypool

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestSnapshotJSON(t *testing.T) {
	p, clk := newPool(t, Config{Keys: []KeyConfig{
		{Name: "a", Org: "A", Workspace: "W", Limits: Limits{RPM: 10, ITPM: 1000}, Weight: 2, Priority: 1},
		{Name: "b"},
	}})
	r := acquireOn(t, p, "a", Request{Model: sonnet, Bytes: 400})
	observe(r, clk, 429, "retry-after", "30", "anthropic-ratelimit-output-tokens-limit", "500")
	r.Settle(Result{Status: 200, Usage: Usage{InputTokens: 90, HaveInput: true, OutputTokens: 10, HaveOutput: true}})
	s := p.Snapshot()
	a := s.Keys[0]
	if a.Name != "a" || a.Org != "A" || a.Scope != "W" || a.Weight != 2 || a.Priority != 1 || a.State != "cooling" {
		t.Fatalf("key a: %+v", a)
	}
	if want := t0.Add(30 * time.Second); a.Until == nil || !a.Until.Equal(want) || !strings.HasPrefix(a.Reason, "sonnet: ") {
		t.Fatalf("until %v reason %q", a.Until, a.Reason)
	}
	bs := a.Budgets[0]
	if bs.Class != "sonnet" || bs.Requests.Configured != 10 || bs.Requests.Remaining != 9 ||
		bs.InputTokens.Remaining != 910 || bs.OutputTokens.Learned != 500 || bs.OutputTokens.Remaining != 490 {
		t.Fatalf("budget %+v", bs)
	}
	if b := s.Keys[1]; b.Scope != "b" || b.Org != "b" || b.State != "ok" || b.Weight != 1 || len(b.Budgets) != 0 {
		t.Fatalf("key b: %+v", b)
	}
	// Unknown limits read as -1.
	acquireOn(t, p, "b", Request{Model: sonnet})
	if rem := p.Snapshot().Keys[1].Budgets[0].Requests.Remaining; rem != -1 {
		t.Fatalf("remaining without a limit: %d", rem)
	}
	js, err := json.Marshal(p.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"strategy":"least_loaded"`, `"cooling_until":"2025-06-01T12:00:30Z"`, `"cache_scope":"W"`, `"rate_limited":1`} {
		if !strings.Contains(string(js), want) {
			t.Errorf("snapshot JSON lacks %s: %s", want, js)
		}
	}
}

func TestNewStateDefaultsToRealClock(t *testing.T) {
	st := NewState(nil)
	p, err := newPoolOn(st, Config{Keys: keys("a")})
	if err != nil {
		t.Fatal(err)
	}
	r := acquire(t, p, Request{Model: sonnet})
	r.Settle(ok200())
	if d := time.Since(time.Unix(0, p.st.clock.Now().UnixNano())); d < 0 || d > time.Minute {
		t.Fatalf("state clock is off by %v", d)
	}
}
