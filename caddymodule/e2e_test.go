package caddymodule

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// End-to-end tests of the relay in front of an httptest upstream: client
// authentication, key auth, strategies, short circuits, upstream 429s and
// streaming. Helpers are in helpers_test.go.

func TestE2EClientAuth(t *testing.T) {
	up := newUpstream(t, nil)
	startRelay(t, relaySite(`auth_pool {
		client_token ct-alice alice
		client_token ct-bob
		key sk-relay-1 {
			name one
		}
	}`, "reverse_proxy "+up.addr()))

	for _, tok := range []string{"", "wrong", "ct-alic", "ct-alice2"} {
		res, body := post(t, tok, msgBody)
		if res.StatusCode != 401 || !strings.Contains(body, `"type":"authentication_error"`) || !strings.Contains(body, `"type":"error"`) {
			t.Fatalf("token %q: %d %s, want 401 authentication_error", tok, res.StatusCode, body)
		}
	}
	if n := len(up.all()); n != 0 {
		t.Fatalf("upstream contacted %d times by unauthenticated requests", n)
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
	for i, r := range up.all() {
		h := r.header
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
	startRelay(t, relaySite(`bearer_pool {
		client_auth off
		key sk-bearer-1 {
			auth bearer
		}
	}`, "reverse_proxy "+up.addr()))
	res, body := post(t, "", msgBody)
	if res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	h := up.all()[0].header
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
			startRelay(t, relaySite(fmt.Sprintf(`strat_%d {
		strategy %s
		client_auth off
		sticky off
		%s
	}`, i, c.strategy, c.keys), "reverse_proxy "+up.addr()))
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
	fake := useFakeClock(t)
	up := newUpstream(t, nil)
	startRelay(t, relaySite(`short_pool {
		client_auth off
		key sk-s-a {
			rpm 2
		}
		key sk-s-b {
			rpm 1
		}
	}`, "reverse_proxy "+up.addr()))
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
	if n := len(up.all()); n != 3 {
		t.Fatalf("upstream saw %d requests, want 3 (the 429 must not reach it)", n)
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
	up := newRateLimitingUpstream(t, "sk-c-hot", "30")
	startRelay(t, relaySite(`cool_pool {
		strategy round_robin
		client_auth off
		key sk-c-hot
		key sk-c-cold
	}`, "reverse_proxy "+up.addr()))
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
		writeEvents(w, sseStart10)
		select {
		case <-release:
		case <-time.After(10 * time.Second):
		}
		_, _ = io.WriteString(w, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":5}}\n\n"+sseStop)
	})
	startRelay(t, relaySite(`stream_pool {
		client_auth off
		key sk-stream
	}`, "reverse_proxy "+up.addr()))
	req := newRequest(t, http.MethodPost, relayAddr+"/v1/messages", strings.NewReader(`{"model":"claude-sonnet-4-5","stream":true,"max_tokens":5,"messages":[]}`))
	res, br := openStream(t, relayHTTP, req)
	defer res.Body.Close()
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
