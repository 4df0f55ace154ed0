package caddymodule

import (
	"net/http"
	"testing"
	"time"
)

// TestSpendCapReadsDateAndTime: the date and the time of day the upstream
// names are when the organization is parked until; a 429 about rate limits
// is no spend cap.
func TestSpendCapReadsDateAndTime(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	body := func(msg string) []byte {
		return []byte(`{"type":"error","error":{"type":"invalid_request_error","message":"` + msg + `"}}`)
	}
	for _, tc := range []struct {
		msg    string
		header http.Header
		until  time.Time
		capped bool
	}{
		{"You will regain access on 2026-12-01 at 13:45 UTC.", http.Header{}, time.Date(2026, 12, 1, 13, 45, 0, 0, time.UTC), true},
		{"You will regain access on 2026-12-01.", http.Header{}, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), true},
		{"You will regain access on 2026-12-01 at noon", http.Header{}, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), true},
		{"You will regain access on 2026-11-01 at 13:45 UTC.", http.Header{}, time.Time{}, true},
		{"You have reached your specified API usage limits.", http.Header{}, time.Time{}, true},
		{"You will regain access on 2026-12-01 at 13:45 UTC.", http.Header{"Retry-After": {"5"}}, time.Time{}, false},
		{"Number of request tokens has exceeded your per-minute rate limit", http.Header{}, time.Time{}, false},
	} {
		until, capped := spendCap(tc.header, body(tc.msg), now)
		if capped != tc.capped || !until.Equal(tc.until) {
			t.Errorf("%q: (%v, %v), want (%v, %v)", tc.msg, until, capped, tc.until, tc.capped)
		}
	}
}
