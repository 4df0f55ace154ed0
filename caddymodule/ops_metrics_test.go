package caddymodule

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestOpsMetrics scrapes the admin endpoint's /metrics: counters of
// requests, tokens, cooldowns, disables, retries, short circuits, sticky
// outcomes and waits match what the relay did; gauges match the admin
// API's view of the pool; and after a reload counters keep counting while
// a removed key's gauges are gone.
func TestOpsMetrics(t *testing.T) {
	const pool = "ops_metrics"
	const scPool = "ops_metrics_sc"
	useFakeClock(t)
	up := newUpstream(t, func(key string, w http.ResponseWriter, r *http.Request) {
		switch key {
		case "sk-ops-m3":
			upstreamRateLimited(w, "60")
		case "sk-ops-m4":
			upstreamError(w, http.StatusForbidden, "permission_error", "no")
		case "sk-ops-m2":
			writeEvents(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"cache_read_input_tokens\":100,\"cache_creation_input_tokens\":7,\"output_tokens\":1}}}\n\n",
				"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":9}}\n\n", sseStop)
		default:
			okMessage(w) // 12 input, 3 output
		}
	})
	site := func(keys string) string {
		return fmt.Sprintf(`http://localhost:9080 {
	cc_relay %s {
		strategy round_robin
		client_auth off
		retries 3
%s	}
	reverse_proxy %s
}
http://127.0.0.1:9080 {
	cc_relay %s {
		client_auth off
		key sk-ops-sc {
			name sc
			rpm 1
		}
	}
	reverse_proxy %s
}
`, pool, keys, up.addr(), scPool, up.addr())
	}
	keys := keyBlocks("m1 m2 m3 m4", map[string]string{"m1": "\t\t\trpm 100\n", "m2": "\t\t\trpm 100\n"})
	startRelay(t, site(keys))

	// Round robin: m1, m2, then m3 (429, cools) and m4 (403, disabled)
	// retried onto m1; then m2, m1, m2 ...
	for i := 0; i < 6; i++ {
		if res, body := post(t, "", msgText(fmt.Sprintf("metrics %d", i))); res.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, res.StatusCode, body)
		}
	}
	for i := 0; i < 2; i++ { // the same session twice: new, then hit
		if res, body := post(t, "", msgStream(false), "X-Claude-Code-Session-Id", "ops-metrics-session"); res.StatusCode != 200 {
			t.Fatalf("session request: %d %s", res.StatusCode, body)
		}
	}
	// The other pool: one request passes, the next is refused by the relay.
	scPost := func() int {
		res, _ := roundTrip(t, relayHTTP, newRequest(t, http.MethodPost, "http://127.0.0.1:9080/v1/messages", strings.NewReader(msgStream(false))))
		return res.StatusCode
	}
	if c1, c2 := scPost(), scPost(); c1 != 200 || c2 != 429 {
		t.Fatalf("short-circuit pool answered %d, %d; want 200, 429", c1, c2)
	}
	ps := waitIdle(t, pool)
	waitIdle(t, scPool)
	seen := up.count()

	l := func(kv ...string) map[string]string {
		m := map[string]string{"pool": pool}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	// The relay records an attempt's counters just after settling it, so
	// after the client has its answer: each check polls (bounded) until
	// the scrape shows them.
	var s []metricSample
	var mismatch string
	eq := func(name string, labels map[string]string, want float64) {
		if mismatch != "" {
			return
		}
		got := findSamples(s, name, labels)
		if len(got) != 1 || got[0].Value != want {
			mismatch = fmt.Sprintf("%s%v = %v, want %v", name, labels, got, want)
		}
	}
	check := func(what string, f func()) {
		t.Helper()
		if !poll(func() bool {
			s, mismatch = scrapeMetrics(t), ""
			f()
			return mismatch == ""
		}) {
			t.Fatalf("%s: %s", what, mismatch)
		}
	}
	m1ok, m2ok := float64(seen["sk-ops-m1"]), float64(seen["sk-ops-m2"])
	if m1ok == 0 || m2ok == 0 || m1ok+m2ok != 8 {
		t.Fatalf("upstream saw %v", seen)
	}
	check("counters", func() {
		eq("caddy_cc_relay_requests_total", l("key", "m1", "outcome", "ok"), m1ok)
		eq("caddy_cc_relay_requests_total", l("key", "m2", "outcome", "ok"), m2ok)
		eq("caddy_cc_relay_requests_total", l("key", "m3", "outcome", "upstream_429"), 1)
		eq("caddy_cc_relay_requests_total", l("key", "m4", "outcome", "upstream_403"), 1)
		eq("caddy_cc_relay_cooldowns_total", l("key", "m3"), 1)
		eq("caddy_cc_relay_disables_total", l("key", "m4"), 1)
		eq("caddy_cc_relay_retries_total", l(), 2)
		eq("caddy_cc_relay_tokens_total", l("key", "m1", "kind", "input"), 12*m1ok)
		eq("caddy_cc_relay_tokens_total", l("key", "m1", "kind", "output"), 3*m1ok)
		eq("caddy_cc_relay_tokens_total", l("key", "m2", "kind", "input"), 5*m2ok)
		eq("caddy_cc_relay_tokens_total", l("key", "m2", "kind", "cache_read"), 100*m2ok)
		eq("caddy_cc_relay_tokens_total", l("key", "m2", "kind", "cache_creation"), 7*m2ok)
		eq("caddy_cc_relay_tokens_total", l("key", "m2", "kind", "output"), 9*m2ok)
		eq("caddy_cc_relay_sticky_total", l("outcome", "hit"), 1)
		eq("caddy_cc_relay_wait_seconds_count", l(), 8)
		eq("caddy_cc_relay_short_circuits_total", map[string]string{"pool": scPool}, 1)
		eq("caddy_cc_relay_requests_total", map[string]string{"pool": scPool, "key": "", "outcome": "rate_limited"}, 1)
		eq("caddy_cc_relay_requests_total", map[string]string{"pool": scPool, "key": "sc", "outcome": "ok"}, 1)
	})

	// Gauges agree with the admin API's snapshot of the same moment (the
	// clock is fake, so nothing refilled in between).
	check("gauges", func() {
		for _, k := range ps.Keys {
			eq("caddy_cc_relay_in_flight", l("key", k.Name), 0)
			eq("caddy_cc_relay_key_state", l("key", k.Name, "state", k.State), 1)
			if got := findSamples(s, "caddy_cc_relay_key_state", l("key", k.Name)); len(got) != 4 && mismatch == "" {
				mismatch = fmt.Sprintf("key_state of %s: %v", k.Name, got)
			}
			for _, b := range k.Budgets {
				if b.Requests.Configured > 0 {
					eq("caddy_cc_relay_remaining", l("key", k.Name, "class", b.Class, "budget", "requests"), float64(b.Requests.Remaining))
					eq("caddy_cc_relay_limit", l("key", k.Name, "class", b.Class, "budget", "requests"), float64(b.Requests.Configured))
				}
			}
		}
		eq("caddy_cc_relay_key_state", l("key", "m3", "state", "cooling"), 1)
		eq("caddy_cc_relay_key_state", l("key", "m4", "state", "disabled"), 1)
		eq("caddy_cc_relay_remaining", l("key", "m1", "class", "sonnet", "budget", "requests"), 100-m1ok)
		eq("caddy_cc_relay_remaining", map[string]string{"pool": scPool, "key": "sc", "budget": "requests"}, 0)
		if got := findSamples(s, "caddy_cc_relay_remaining", l("key", "m3")); len(got) != 0 && mismatch == "" {
			mismatch = fmt.Sprintf("m3 has no known limit, yet reports remaining: %v", got)
		}
	})

	// Reload without m2: counters keep their values, m2's gauges go.
	startRelay(t, site(keyBlocks("m1 m3 m4", map[string]string{"m1": "\t\t\trpm 100\n"})))
	check("after the reload", func() {
		eq("caddy_cc_relay_requests_total", l("key", "m1", "outcome", "ok"), m1ok)
		eq("caddy_cc_relay_tokens_total", l("key", "m1", "kind", "input"), 12*m1ok)
		eq("caddy_cc_relay_retries_total", l(), 2)
		eq("caddy_cc_relay_wait_seconds_count", l(), 8)
		eq("caddy_cc_relay_short_circuits_total", map[string]string{"pool": scPool}, 1)
		eq("caddy_cc_relay_remaining", l("key", "m1", "class", "sonnet", "budget", "requests"), 100-m1ok)
		for _, g := range []string{"caddy_cc_relay_remaining", "caddy_cc_relay_limit", "caddy_cc_relay_in_flight", "caddy_cc_relay_key_state", "caddy_cc_relay_sticky_sessions"} {
			if got := findSamples(s, g, l("key", "m2")); len(got) != 0 && mismatch == "" {
				mismatch = fmt.Sprintf("removed key m2 still has %s series: %v", g, got)
			}
			if got := findSamples(s, g, l("key", "m1")); len(got) == 0 && mismatch == "" {
				mismatch = fmt.Sprintf("kept key m1 lost its %s series", g)
			}
		}
	})
	if res, body := post(t, "", msgStream(false)); res.StatusCode != 200 || res.Header.Get("X-CC-Relay-Key") != "m1" {
		t.Fatalf("after reload: %d %s %s", res.StatusCode, res.Header.Get("X-CC-Relay-Key"), body)
	}
	waitIdle(t, pool)
	check("after one more request", func() {
		eq("caddy_cc_relay_requests_total", l("key", "m1", "outcome", "ok"), m1ok+1)
		eq("caddy_cc_relay_wait_seconds_count", l(), 9)
	})
}
