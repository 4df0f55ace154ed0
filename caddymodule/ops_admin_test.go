package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestOpsAdminAPI drives admin.api.cc_relay on the admin endpoint: listing
// pools, one pool, enabling a key, wrong methods and unknown names; and it
// scans every admin answer (also /config/ and /metrics) for the upstream
// secrets and client tokens, including a secret the upstream echoed back in
// the error that disabled its key.
func TestOpsAdminAPI(t *testing.T) {
	const pool = "ops_admin"
	useFakeClock(t)
	secrets := map[string]string{
		"CC_RELAY_OPS_ADMIN_ALPHA": "sk-ant-ops-admin-alpha-5d1c",
		"CC_RELAY_OPS_ADMIN_BETA":  "sk-ant-ops-admin-beta-77e0",
		"CC_RELAY_OPS_ADMIN_GAMMA": "sk-ant-ops-admin-gamma-0b9f",
		"CC_RELAY_OPS_ADMIN_TOKEN": "ct-ops-admin-client-4e21",
	}
	setEnvs(t, secrets)
	up := newUpstream(t, func(key string, w http.ResponseWriter, r *http.Request) {
		switch key {
		case secrets["CC_RELAY_OPS_ADMIN_BETA"]:
			// Some gateways echo the key they refuse.
			upstreamError(w, http.StatusUnauthorized, "authentication_error", "invalid x-api-key "+key)
		case secrets["CC_RELAY_OPS_ADMIN_GAMMA"]:
			upstreamRateLimited(w, "60")
		default:
			okMessage(w)
		}
	})
	startRelay(t, fmt.Sprintf(`http://localhost:9080 {
	cc_relay_ui /ops/*
	cc_relay %s {
		strategy priority
		client_token {env.CC_RELAY_OPS_ADMIN_TOKEN} admin-client
		key {env.CC_RELAY_OPS_ADMIN_BETA} {
			name beta
		}
		key {env.CC_RELAY_OPS_ADMIN_GAMMA} {
			name gamma
			priority 1
			workspace ws-g
		}
		key {env.CC_RELAY_OPS_ADMIN_ALPHA} {
			name alpha
			org team
			rpm 10
			priority 2
		}
	}
	reverse_proxy %s
}
`, pool, up.addr()))

	// beta is rejected (disabled), gamma rate limited (cooling), alpha
	// answers; then a session is pinned to alpha.
	if res, body := post(t, secrets["CC_RELAY_OPS_ADMIN_TOKEN"], msgStream(false), "X-Claude-Code-Session-Id", "ops-admin-s"); res.StatusCode != 200 || res.Header.Get("X-CC-Relay-Key") != "alpha" {
		t.Fatalf("%d %s %s", res.StatusCode, res.Header.Get("X-CC-Relay-Key"), body)
	}
	waitIdle(t, pool)

	var outputs []string // every admin answer, scanned for secrets at the end
	do := func(method, path string, wantCode int) (http.Header, string) {
		t.Helper()
		res, body := roundTrip(t, relayHTTP, newRequest(t, method, adminAddr+path, nil))
		outputs = append(outputs, body)
		if res.StatusCode != wantCode {
			t.Fatalf("%s %s: %d %s, want %d", method, path, res.StatusCode, body, wantCode)
		}
		return res.Header, body
	}
	get := func(path string, wantCode int) string {
		t.Helper()
		_, body := do(http.MethodGet, path, wantCode)
		return body
	}

	// All pools.
	var all []PoolStatus
	if err := json.Unmarshal([]byte(get("/cc_relay/pools", 200)), &all); err != nil {
		t.Fatal(err)
	}
	var ps *PoolStatus
	for i := range all {
		if all[i].Name == pool {
			ps = &all[i]
		}
	}
	if ps == nil {
		t.Fatalf("pool %s not listed: %+v", pool, all)
	}
	get("/cc_relay/pools/", 200)

	// One pool: every field an operator needs, per key.
	raw := get("/cc_relay/pools/"+pool, 200)
	for _, field := range []string{`"name":"alpha"`, `"org":"team"`, `"cache_scope":"ws-g"`, `"state":"disabled"`, `"state":"cooling"`, `"until":`,
		`"reason":`, `"configured":10`, `"learned":`, `"remaining":`, `"in_flight":0`, `"sticky_sessions":1`, `"totals":`, `"rate_limited":1`} {
		if !strings.Contains(raw, field) {
			t.Fatalf("pool JSON lacks %s: %s", field, raw)
		}
	}
	one := adminPool(t, pool)
	alpha := mustKey(t, one, "alpha")
	if r := budgetOf(t, alpha, "sonnet").Requests; r.Configured != 10 || r.Remaining != 9 {
		t.Fatalf("alpha requests budget %+v, want configured 10, remaining 9", r)
	}
	if alpha.Sticky != 1 || alpha.Totals.Requests != 1 || alpha.Totals.InputTokens != 12 || alpha.Totals.OutputTokens != 3 {
		t.Fatalf("alpha %+v", alpha)
	}
	beta := mustKey(t, one, "beta")
	if beta.State != "disabled" || !strings.Contains(beta.Reason, "401") || !strings.Contains(beta.Reason, "[redacted]") {
		t.Fatalf("beta %+v: want disabled by a 401, the echoed secret redacted", beta)
	}
	gamma := mustKey(t, one, "gamma")
	if gamma.State != "cooling" || gamma.Until == nil || gamma.Scope != "ws-g" {
		t.Fatalf("gamma %+v: want cooling", gamma)
	}

	// Enable: clears the disabled state and the cooldown.
	for _, name := range []string{"beta", "gamma"} {
		_, body := do(http.MethodPost, "/cc_relay/pools/"+pool+"/keys/"+name+"/enable", 200)
		var er EnableResult
		if err := json.Unmarshal([]byte(body), &er); err != nil {
			t.Fatal(err)
		}
		if er.Pool != pool || er.Key.Name != name || er.Key.State != "ok" || er.Key.Reason != "" {
			t.Fatalf("enable %s answered %s", name, body)
		}
		if k := mustKey(t, adminPool(t, pool), name); k.State != "ok" || k.Until != nil {
			t.Fatalf("%s after enable: %+v", name, k)
		}
	}
	// beta is preferred again, and refused again.
	if res, body := post(t, secrets["CC_RELAY_OPS_ADMIN_TOKEN"], msgStream(false)); res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	if k := mustKey(t, waitIdle(t, pool), "beta"); k.State != "disabled" || k.Totals.Requests != 2 {
		t.Fatalf("beta was not used after enable: %+v", k)
	}

	// Wrong methods.
	for _, c := range []struct{ method, path, allow string }{
		{http.MethodPost, "/cc_relay/pools", "GET"},
		{http.MethodDelete, "/cc_relay/pools/" + pool, "GET"},
		{http.MethodPut, "/cc_relay/pools/" + pool, "GET"},
		{http.MethodGet, "/cc_relay/pools/" + pool + "/keys/beta/enable", "POST"},
	} {
		hdr, body := do(c.method, c.path, http.StatusMethodNotAllowed)
		if hdr.Get("Allow") != c.allow || !strings.Contains(body, `"error"`) {
			t.Fatalf("%s %s: Allow %q, body %s", c.method, c.path, hdr.Get("Allow"), body)
		}
	}
	// Unknown pools, keys and paths.
	for _, c := range []struct{ method, path string }{
		{http.MethodGet, "/cc_relay/pools/ops_admin_nope"},
		{http.MethodPost, "/cc_relay/pools/ops_admin_nope/keys/beta/enable"},
		{http.MethodPost, "/cc_relay/pools/" + pool + "/keys/nope/enable"},
		{http.MethodPost, "/cc_relay/pools/" + pool + "/keys/" + secrets["CC_RELAY_OPS_ADMIN_ALPHA"] + "/enable"},
		{http.MethodGet, "/cc_relay/pools/" + pool + "/keys"},
		{http.MethodGet, "/cc_relay/pools/" + pool + "/keys/beta"},
	} {
		_, body := do(c.method, c.path, http.StatusNotFound)
		if !strings.Contains(body, `"error"`) {
			t.Fatalf("%s %s: %s", c.method, c.path, body)
		}
		// The 404 for a secret used as a key name echoes the request,
		// not the pool's state; it is left out of the scan below.
		if strings.Contains(c.path, secrets["CC_RELAY_OPS_ADMIN_ALPHA"]) {
			outputs = outputs[:len(outputs)-1]
		}
	}

	// Secrets reach no admin answer: the pool views, the config (which
	// holds {env.*} placeholders, not secrets) and the metrics; nor the
	// status page, its JSON, assets and errors.
	get("/config/", 200)
	get("/metrics", 200)
	for _, q := range []string{"", "?format=json", "?asset=ui.js", "?asset=ui.css", "?asset=nope", "?format=nope"} {
		_, body := roundTrip(t, relayHTTP, newRequest(t, http.MethodGet, relayAddr+"/ops/"+q, nil))
		outputs = append(outputs, body)
	}
	_, body := roundTrip(t, relayHTTP, newRequest(t, http.MethodPost, relayAddr+"/ops/?action=enable", strings.NewReader(`{"pool":"ops_admin","key":"beta"}`)))
	outputs = append(outputs, body)
	if !strings.Contains(outputs[len(outputs)-6], `"name":"beta"`) {
		t.Fatalf("the status page JSON does not show the pool: %s", outputs[len(outputs)-6])
	}
	for _, out := range outputs {
		for name, secret := range secrets {
			if strings.Contains(out, secret) {
				t.Fatalf("admin output holds the secret of %s:\n%s", name, out)
			}
		}
	}
}
