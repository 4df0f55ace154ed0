package caddymodule

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
)

// TestOpsTLSExample serves Caddyfile.example itself, changed only where a
// test must: ports and admin address for caddytest, the upstream (an
// httptest server instead of api.anthropic.com) and the pool name. The
// client trusts nothing but the root of Caddy's internal CA, fetched from
// the admin API, so the request goes client → TLS (HTTP/2) → cc_relay →
// upstream with a verified certificate for localhost.
func TestOpsTLSExample(t *testing.T) {
	keys := map[string]string{
		"ANTHROPIC_KEY_1": "sk-ant-ops-tls-1-7c2e",
		"ANTHROPIC_KEY_2": "sk-ant-ops-tls-2-a4d0",
		"ANTHROPIC_KEY_3": "sk-ant-ops-tls-3-19bb",
	}
	for k, v := range keys {
		t.Setenv(k, v)
	}
	t.Setenv("CLIENT_TOKEN_ALICE", "ct-ops-tls-alice-e3f1")
	t.Setenv("CLIENT_TOKEN_BOB", "ct-ops-tls-bob-58a6")
	t.Setenv("RELAY_DOMAIN", "localhost")

	var upHost string // set once the upstream listens
	up := opsNewUpstream(t, func(key string, w http.ResponseWriter, r *http.Request) {
		if r.Host != upHost {
			// header_up Host {upstream_hostport} must name the upstream.
			http.Error(w, "wrong Host "+r.Host, http.StatusBadRequest)
			return
		}
		if strings.Contains(r.Header.Get("Accept"), "event-stream") {
			w.Header().Set("Content-Type", "text/event-stream")
			rc := http.NewResponseController(w)
			for _, ev := range []string{
				"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":4,\"output_tokens\":1}}}\n\n",
				"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":2}}\n\n",
				"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
			} {
				_, _ = io.WriteString(w, ev)
				_ = rc.Flush()
			}
			return
		}
		opsOK(w)
	})
	upHost = up.addr()

	src, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(src)
	for _, r := range []struct{ old, new string }{
		// caddytest's admin address and ports; no system trust store; a
		// storage of its own, so the internal CA and certificate locks are
		// not shared with other processes.
		{"\n{\n", "\n" + strings.TrimSuffix(opsGlobal("\tstorage file_system "+t.TempDir()), "\n}\n") + "\n"},
		{"reverse_proxy https://api.anthropic.com {", "reverse_proxy http://" + up.addr() + " {"},
		{"cc_relay prod {", "cc_relay ops_tls_prod {"},
	} {
		if strings.Count(cfg, r.old) != 1 {
			t.Fatalf("Caddyfile.example no longer has exactly one %q", r.old)
		}
		cfg = strings.Replace(cfg, r.old, r.new, 1)
	}
	tc := caddytest.NewTester(opsNoSkip{t})
	tc.InitServer(cfg, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}

	// Trust exactly Caddy's internal CA.
	code, body := opsDo(t, http.MethodGet, opsAdmin+"/pki/ca/local", "", "")
	if code != 200 {
		t.Fatalf("GET /pki/ca/local: %d %s", code, body)
	}
	var ca struct {
		Root string `json:"root_certificate"`
	}
	if err := json.Unmarshal([]byte(body), &ca); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(ca.Root)) {
		t.Fatalf("no root certificate in %s", body)
	}
	tlsConfig := &tls.Config{RootCAs: roots, ServerName: "localhost"}
	// The certificate is issued in the background after the config
	// started: wait (bounded) until the server completes a handshake.
	opsEventually(t, "a verified TLS handshake on localhost:9443", func() bool {
		conn, err := tls.Dial("tcp", "localhost:9443", tlsConfig)
		if err != nil {
			return false
		}
		conn.Close()
		return true
	})
	client := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   tlsConfig,
		ForceAttemptHTTP2: true,
	}}
	defer client.CloseIdleConnections()
	send := func(token, path, body string, stream bool) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "https://localhost:9443"+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("X-Api-Key", token)
		}
		if stream {
			req.Header.Set("Accept", "text/event-stream")
		}
		res, err := client.Do(req)
		if err != nil {
			t.Fatalf("https request: %v", err)
		}
		defer res.Body.Close()
		var b strings.Builder
		br := bufio.NewReader(res.Body)
		if _, err := io.Copy(&b, br); err != nil {
			t.Fatalf("reading body: %v", err)
		}
		return res, b.String()
	}

	res, body := send("ct-ops-tls-alice-e3f1", "/v1/messages", opsMsg(false), false)
	if res.StatusCode != 200 || !strings.Contains(body, `"type":"message"`) {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	if res.TLS == nil || len(res.TLS.VerifiedChains) == 0 || res.ProtoMajor != 2 {
		t.Fatalf("want a verified TLS connection over HTTP/2; got TLS %v, %s", res.TLS != nil, res.Proto)
	}
	switch k := res.Header.Get("X-CC-Relay-Key"); k {
	case "team-a-1", "team-a-2", "team-b-1":
	default:
		t.Fatalf("X-CC-Relay-Key = %q", k)
	}
	res, body = send("ct-ops-tls-bob-58a6", "/v1/messages", opsMsg(true), true)
	if res.StatusCode != 200 || !strings.HasSuffix(body, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n") {
		t.Fatalf("stream over TLS: %d %q", res.StatusCode, body)
	}
	if res, body := send("", "/v1/messages", opsMsg(false), false); res.StatusCode != 401 {
		t.Fatalf("no client token: %d %s", res.StatusCode, body)
	}
	if res, body := send("ct-ops-tls-alice-e3f1", "/v1/other", "{}", false); res.StatusCode != 404 {
		t.Fatalf("outside the Messages API: %d %s", res.StatusCode, body)
	}
	// The upstream saw the two authorised requests, each with one of the
	// configured keys and never a client token.
	seen, total := up.count(), 0
	for _, k := range keys {
		total += seen[k]
	}
	if total != 2 || len(seen) > 2 {
		t.Fatalf("upstream saw %v, want 2 requests with configured keys only", seen)
	}
}
