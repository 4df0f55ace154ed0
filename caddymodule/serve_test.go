package caddymodule

import (
	"testing"

	"github.com/cc-relay/caddy-cc-relay/internal/reqscan"
)

// TestSessionHashIsFixed pins sessionHash's values. Instances sharing a pool
// on Redis find a conversation's pin by this hash, so each of its three
// sources must hash the same in every process: a per-process seed (as
// hash/maphash has) fails this test, and a conversation moving between
// instances would lose its key.
func TestSessionHashIsFixed(t *testing.T) {
	body := []byte(`{"model":"m","metadata":{"user_id":"user_x_account_y_session_0e6c7a2b"},` +
		`"system":"S","messages":[{"role":"user","content":"hi"}]}`)
	info, err := reqscan.Scan(body)
	if err != nil {
		t.Fatal(err)
	}
	noSession, err := reqscan.Scan([]byte(`{"system":"S","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, client, header string
		info                 *reqscan.Info
		want                 uint64
	}{
		{"header", "alice", "9b2f", &info, 0x10cfed89f54c5a2e},
		{"metadata session", "alice", "", &info, 0x35150df840445142},
		{"prefix", "alice", "", &noSession, 0xf4bbaa524a626451},
		{"prefix, other client", "bob", "", &noSession, 0xf05c63667d4175ac},
	} {
		if got := sessionHash(tt.client, tt.header, tt.info); got != tt.want {
			t.Errorf("%s: sessionHash = %#x, want %#x", tt.name, got, tt.want)
		}
	}
}
