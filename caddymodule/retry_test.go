package caddymodule

import (
	"context"
	"testing"
)

// TestRetryDecision walks the retry policy's reasons one by one.
func TestRetryDecision(t *testing.T) {
	live := context.Background()
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name       string
		overloaded bool
		ctx        context.Context
		status     int
		attempt    int
		want       retryAction
	}{
		{"success passes on", false, live, 200, 1, passOn},
		{"client error passes on", false, live, 400, 1, passOn},
		{"429 tries another organization", false, live, 429, 1, retryOtherOrg},
		{"401 tries another key", false, live, 401, 1, retryOtherKey},
		{"403 tries another key", false, live, 403, 3, retryOtherKey},
		{"429 past retries is answered by the relay", false, live, 429, 4, answerHeld},
		{"401 past retries is answered by the relay", false, live, 401, 4, answerHeld},
		{"529 passes on without retry_overloaded", false, live, 529, 1, passOn},
		{"500 passes on without retry_overloaded", false, live, 500, 1, passOn},
		{"529 tries another key with retry_overloaded", true, live, 529, 1, retryOtherKey},
		{"503 tries another key with retry_overloaded", true, live, 503, 3, retryOtherKey},
		{"529 past retries passes on", true, live, 529, 4, passOn},
		{"429 for a client that left", false, gone, 429, 1, clientLeft},
		{"529 for a client that left", true, gone, 529, 2, clientLeft},
		{"429 past retries for a client that left", false, gone, 429, 4, answerHeld},
		{"success for a client that left", false, gone, 200, 1, passOn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &Handler{RetryOverloaded: tc.overloaded, retries: 3}
			if got := h.retryDecision(tc.ctx, tc.status, tc.attempt); got != tc.want {
				t.Fatalf("retryDecision(%d, attempt %d) = %d, want %d", tc.status, tc.attempt, got, tc.want)
			}
			if got := h.retryDecision(tc.ctx, tc.status, tc.attempt).holds(); got != (tc.want != passOn) {
				t.Fatalf("holds() = %v for %d", got, tc.want)
			}
		})
	}
}
