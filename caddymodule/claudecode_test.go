package caddymodule

import (
	"bytes"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/cc-relay/caddy-cc-relay/internal/mockanthropic"
	"github.com/cc-relay/caddy-cc-relay/internal/usage"
)

// loadClaudeCodeRequest reads a request captured from the real Claude Code
// CLI (2.1.328, `claude -p hi` with CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1):
// one streaming POST /v1/messages?beta=true with X-Claude-Code-Session-Id, a
// JSON-string metadata.user_id and a role "system" message.
func loadClaudeCodeRequest(t *testing.T) (string, http.Header, []byte) {
	t.Helper()
	body, err := os.ReadFile("../testdata/claude-code/messages-request.json")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("../testdata/claude-code/messages-request.headers")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	hdr := http.Header{}
	for _, l := range lines[1:] {
		k, v, ok := strings.Cut(l, ": ")
		if !ok {
			continue
		}
		switch strings.ToLower(k) {
		case "host", "content-length", "connection", "accept-encoding":
			continue
		}
		hdr.Add(k, v)
	}
	return lines[0], hdr, body
}

func TestE2EClaudeCodeRequest(t *testing.T) {
	mock := mockanthropic.New(mockanthropic.Config{
		Orgs: []mockanthropic.Org{{ID: "org-cc", RPM: 100, ITPM: 1_000_000, OTPM: 100_000}},
		Keys: map[string]string{"sk-cc-1": "org-cc", "sk-cc-2": "org-cc"},
	})
	up := newUpstream(t, func(key string, w http.ResponseWriter, r *http.Request) { mock.ServeHTTP(w, r) })
	startRelay(t, relaySite(`claude_code_pool {
		client_token demo-token dev
		key sk-cc-1 {
			name cc1
		}
		key sk-cc-2 {
			name cc2
		}
	}`, "reverse_proxy "+up.addr()+` {
		flush_interval -1
	}`))

	path, hdr, body := loadClaudeCodeRequest(t)
	var keys []string
	for turn := 0; turn < 3; turn++ {
		req := newRequest(t, http.MethodPost, relayAddr+path, bytes.NewReader(body))
		req.Header = hdr.Clone()
		res, stream := roundTrip(t, relayHTTP, req)
		if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("turn %d: %d %s", turn, res.StatusCode, stream)
		}
		var sc usage.SSEScanner
		sc.Write([]byte(stream))
		if u := sc.Usage(); !u.HaveInput || u.OutputTokens == 0 {
			t.Fatalf("turn %d: stream carried no usage: %+v", turn, u)
		}
		keys = append(keys, res.Header.Get("X-CC-Relay-Key"))
	}
	// One Claude Code session: every turn stays on the key holding its cache.
	if keys[0] == "" || keys[1] != keys[0] || keys[2] != keys[0] {
		t.Fatalf("session moved between keys: %v", keys)
	}
	for i, r := range up.all() {
		h := r.header
		if h.Get("X-Api-Key") != "sk-cc-1" && h.Get("X-Api-Key") != "sk-cc-2" {
			t.Fatalf("request %d: upstream key %q", i, h.Get("X-Api-Key"))
		}
		if !strings.Contains(h.Get("Anthropic-Beta"), "claude-code-20250219") || h.Get("X-Claude-Code-Session-Id") == "" {
			t.Fatalf("request %d: Claude Code headers not forwarded: %v", i, h)
		}
	}
	st := mock.Stats()
	if st.Total.Accepted != 3 || st.Total.Invalid != 0 {
		t.Fatalf("mock upstream stats %+v", st.Total)
	}
}
