package caddymodule

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// TestProbeOneDisablePerRequest: an upstream whose auth fails for every
// key at once (a transient 401) costs one key per request, not
// retries+1: the others are only avoided by that request.
func TestProbeOneDisablePerRequest(t *testing.T) {
	useFakeClock(t)
	up := newUpstream(t, func(key string, w http.ResponseWriter, r *http.Request) {
		upstreamError(w, http.StatusUnauthorized, "authentication_error", "auth service unavailable")
	})
	startRelay(t, relaySite(`bound_pool {
		strategy priority
		client_token ct-bound
		retries 2
`+keyBlocks("b1 b2 b3", map[string]string{"b2": "\t\t\tpriority 1\n", "b3": "\t\t\tpriority 2\n"})+`
	}`, proxyTo(up)))
	c := newRelayClient(t)
	r := c.mustSend(t, "ct-bound", msgBody)
	assertAPIError(t, "every key refused", r.status, r.body, http.StatusServiceUnavailable, "api_error")
	if n := len(up.all()); n != 3 {
		t.Fatalf("%d attempts, want 3 (retries 2)", n)
	}
	disabled := 0
	for _, k := range poolSnap(t, "bound_pool").Keys {
		if k.State == "disabled" {
			disabled++
		}
	}
	if disabled != 1 {
		t.Fatalf("one request disabled %d keys, want 1", disabled)
	}
	waitIdle(t, "bound_pool")
}

// TestProbeRestoresKey: a disabled key is re-checked with GET
// /v1/models?limit=1 through the operator's reverse_proxy, after 30s and
// then with a doubling backoff; refused again it stays out with the new
// reason (redacted); once the upstream accepts it, it returns to rotation.
// The admin API shows the next probe.
func TestProbeRestoresKey(t *testing.T) {
	fake := useFakeClock(t)
	const sickKey = "sk-ant-api03-probe-sick-key-0123456789abcdef"
	var revoked atomic.Bool
	revoked.Store(true)
	var probes atomic.Int32
	up := newUpstream(t, func(key string, w http.ResponseWriter, r *http.Request) {
		if key == sickKey {
			if r.URL.Path == "/v1/models" {
				if r.Method != http.MethodGet || r.URL.RawQuery != "limit=1" || r.Header.Get("Anthropic-Version") == "" {
					t.Errorf("probe %s %s version %q", r.Method, r.URL, r.Header.Get("Anthropic-Version"))
				}
				defer probes.Add(1)
			}
			if revoked.Load() {
				upstreamError(w, http.StatusUnauthorized, "authentication_error", "key "+key+" is revoked")
				return
			}
			if r.URL.Path == "/v1/models" {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(`{"data":[],"has_more":false}`))
				return
			}
		}
		okMessage(w)
	})
	startRelay(t, relaySite(`probe_pool {
		strategy priority
		client_token ct-probe
		key `+sickKey+` {
			name sick
		}
		key sk-probe-well {
			name well
			priority 1
		}
	}`, proxyTo(up)))
	c := newRelayClient(t)
	t0 := fake.Now()
	if r := c.mustSend(t, "ct-probe", msgBody); r.status != 200 || r.via() != "well" {
		t.Fatalf("first request: %d via %q", r.status, r.via())
	}
	ps := adminPool(t, "probe_pool")
	if p, ok := ps.Probes["sick"]; !ok || p.NextProbe == nil || !p.NextProbe.Equal(t0.Add(keypool.ProbeBackoffMin)) {
		t.Fatalf("admin probes %+v, want sick's next probe at +30s", ps.Probes)
	}

	// advanceUntil moves the fake clock a second at a time (the prober
	// sleeps on it) until cond holds.
	advanceUntil := func(what string, cond func() bool) {
		t.Helper()
		pollUntil(t, what, func() bool {
			if cond() {
				return true
			}
			fake.Advance(time.Second)
			return false
		})
	}
	fake.Advance(keypool.ProbeBackoffMin - time.Second)
	advanceUntil("the first probe", func() bool { return probes.Load() >= 1 })
	var sick keypool.KeySnapshot
	advanceUntil("the refused probe recorded", func() bool {
		sick = keySnap(t, "probe_pool", "sick")
		return strings.Contains(sick.Reason, "(probe)")
	})
	if sick.State != "disabled" || strings.Contains(sick.Reason, "probe-sick-key") || !strings.Contains(sick.Reason, redacted) {
		t.Fatalf("after a refused probe: %q %q", sick.State, sick.Reason)
	}
	if p := adminPool(t, "probe_pool").Probes["sick"]; p.Backoff != (4 * keypool.ProbeBackoffMin).String() {
		t.Fatalf("backoff after one refusal: %+v", p)
	}
	if r := c.mustSend(t, "ct-probe", msgBody); r.via() != "well" {
		t.Fatalf("a key refused again was used: via %q", r.via())
	}

	revoked.Store(false)
	advanceUntil("the key back in rotation", func() bool { return keySnap(t, "probe_pool", "sick").State == "ok" })
	if n := probes.Load(); n != 2 {
		t.Fatalf("%d probes, want 2 (one refused, one passed)", n)
	}
	// A new conversation (the first is pinned to well by now).
	if r := c.mustSend(t, "ct-probe", msgText("after the probe")); r.status != 200 || r.via() != "sick" {
		t.Fatalf("after the passed probe: %d via %q", r.status, r.via())
	}
	if len(adminPool(t, "probe_pool").Probes) != 0 {
		t.Fatalf("probes listed with no key disabled")
	}
	waitIdle(t, "probe_pool")
}
