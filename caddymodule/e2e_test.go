package caddymodule

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
)

// End-to-end tests run one in-process Caddy (caddytest, admin on
// localhost:2999) per test binary: no t.Parallel, and every test uses its
// own pool name so state from one test never leaks into the next.

const relayAddr = "http://localhost:9080"

// noSkip turns caddytest's "prerequisites missing" skip into a failure: a
// silently skipped end-to-end test proves nothing.
type noSkip struct{ *testing.T }

func (n noSkip) Skipf(format string, args ...any) { n.T.Fatalf("caddytest skipped: "+format, args...) }
func (n noSkip) SkipNow()                         { n.T.Fatal("caddytest skipped") }

func startRelay(t *testing.T, site string) *caddytest.Tester {
	t.Helper()
	tc := caddytest.NewTester(noSkip{t})
	tc.InitServer(`{
	admin localhost:2999
	http_port 9080
	https_port 9443
	grace_period 1ns
	skip_install_trust
}
`+site, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	return tc
}

// upstream is an httptest Anthropic stand-in that records the credential of
// every request it sees.
type upstream struct {
	*httptest.Server
	mu      sync.Mutex
	seen    []string      // x-api-key or bearer token per request
	headers []http.Header // request headers per request
	bodies  [][]byte      // request bodies per request
	respond func(key string, w http.ResponseWriter, r *http.Request)
}

func newUpstream(t *testing.T, respond func(key string, w http.ResponseWriter, r *http.Request)) *upstream {
	u := &upstream{respond: respond}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("X-Api-Key")
		if key == "" {
			key = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		u.mu.Lock()
		u.bodies = append(u.bodies, body)
		u.seen = append(u.seen, key)
		u.headers = append(u.headers, r.Header.Clone())
		u.mu.Unlock()
		if u.respond != nil {
			u.respond(key, w, r)
			return
		}
		okMessage(w)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) count() map[string]int {
	u.mu.Lock()
	defer u.mu.Unlock()
	m := map[string]int{}
	for _, k := range u.seen {
		m[k]++
	}
	return m
}

func (u *upstream) total() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.seen)
}

func (u *upstream) addr() string { return strings.TrimPrefix(u.URL, "http://") }

func okMessage(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":3}}`)
}

const msgBody = `{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hello"}]}`

func post(t *testing.T, token, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, relayAddr+"/v1/messages", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("X-Api-Key", token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c := &http.Client{Timeout: 10 * time.Second}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func TestE2EClientAuth(t *testing.T) {
	up := newUpstream(t, nil)
	startRelay(t, fmt.Sprintf(`http://localhost:9080 {
	cc_relay auth_pool {
		client_token ct-alice alice
		client_token ct-bob
		key sk-relay-1 {
			name one
		}
	}
	reverse_proxy %s
}`, up.addr()))

	for _, tok := range []string{"", "wrong", "ct-alic", "ct-alice2"} {
		res, body := post(t, tok, msgBody)
		if res.StatusCode != 401 || !strings.Contains(body, `"type":"authentication_error"`) || !strings.Contains(body, `"type":"error"`) {
			t.Fatalf("token %q: %d %s, want 401 authentication_error", tok, res.StatusCode, body)
		}
	}
	if up.total() != 0 {
		t.Fatalf("upstream contacted %d times by unauthenticated requests", up.total())
	}
	res, body := post(t, "ct-alice", msgBody)
	if res.StatusCode != 200 {
		t.Fatalf("x-api-key client token: %d %s", res.StatusCode, body)
	}
	if got := res.Header.Get("X-CC-Relay-Key"); got != "one" {
		t.Fatalf("X-CC-Relay-Key = %q, want one", got)
	}
	res, body = post(t, "", msgBody, "Authorization", "Bearer ct-bob")
	if res.StatusCode != 200 {
		t.Fatalf("bearer client token: %d %s", res.StatusCode, body)
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	for i, h := range up.headers {
		if h.Get("X-Api-Key") != "sk-relay-1" {
			t.Fatalf("request %d reached upstream with x-api-key %q", i, h.Get("X-Api-Key"))
		}
		for k, vs := range h {
			for _, v := range vs {
				if strings.Contains(v, "ct-alice") || strings.Contains(v, "ct-bob") {
					t.Fatalf("client credential forwarded upstream in %s", k)
				}
			}
		}
	}
}

func TestE2EBearerKeyAuth(t *testing.T) {
	up := newUpstream(t, nil)
	startRelay(t, fmt.Sprintf(`http://localhost:9080 {
	cc_relay bearer_pool {
		client_auth off
		key sk-bearer-1 {
			auth bearer
		}
	}
	reverse_proxy %s
}`, up.addr()))
	res, body := post(t, "", msgBody)
	if res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	up.mu.Lock()
	h := up.headers[0]
	up.mu.Unlock()
	if h.Get("Authorization") != "Bearer sk-bearer-1" || h.Get("X-Api-Key") != "" {
		t.Fatalf("upstream saw Authorization %q x-api-key %q", h.Get("Authorization"), h.Get("X-Api-Key"))
	}
	if name := res.Header.Get("X-CC-Relay-Key"); !strings.HasPrefix(name, "key-") || len(name) != 12 {
		t.Fatalf("default key name %q, want key-<8 hex>", name)
	}
}

func TestE2EStrategies(t *testing.T) {
	up := newUpstream(t, nil)
	cases := []struct {
		strategy string
		keys     string
		n        int
		want     map[string]int
	}{
		{"round_robin", "key sk-rr-a\n key sk-rr-b\n key sk-rr-c", 30, map[string]int{"sk-rr-a": 10, "sk-rr-b": 10, "sk-rr-c": 10}},
		{"weighted", "key sk-w-a {\nweight 3\n}\nkey sk-w-b", 40, map[string]int{"sk-w-a": 30, "sk-w-b": 10}},
		{"priority", "key sk-p-a {\npriority 1\n}\nkey sk-p-b", 10, map[string]int{"sk-p-b": 10}},
		{"least_loaded", "key sk-ll-a\n key sk-ll-b", 10, map[string]int{"sk-ll-a": 5, "sk-ll-b": 5}},
	}
	for i, c := range cases {
		t.Run(c.strategy, func(t *testing.T) {
			startRelay(t, fmt.Sprintf(`http://localhost:9080 {
	cc_relay strat_%d {
		strategy %s
		client_auth off
		sticky off
		%s
	}
	reverse_proxy %s
}`, i, c.strategy, c.keys, up.addr()))
			before := up.count()
			for k := 0; k < c.n; k++ {
				if res, body := post(t, "", msgBody); res.StatusCode != 200 {
					t.Fatalf("%d %s", res.StatusCode, body)
				}
			}
			after := up.count()
			for key, want := range c.want {
				if got := after[key] - before[key]; got != want {
					t.Fatalf("%s: key %s got %d requests, want %d (all: %v)", c.strategy, key, got, want, after)
				}
			}
		})
	}
}

func TestE2EShortCircuitAndRetryAfter(t *testing.T) {
	fake := clock.NewFake(time.Unix(1_800_000_000, 0))
	newClock = func() clock.Clock { return fake }
	defer func() { newClock = func() clock.Clock { return clock.Real{} } }()
	up := newUpstream(t, nil)
	startRelay(t, fmt.Sprintf(`http://localhost:9080 {
	cc_relay short_pool {
		client_auth off
		key sk-s-a {
			rpm 2
		}
		key sk-s-b {
			rpm 1
		}
	}
	reverse_proxy %s
}`, up.addr()))
	for k := 0; k < 3; k++ {
		if res, body := post(t, "", msgBody); res.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", k, res.StatusCode, body)
		}
	}
	res, body := post(t, "", msgBody)
	if res.StatusCode != 429 || !strings.Contains(body, `"type":"rate_limit_error"`) {
		t.Fatalf("exhausted pool: %d %s, want 429 rate_limit_error", res.StatusCode, body)
	}
	// sk-s-a refills one request in 30s, sk-s-b in 60s: the earliest wins.
	if ra := res.Header.Get("Retry-After"); ra != "30" {
		t.Fatalf("Retry-After = %q, want 30", ra)
	}
	if up.total() != 3 {
		t.Fatalf("upstream saw %d requests, want 3 (the 429 must not reach it)", up.total())
	}
	fake.Advance(30 * time.Second)
	if res, body := post(t, "", msgBody); res.StatusCode != 200 {
		t.Fatalf("after refill: %d %s", res.StatusCode, body)
	}
	if up.count()["sk-s-a"] != 3 {
		t.Fatalf("refilled request went elsewhere: %v", up.count())
	}
}

func TestE2EUpstream429CoolsDownAndRetries(t *testing.T) {
	up := newUpstream(t, func(key string, w http.ResponseWriter, r *http.Request) {
		if key == "sk-c-hot" {
			w.Header().Set("Retry-After", "30")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(429)
			_, _ = io.WriteString(w, `{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}`)
			return
		}
		okMessage(w)
	})
	startRelay(t, fmt.Sprintf(`http://localhost:9080 {
	cc_relay cool_pool {
		strategy round_robin
		client_auth off
		key sk-c-hot
		key sk-c-cold
	}
	reverse_proxy %s
}`, up.addr()))
	for k := 0; k < 6; k++ {
		res, body := post(t, "", msgBody)
		if res.StatusCode != 200 {
			t.Fatalf("request %d: %d %s: an upstream 429 leaked while another key had capacity", k, res.StatusCode, body)
		}
		if res.Header.Get("Retry-After") != "" {
			t.Fatalf("a retried success carries the failed attempt's Retry-After")
		}
	}
	// The hot key is tried once, then cools down for 30s.
	if got := up.count(); got["sk-c-hot"] != 1 || got["sk-c-cold"] != 6 {
		t.Fatalf("upstream saw %v, want hot once then only cold", got)
	}
}

func TestE2EStreamingIsNotBuffered(t *testing.T) {
	release := make(chan struct{})
	up := newUpstream(t, func(key string, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		rc := http.NewResponseController(w)
		_, _ = io.WriteString(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n")
		_ = rc.Flush()
		select {
		case <-release:
		case <-time.After(10 * time.Second):
		}
		_, _ = io.WriteString(w, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":5}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
	})
	startRelay(t, fmt.Sprintf(`http://localhost:9080 {
	cc_relay stream_pool {
		client_auth off
		key sk-stream
	}
	reverse_proxy %s
}`, up.addr()))
	req, _ := http.NewRequest(http.MethodPost, relayAddr+"/v1/messages", strings.NewReader(`{"model":"claude-sonnet-4-5","stream":true,"max_tokens":5,"messages":[]}`))
	res, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "event: message_start\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	// The first event arrived while the upstream is still blocked.
	select {
	case <-release:
		t.Fatal("upstream released early")
	default:
	}
	close(release)
	rest, _ := io.ReadAll(br)
	if !strings.Contains(string(rest), "message_stop") {
		t.Fatalf("stream did not complete: %q", rest)
	}
}
