package keypool

import "github.com/cc-relay/caddy-cc-relay/internal/anthropic"

// The pool learns from what each response says about its organization's
// limits, but it takes that as plain values (counts, times, a duration) and
// never reads HTTP: the caller parses a response's headers with
// anthropic.ParseRateLimits and hands the result to
// Reservation.ObserveHeaders. The types are aliases rather than
// copies so that the parser and the pool share one definition and cannot
// drift; they live with the parser because what a field means (which
// header, what "absent" looks like) is the wire format's. The caps stay
// the pool's: the caller passes MaxCooldown.

// RateLimitHeaders is what an upstream response says about its key's
// organization: one Limit per kind, the retry-after and the organization
// id, as anthropic.ParseRateLimits reads them.
type RateLimitHeaders = anthropic.RateLimitHeaders

// Limit is one kind's limit, remaining and reset; absent values are -1
// (Limit, Remaining) and the zero time (Reset).
type Limit = anthropic.Limit
