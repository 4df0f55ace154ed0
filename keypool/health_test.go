package keypool

import (
	"testing"
	"time"
)

// TestProbeStateMachine: a disabled key is due for a probe after
// ProbeBackoffMin, one probe at a time; a refused or inconclusive probe
// doubles the wait up to ProbeBackoffMax and a refusal replaces the
// reason; a passed probe returns the key to rotation; an Enable or a new
// disablement makes a probe already out count for nothing.
func TestProbeStateMachine(t *testing.T) {
	p, clk := newPool(t, Config{Keys: keys("a", "b")})
	if pr := p.DueProbes(); len(pr) != 0 {
		t.Fatalf("probes with no key disabled: %v", pr)
	}
	if _, ok := p.NextProbe(); ok {
		t.Fatalf("a next probe with no key disabled")
	}
	r := acquireOn(t, p, "a", Request{Model: "claude-sonnet-4-5", Bytes: 100})
	r.Disable("upstream 401: revoked")
	r.Settle(Result{Status: 401})
	next, ok := p.NextProbe()
	if !ok || !next.Equal(clk.Now().Add(ProbeBackoffMin)) {
		t.Fatalf("next probe %v %v, want in %v", next, ok, ProbeBackoffMin)
	}
	if ps := p.ProbeStatuses()["a"]; ps.NextProbe == nil || !ps.NextProbe.Equal(next) || ps.Probing {
		t.Fatalf("probe status %+v", ps)
	}
	clk.Advance(ProbeBackoffMin - time.Second)
	if pr := p.DueProbes(); len(pr) != 0 {
		t.Fatalf("probe before it is due: %v", pr)
	}
	clk.Advance(time.Second)
	pr := p.DueProbes()
	if len(pr) != 1 || pr[0].Name != "a" {
		t.Fatalf("due probes %v, want a", pr)
	}
	if again := p.DueProbes(); len(again) != 0 {
		t.Fatalf("a second probe of a key with one out: %v", again)
	}
	if ps := p.ProbeStatuses()["a"]; !ps.Probing || ps.NextProbe != nil {
		t.Fatalf("probing status %+v", ps)
	}

	// Refused, then inconclusive: the wait doubles each time, up to the cap.
	p.FinishProbe(pr[0], ProbeRefused, "upstream 403: still no")
	wait := 2 * ProbeBackoffMin
	for i := 0; i < 12; i++ {
		next, _ = p.NextProbe()
		if got := next.Sub(clk.Now()); got != wait {
			t.Fatalf("probe %d: next in %v, want %v", i, got, wait)
		}
		clk.Advance(wait)
		pr = p.DueProbes()
		if len(pr) != 1 {
			t.Fatalf("probe %d not due", i)
		}
		p.FinishProbe(pr[0], ProbeInconclusive, "ignored")
		wait = min(2*wait, ProbeBackoffMax)
	}
	if k := snapKey(p, "a"); k.State != "disabled" || k.Reason != "upstream 403: still no" {
		t.Fatalf("after refusals: %q %q", k.State, k.Reason)
	}
	if r := acquire(t, p, Request{Model: "claude-sonnet-4-5", Bytes: 100}); r.KeyName() != "b" {
		t.Fatalf("a disabled key was admitted")
	} else {
		r.Settle(ok200())
	}

	// Passed: back in rotation.
	next, _ = p.NextProbe()
	clk.Advance(next.Sub(clk.Now()))
	pr = p.DueProbes()
	p.FinishProbe(pr[0], ProbePassed, "")
	if k := snapKey(p, "a"); k.State != "ok" {
		t.Fatalf("after a passed probe: %q %q", k.State, k.Reason)
	}
	if len(p.ProbeStatuses()) != 0 {
		t.Fatalf("probe status of an enabled key: %v", p.ProbeStatuses())
	}

	// A probe out while the operator enables and the upstream refuses the
	// key again belongs to the old disablement: its outcome is ignored.
	r = acquireOn(t, p, "a", Request{Model: "claude-sonnet-4-5", Bytes: 100})
	r.Disable("first")
	r.Settle(Result{Status: 401})
	clk.Advance(ProbeBackoffMin)
	old := p.DueProbes()
	p.Enable("a")
	r = acquireOn(t, p, "a", Request{Model: "claude-sonnet-4-5", Bytes: 100})
	r.Disable("second")
	r.Settle(Result{Status: 401})
	p.FinishProbe(old[0], ProbePassed, "")
	if k := snapKey(p, "a"); k.State != "disabled" || k.Reason != "second" {
		t.Fatalf("a stale probe changed the key: %q %q", k.State, k.Reason)
	}
}

func snapKey(p *Pool, name string) KeySnapshot {
	for _, k := range p.Snapshot().Keys {
		if k.Name == name {
			return k
		}
	}
	return KeySnapshot{}
}
