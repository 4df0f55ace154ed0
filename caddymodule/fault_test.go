package caddymodule

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
	"github.com/cc-relay/caddy-cc-relay/internal/mockanthropic"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// Fault tests: failover, key health, mid-stream failures and waiting, each
// end to end through the in-process Caddy (cc_relay + reverse_proxy) in
// front of an httptest upstream, most often the mock Anthropic API.
//
// Time is a fake clock shared by the relay's pool and the mock, so budgets
// refill only when a test advances it. Every test checks that it leaves no
// goroutine behind; the upstream transport runs without keep-alive so that
// the proxy's idle upstream connections do not count as leaks.

// --- helpers of these tests (shared ones are in helpers_test.go) ---

// sseEvents splits a stream into its events' raw text.
func sseEvents(s string) []string {
	var out []string
	for _, ev := range strings.Split(s, "\n\n") {
		if strings.TrimSpace(ev) != "" {
			out = append(out, ev)
		}
	}
	return out
}

func hasRateLimitHeaders(h http.Header) bool {
	for k := range h {
		if strings.HasPrefix(strings.ToLower(k), "anthropic-ratelimit-") {
			return true
		}
	}
	return false
}

// hotColdKeys are the key lines of <prefix>-hot, named hot, and
// <prefix>-cold, named cold, which strategy priority tries second.
func hotColdKeys(prefix string) string {
	return fmt.Sprintf(`key %[1]s-hot {
			name hot
		}
		key %[1]s-cold {
			name cold
			priority 1
		}`, prefix)
}

// --- 1. Replayable, bounded request bodies ---

// TestFaultBodyLimit: a body above max_body is refused with 413
// request_too_large before it has been read (a declared length is refused
// unread; a chunked body is refused after the limit, its end never sent),
// and the upstream never sees it; a body at the limit passes.
func TestFaultBodyLimit(t *testing.T) {
	up := newUpstream(t, nil)
	startRelay(t, relaySite(`body_pool {
		client_token ct-body
		max_body 1KB
		key sk-body-1
	}`, proxyTo(up)))
	c := newRelayClient(t)
	c.mustSend(t, "ct-body", msgBody) // warm up before counting goroutines
	checkLeaks(t, c)
	base := len(up.all())

	exact := padBody(1000)
	if r := c.mustSend(t, "ct-body", exact); r.status != 200 {
		t.Fatalf("body of exactly max_body: %d %s", r.status, r.body)
	}
	if got := up.all(); len(got) != base+1 || string(got[base].body) != exact {
		t.Fatalf("body at the limit did not reach the upstream intact")
	}
	base++
	r := c.mustSend(t, "ct-body", padBody(1001))
	assertTooLarge(t, "1001-byte body", r.status, r.body)

	// A declared length far above the limit: answered without reading.
	conn := dialRelay(t)
	fmt.Fprintf(conn, "POST /v1/messages?beta=true HTTP/1.1\r\nHost: localhost:9080\r\nX-Api-Key: ct-body\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", 100<<20, `{"model":"claude-sonnet-4-5","messages":[`)
	res := readRaw(t, conn)
	assertTooLarge(t, "Content-Length 100MiB", res.status, res.body)

	// A chunked body that never ends: the relay must answer once it has
	// seen more than the limit, not wait for the end.
	conn = dialRelay(t)
	fmt.Fprintf(conn, "POST /v1/messages?beta=true HTTP/1.1\r\nHost: localhost:9080\r\nX-Api-Key: ct-body\r\n"+
		"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
	writerDone := make(chan int64, 1)
	go func() {
		var sent int64
		chunk := fmt.Sprintf("%x\r\n%s\r\n", 4096, strings.Repeat("x", 4096))
		for sent < 8<<20 {
			if _, err := io.WriteString(conn, chunk); err != nil {
				break
			}
			sent += 4096
		}
		writerDone <- sent // the terminating chunk is never sent
	}()
	res = readRaw(t, conn)
	assertTooLarge(t, "endless chunked body", res.status, res.body)
	conn.Close()
	<-writerDone

	if n := len(up.all()); n != base {
		t.Fatalf("upstream saw %d requests for refused bodies", n-base)
	}
}

func padBody(n int) string {
	head := `{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"`
	tail := `"}]}`
	return head + strings.Repeat("a", n-len(head)-len(tail)) + tail
}

func assertTooLarge(t *testing.T, what string, status int, body string) {
	t.Helper()
	var e apiError
	if status != http.StatusRequestEntityTooLarge || json.Unmarshal([]byte(body), &e) != nil ||
		e.Type != "error" || e.Error.Type != "request_too_large" {
		t.Fatalf("%s: %d %q, want 413 request_too_large error JSON", what, status, body)
	}
}

func dialRelay(t *testing.T) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", "127.0.0.1:9080")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	return conn
}

type rawResult struct {
	status int
	body   string
}

func readRaw(t *testing.T, conn net.Conn) rawResult {
	t.Helper()
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the relay's answer: %v", err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return rawResult{res.StatusCode, string(b)}
}

// TestFaultRetryReplaysBody: every attempt of a retried request carries the
// whole body, byte for byte, also when the client sent it chunked.
func TestFaultRetryReplaysBody(t *testing.T) {
	fake := useFakeClock(t)
	mock := mockOn(fake, []mockanthropic.Org{{ID: "org-hot"}, {ID: "org-cold"}},
		map[string]string{"sk-rb-hot": "org-hot", "sk-rb-cold": "org-cold"})
	up := newRecUpstream(t, mock)
	startRelay(t, relaySite(`replay_pool {
		client_token ct-rb
		strategy priority
		`+hotColdKeys("sk-rb")+`
	}`, proxyTo(up)))
	c := newRelayClient(t)
	c.mustSend(t, "ct-rb", msgBody)
	checkLeaks(t, c)
	mock.Force429("org-hot", fake.Now().Add(time.Hour))
	base := len(up.all())

	history := []string{strings.Repeat("Earlier turn with a long tool result. ", 4000), "ok"}
	body := ccBody(legacyUserID(sessionUUID(1)), "Fix the failing test", false, history...)
	// A reader without a length makes the client send the body chunked.
	req := newRequest(t, http.MethodPost, relayAddr+"/v1/messages?beta=true", io.MultiReader(strings.NewReader(body)))
	setRelayHeaders(req.Header, "ct-rb")
	res, b := roundTrip(t, c.Client, req)
	if res.StatusCode != 200 || res.Header.Get("X-Cc-Relay-Key") != "cold" {
		t.Fatalf("retried request: %d key %q %s", res.StatusCode, res.Header.Get("X-Cc-Relay-Key"), b)
	}
	got := up.all()[base:]
	if len(got) != 2 || got[0].key != "sk-rb-hot" || got[1].key != "sk-rb-cold" {
		t.Fatalf("attempts went to %v, want hot then cold", up.keys()[base:])
	}
	for i, a := range got {
		if string(a.body) != body {
			t.Fatalf("attempt %d carried %d body bytes, want the %d the client sent", i+1, len(a.body), len(body))
		}
		if cl := a.header.Get("Content-Length"); cl != strconv.Itoa(len(body)) {
			t.Fatalf("attempt %d Content-Length %q, want %d", i+1, cl, len(body))
		}
		if a.query != "beta=true" {
			t.Fatalf("attempt %d lost the query: %q", i+1, a.query)
		}
	}
}

// --- 2. Retry on another key; nothing of a held-back answer leaks ---

// TestFaultRetryOnOtherOrg: an organization answering 429 while another has
// capacity costs the client nothing: no 429, and the final 200 carries only
// its own headers, none of the refused attempt's.
func TestFaultRetryOnOtherOrg(t *testing.T) {
	fake := useFakeClock(t)
	mock := mockOn(fake, []mockanthropic.Org{{ID: "org-a", RPM: 50, ITPM: 100000, OTPM: 20000}, {ID: "org-b"}},
		map[string]string{"sk-ro-a1": "org-a", "sk-ro-a2": "org-a", "sk-ro-b": "org-b"})
	up := newRecUpstream(t, mock)
	startRelay(t, relaySite(`retry_org_pool {
		client_token ct-ro
		strategy round_robin
		sticky off
		key sk-ro-a1 {
			name a1
			org A
		}
		key sk-ro-a2 {
			name a2
			org A
		}
		key sk-ro-b {
			name b
			org B
		}
	}`, proxyTo(up)))
	c := newRelayClient(t)
	c.mustSend(t, "ct-ro", msgBody)
	checkLeaks(t, c)
	mock.Force429("org-a", fake.Now().Add(45*time.Second))
	base := len(up.all())

	var seenIDs []string
	for i := 0; i < 9; i++ {
		r := c.mustSend(t, "ct-ro", ccBody(legacyUserID(sessionUUID(i)), "hello "+strconv.Itoa(i), i%2 == 0))
		seenIDs = append(seenIDs, r.header.Get("Request-Id"))
		if r.status != 200 {
			t.Fatalf("request %d: %d %s: an upstream 429 reached the client while org B had capacity", i, r.status, r.body)
		}
		if r.via() != "b" {
			t.Fatalf("request %d answered by %q", i, r.via())
		}
		if ra := r.header.Get("Retry-After"); ra != "" {
			t.Fatalf("request %d: final 200 carries the refused attempt's Retry-After %q", i, ra)
		}
		if hasRateLimitHeaders(r.header) {
			t.Fatalf("request %d: final 200 from unlimited org-b carries rate-limit headers of org-a: %v", i, r.header)
		}
		if org := r.header.Get("Anthropic-Organization-Id"); org != "org-b" {
			t.Fatalf("request %d: anthropic-organization-id %q, want org-b", i, org)
		}
		if strings.Contains(r.body, "rate_limit_error") {
			t.Fatalf("request %d: body of the refused attempt leaked: %s", i, r.body)
		}
	}
	// Every request-id the client saw is that of a 200, never the 429's.
	status := map[string]int{}
	for _, rec := range mock.Stats().Requests {
		status[rec.RequestID] = rec.Status
	}
	for i, id := range seenIDs {
		if status[id] != 200 {
			t.Fatalf("request %d: client saw request-id %q of a %d answer", i, id, status[id])
		}
	}
	if got := up.keys()[base:]; len(got) != 10 || got[0] != "sk-ro-a2" {
		t.Fatalf("attempts %v, want org A tried first (a2, next in the rotation), then only b", got)
	}
	// Org A was tried once, then avoided while cooling down.
	if n := mock.Stats().Orgs["org-a"].RateLimited; n != 1 {
		t.Fatalf("org-a was refused %d times, want once (then cooled down)", n)
	}
	if k := keySnap(t, "retry_org_pool", "a2"); k.State != "cooling" {
		t.Fatalf("a2 (same org as the refused a1) state %q, want cooling", k.State)
	}
	pollUntil(t, "pool idle", poolIdle(t, "retry_org_pool"))
}

// TestFaultHeldResponseNeverLeaks: with flush_interval -1 (and SSE), the
// proxy flushes after every write; a 429 being held back for a retry must
// not reach the client through any of them: not its status, headers, body
// or a flush.
func TestFaultHeldResponseNeverLeaks(t *testing.T) {
	up := newRecUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Api-Key") == "sk-hl-hot" {
			h := w.Header()
			h.Set("Content-Type", "application/json")
			h.Set("Retry-After", "30")
			h.Set("Request-Id", "req_refused")
			h.Set("X-Refused-Marker", "leaked")
			h.Set("Anthropic-Ratelimit-Requests-Remaining", "0")
			w.WriteHeader(429)
			rc := http.NewResponseController(w)
			_ = rc.Flush()
			for _, part := range []string{`{"type":"error",`, `"error":{"type":"rate_limit_error",`, `"message":"slow down"}}`} {
				_, _ = io.WriteString(w, part)
				_ = rc.Flush()
			}
			return
		}
		w.Header().Set("Request-Id", "req_ok")
		okMessage(w)
	}))
	startRelay(t, relaySite(`held_pool {
		client_auth off
		strategy priority
		`+hotColdKeys("sk-hl")+`
	}`, proxyTo(up, "flush_interval -1")))
	c := newRelayClient(t)
	checkLeaks(t, c)

	r := c.mustSend(t, "", msgBody)
	if r.status != 200 || r.via() != "cold" {
		t.Fatalf("got %d from %q: %s", r.status, r.via(), r.body)
	}
	for _, h := range []string{"Retry-After", "X-Refused-Marker", "Anthropic-Ratelimit-Requests-Remaining"} {
		if v := r.header.Get(h); v != "" {
			t.Fatalf("held 429's %s: %q leaked into the 200", h, v)
		}
	}
	if id := r.header.Get("Request-Id"); id != "req_ok" {
		t.Fatalf("request-id %q, want req_ok", id)
	}
	// reverse_proxy appends its Via to the writer's map on every attempt:
	// the held attempt's must be gone.
	if v := r.header.Values("Via"); len(v) != 1 {
		t.Fatalf("Via %q, want the answered attempt's alone", v)
	}
	var m struct{ Type string }
	if json.Unmarshal([]byte(r.body), &m) != nil || m.Type != "message" {
		t.Fatalf("body is not the 200's message alone: %q", r.body)
	}
	if ks := up.keys(); len(ks) != 2 || ks[0] != "sk-hl-hot" || ks[1] != "sk-hl-cold" {
		t.Fatalf("attempts %v, want hot then cold", ks)
	}
}

// TestFaultFlushOfHeldAttemptIsNoop drives the attempt writer directly: while a
// 429 is held, FlushError (what http.ResponseController and reverse_proxy
// call) must return nil and neither flush nor write the real writer.
func TestFaultFlushOfHeldAttemptIsNoop(t *testing.T) {
	rec := httptest.NewRecorder()
	h, p := oneKeyHandler(t)
	o := &attemptWriter{w: rec, h: h, ctx: context.Background(), metered: true, attempt: 1}
	if err := p.Acquire(context.Background(), &keypool.Request{Model: "claude-sonnet-4-5", Bytes: 10}, &o.res); err != nil {
		t.Fatal(err)
	}
	o.Header().Set("Retry-After", "3")
	o.WriteHeader(429)
	rc := http.NewResponseController(o)
	if err := rc.Flush(); err != nil {
		t.Fatalf("FlushError of a held attempt: %v", err)
	}
	_, _ = o.Write([]byte(`{"type":"error"}`))
	if err := rc.Flush(); err != nil {
		t.Fatalf("FlushError of a held attempt: %v", err)
	}
	if rec.Flushed || rec.Code != 200 || rec.Body.Len() != 0 || rec.Header().Get("Retry-After") != "" {
		t.Fatalf("held attempt reached the writer: flushed=%v code=%d body=%q header=%v",
			rec.Flushed, rec.Code, rec.Body.String(), rec.Header())
	}
	o.settle(nil)
}

// TestFaultRetryAfterReflectsPool: when no other key can take the request,
// the client's 429 says when the pool can, not when the refused key can.
func TestFaultRetryAfterReflectsPool(t *testing.T) {
	for _, retries := range []string{"", "retries 0"} {
		t.Run("retries="+strings.TrimPrefix(retries, "retries "), func(t *testing.T) {
			fake := useFakeClock(t)
			up := newRateLimitingUpstream(t, "sk-ra-b", "100")
			pool := "ra_pool_" + strconv.Itoa(len(retries))
			startRelay(t, relaySite(pool+` {
		client_auth off
		strategy priority
		`+retries+`
		key sk-ra-a {
			name a
			rpm 2
		}
		key sk-ra-b {
			name b
			priority 1
		}
	}`, proxyTo(up)))
			c := newRelayClient(t)
			checkLeaks(t, c)
			for i := 0; i < 2; i++ {
				if r := c.mustSend(t, "", msgBody); r.status != 200 || r.via() != "a" {
					t.Fatalf("request %d: %d via %q", i, r.status, r.via())
				}
			}
			// a is out of requests (one back in 30s); b answers 429 for 100s.
			r := c.mustSend(t, "", msgBody)
			if r.status != 429 || !strings.Contains(r.body, "rate_limit_error") {
				t.Fatalf("got %d %s, want 429", r.status, r.body)
			}
			if ra := r.header.Get("Retry-After"); ra != "30" {
				t.Fatalf("Retry-After %q, want 30 (key a refills then), not b's 100", ra)
			}
			if k := keySnap(t, pool, "b"); k.State != "cooling" {
				t.Fatalf("b state %q, want cooling", k.State)
			}
			fake.Advance(30 * time.Second)
			if r := c.mustSend(t, "", msgBody); r.status != 200 || r.via() != "a" {
				t.Fatalf("after Retry-After: %d via %q", r.status, r.via())
			}
		})
	}
}

// TestFaultRetriesZeroPassesRefusal: with retries 0 the first refusal goes
// to the client even though another key had capacity, with the pool's
// Retry-After (another key admits now: 1s), not the upstream's 30.
func TestFaultRetriesZeroPassesRefusal(t *testing.T) {
	useFakeClock(t)
	up := newRateLimitingUpstream(t, "sk-r0-hot", "30")
	startRelay(t, relaySite(`retries0_pool {
		client_auth off
		strategy priority
		retries 0
		`+hotColdKeys("sk-r0")+`
	}`, proxyTo(up)))
	c := newRelayClient(t)
	checkLeaks(t, c)
	r := c.mustSend(t, "", msgBody)
	if r.status != 429 || !strings.Contains(r.body, "slow down") || r.via() != "hot" {
		t.Fatalf("got %d via %q %s, want the upstream's 429 passed through", r.status, r.via(), r.body)
	}
	if ra := r.header.Get("Retry-After"); ra != "1" {
		t.Fatalf("Retry-After %q, want the pool's 1 (cold admits now)", ra)
	}
	if n := len(up.all()); n != 1 {
		t.Fatalf("upstream saw %d attempts, want 1", n)
	}
	if r := c.mustSend(t, "", msgBody); r.status != 200 || r.via() != "cold" {
		t.Fatalf("next request: %d via %q", r.status, r.via())
	}
}

// --- 3. Key health ---

// startThreeKeys runs pool (with the options lines) over the keys
// <prefix>-1, -2 and -3, named one, two and three and tried in that order
// (strategy priority), each its own organization on a mock upstream that
// answers for them but for two, whose every answer is broken's.
func startThreeKeys(t *testing.T, pool, prefix, options string, broken func(w http.ResponseWriter)) (*clock.Fake, *mockanthropic.Server, *recUpstream) {
	t.Helper()
	fake := useFakeClock(t)
	mock := mockOn(fake, nil, map[string]string{prefix + "-1": "org-1", prefix + "-2": "org-2", prefix + "-3": "org-3"})
	up := newUpstream(t, func(key string, w http.ResponseWriter, r *http.Request) {
		if key == prefix+"-2" {
			broken(w)
			return
		}
		mock.ServeHTTP(w, r)
	})
	startRelay(t, relaySite(pool+` {
		strategy priority
		`+options+`
		key `+prefix+`-1 {
			name one
		}
		key `+prefix+`-2 {
			name two
			priority 1
		}
		key `+prefix+`-3 {
			name three
			priority 2
		}
	}`, proxyTo(up)))
	return fake, mock, up
}

// TestFaultRejectedKeysDisabled: 401 and 403 disable the key with the
// upstream's reason, one key per request (a second refusal in the same
// request only moves that request on); traffic moves at once and does not
// return to a disabled key while the upstream keeps refusing it.
func TestFaultRejectedKeysDisabled(t *testing.T) {
	fake, mock, up := startThreeKeys(t, "health_pool", "sk-kh", "client_token ct-kh", func(w http.ResponseWriter) {
		upstreamError(w, http.StatusForbidden, "permission_error", "Your API key does not have permission to use the specified resource.")
	})
	c := newRelayClient(t)
	c.mustSend(t, "ct-kh", msgBody)
	checkLeaks(t, c)
	mock.Revoke("sk-kh-1")
	base := len(up.all())

	r := c.mustSend(t, "ct-kh", ccBody(legacyUserID(sessionUUID(7)), "hi", true))
	if r.status != 200 || r.via() != "three" {
		t.Fatalf("got %d via %q: %s", r.status, r.via(), r.body)
	}
	if ks := up.keys()[base:]; strings.Join(ks, ",") != "sk-kh-1,sk-kh-2,sk-kh-3" {
		t.Fatalf("attempts %v, want one, two, three", ks)
	}
	one, two := keySnap(t, "health_pool", "one"), keySnap(t, "health_pool", "two")
	if one.State != "disabled" || !strings.Contains(one.Reason, "401") || !strings.Contains(one.Reason, "invalid x-api-key") {
		t.Fatalf("key one: state %q reason %q, want disabled with the upstream's 401 reason", one.State, one.Reason)
	}
	if two.State != "ok" {
		t.Fatalf("key two: state %q after the request had disabled one already; want ok", two.State)
	}
	// The next request meets two first and disables it.
	if r := c.mustSend(t, "ct-kh", msgBody); r.status != 200 || r.via() != "three" {
		t.Fatalf("second request: %d via %q", r.status, r.via())
	}
	two = keySnap(t, "health_pool", "two")
	if two.State != "disabled" || !strings.Contains(two.Reason, "403") || !strings.Contains(two.Reason, "permission_error") {
		t.Fatalf("key two: state %q reason %q, want disabled with the upstream's 403 reason", two.State, two.Reason)
	}
	for i := 0; i < 5; i++ {
		if r := c.mustSend(t, "ct-kh", msgBody); r.status != 200 || r.via() != "three" {
			t.Fatalf("later request %d: %d via %q", i, r.status, r.via())
		}
	}
	if cnt := up.count(); cnt["sk-kh-1"] != 2 || cnt["sk-kh-2"] != 2 {
		t.Fatalf("disabled keys were used again: %v", cnt)
	}
	fake.Advance(24 * time.Hour) // probes run, and the upstream still refuses
	if k := keySnap(t, "health_pool", "one"); k.State != "disabled" {
		t.Fatalf("key one re-enabled itself after a day: %q", k.State)
	}
	pollUntil(t, "pool idle", poolIdle(t, "health_pool"))
}

// TestFaultLastKeyRejected: when the upstream rejects the only key left,
// the client gets 503 api_error, not the upstream's 401, which Claude Code
// would take as its own token being wrong. Later requests are refused
// without contacting the upstream.
func TestFaultLastKeyRejected(t *testing.T) {
	fake := useFakeClock(t)
	mock := mockOn(fake, nil, map[string]string{"sk-lk-1": "org-1"})
	up := newRecUpstream(t, mock)
	startRelay(t, relaySite(`lastkey_pool {
		client_token ct-lk
		key sk-lk-1 {
			name only
		}
	}`, proxyTo(up)))
	c := newRelayClient(t)
	c.mustSend(t, "ct-lk", msgBody)
	mock.Revoke("sk-lk-1")
	r := c.mustSend(t, "ct-lk", msgBody)
	if r.status != 503 || !strings.Contains(r.body, `"type":"api_error"`) || strings.Contains(r.body, "x-api-key") {
		t.Fatalf("got %d %s, want 503 api_error", r.status, r.body)
	}
	n := len(up.all())
	r = c.mustSend(t, "ct-lk", msgBody)
	if r.status != 503 || len(up.all()) != n {
		t.Fatalf("with every key disabled: %d (upstream contacted %d times more)", r.status, len(up.all())-n)
	}
	pollUntil(t, "pool idle", poolIdle(t, "lastkey_pool"))
}

// TestFaultSpendCapParks: a 429 without retry-after that speaks of the usage
// limit parks the key's organization until the date it names; the other
// key of that organization is parked with it and traffic moves elsewhere.
func TestFaultSpendCapParks(t *testing.T) {
	fake := useFakeClock(t)
	up := newUpstream(t, func(key string, w http.ResponseWriter, r *http.Request) {
		if key == "sk-sc-1" || key == "sk-sc-2" {
			upstreamError(w, http.StatusTooManyRequests, "rate_limit_error",
				"You have reached your specified API usage limits. You will regain access on 2027-01-01 at 00:00 UTC.")
			return
		}
		okMessage(w)
	})
	startRelay(t, relaySite(`spend_pool {
		client_auth off
		strategy priority
		key sk-sc-1 {
			name capped
			org capped-org
		}
		key sk-sc-2 {
			name capped2
			org capped-org
		}
		key sk-sc-3 {
			name spare
			priority 1
		}
	}`, proxyTo(up)))
	c := newRelayClient(t)
	checkLeaks(t, c)
	r := c.mustSend(t, "", msgBody)
	if r.status != 200 || r.via() != "spare" {
		t.Fatalf("got %d via %q: %s", r.status, r.via(), r.body)
	}
	// The named date lies seven months ahead: the park is capped at
	// keypool.MaxPark, and shows when it ends.
	want := fake.Now().Add(keypool.MaxPark)
	for _, name := range []string{"capped", "capped2"} {
		k := keySnap(t, "spend_pool", name)
		if k.State != "parked" || k.Until == nil || !k.Until.Equal(want) {
			t.Fatalf("%s: state %q until %v, want parked until %v", name, k.State, k.Until, want)
		}
	}
	fake.Advance(30 * 24 * time.Hour) // far past any cooldown or default park
	for i := 0; i < 3; i++ {
		if r := c.mustSend(t, "", msgBody); r.status != 200 || r.via() != "spare" {
			t.Fatalf("request %d: %d via %q", i, r.status, r.via())
		}
	}
	if n := up.count()["sk-sc-1"] + up.count()["sk-sc-2"]; n != 1 {
		t.Fatalf("the capped organization was tried %d times, want once", n)
	}
}

// TestFaultOverloadedNoPenalty: 529 and 5xx are the upstream's trouble, not
// the key's: passed through (no retry by default), no cooldown, and the
// budget the relay reserved comes back whole.
func TestFaultOverloadedNoPenalty(t *testing.T) {
	fake := useFakeClock(t)
	mock := mockOn(fake, []mockanthropic.Org{{ID: "org-ov", RPM: 50, ITPM: 200000, OTPM: 40000}},
		map[string]string{"sk-ov-1": "org-ov"})
	var fail500 bool
	var mu sync.Mutex
	up := newRecUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		f := fail500
		mu.Unlock()
		if f {
			upstreamError(w, http.StatusInternalServerError, "api_error", "Internal server error")
			return
		}
		mock.ServeHTTP(w, r)
	}))
	startRelay(t, relaySite(`overload_pool {
		client_auth off
		key sk-ov-1 {
			name only
		}
	}`, proxyTo(up)))
	c := newRelayClient(t)
	checkLeaks(t, c)
	body := ccBody(legacyUserID(sessionUUID(3)), "hello there", false)
	if r := c.mustSend(t, "", body); r.status != 200 {
		t.Fatalf("first request: %d %s", r.status, r.body)
	}
	before := budgetOf(t, keySnap(t, "overload_pool", "only"), "sonnet")
	if before.Requests.Learned != 50 || before.Requests.Remaining < 0 || before.InputTokens.Remaining < 0 {
		t.Fatalf("limits not learned from the 200: %+v", before)
	}

	check := func(what string, status int, errType string) {
		t.Helper()
		r := c.mustSend(t, "", body)
		if r.status != status || !strings.Contains(r.body, errType) {
			t.Fatalf("%s: got %d %s, want %d %s passed through", what, r.status, r.body, status, errType)
		}
		k := keySnap(t, "overload_pool", "only")
		if k.State != "ok" || k.InFlight != 0 {
			t.Fatalf("%s: key state %q (%s) in-flight %d, want ok and idle", what, k.State, k.Reason, k.InFlight)
		}
		after := budgetOf(t, k, "sonnet")
		if after.Requests.Remaining != before.Requests.Remaining || after.InputTokens.Remaining != before.InputTokens.Remaining ||
			after.OutputTokens.Remaining != before.OutputTokens.Remaining {
			t.Fatalf("%s cost quota: before %+v after %+v", what, before, after)
		}
	}
	mock.SetOverloaded(1)
	check("529 with rate-limit headers", 529, "overloaded_error")
	mu.Lock()
	fail500 = true
	mu.Unlock()
	check("500 without headers", 500, "api_error")
	mu.Lock()
	fail500 = false
	mu.Unlock()
	if n := len(up.all()); n != 3 {
		t.Fatalf("upstream saw %d requests, want 3 (no retries without retry_overloaded)", n)
	}
	if r := c.mustSend(t, "", body); r.status != 200 {
		t.Fatalf("after overload: %d", r.status)
	}
}

// TestFaultRetryOverloaded: with retry_overloaded, 529 and 500 are retried
// on another key and the client sees the 200.
func TestFaultRetryOverloaded(t *testing.T) {
	_, mock, up := startThreeKeys(t, "retry_ov_pool", "sk-rov", "client_auth off\n\t\tretry_overloaded", func(w http.ResponseWriter) {
		upstreamError(w, http.StatusBadGateway, "api_error", "bad gateway")
	})
	c := newRelayClient(t)
	checkLeaks(t, c)
	mock.SetOverloaded(1) // one's answer: 529
	r := c.mustSend(t, "", ccBody("", "hi", true))
	if r.status != 200 || r.via() != "three" || !strings.Contains(r.body, "message_stop") {
		t.Fatalf("got %d via %q: %s", r.status, r.via(), r.body)
	}
	if ks := up.keys(); strings.Join(ks, ",") != "sk-rov-1,sk-rov-2,sk-rov-3" {
		t.Fatalf("attempts %v", ks)
	}
	for _, name := range []string{"one", "two"} {
		if k := keySnap(t, "retry_ov_pool", name); k.State != "ok" {
			t.Fatalf("%s after an overload: %q (%s), want ok", name, k.State, k.Reason)
		}
	}
	// The overload was one answer: the first key serves the next request.
	if r := c.mustSend(t, "", msgBody); r.status != 200 || r.via() != "one" {
		t.Fatalf("next request: %d via %q", r.status, r.via())
	}
}

// --- 4. Mid-stream failures ---

// TestFaultStreamErrorEvent: an SSE error event after bytes reached the
// client passes through unchanged, with no retry, and settles.
func TestFaultStreamErrorEvent(t *testing.T) {
	fake := useFakeClock(t)
	mock := mockOn(fake, nil, map[string]string{"sk-se-1": "org-1", "sk-se-2": "org-2"})
	up := newRecUpstream(t, mock)
	startRelay(t, relaySite(`stream_err_pool {
		client_auth off
		retry_overloaded
		key sk-se-1
		key sk-se-2
	}`, proxyTo(up)))
	c := newRelayClient(t)
	checkLeaks(t, c)
	mock.SetStreamFault(mockanthropic.StreamErrorEvent, 1)
	r := c.mustSend(t, "", ccBody(jsonUserID(sessionUUID(4)), "stream please", true))
	if r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	got := up.all()
	if len(got) != 1 {
		t.Fatalf("upstream saw %d requests: a failure after bytes reached the client was retried", len(got))
	}
	if sent := got[0].resp.String(); r.body != sent {
		t.Fatalf("stream changed on its way:\nupstream sent %q\nclient got    %q", sent, r.body)
	}
	ev := sseEvents(r.body)
	if len(ev) != 2 || !strings.HasPrefix(ev[1], "event: error\n") || !strings.Contains(ev[1], `"overloaded_error"`) {
		t.Fatalf("events %q, want message_start then the error event", ev)
	}
	pollUntil(t, "reservation settled", poolIdle(t, "stream_err_pool"))
}

// TestFaultStreamUpstreamCut: the upstream connection dies (closed, or
// reset) mid-stream: the client's stream ends as incomplete (never a
// complete-looking response), nothing is retried, the reservation settles
// with the usage seen so far.
func TestFaultStreamUpstreamCut(t *testing.T) {
	for _, fault := range []mockanthropic.StreamFault{mockanthropic.StreamCut, mockanthropic.StreamReset} {
		t.Run(fault.String(), func(t *testing.T) {
			fake := useFakeClock(t)
			gate, release, arrived := gatedGate()
			mock := mockanthropic.New(mockanthropic.Config{
				Keys: map[string]string{"sk-cut-1": "org-1", "sk-cut-2": "org-2"}, Now: fake.Now, Gate: gate,
			})
			up := newRecUpstream(t, mock)
			pool := "cut_pool_" + fault.String()
			startRelay(t, relaySite(pool+` {
		client_auth off
		key sk-cut-1
		key sk-cut-2
	}`, proxyTo(up)))
			c := newRelayClient(t)
			checkLeaks(t, c)
			mock.SetStreamFault(fault, 1)
			req := newRequest(t, http.MethodPost, relayAddr+"/v1/messages?beta=true",
				strings.NewReader(ccBody(legacyUserID(sessionUUID(5)), "stream", true)))
			res, br := openStream(t, c.Client, req)
			defer res.Body.Close()
			<-arrived
			close(release) // the mock now cuts the connection
			rest, err := io.ReadAll(br)
			if err == nil {
				t.Fatalf("stream cut upstream ended cleanly for the client (%q): it would look complete", rest)
			}
			if strings.Contains(string(rest), "message_stop") {
				t.Fatalf("cut stream completed: %q", rest)
			}
			pollUntil(t, "reservation settled", poolIdle(t, pool))
			if n := len(up.all()); n != 1 {
				t.Fatalf("upstream saw %d requests, want 1 (no retry mid-stream)", n)
			}
			// Usage seen before the cut was charged: message_start's input.
			var tot keypool.Totals
			for _, k := range poolSnap(t, pool).Keys {
				tot.Requests += k.Totals.Requests
				tot.InputTokens += k.Totals.InputTokens + k.Totals.CacheCreationTokens
				tot.Failed += k.Totals.Failed
				tot.Succeeded += k.Totals.Succeeded
			}
			if tot.Requests != 1 || tot.InputTokens == 0 {
				t.Fatalf("totals after cut %+v, want 1 request with its input counted", tot)
			}
		})
	}
}

// TestFaultStreamClientGone: the client disconnects mid-stream: the
// upstream request is cancelled, the reservation settles, nothing leaks.
func TestFaultStreamClientGone(t *testing.T) {
	fake := useFakeClock(t)
	gate, release, arrived := gatedGate()
	t.Cleanup(func() { close(release) }) // registered first, so it runs after the leak check
	mock := mockanthropic.New(mockanthropic.Config{
		Keys: map[string]string{"sk-gone-1": "org-1"}, Now: fake.Now, Gate: gate,
	})
	up := newRecUpstream(t, mock)
	startRelay(t, relaySite(`gone_pool {
		client_auth off
		key sk-gone-1
	}`, proxyTo(up)))
	c := newRelayClient(t)
	checkLeaks(t, c)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, relayAddr+"/v1/messages?beta=true",
		strings.NewReader(ccBody(legacyUserID(sessionUUID(6)), "stream", true)))
	res, _ := openStream(t, c.Client, req)
	<-arrived
	if k := keySnap(t, "gone_pool", "key-"+shortHash("sk-gone-1")); k.InFlight != 1 {
		t.Fatalf("in flight %d during the stream, want 1", k.InFlight)
	}
	cancel()
	res.Body.Close()
	pollUntil(t, "reservation settled after the client left", poolIdle(t, "gone_pool"))
	pollUntil(t, "upstream request ended", func() bool { return mock.Stats().InFlight == 0 })
	recs := mock.Stats().Requests
	if len(recs) != 1 || !recs[0].Aborted {
		t.Fatalf("upstream records %+v, want one aborted request", recs)
	}
}

// --- 5. Waiting for capacity ---

// startWaitPool runs pool with max_wait 100s in front of one key of one
// request per minute, which a first request spends: the next ones wait.
func startWaitPool(t *testing.T, pool, key string) (*clock.Fake, *recUpstream, *relayClient) {
	t.Helper()
	fake := useFakeClock(t)
	up := newUpstream(t, nil)
	startRelay(t, relaySite(pool+` {
		client_auth off
		max_wait 100s
		key `+key+` {
			rpm 1
		}
	}`, proxyTo(up)))
	c := newRelayClient(t)
	checkLeaks(t, c)
	if r := c.mustSend(t, "", msgBody); r.status != 200 {
		t.Fatalf("first request: %d", r.status)
	}
	return fake, up, c
}

// TestFaultMaxWait: without capacity, requests wait in arrival order up to
// max_wait, are admitted as capacity returns, and the rest get 429 once
// max_wait has passed.
func TestFaultMaxWait(t *testing.T) {
	fake, up, c := startWaitPool(t, "wait_pool", "sk-wait-1")
	results := make([]chan relayResult, 3)
	for i := range results {
		results[i] = make(chan relayResult, 1)
		go func(i int) {
			results[i] <- c.send(context.Background(), "", ccBody("", "waiter "+strconv.Itoa(i), false))
		}(i)
		// Each waiter is parked (holds a timer) before the next arrives,
		// which fixes the arrival order.
		fake.BlockUntil(i + 1)
		if w := poolSnap(t, "wait_pool").Waiting; w != i+1 {
			t.Fatalf("waiting %d, want %d", w, i+1)
		}
	}
	// One request refills every 60s: the first in line goes, in order.
	fake.Advance(60 * time.Second)
	r := <-results[0]
	if r.err != nil || r.status != 200 {
		t.Fatalf("first waiter: %d %v %s", r.status, r.err, r.body)
	}
	select {
	case r := <-results[1]:
		t.Fatalf("second waiter answered %d before capacity came back", r.status)
	default:
	}
	fake.BlockUntil(2) // both remaining waiters parked again
	fake.Advance(40 * time.Second)
	for i := 1; i < 3; i++ {
		r := <-results[i]
		if r.err != nil || r.status != 429 || !strings.Contains(r.body, "rate_limit_error") {
			t.Fatalf("waiter %d after max_wait: %d %v %s, want 429", i, r.status, r.err, r.body)
		}
		if ra := r.header.Get("Retry-After"); ra != "20" {
			t.Fatalf("waiter %d Retry-After %q, want 20", i, ra)
		}
	}
	got := up.all()
	if len(got) != 2 || !strings.Contains(string(got[1].body), "waiter 0") {
		t.Fatalf("upstream saw %d requests; the admitted one must be the first in line", len(got))
	}
	pollUntil(t, "queue empty", poolIdle(t, "wait_pool"))
}

// TestFaultWaiterLeaves: a waiting client that disconnects leaves the queue
// at once, and does not hold up the one behind it.
func TestFaultWaiterLeaves(t *testing.T) {
	fake, up, c := startWaitPool(t, "leave_pool", "sk-leave-1")
	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan relayResult, 1)
	go func() { gone <- c.send(ctx, "", ccBody("", "impatient", false)) }()
	fake.BlockUntil(1)
	next := make(chan relayResult, 1)
	go func() { next <- c.send(context.Background(), "", ccBody("", "patient", false)) }()
	fake.BlockUntil(2)
	if w := poolSnap(t, "leave_pool").Waiting; w != 2 {
		t.Fatalf("waiting %d, want 2", w)
	}
	cancel()
	if r := <-gone; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled client: %+v", r)
	}
	pollUntil(t, "the gone client left the queue", func() bool { return poolSnap(t, "leave_pool").Waiting == 1 })
	fake.BlockUntil(1)
	fake.Advance(60 * time.Second)
	// The patient waiter, woken when the other left, may have read the
	// clock just before the advance and armed its timer just after: then
	// nudge the clock a second at a time, well inside max_wait, until the
	// refill admits it.
	var r relayResult
	for nudges := 0; ; nudges++ {
		select {
		case r = <-next:
		case <-time.After(100 * time.Millisecond):
			if nudges == 30 {
				t.Fatal("the patient waiter was never admitted")
			}
			fake.Advance(time.Second)
			continue
		}
		break
	}
	if r.err != nil || r.status != 200 {
		t.Fatalf("patient waiter: %d %v", r.status, r.err)
	}
	got := up.all()
	if len(got) != 2 || !strings.Contains(string(got[1].body), "patient") {
		t.Fatalf("upstream saw %d requests", len(got))
	}
	pollUntil(t, "queue empty", poolIdle(t, "leave_pool"))
}

// TestHeaderSnapshotRestore: a retried attempt starts from the writer's
// headers as they were before the relay ran, with few or many of them, and
// an append to a restored value cannot reach the snapshot.
func TestHeaderSnapshotRestore(t *testing.T) {
	for _, n := range []int{0, 2, 4, 5, 9} {
		h := http.Header{}
		for i := range n {
			h.Add("X-Base-"+strconv.Itoa(i), "v"+strconv.Itoa(i))
		}
		want := h.Clone()
		var s headerSnapshot
		s.take(h)
		for round := range 2 {
			delete(h, "X-Base-0")
			h.Set("X-Attempt", "1")
			h["X-Base-1"] = append(h["X-Base-1"], "appended")
			s.restore(h)
			if !reflect.DeepEqual(h, want) {
				t.Fatalf("%d headers, round %d: restored %v, want %v", n, round, h, want)
			}
		}
	}
}

// oneKeyHandler is a handler with a one-key pool and a fake clock, for
// driving an attempt writer directly.
func oneKeyHandler(t *testing.T) (*Handler, *keypool.Pool) {
	t.Helper()
	h := &Handler{clk: clock.NewFake(clockT0)}
	p, err := keypool.NewState(h.clk).NewPool(keypool.Config{Keys: []keypool.KeyConfig{{Name: "k"}}, TokenEstimateRatio: 4, DefaultCooldown: time.Second, SpendCapPark: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	h.pool, h.logger = p, zap.NewNop()
	return h, p
}

// flushProbe records, at the first flush, how many attempts the pool still
// had in flight.
type flushProbe struct {
	http.ResponseWriter
	p        *keypool.Pool
	inFlight int
	flushed  bool
}

func (f *flushProbe) Flush() {
	if !f.flushed {
		f.flushed = true
		f.inFlight = f.p.Snapshot().Keys[0].InFlight
	}
}

// TestCompleteAnswerFlushedOnceSettled: a complete JSON answer is flushed
// inside the attempt, before the request's remaining bookkeeping, but only
// once the pool has settled it: a client that sends its next request as
// soon as it has the answer finds this attempt no longer in flight.
func TestCompleteAnswerFlushedOnceSettled(t *testing.T) {
	h, p := oneKeyHandler(t)
	fw := &flushProbe{ResponseWriter: httptest.NewRecorder(), p: p}
	o := &attemptWriter{w: fw, h: h, metered: true}
	if err := p.Acquire(context.Background(), &keypool.Request{Model: "claude-sonnet-4-5", Bytes: 10}, &o.res); err != nil {
		t.Fatal(err)
	}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(200)
		_, err := io.WriteString(w, `{"type":"message","usage":{"input_tokens":3,"output_tokens":4}}`)
		return err
	})
	if err := h.attempt(o, httptest.NewRequest("POST", "/v1/messages", nil), next); err != nil {
		t.Fatal(err)
	}
	if !fw.flushed || fw.inFlight != 0 {
		t.Fatalf("flushed %v with %d attempts in flight, want a flush in the attempt once it settled", fw.flushed, fw.inFlight)
	}
}
