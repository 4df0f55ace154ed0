package anthropic

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// maxWait is the cap the relay passes (keypool.MaxCooldown).
const maxWait = 24 * time.Hour

// hdr builds response headers from name/value pairs.
func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

func TestParseRateLimits(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	h := hdr(
		"anthropic-ratelimit-requests-limit", "50",
		"anthropic-ratelimit-requests-remaining", " 49 ",
		"anthropic-ratelimit-requests-reset", "2025-06-01T12:00:02Z",
		"anthropic-ratelimit-input-tokens-limit", "40000",
		"anthropic-ratelimit-input-tokens-remaining", "-5", // malformed
		"anthropic-ratelimit-input-tokens-reset", "soon", // malformed
		"anthropic-ratelimit-output-tokens-remaining", "abc",
		"anthropic-organization-id", "  org-123  ",
		"retry-after", "7",
	)
	got := ParseRateLimits(h, now, maxWait)
	if got.Requests.Limit != 50 || got.Requests.Remaining != 49 || !got.Requests.Reset.Equal(now.Add(2*time.Second)) {
		t.Fatalf("requests %+v", got.Requests)
	}
	if got.InputTokens.Limit != 40000 || got.InputTokens.Remaining != -1 || !got.InputTokens.Reset.IsZero() {
		t.Fatalf("input %+v: malformed values must read as absent", got.InputTokens)
	}
	if got.OutputTokens.Present() || got.Tokens.Present() {
		t.Fatalf("absent triples reported present: %+v %+v", got.OutputTokens, got.Tokens)
	}
	if !got.InputTokens.Present() {
		t.Fatal("a triple with only a limit is present")
	}
	if got.OrganizationID != "org-123" {
		t.Fatalf("org %q", got.OrganizationID)
	}
	if !got.HasRetryAfter || got.RetryAfter != 7*time.Second {
		t.Fatalf("retry-after %v %v", got.HasRetryAfter, got.RetryAfter)
	}

	for _, c := range []struct {
		v    string
		ok   bool
		want time.Duration
	}{
		{"1.5", true, 1500 * time.Millisecond},
		{"0", true, 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), true, 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), true, 0},
		{"-3", false, 0},
		// Far delays are capped, not ignored, and never overflow.
		{"1e12", true, maxWait},
		{"1e400", true, maxWait},
		{"86401", true, maxWait},
		{"NaN", false, 0},
		{"Thu, 31 Dec 9999 23:59:59 GMT", true, maxWait},
		{"tomorrow", false, 0},
		{"", false, 0},
	} {
		got := ParseRateLimits(hdr("Retry-After", c.v), now, maxWait)
		if got.HasRetryAfter != c.ok || got.RetryAfter != c.want {
			t.Errorf("retry-after %q: %v %v, want %v %v", c.v, got.HasRetryAfter, got.RetryAfter, c.ok, c.want)
		}
	}
	long := strings.Repeat("x", 500)
	if got := ParseRateLimits(hdr("anthropic-organization-id", long), now, maxWait); len(got.OrganizationID) != 128 {
		t.Fatalf("org id not bounded: %d bytes", len(got.OrganizationID))
	}
	empty := ParseRateLimits(http.Header{}, now, maxWait)
	if empty.Requests.Present() || empty.HasRetryAfter || empty.OrganizationID != "" {
		t.Fatalf("empty headers parsed as %+v", empty)
	}
}
