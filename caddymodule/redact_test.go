package caddymodule

import (
	"strings"
	"testing"
)

// secretFragments are the pieces of secret an upstream could echo: whole,
// its first and last 12 bytes and more, a window from its middle.
func secretFragments(secret string) []string {
	return []string{
		secret,
		secret[:12], secret[:len(secret)-1], secret[:len(secret)/2+3],
		secret[len(secret)-12:], secret[1:], secret[len(secret)/2-3:],
		secret[5:17],
	}
}

// leaksFragment reports a run of minSecretFragment bytes of secret in s.
func leaksFragment(s, secret string) (string, bool) {
	for i := 0; i+minSecretFragment <= len(secret); i++ {
		if f := secret[i : i+minSecretFragment]; strings.Contains(s, f) {
			return f, true
		}
	}
	return "", false
}

func TestRedactorFragments(t *testing.T) {
	key := "sk-ant-api03-" + strings.Repeat("Zq8x", 20) + "-AAxQ"
	token := "relay-client-token-0123456789"
	r := newRedactor([]string{key, token, "short", "ab"})
	for _, sec := range []string{key, token} {
		for _, f := range secretFragments(sec) {
			in := `{"error":{"message":"bad key ` + f + `; check it"}}`
			out := r.String(in)
			if frag, ok := leaksFragment(out, sec); ok {
				t.Fatalf("fragment %q of a secret left in %q", frag, out)
			}
			if !strings.Contains(out, redacted) || !strings.HasPrefix(out, `{"error":{"message":"bad key `) || !strings.HasSuffix(out, `; check it"}}`) {
				t.Fatalf("text around the secret mangled: %q", out)
			}
		}
	}
	if got := r.String("a short key, ab"); got != "a "+redacted+" key, ab" {
		t.Fatalf("short secret: %q", got)
	}
	if got := r.String("nothing to hide here at all"); got != "nothing to hide here at all" {
		t.Fatalf("clean text changed: %q", got)
	}
	// Redacting before cutting: a reason cut at maxReason holds no part of
	// a key that the upstream echoed across the cut.
	msg := strings.Repeat("x", maxReason-20) + key
	if frag, ok := leaksFragment(truncate(r.String(msg), maxReason), key); ok {
		t.Fatalf("cut reason leaks %q", frag)
	}
	if frag, ok := leaksFragment(r.String(truncate(msg, maxReason)), key); ok {
		t.Fatalf("cut-then-redacted reason leaks %q", frag)
	}
}

func TestTruncateKeepsUTF8(t *testing.T) {
	if got := truncate("aé", 2); got != "a" {
		t.Fatalf("truncate split a rune: %q", got)
	}
	if got := truncate("abc", 5); got != "abc" {
		t.Fatalf("short string changed: %q", got)
	}
}
