package caddymodule

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// TestFaultAbsurdUpstreamNumbers: an upstream that reports 10^12 tokens of
// usage (JSON and SSE) and a retry-after in the year 9999 leaves the pool
// within its bounds: each bucket at most one capacity in debt, the
// cooldown capped at keypool.MaxCooldown, and enable gives a usable key
// back (issue 11, item 1).
func TestFaultAbsurdUpstreamNumbers(t *testing.T) {
	fake := useFakeClock(t)
	n := 0
	up := newUpstream(t, func(key string, w http.ResponseWriter, r *http.Request) {
		n++
		switch n {
		case 1:
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"id":"msg_1","type":"message","role":"assistant","content":[],"usage":{"input_tokens":1000000000000,"cache_creation_input_tokens":1000000000000,"output_tokens":1000000000000}}`)
		case 2:
			writeEvents(w,
				"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":1000000000000,\"output_tokens\":1}}}\n\n",
				"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":1000000000000}}\n\n",
				sseStop)
		default:
			w.Header().Set("Retry-After", "Fri, 31 Dec 9999 23:59:59 GMT")
			upstreamError(w, http.StatusTooManyRequests, "rate_limit_error", "slow down")
		}
	})
	startRelay(t, relaySite(`bounds_pool {
		client_auth off
		retries 0
		key sk-bounds-1 {
			name absurd
			itpm 100000
			otpm 10000
		}
	}`, proxyTo(up)))
	c := newRelayClient(t)
	checkLeaks(t, c)
	within := func(what string) {
		t.Helper()
		b := budgetOf(t, keySnap(t, "bounds_pool", "absurd"), "sonnet")
		if b.InputTokens.Remaining < -100000 || b.OutputTokens.Remaining < -10000 {
			t.Fatalf("%s: budget %+v beyond one capacity of debt", what, b)
		}
	}
	if r := c.mustSend(t, "", msgBody); r.status != 200 {
		t.Fatalf("json: %d %s", r.status, r.body)
	}
	within("after a JSON answer")
	fake.Advance(2 * time.Minute) // both buckets full again
	if r := c.mustSend(t, "", msgStream(true)); r.status != 200 {
		t.Fatalf("sse: %d %s", r.status, r.body)
	}
	pollUntil(t, "pool idle", poolIdle(t, "bounds_pool"))
	within("after a stream")
	fake.Advance(2 * time.Minute)
	if r := c.mustSend(t, "", msgBody); r.status != 429 {
		t.Fatalf("429 expected, got %d", r.status)
	}
	k := keySnap(t, "bounds_pool", "absurd")
	if k.State != "cooling" || k.Until == nil || k.Until.After(fake.Now().Add(keypool.MaxCooldown)) {
		t.Fatalf("after a retry-after in 9999: %+v, want cooling for at most %v", k, keypool.MaxCooldown)
	}
	if st, body := adminDo(t, http.MethodPost, "/cc_relay/pools/bounds_pool/keys/absurd/enable", "", ""); st != 200 {
		t.Fatalf("enable: %d %s", st, body)
	}
	k = keySnap(t, "bounds_pool", "absurd")
	b := budgetOf(t, k, "sonnet")
	if k.State != "ok" || b.InputTokens.Remaining < 0 || b.OutputTokens.Remaining < 0 {
		t.Fatalf("after enable: %+v", k)
	}
}
