package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
)

// opsStateUpstream answers by key: a and e succeed, b succeeds and reports
// its organization's request limit (so it is learned), c is rate limited
// for 300s, d is rejected, f and g succeed.
func opsStateUpstream(t *testing.T, fake *clock.Fake) *recUpstream {
	return newUpstream(t, func(key string, w http.ResponseWriter, r *http.Request) {
		switch key {
		case "sk-ops-b":
			h := w.Header()
			h.Set("Anthropic-Ratelimit-Requests-Limit", "50")
			h.Set("Anthropic-Ratelimit-Requests-Remaining", "40")
			h.Set("Anthropic-Ratelimit-Requests-Reset", fake.Now().Add(12*time.Second).Format(time.RFC3339))
		case "sk-ops-c":
			upstreamRateLimited(w, "300")
			return
		case "sk-ops-d":
			upstreamError(w, http.StatusUnauthorized, "authentication_error", "invalid x-api-key")
			return
		}
		okMessage(w)
	})
}

func opsReloadSite(pool, keys string, extra map[string]string, up *recUpstream) string {
	return fmt.Sprintf(`http://localhost:9080 {
	cc_relay %s {
		strategy round_robin
		client_auth off
		retries 4
%s	}
	reverse_proxy %s
}
`, pool, keyBlocks(keys, extra), up.addr())
}

// opsSessionKeys sends one request per session and returns the key each got.
func opsSessionKeys(t *testing.T, sessions []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, s := range sessions {
		res, body := post(t, "", msgStream(false), "X-Claude-Code-Session-Id", s)
		if res.StatusCode != 200 {
			t.Fatalf("session %s: %d %s", s, res.StatusCode, body)
		}
		out[s] = res.Header.Get("X-CC-Relay-Key")
	}
	return out
}

// TestOpsReloadKeepsState reloads a running relay twice, once with a
// Caddyfile through caddytest and once by POSTing JSON to the admin
// endpoint's /load, and checks that budgets, learned limits, cooldowns,
// disabled keys, pinned sessions and totals carry over; that changed
// limits apply; that removed keys go and new keys come; and that the old
// configuration released its hold on the pool state.
func TestOpsReloadKeepsState(t *testing.T) {
	const pool = "ops_reload"
	fake := useFakeClock(t)
	up := opsStateUpstream(t, fake)
	startRelay(t, opsReloadSite(pool, "a b c d e", map[string]string{"a": "\t\t\trpm 100\n"}, up))

	// Round robin over five keys: every key is tried; c cools down, d is
	// disabled, and their requests are retried on the next key.
	for i := 0; i < 10; i++ {
		if res, body := post(t, "", msgText(fmt.Sprintf("warm %d", i))); res.StatusCode != 200 {
			t.Fatalf("warm-up %d: %d %s", i, res.StatusCode, body)
		}
	}
	sessions := []string{"ops-s1", "ops-s2", "ops-s3", "ops-s4", "ops-s5"}
	pinned := opsSessionKeys(t, sessions)
	before := waitIdle(t, pool)

	a := mustKey(t, before, "a")
	if got := budgetOf(t, a, "sonnet").Requests; got.Configured != 100 || got.Remaining >= 100 || got.Remaining < 60 {
		t.Fatalf("a before reload: %+v, want configured 100 and some spent", got)
	}
	if got := budgetOf(t, mustKey(t, before, "b"), "sonnet").Requests; got.Learned != 50 || got.Configured != 0 {
		t.Fatalf("b before reload: %+v, want learned 50", got)
	}
	if c := mustKey(t, before, "c"); c.State != "cooling" || c.Until == nil {
		t.Fatalf("c before reload: %+v, want cooling", c)
	}
	if d := mustKey(t, before, "d"); d.State != "disabled" || !strings.Contains(d.Reason, "401") {
		t.Fatalf("d before reload: %+v, want disabled by a 401", d)
	}
	if before.StickySessions < len(sessions) {
		t.Fatalf("%d pinned sessions before reload, want >= %d", before.StickySessions, len(sessions))
	}

	// Reload 1: a Caddyfile that lowers a's limit, drops e and adds f.
	startRelay(t, opsReloadSite(pool, "a b c d f", map[string]string{"a": "\t\t\trpm 50\n"}, up))
	if refs, _ := pools.References(pool); refs != 1 {
		t.Fatalf("pool state has %d references after the reload, want 1 (the old configuration must release its own)", refs)
	}
	after := adminPool(t, pool)
	opsCompareKept(t, before, after, "b", "c", "d")
	aAfter := budgetOf(t, mustKey(t, after, "a"), "sonnet").Requests
	if want := min(budgetOf(t, a, "sonnet").Requests.Remaining, 50); aAfter.Configured != 50 || aAfter.Remaining != want {
		t.Fatalf("a after lowering rpm to 50: %+v, want configured 50 and remaining %d", aAfter, want)
	}
	if mustKey(t, after, "a").Totals != a.Totals || mustKey(t, after, "a").Sticky != a.Sticky {
		t.Fatalf("a's totals or pins changed across the reload")
	}
	if _, ok := findKey(after, "e"); ok {
		t.Fatalf("removed key e still listed: %+v", after.Keys)
	}
	if f := mustKey(t, after, "f"); f.State != "ok" || f.Totals.Requests != 0 {
		t.Fatalf("new key f: %+v", f)
	}
	removedPins := mustKey(t, before, "e").Sticky
	if after.StickySessions != before.StickySessions-removedPins {
		t.Fatalf("pinned sessions %d after the reload, want %d (before) - %d (on removed key e)", after.StickySessions, before.StickySessions, removedPins)
	}

	// Pinned sessions stay on their key unless it was removed.
	again := opsSessionKeys(t, sessions)
	kept := 0
	for _, s := range sessions {
		if pinned[s] == "e" {
			if again[s] == "e" {
				t.Fatalf("session %s still went to removed key e", s)
			}
			continue
		}
		kept++
		if again[s] != pinned[s] {
			t.Fatalf("session %s moved from %s to %s across the reload", s, pinned[s], again[s])
		}
	}
	if kept == 0 {
		t.Fatalf("no session was pinned to a kept key: %v", pinned)
	}

	// Reload 2: the running JSON config, changed, POSTed to /load.
	before = waitIdle(t, pool)
	cfg := adminGet(t, "/config/")
	var doc any
	if err := json.Unmarshal([]byte(cfg), &doc); err != nil {
		t.Fatal(err)
	}
	found := opsEachRelay(doc, func(h map[string]any) {
		if h["pool"] != pool {
			return
		}
		var keys []any
		for _, k := range h["keys"].([]any) {
			km := k.(map[string]any)
			switch km["name"] {
			case "b":
				km["rpm"] = 30 // configured now, below what was learned
			case "f":
				continue // removed
			}
			keys = append(keys, km)
		}
		h["keys"] = append(keys, map[string]any{"key": "sk-ops-g", "name": "g"})
	})
	if found != 1 {
		t.Fatalf("found %d cc_relay handlers for %s in the running config", found, pool)
	}
	changed, _ := json.Marshal(doc)
	if code, body := adminDo(t, http.MethodPost, "/load", "application/json", string(changed)); code != 200 {
		t.Fatalf("POST /load: %d %s", code, body)
	}
	if refs, _ := pools.References(pool); refs != 1 {
		t.Fatalf("pool state has %d references after the JSON reload, want 1", refs)
	}
	after = adminPool(t, pool)
	opsCompareKept(t, before, after, "a", "c", "d")
	bAfter := budgetOf(t, mustKey(t, after, "b"), "sonnet").Requests
	if want := min(budgetOf(t, mustKey(t, before, "b"), "sonnet").Requests.Remaining, 30); bAfter.Configured != 30 || bAfter.Learned != 50 || bAfter.Remaining != want {
		t.Fatalf("b after configuring rpm 30: %+v, want configured 30, learned 50, remaining %d", bAfter, want)
	}
	if _, ok := findKey(after, "f"); ok {
		t.Fatalf("removed key f still listed")
	}
	if g := mustKey(t, after, "g"); g.State != "ok" {
		t.Fatalf("new key g: %+v", g)
	}
	third := opsSessionKeys(t, sessions)
	for _, s := range sessions {
		if pinned[s] != "e" && third[s] != pinned[s] {
			t.Fatalf("session %s moved from %s to %s across the JSON reload", s, pinned[s], third[s])
		}
	}
}

// opsCompareKept checks that the named keys' state is the same in both
// snapshots: state, cooldown, reason, budgets, pins and totals.
func opsCompareKept(t *testing.T, before, after PoolStatus, names ...string) {
	t.Helper()
	for _, n := range names {
		b, a := mustKey(t, before, n), mustKey(t, after, n)
		bj, _ := json.Marshal(b)
		aj, _ := json.Marshal(a)
		if string(aj) != string(bj) {
			t.Fatalf("key %s changed across the reload:\nbefore %s\nafter  %s", n, bj, aj)
		}
	}
}

// opsEachRelay calls f on every cc_relay handler object in a JSON config
// and returns how many it found.
func opsEachRelay(v any, f func(map[string]any)) int {
	n := 0
	switch x := v.(type) {
	case map[string]any:
		if x["handler"] == "cc_relay" {
			f(x)
			n++
		}
		for _, c := range x {
			n += opsEachRelay(c, f)
		}
	case []any:
		for _, c := range x {
			n += opsEachRelay(c, f)
		}
	}
	return n
}

// TestOpsStreamSurvivesReload holds a stream open upstream, reloads the
// relay twice (Caddyfile, then JSON /load) while it is in flight, then lets
// it finish: the client must get every event, and the old configuration's
// pool, closed by then, must still settle the attempt.
func TestOpsStreamSurvivesReload(t *testing.T) {
	const pool = "ops_stream_reload"
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	up := newUpstream(t, func(key string, w http.ResponseWriter, r *http.Request) {
		rc := writeEvents(w, sseStart10)
		started <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		for i := 0; i < 20; i++ {
			fmt.Fprintf(w, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"w%d \"}}\n\n", i)
			_ = rc.Flush()
		}
		_, _ = io.WriteString(w, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":21}}\n\n"+sseStop)
	})
	site := func(extraKey string) string {
		return fmt.Sprintf(`http://localhost:9080 {
	cc_relay %s {
		client_auth off
		key sk-ops-stream {
			name s1
		}
%s	}
	reverse_proxy %s {
		flush_interval -1
	}
}
`, pool, extraKey, up.addr())
	}
	startRelay(t, site(""))

	req := newRequest(t, http.MethodPost, relayAddr+"/v1/messages", strings.NewReader(msgStream(true)))
	res, br := openStream(t, &http.Client{Timeout: 30 * time.Second, Transport: relayHTTP.Transport}, req)
	defer res.Body.Close()
	<-started

	startRelay(t, site("\t\tkey sk-ops-stream-2 {\n\t\t\tname s2\n\t\t}\n"))
	cfg := adminGet(t, "/config/")
	// A real change, so Caddy does not skip the load as unchanged.
	cfg = strings.Replace(cfg, `"name":"s2"`, `"name":"s3"`, 1)
	if code, body := adminDo(t, http.MethodPost, "/load", "application/json", cfg); code != 200 {
		t.Fatalf("POST /load: %d %s", code, body)
	}
	if _, ok := findKey(adminPool(t, pool), "s3"); !ok {
		t.Fatalf("the JSON reload did not apply")
	}
	if k := mustKey(t, adminPool(t, pool), "s1"); k.InFlight != 1 {
		t.Fatalf("in flight on s1 after the reloads = %d, want 1 (the stream)", k.InFlight)
	}

	close(release)
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("stream cut after the reloads: %v (got %q)", err, rest)
	}
	if n := strings.Count(string(rest), "event: content_block_delta"); n != 20 || !strings.HasSuffix(string(rest), sseStop) {
		t.Fatalf("stream incomplete after the reloads: %d deltas, %q", n, rest)
	}
	ps := waitIdle(t, pool)
	if k := mustKey(t, ps, "s1"); k.Totals.OutputTokens != 21 || k.Totals.Succeeded != 1 {
		t.Fatalf("the stream's attempt was not settled on the surviving state: %+v", k.Totals)
	}
}

// TestOpsFailedLoadKeepsPool loads configurations that fail, at several
// points of provisioning, over a running relay: each failure must release
// exactly what it acquired (the pool state's reference count is back where
// it was), and the running pool's state, admin view and metrics must be
// untouched.
func TestOpsFailedLoadKeepsPool(t *testing.T) {
	const pool = "ops_failed_load"
	const other = "ops_failed_load_other"
	useFakeClock(t)
	up := newUpstream(t, nil)
	t.Setenv("CC_RELAY_OPS_SET", "sk-ops-fail-env")
	os.Unsetenv("CC_RELAY_OPS_UNSET_7F3A")
	good := `
		key sk-ops-fail-a {
			name a
			rpm 100
		}`
	site := func(poolKeys, otherRoute string) string {
		return fmt.Sprintf(`http://localhost:9080 {
	route {
		cc_relay %s {
			client_auth off
%s
		}
%s
		reverse_proxy %s
	}
}
`, pool, poolKeys, otherRoute, up.addr())
	}
	startRelay(t, site(good, ""))
	for i := 0; i < 3; i++ {
		if res, body := post(t, "", msgStream(false)); res.StatusCode != 200 {
			t.Fatalf("%d %s", res.StatusCode, body)
		}
	}
	want := budgetOf(t, mustKey(t, waitIdle(t, pool), "a"), "sonnet").Requests
	if want.Remaining != 97 {
		t.Fatalf("remaining %d after 3 requests, want 97", want.Remaining)
	}
	refs, _ := pools.References(pool)
	if refs != 1 {
		t.Fatalf("refs = %d before the failed loads, want 1", refs)
	}

	failures := map[string]string{
		// The pool provisions fine (and registers as live), then a later
		// handler of the same configuration fails: the whole load is
		// cleaned up.
		"later handler fails": site(good, fmt.Sprintf(`		cc_relay %s {
			client_auth off
			key sk-ops-fail-q1
			key {env.CC_RELAY_OPS_UNSET_7F3A}
		}`, other)),
		// The pool's own second key does not resolve: Provision fails
		// before taking a reference.
		"unset env secret": site(good+`
		key {env.CC_RELAY_OPS_UNSET_7F3A} {
			name b
		}`, ""),
		// The pool's keys disagree on their organization's limit: the
		// reference is taken, then the pool refuses the configuration.
		"pool refuses config": site(`
		key sk-ops-fail-a {
			name a
			org shared
			rpm 100
		}
		key {env.CC_RELAY_OPS_SET} {
			name b
			org shared
			rpm 200
		}`, ""),
	}
	for name, cfg := range failures {
		t.Run(name, func(t *testing.T) {
			code, body := adminDo(t, http.MethodPost, "/load", "text/caddyfile", caddyGlobal("")+cfg)
			if code == 200 {
				t.Fatalf("the broken configuration loaded")
			}
			if got, _ := pools.References(pool); got != refs {
				t.Fatalf("refs = %d after the failed load (%s), want %d", got, strings.TrimSpace(body), refs)
			}
			if got, ok := pools.References(other); ok {
				t.Fatalf("the failed configuration's other pool is still held (%d refs)", got)
			}
			ps := adminPool(t, pool)
			if got := budgetOf(t, mustKey(t, ps, "a"), "sonnet").Requests; got != want {
				t.Fatalf("budget after the failed load: %+v, want %+v", got, want)
			}
			if _, ok := findKey(ps, "b"); ok {
				t.Fatalf("the failed configuration's key b is live")
			}
			if got := sampleValue(t, scrapeMetrics(t), "caddy_cc_relay_remaining", map[string]string{"pool": pool, "key": "a", "budget": "requests"}); got != float64(want.Remaining) {
				t.Fatalf("remaining gauge %v after the failed load, want %d", got, want.Remaining)
			}
			if res, body := post(t, "", msgStream(false)); res.StatusCode != 200 {
				t.Fatalf("the running relay stopped serving: %d %s", res.StatusCode, body)
			}
			want.Remaining--
		})
	}

	// A load that succeeds still finds the state intact.
	startRelay(t, site(good+`
		key sk-ops-fail-c {
			name c
		}`, ""))
	if got := budgetOf(t, mustKey(t, waitIdle(t, pool), "a"), "sonnet").Requests; got != want {
		t.Fatalf("budget after a good reload: %+v, want %+v", got, want)
	}
	if got, _ := pools.References(pool); got != 1 {
		t.Fatalf("refs = %d after the good reload, want 1", got)
	}
}

// TestOpsCleanupReleasesWhatProvisionAcquired provisions handlers the way
// Caddy does (caddy.Context.LoadModuleByID, which calls Cleanup itself when
// Provision fails) and checks the pool state's reference count after each
// step, down to the config being unloaded.
func TestOpsCleanupReleasesWhatProvisionAcquired(t *testing.T) {
	const pool = "ops_cleanup_unit"
	t.Setenv("CC_RELAY_OPS_SET", "sk-ops-unit-env")
	os.Unsetenv("CC_RELAY_OPS_UNSET_7F3A")
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	load := func(raw string) error {
		_, err := ctx.LoadModuleByID("http.handlers.cc_relay", json.RawMessage(raw))
		return err
	}
	refs := func() int { n, _ := pools.References(pool); return n }

	if err := load(`{"pool":"` + pool + `","disable_client_auth":true,"keys":[{"key":"sk-ops-unit-a","name":"a"}]}`); err != nil {
		t.Fatal(err)
	}
	if refs() != 1 || lookupPool(pool) == nil {
		t.Fatalf("after one handler: refs %d, live %v", refs(), lookupPool(pool) != nil)
	}
	live1 := lookupPool(pool)
	for name, raw := range map[string]string{
		"unset env":      `{"pool":"` + pool + `","disable_client_auth":true,"keys":[{"key":"sk-ops-unit-a","name":"a"},{"key":"{env.CC_RELAY_OPS_UNSET_7F3A}"}]}`,
		"org conflict":   `{"pool":"` + pool + `","disable_client_auth":true,"keys":[{"key":"sk-ops-unit-a","name":"a","org":"o","rpm":1},{"key":"{env.CC_RELAY_OPS_SET}","name":"b","org":"o","rpm":2}]}`,
		"invalid config": `{"pool":"` + pool + `","disable_client_auth":true,"keys":[{"key":"sk-ops-unit-a","rpm":-1}]}`,
	} {
		if err := load(raw); err == nil {
			t.Fatalf("%s: provisioned", name)
		} else if strings.Contains(err.Error(), "sk-ops-unit") {
			t.Fatalf("%s: the error names a secret: %v", name, err)
		}
		if refs() != 1 {
			t.Fatalf("%s: refs %d after the failed provision, want 1", name, refs())
		}
		if lookupPool(pool) != live1 {
			t.Fatalf("%s: the live pool changed", name)
		}
	}
	if err := load(`{"pool":"` + pool + `","disable_client_auth":true,"keys":[{"key":"sk-ops-unit-a","name":"a"},{"key":"{env.CC_RELAY_OPS_SET}","name":"b"}]}`); err != nil {
		t.Fatal(err)
	}
	if refs() != 2 || lookupPool(pool) == live1 {
		t.Fatalf("after a second handler: refs %d, newest live %v", refs(), lookupPool(pool) != live1)
	}
	cancel() // unloading the config cleans up every handler it loaded
	if n, ok := pools.References(pool); ok {
		t.Fatalf("pool state still held (%d refs) after the config was unloaded", n)
	}
	if lookupPool(pool) != nil {
		t.Fatalf("pool still live after the config was unloaded")
	}
}

// TestOpsValidateLeavesNoGoroutine checks what `caddy validate` does to a
// config with the relay (provision everything, then clean up) starts no
// goroutine that outlives it: once for the handler on its own, once for a
// whole config through caddy.Validate.
func TestOpsValidateLeavesNoGoroutine(t *testing.T) {
	const pool = "ops_validate"
	up := newUpstream(t, nil)
	relayHTTP.CloseIdleConnections()
	lc := startLeakCheck()

	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	if _, err := ctx.LoadModuleByID("http.handlers.cc_relay", json.RawMessage(`{"pool":"`+pool+`","disable_client_auth":true,"keys":[{"key":"sk-ops-validate"}],"max_wait":"5s"}`)); err != nil {
		t.Fatal(err)
	}
	cancel()
	lc.verify(t)
	if _, ok := pools.References(pool); ok {
		t.Fatalf("pool state outlives the validation")
	}

	cfg := fmt.Sprintf(`{
	"admin": {"disabled": true},
	"logging": {"logs": {"default": {"level": "ERROR"}}},
	"apps": {"http": {"servers": {"ops_validate": {
		"listen": ["127.0.0.1:0"],
		"automatic_https": {"disable": true},
		"routes": [{"handle": [
			{"handler": "cc_relay", "pool": %q, "client_tokens": [{"token": "ct-ops-validate"}], "keys": [{"key": "sk-ops-validate", "rpm": 10}]},
			{"handler": "reverse_proxy", "upstreams": [{"dial": %q}]}
		]}]
	}}}}
}`, pool, up.addr())
	var c caddy.Config
	if err := json.Unmarshal([]byte(cfg), &c); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&c); err != nil {
		t.Fatal(err)
	}
	lc.verify(t)
	if _, ok := pools.References(pool); ok {
		t.Fatalf("pool state outlives caddy.Validate")
	}
}

// TestOpsServeAfterCleanup hands a request to a handler whose config was
// already unloaded. Caddy cleans up the old configuration right after the
// new one started, while the old server can still dispatch requests to it
// (HTTP/2 streams opened before the client saw the GOAWAY): such a request
// must be relayed, not crash the handler (the reload bench over h2c saw
// RST_STREAM INTERNAL_ERROR from exactly that).
func TestOpsServeAfterCleanup(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	m, err := ctx.LoadModuleByID("http.handlers.cc_relay", json.RawMessage(`{"pool":"ops_after_cleanup","disable_client_auth":true,"keys":[{"key":"sk-ops-late","name":"late"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	h := m.(*Handler)
	cancel()
	if lookupPool("ops_after_cleanup") != nil {
		t.Fatalf("the unloaded pool is still live")
	}

	var gotKey string
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		gotKey = r.Header.Get("X-Api-Key")
		okMessage(w)
		return nil
	})
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/v1/messages", strings.NewReader(msgStream(false)))
	if err := h.ServeHTTP(rec, req, next); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 200 || gotKey != "sk-ops-late" || rec.Header().Get("X-CC-Relay-Key") != "late" {
		t.Fatalf("late request: %d, upstream key %q, header %q", rec.Code, gotKey, rec.Header().Get("X-CC-Relay-Key"))
	}
	if err := h.Cleanup(); err != nil { // a second Cleanup releases nothing more
		t.Fatal(err)
	}
}
