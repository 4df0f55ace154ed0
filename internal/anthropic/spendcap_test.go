package anthropic

import (
	"net/http"
	"testing"
	"time"
)

func TestSpendCap(t *testing.T) {
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	body := func(msg string) []byte { return ErrorBody("rate_limit_error", msg) }
	until, ok := SpendCap(http.Header{}, body("You have reached your specified API usage limits. You will regain access on 2026-12-01 at 06:30 UTC."), now)
	if !ok || !until.Equal(time.Date(2026, 12, 1, 6, 30, 0, 0, time.UTC)) {
		t.Fatalf("dated spend cap: %v %v", until, ok)
	}
	if until, ok := SpendCap(http.Header{}, body("Your organization reached its monthly spend limit."), now); !ok || !until.IsZero() {
		t.Fatalf("undated spend cap: %v %v", until, ok)
	}
	if _, ok := SpendCap(http.Header{}, body("You will regain access on 2026-01-01 at 00:00 UTC."), now); !ok {
		t.Fatal("a past date still says spend cap")
	}
	if _, ok := SpendCap(http.Header{"Retry-After": {"5"}}, body("usage limit"), now); ok {
		t.Fatal("a 429 with retry-after is a rate limit")
	}
	if _, ok := SpendCap(http.Header{}, body("Number of request tokens has exceeded your per-minute rate limit"), now); ok {
		t.Fatal("a rate limit taken for a spend cap")
	}
}
