package caddymodule

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
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
	setEnvs(t, keys)
	t.Setenv("CLIENT_TOKEN_ALICE", "ct-ops-tls-alice-e3f1")
	t.Setenv("CLIENT_TOKEN_BOB", "ct-ops-tls-bob-58a6")
	t.Setenv("RELAY_DOMAIN", "localhost")

	var upHost string // set once the upstream listens
	up := newUpstream(t, func(key string, w http.ResponseWriter, r *http.Request) {
		if r.Host != upHost {
			// header_up Host {upstream_hostport} must name the upstream.
			http.Error(w, "wrong Host "+r.Host, http.StatusBadRequest)
			return
		}
		if strings.Contains(r.Header.Get("Accept"), "event-stream") {
			writeEvents(w, sseStart4, sseDelta2, sseStop)
			return
		}
		okMessage(w)
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
		{"\n{\n", "\n" + strings.TrimSuffix(caddyGlobal("\tstorage file_system "+t.TempDir()), "\n}\n") + "\n"},
		{"reverse_proxy https://api.anthropic.com {", "reverse_proxy http://" + up.addr() + " {"},
		{"cc_relay prod {", "cc_relay ops_tls_prod {"},
	} {
		if strings.Count(cfg, r.old) != 1 {
			t.Fatalf("Caddyfile.example no longer has exactly one %q", r.old)
		}
		cfg = strings.Replace(cfg, r.old, r.new, 1)
	}
	startCaddy(t, cfg)

	// Trust exactly Caddy's internal CA.
	body := adminGet(t, "/pki/ca/local")
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
	pollUntil(t, "a verified TLS handshake on localhost:9443", func() bool {
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
		req := newRequest(t, http.MethodPost, "https://localhost:9443"+path, strings.NewReader(body))
		setRelayHeaders(req.Header, token)
		if stream {
			req.Header.Set("Accept", "text/event-stream")
		}
		return roundTrip(t, client, req)
	}

	res, body := send("ct-ops-tls-alice-e3f1", "/v1/messages", msgStream(false), false)
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
	res, body = send("ct-ops-tls-bob-58a6", "/v1/messages", msgStream(true), true)
	if res.StatusCode != 200 || !strings.HasSuffix(body, sseStop) {
		t.Fatalf("stream over TLS: %d %q", res.StatusCode, body)
	}
	if res, body := send("", "/v1/messages", msgStream(false), false); res.StatusCode != 401 {
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
