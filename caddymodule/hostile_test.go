package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Hostile input and a broken upstream, end to end through Caddy (issue
// 11): secrets echoed by the upstream, bodies that never arrive, paths the
// budget would not see, unbounded client strings, bodies the relay cannot
// read.

// assertAPIError checks an answer in Anthropic's error shape.
func assertAPIError(t *testing.T, what string, status int, body string, wantStatus int, wantType string) {
	t.Helper()
	var e apiError
	if status != wantStatus || json.Unmarshal([]byte(body), &e) != nil || e.Type != "error" || e.Error.Type != wantType {
		t.Fatalf("%s: %d %q, want %d %s in Anthropic's error shape", what, status, body, wantStatus, wantType)
	}
}

// TestHostileEchoedKeyNeverLeaks: an upstream that echoes the key it was
// sent (whole, its first or last characters, or with the key straddling
// the 200-byte cut of a reason) shows no 12-byte fragment of it in the
// admin API, the logs at every level or a replayed answer.
func TestHostileEchoedKeyNeverLeaks(t *testing.T) {
	keys := map[string]string{}
	for _, n := range []string{"whole", "prefix", "suffix", "cut", "limited"} {
		keys[n] = "sk-ant-api03-echo-" + n + "-" + strings.Repeat("Q7vX", 12) + "-tail" + n
	}
	const token = "ct-echo-client-token-5f2a9c"
	echo := map[string]func(k string) string{
		"whole":  func(k string) string { return "invalid x-api-key " + k },
		"prefix": func(k string) string { return "key " + k[:len(k)-3] + "... is not valid" },
		"suffix": func(k string) string { return "key ..." + k[3:] + " is not valid" },
		"cut": func(k string) string {
			return strings.Repeat("x", 200-len("upstream 401: authentication_error: ")-20) + k
		},
		"limited": func(k string) string { return "rate limited for key " + k + " (client " + token + ")" },
	}
	up := newUpstream(t, func(key string, w http.ResponseWriter, r *http.Request) {
		for n, k := range keys {
			if key == k {
				if n == "limited" {
					w.Header().Set("Retry-After", "30")
					upstreamError(w, http.StatusTooManyRequests, "rate_limit_error", echo[n](k))
					return
				}
				upstreamError(w, http.StatusUnauthorized, "authentication_error", echo[n](k))
				return
			}
		}
		okMessage(w)
	})
	dir := t.TempDir()
	logPath := filepath.Join(dir, "caddy.log")
	// The example's filter keeps reverse_proxy's own debug entries from
	// printing the key it sends; what is left is the relay's.
	startCaddy(t, caddyGlobal(fmt.Sprintf("\tlog {\n\t\toutput file %s\n\t\tlevel DEBUG\n\t\t%s\n\t}", logPath, opsFilterBlocks(t)[0]))+
		relaySite(`echo_pool {
		strategy priority
		retries 0
		client_token `+token+`
		key `+keys["whole"]+` {
			name whole
		}
		key `+keys["prefix"]+` {
			name prefix
			priority 1
		}
		key `+keys["suffix"]+` {
			name suffix
			priority 2
		}
		key `+keys["cut"]+` {
			name cut
			priority 3
		}
		key `+keys["limited"]+` {
			name limited
			priority 4
		}
	}`, proxyTo(up)))
	c := newRelayClient(t)
	var answers []string
	// With retries 0 each request meets one key: four are disabled in
	// turn, then the fifth's 429 is replayed to the client.
	for i := 0; i < 5; i++ {
		r := c.mustSend(t, token, msgBody)
		answers = append(answers, fmt.Sprint(r.header)+r.body)
		if i < 4 && r.status != 503 {
			t.Fatalf("request %d: %d %s, want 503 for a rejected key", i, r.status, r.body)
		}
		if i == 4 {
			assertAPIError(t, "replayed 429", r.status, r.body, 429, "rate_limit_error")
			if r.header.Get("Content-Length") != fmt.Sprint(len(r.body)) {
				t.Fatalf("replayed body is %d bytes, Content-Length says %s", len(r.body), r.header.Get("Content-Length"))
			}
			if !strings.Contains(r.body, redacted) || !strings.Contains(r.body, "rate limited for key") {
				t.Fatalf("replayed body not redacted in place: %s", r.body)
			}
		}
	}
	waitIdle(t, "echo_pool")
	admin := adminGet(t, "/cc_relay/pools/echo_pool")
	for _, n := range []string{"whole", "prefix", "suffix", "cut"} {
		k := keySnap(t, "echo_pool", n)
		if k.State != "disabled" || !strings.Contains(k.Reason, "401") || len(k.Reason) > maxReason {
			t.Fatalf("key %s: state %q reason %q", n, k.State, k.Reason)
		}
	}
	startRelay(t, "http://localhost:9080 {\n\trespond bye\n}\n") // flushes the log file
	logText := opsReadLog(logPath)
	if !strings.Contains(logText, "upstream rejected key") {
		t.Fatalf("the log lacks the disable warnings: the test would prove nothing")
	}
	for where, text := range map[string]string{"admin API": admin, "log": logText, "answers": strings.Join(answers, "\n")} {
		for _, s := range append([]string{token}, keys["whole"], keys["prefix"], keys["suffix"], keys["cut"], keys["limited"]) {
			if frag, ok := leaksFragment(text, s); ok {
				t.Errorf("%s holds %q, a fragment of a secret:\n%s", where, frag, opsLinesWith(text, frag))
			}
		}
	}
}

// TestHostileSlowBodyDeadline: a client that stops sending its body gets
// 408 timeout_error once read_body_timeout has passed, and the upstream is
// never contacted; the deadline is cleared once the body has arrived, so a
// slow answer on the same connection is not cut by it.
func TestHostileSlowBodyDeadline(t *testing.T) {
	const timeout = 300 * time.Millisecond
	up := newUpstream(t, func(key string, w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.RawQuery, "slow") {
			<-time.After(3 * timeout) // longer than the body deadline
		}
		okMessage(w)
	})
	startRelay(t, relaySite(`deadline_pool {
		client_token ct-deadline
		read_body_timeout 300ms
		key sk-deadline-1
	}`, proxyTo(up)))

	conn := dialRelay(t)
	fmt.Fprintf(conn, "POST /v1/messages HTTP/1.1\r\nHost: localhost:9080\r\nX-Api-Key: ct-deadline\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n{\"mod", 32<<20)
	start := time.Now()
	res := readRaw(t, conn)
	assertAPIError(t, "stalled body", res.status, res.body, http.StatusRequestTimeout, "timeout_error")
	if time.Since(start) < timeout {
		t.Fatalf("answered before the deadline")
	}
	if n := len(up.all()); n != 0 {
		t.Fatalf("the upstream was contacted %d times for a body that never arrived", n)
	}

	// Keep-alive: two requests on one connection, the first answered
	// after the body deadline would have passed.
	conn = dialRelay(t)
	for i, q := range []string{"slow", "fast"} {
		fmt.Fprintf(conn, "POST /v1/messages?%s HTTP/1.1\r\nHost: localhost:9080\r\nX-Api-Key: ct-deadline\r\n"+
			"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", q, len(msgBody), msgBody)
		if res := readRaw(t, conn); res.status != 200 {
			t.Fatalf("request %d on a kept-alive connection: %d %s", i, res.status, res.body)
		}
	}
}

// TestHostilePathsRefused: spellings of /v1/messages that a
// "path /v1/messages*" matcher lets through and an upstream may serve, but
// that are not the canonical path, are refused with 404 in Anthropic's
// shape and never reach the upstream unmetered.
func TestHostilePathsRefused(t *testing.T) {
	up := newUpstream(t, nil)
	startRelay(t, `http://localhost:9080 {
	@api path /v1/messages* //v1/messages*
	handle @api {
		cc_relay paths_pool {
			client_token ct-paths
			key sk-paths-1
		}
		`+proxyTo(up)+`
	}
	respond "unmatched" 418
}`)
	conn := dialRelay(t)
	fmt.Fprintf(conn, "POST /v1/messages HTTP/1.1\r\nHost: localhost:9080\r\nX-Api-Key: ct-paths\r\nContent-Length: %d\r\n\r\n%s", len(msgBody), msgBody)
	if res := readRaw(t, conn); res.status != 200 {
		t.Fatalf("canonical path: %d %s", res.status, res.body)
	}
	base := len(up.all())
	matched := 0
	for _, p := range []string{"//v1/messages", "/v1//messages", "/v1/./messages", "/v1/messages/", "/v1/%6Dessages",
		"/v1/messages/.", "/v1/messages//", "/v1/x/../messages", "/v1/%2e/messages", "/V1/Messages", "/v1/messages%2F"} {
		conn := dialRelay(t)
		fmt.Fprintf(conn, "POST %s?beta=true HTTP/1.1\r\nHost: localhost:9080\r\nX-Api-Key: ct-paths\r\nContent-Length: %d\r\n\r\n%s", p, len(msgBody), msgBody)
		res := readRaw(t, conn)
		if res.status == 418 {
			continue // Caddy's matcher did not send it to the relay (nor upstream)
		}
		matched++
		assertAPIError(t, p, res.status, res.body, http.StatusNotFound, "not_found_error")
	}
	if matched < 5 {
		t.Fatalf("only %d of the spellings reached the relay: the test would prove little", matched)
	}
	if n := len(up.all()); n != base {
		t.Fatalf("the upstream saw %d requests on non-canonical paths", n-base)
	}
	// Other endpoints under /v1/messages/ pass, unmetered as before.
	conn = dialRelay(t)
	fmt.Fprintf(conn, "POST /v1/messages/count_tokens HTTP/1.1\r\nHost: localhost:9080\r\nX-Api-Key: ct-paths\r\nContent-Length: %d\r\n\r\n%s", len(msgBody), msgBody)
	if res := readRaw(t, conn); res.status != 200 {
		t.Fatalf("count_tokens: %d %s", res.status, res.body)
	}
}

// TestHostileBodies: a compressed body gets 415, a body naming model,
// stream or max_tokens twice gets 400, a model name over 256 bytes gets
// 400; none reaches the upstream. A huge session id is cut to 256 bytes in
// the access log and placeholders.
func TestHostileBodies(t *testing.T) {
	up := newUpstream(t, nil)
	dir := t.TempDir()
	accessPath := filepath.Join(dir, "access.log")
	startRelay(t, fmt.Sprintf(`http://localhost:9080 {
	log {
		output file %s
		format filter {
			wrap json
			fields {
				request>headers delete
			}
		}
	}
	header >X-Ops-Session {http.cc_relay.session}
	cc_relay bodies_pool {
		client_token ct-bodies
		key sk-bodies-1
	}
	%s
}`, accessPath, proxyTo(up)))
	res, body := post(t, "ct-bodies", msgBody, "Content-Encoding", "gzip")
	assertAPIError(t, "gzip body", res.StatusCode, body, http.StatusUnsupportedMediaType, "invalid_request_error")
	for _, b := range []string{
		`{"model":"claude-haiku-4-5","max_tokens":64,"model":"claude-opus-4-1","messages":[]}`,
		`{"model":"claude-sonnet-4-5","max_tokens":1,"max_tokens":64000,"messages":[]}`,
		`{"model":"claude-sonnet-4-5","stream":false,"stream":true,"max_tokens":1,"messages":[]}`,
		`{"model":"` + strings.Repeat("m", 20<<20) + `","max_tokens":1,"messages":[]}`,
	} {
		res, body := post(t, "ct-bodies", b)
		assertAPIError(t, b[:min(len(b), 60)], res.StatusCode, body, http.StatusBadRequest, "invalid_request_error")
		if len(body) > 1024 {
			t.Fatalf("error answer of %d bytes", len(body))
		}
	}
	if n := len(up.all()); n != 0 {
		t.Fatalf("the upstream saw %d refused bodies", n)
	}
	// A session id in the header (bounded by the server's header limit)
	// and in metadata.user_id (bounded only by max_body).
	for _, req := range []struct{ body, header string }{
		{msgBody, strings.Repeat("s", 4<<10)},
		{ccBody(jsonUserID(strings.Repeat("s", 5<<20)), "hi", false), ""},
	} {
		var hdr []string
		if req.header != "" {
			hdr = []string{"X-Claude-Code-Session-Id", req.header}
		}
		res, body = post(t, "ct-bodies", req.body, hdr...)
		if res.StatusCode != 200 {
			t.Fatalf("long session id: %d %.300s", res.StatusCode, body)
		}
		if got := res.Header.Get("X-Ops-Session"); len(got) > maxClientString || !strings.HasPrefix(got, "sss") {
			t.Fatalf("session placeholder of %d bytes", len(got))
		}
	}
	waitIdle(t, "bodies_pool")
	pollUntil(t, "the access log's entries", func() bool {
		return strings.Count(opsReadLog(accessPath), `"msg":"handled request"`) >= 7
	})
	for _, line := range strings.Split(opsReadLog(accessPath), "\n") {
		if len(line) > 8<<10 {
			t.Fatalf("access log line of %d bytes: %.300s…", len(line), line)
		}
	}
}

// TestHostileErrorLogHoldsClientToken checks the README's claim: without
// the log filter, Caddy's own error log prints the client's X-Api-Key at
// ERROR level (not only at DEBUG) when the upstream cannot be reached; the
// filter of Caddyfile.example keeps it out.
func TestHostileErrorLogHoldsClientToken(t *testing.T) {
	const token = "ct-errlog-client-8e1d"
	run := func(pool, format string) string {
		logPath := filepath.Join(t.TempDir(), "caddy.log")
		startCaddy(t, caddyGlobal(fmt.Sprintf("\tlog {\n\t\toutput file %s\n\t\tlevel ERROR\n\t\t%s\n\t}", logPath, format))+
			relaySite(pool+` {
		client_token `+token+`
		key sk-errlog-1
	}`, "reverse_proxy 127.0.0.1:1"))
		res, body := post(t, token, msgBody)
		if res.StatusCode != http.StatusBadGateway {
			t.Fatalf("unreachable upstream: %d %s", res.StatusCode, body)
		}
		pollUntil(t, "the error entry", func() bool { return strings.Contains(opsReadLog(logPath), "502") })
		startRelay(t, "http://localhost:9080 {\n\trespond bye\n}\n")
		return opsReadLog(logPath)
	}
	if text := run("errlog_plain", "format json"); !strings.Contains(opsLinesWith(text, token), `"level":"error"`) {
		t.Fatalf("expected Caddy's ERROR entry to print the client token; the README would be wrong:\n%s", text)
	}
	filters := opsFilterBlocks(t)
	if text := run("errlog_filtered", filters[0]); strings.Contains(text, token) || !strings.Contains(text, `502`) {
		t.Fatalf("with the example's filter the error log still holds the client token (or lacks the entry):\n%s", text)
	}
}
