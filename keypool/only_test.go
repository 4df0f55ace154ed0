package keypool

import (
	"testing"

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
