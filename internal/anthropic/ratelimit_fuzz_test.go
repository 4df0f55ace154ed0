package anthropic

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// FuzzParseRateLimits feeds arbitrary header values to the rate-limit header
// parser: it must never panic, never report a negative count or a negative
// retry-after, never a delay or reset beyond maxWait, and must round-trip
// well-formed values. (keypool's FuzzObserveHeaders feeds the values this
// parser can return to a pool.)
func FuzzParseRateLimits(f *testing.F) {
	f.Add("50", "49", "2026-11-27T10:00:30Z", "40000", "39000", "8000", "0", "30", "org-1")
	f.Add("", "", "", "", "", "", "", "", "")
	f.Add("-1", "x", "not a time", "1e9", "99999999999999999999", " 7 ", "0", "Wed, 21 Oct 2026 07:28:00 GMT", strings.Repeat("o", 300))
	f.Add("10", "0", "2026-11-27T10:00:30+02:00", "0", "0", "0", "0", "1.5", "")
	f.Add("1", "0", "9999-12-31T23:59:59Z", "99999999999999999999", "0", "1", "0", "Fri, 31 Dec 9999 23:59:59 GMT", "o")
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, rl, rr, reset, il, ir, ol, orr, retry, org string) {
		h := http.Header{}
		set := func(k, v string) {
			if v != "" {
				h.Set(k, v)
			}
		}
		set("Anthropic-Ratelimit-Requests-Limit", rl)
		set("Anthropic-Ratelimit-Requests-Remaining", rr)
		set("Anthropic-Ratelimit-Requests-Reset", reset)
		set("Anthropic-Ratelimit-Input-Tokens-Limit", il)
		set("Anthropic-Ratelimit-Input-Tokens-Remaining", ir)
		set("Anthropic-Ratelimit-Output-Tokens-Limit", ol)
		set("Anthropic-Ratelimit-Output-Tokens-Remaining", orr)
		set("Retry-After", retry)
		set("Anthropic-Organization-Id", org)
		p := ParseRateLimits(h, now, maxWait)
		for _, l := range []Limit{p.Requests, p.InputTokens, p.OutputTokens, p.Tokens} {
			if l.Limit < -1 || l.Remaining < -1 {
				t.Fatalf("negative count %+v", l)
			}
		}
		if p.RetryAfter < 0 || (!p.HasRetryAfter && p.RetryAfter != 0) {
			t.Fatalf("retry-after %v (has %v)", p.RetryAfter, p.HasRetryAfter)
		}
		if p.RetryAfter > maxWait {
			t.Fatalf("retry-after %v beyond the cap", p.RetryAfter)
		}
		for _, l := range []Limit{p.Requests, p.InputTokens, p.OutputTokens, p.Tokens} {
			if l.Reset.After(now.Add(maxWait)) {
				t.Fatalf("reset %v beyond the cap", l.Reset)
			}
		}
		if len(p.OrganizationID) > 128 {
			t.Fatalf("organization id not bounded: %d bytes", len(p.OrganizationID))
		}
		if strings.TrimSpace(rl) == "50" && p.Requests.Limit != 50 {
			t.Fatalf("requests limit %d, want 50", p.Requests.Limit)
		}
	})
}
