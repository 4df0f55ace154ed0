package caddymodule

import (
	"net/http"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/anthropic"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// What the upstream sends and the client expects back is Anthropic's wire
// format, which lives in internal/anthropic. These are the handler's only
// doors to it: each names what the handler uses it for, and rateLimits
// passes the pool's cap.

// writeError answers in the Anthropic error JSON shape. The handler writes
// its own errors instead of returning a caddyhttp.Error, which would go to
// the server's handle_errors routes (or Caddy's empty default answer):
// clients such as Claude Code and the Anthropic SDKs read the error type
// and message from this shape, and retry 429 by its Retry-After, as they
// do for the upstream's own errors.
func writeError(w http.ResponseWriter, status int, typ, msg string, retryAfter int) {
	anthropic.WriteError(w, status, typ, msg, retryAfter)
}

// errorMessage is the reason a key was disabled, from an upstream error
// body (anthropic.ErrorReason). The caller redacts, then bounds it (maxReason);
// the body itself is bounded by maxHeld.
func errorMessage(body []byte) string { return anthropic.ErrorReason(body) }

// spendCap recognises a 429 about the organization's spend cap, and the
// date access returns if the upstream names it (anthropic.SpendCap): that is
// when the organization is parked until.
func spendCap(h http.Header, body []byte, now time.Time) (time.Time, bool) {
	return anthropic.SpendCap(h, body, now)
}

// rateLimits is what a response's headers say of its key's organization,
// as the plain values the pool takes; delays and resets are capped at the
// longest cooldown the pool would apply (keypool.MaxCooldown).
func rateLimits(h http.Header, now time.Time) keypool.RateLimitHeaders {
	return anthropic.ParseRateLimits(h, now, keypool.MaxCooldown)
}
