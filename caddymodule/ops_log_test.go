package caddymodule

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOpsPlaceholders checks the placeholders the relay sets, read back
// through deferred response headers (set when the response is written,
// after the relay chose its key) and through respond.
func TestOpsPlaceholders(t *testing.T) {
	up := newUpstream(t, func(key string, w http.ResponseWriter, r *http.Request) {
		if key == "sk-ops-ph-1" {
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		okMessage(w)
	})
	startRelay(t, fmt.Sprintf(`http://localhost:9080 {
	header >X-Ops-Key {http.cc_relay.key}
	header >X-Ops-Client {http.cc_relay.client}
	header >X-Ops-Model {http.cc_relay.model}
	header >X-Ops-Session {http.cc_relay.session}
	header >X-Ops-Attempts {http.cc_relay.attempts}
	route /echo {
		cc_relay ops_ph_echo {
			client_token ct-ops-ph-echo dave
			key sk-ops-ph-echo {
				name echo1
			}
		}
		respond "key={http.cc_relay.key} client={http.cc_relay.client} attempts={http.cc_relay.attempts}"
	}
	cc_relay ops_ph {
		strategy priority
		client_token ct-ops-ph carol
		key sk-ops-ph-1 {
			name ph1
		}
		key sk-ops-ph-2 {
			name ph2
			priority 1
		}
	}
	reverse_proxy %s
}
`, up.addr()))

	// ph1 is preferred but rate limited: the answer comes from ph2, on the
	// second attempt.
	res, body := post(t, "ct-ops-ph", msgStream(false), "X-Claude-Code-Session-Id", "ops-ph-session")
	if res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	for h, want := range map[string]string{
		"X-Ops-Key": "ph2", "X-Ops-Client": "carol", "X-Ops-Model": "claude-sonnet-4-5",
		"X-Ops-Session": "ops-ph-session", "X-Ops-Attempts": "2",
	} {
		if got := res.Header.Get(h); got != want {
			t.Fatalf("%s = %q, want %q", h, got, want)
		}
	}

	req := newRequest(t, http.MethodGet, relayAddr+"/echo", nil)
	req.Header.Set("Authorization", "Bearer ct-ops-ph-echo")
	if _, b := roundTrip(t, relayHTTP, req); b != "key=echo1 client=dave attempts=1" {
		t.Fatalf("respond with placeholders: %q", b)
	}
}

// opsFilterBlocks returns the "format filter { ... }" blocks of
// Caddyfile.example, in order: the global log's, then the site's.
func opsFilterBlocks(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	s := string(src)
	for {
		i := strings.Index(s, "format filter {")
		if i < 0 {
			break
		}
		depth, j := 0, i
		for ; j < len(s); j++ {
			if s[j] == '{' {
				depth++
			} else if s[j] == '}' {
				depth--
				if depth == 0 {
					break
				}
			}
		}
		blocks = append(blocks, s[i:j+1])
		s = s[j+1:]
	}
	if len(blocks) != 2 {
		t.Fatalf("Caddyfile.example has %d 'format filter' blocks, want 2 (global log, site log)", len(blocks))
	}
	return blocks
}

// opsReadLog returns a log file's content ("" if it does not exist yet).
func opsReadLog(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// TestOpsLogs runs a relay with the global log at DEBUG and an access log,
// both written to files, sends requests down every path (success, stream,
// the relay's own 429, an upstream 429 and 401 that are retried, a wrong
// client token), and checks the logs:
//
//   - with the filters Caddyfile.example recommends, no upstream secret and
//     no client token appears anywhere, while the access log carries the
//     relay's cc_relay_* fields;
//   - without them, reverse_proxy's "upstream roundtrip" debug entry does
//     print the upstream x-api-key and the access log the client's token:
//     the filters are what keeps them out.
func TestOpsLogs(t *testing.T) {
	filters := opsFilterBlocks(t)
	secrets := map[string]string{
		"CC_RELAY_OPS_LOG_K1":    "sk-ant-ops-log-k1-a81f",
		"CC_RELAY_OPS_LOG_K2":    "sk-ant-ops-log-k2-93c2",
		"CC_RELAY_OPS_LOG_K3":    "sk-ant-ops-log-k3-1de4",
		"CC_RELAY_OPS_LOG_ALICE": "ct-ops-log-alice-62b7",
		"CC_RELAY_OPS_LOG_BOB":   "ct-ops-log-bob-0c55",
	}
	setEnvs(t, secrets)
	const wrongToken = "ct-ops-log-wrong-d3a9"
	up := newUpstream(t, func(key string, w http.ResponseWriter, r *http.Request) {
		switch {
		case key == secrets["CC_RELAY_OPS_LOG_K2"]:
			upstreamRateLimited(w, "300")
		case key == secrets["CC_RELAY_OPS_LOG_K3"]:
			upstreamError(w, http.StatusUnauthorized, "authentication_error", "invalid x-api-key")
		case strings.Contains(r.Header.Get("Accept"), "event-stream"):
			writeEvents(w, sseStart4, sseDelta2, sseStop)
		default:
			okMessage(w)
		}
	})

	run := func(t *testing.T, pool, globalFormat, siteFormat string) (debugLog, accessLog string) {
		dir := t.TempDir()
		debugPath, accessPath := filepath.Join(dir, "caddy.log"), filepath.Join(dir, "access.log")
		startCaddy(t, caddyGlobal(fmt.Sprintf(`	log {
		output file %s
		level DEBUG
		%s
	}`, debugPath, globalFormat))+fmt.Sprintf(`http://localhost:9080 {
	log {
		output file %s
		%s
	}
	cc_relay %s {
		strategy priority
		client_token {env.CC_RELAY_OPS_LOG_ALICE} alice
		client_token {env.CC_RELAY_OPS_LOG_BOB} bob
		key {env.CC_RELAY_OPS_LOG_K2} {
			name k2
		}
		key {env.CC_RELAY_OPS_LOG_K3} {
			name k3
			auth bearer
			priority 1
		}
		key {env.CC_RELAY_OPS_LOG_K1} {
			name k1
			rpm 3
			priority 2
		}
	}
	reverse_proxy %s {
		flush_interval -1
	}
}
`, accessPath, siteFormat, pool, up.addr()))

		alice, bob := secrets["CC_RELAY_OPS_LOG_ALICE"], secrets["CC_RELAY_OPS_LOG_BOB"]
		// k2 answers 429 (cools down), k3 401 (disabled), k1 serves.
		if res, body := post(t, alice, msgStream(false)); res.StatusCode != 200 || res.Header.Get("X-CC-Relay-Key") != "k1" {
			t.Fatalf("first request: %d %s", res.StatusCode, body)
		}
		if res, body := post(t, "", msgStream(false), "Authorization", "Bearer "+bob); res.StatusCode != 200 {
			t.Fatalf("bearer client: %d %s", res.StatusCode, body)
		}
		if res, body := post(t, alice, msgStream(true), "Accept", "text/event-stream"); res.StatusCode != 200 || !strings.Contains(body, "message_stop") {
			t.Fatalf("stream: %d %s", res.StatusCode, body)
		}
		// k1's 3 requests per minute are spent: the relay answers 429.
		if res, body := post(t, alice, msgStream(false)); res.StatusCode != 429 || !strings.Contains(body, "rate_limit_error") {
			t.Fatalf("exhausted pool: %d %s", res.StatusCode, body)
		}
		if res, body := post(t, wrongToken, msgStream(false)); res.StatusCode != 401 {
			t.Fatalf("wrong token: %d %s", res.StatusCode, body)
		}
		waitIdle(t, pool)
		// The access log is written after the response: poll for the last
		// request's entry (the 401 of the wrong token).
		pollUntil(t, "the access log's 5 entries", func() bool {
			return strings.Count(opsReadLog(accessPath), `"msg":"handled request"`) >= 5
		})
		// Unloading the config closes (and so flushes) its log files.
		startRelay(t, `http://localhost:9080 {
	respond "bye"
}
`)
		return opsReadLog(debugPath), opsReadLog(accessPath)
	}

	t.Run("example filters", func(t *testing.T) {
		debugLog, accessLog := run(t, "ops_logs_filtered", filters[0], filters[1])
		if strings.Count(debugLog, "upstream roundtrip") < 5 {
			t.Fatalf("the debug log lacks reverse_proxy's upstream roundtrip entries: the test would prove nothing")
		}
		for name, secret := range secrets {
			for logName, text := range map[string]string{"debug log": debugLog, "access log": accessLog} {
				if strings.Contains(text, secret) {
					t.Errorf("%s holds %s:\n%s", logName, name, opsLinesWith(text, secret))
				}
			}
		}
		for logName, text := range map[string]string{"debug log": debugLog, "access log": accessLog} {
			if strings.Contains(text, wrongToken) {
				t.Errorf("%s holds the wrong client token:\n%s", logName, opsLinesWith(text, wrongToken))
			}
		}

		// The access log carries the relay's fields. Entries are written
		// after each response, so not necessarily in request order: the
		// first request is the one that took three attempts.
		var entry map[string]any
		for _, line := range strings.Split(accessLog, "\n") {
			if strings.Contains(line, `"cc_relay_attempts":3`) {
				if err := json.Unmarshal([]byte(line), &entry); err != nil {
					t.Fatal(err)
				}
				break
			}
		}
		if entry == nil {
			t.Fatalf("no access log entry with cc_relay_key k1:\n%s", accessLog)
		}
		for k, want := range map[string]any{
			"cc_relay_key": "k1", "cc_relay_client": "alice", "cc_relay_model": "claude-sonnet-4-5",
			"cc_relay_attempts": float64(3), "cc_relay_input_tokens": float64(12), "cc_relay_output_tokens": float64(3),
		} {
			if entry[k] != want {
				t.Fatalf("access log %s = %v, want %v; entry %v", k, entry[k], want, entry)
			}
		}
		if _, ok := entry["cc_relay_session"]; !ok {
			t.Fatalf("access log entry lacks cc_relay_session: %v", entry)
		}
	})

	t.Run("without filters", func(t *testing.T) {
		debugLog, accessLog := run(t, "ops_logs_unfiltered", "format json", "format json")
		k1 := secrets["CC_RELAY_OPS_LOG_K1"]
		if !strings.Contains(opsLinesWith(debugLog, k1), "upstream roundtrip") {
			t.Fatalf("expected the unfiltered upstream roundtrip entry to print k1's x-api-key; the filtered test would prove nothing:\n%s", debugLog)
		}
		if !strings.Contains(accessLog, secrets["CC_RELAY_OPS_LOG_ALICE"]) {
			t.Fatalf("expected the unfiltered access log to hold the client's x-api-key")
		}
	})
}

// opsLinesWith returns the lines of text that contain s.
func opsLinesWith(text, s string) string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			out = append(out, sc.Text())
		}
	}
	return strings.Join(out, "\n")
}
