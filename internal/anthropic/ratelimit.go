package anthropic

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Limit is one anthropic-ratelimit-<kind>-{limit,remaining,reset} triple.
// Absent values are -1 (Limit, Remaining) and the zero time (Reset).
type Limit struct {
	Limit     int64
	Remaining int64
	Reset     time.Time
}

// Present reports whether any part of the triple was sent.
func (l Limit) Present() bool { return l.Limit >= 0 || l.Remaining >= 0 || !l.Reset.IsZero() }

// RateLimitHeaders is what an upstream response says about its key's
// organization, parsed into plain values (keypool takes them as they are).
type RateLimitHeaders struct {
	Requests     Limit
	InputTokens  Limit
	OutputTokens Limit
	// Tokens is the most restrictive token limit currently in effect.
	Tokens Limit
	// RetryAfter is the upstream's retry-after (seconds or HTTP date),
	// valid when HasRetryAfter.
	RetryAfter    time.Duration
	HasRetryAfter bool
	// OrganizationID is anthropic-organization-id.
	OrganizationID string
}

const hdrPrefix = "Anthropic-Ratelimit-"

// ParseRateLimits reads the rate-limit headers of an upstream response. It
// never fails: malformed values are treated as absent. A retry-after or a
// reset further ahead than maxWait is capped to it rather than dropped: a
// far date still means "not now".
func ParseRateLimits(h http.Header, now time.Time, maxWait time.Duration) RateLimitHeaders {
	out := RateLimitHeaders{
		Requests:     parseLimit(h, "Requests-"),
		InputTokens:  parseLimit(h, "Input-Tokens-"),
		OutputTokens: parseLimit(h, "Output-Tokens-"),
		Tokens:       parseLimit(h, "Tokens-"),
	}
	out.OrganizationID = strings.TrimSpace(h.Get("Anthropic-Organization-Id"))
	if len(out.OrganizationID) > 128 {
		out.OrganizationID = out.OrganizationID[:128]
	}
	if ra := strings.TrimSpace(h.Get("Retry-After")); ra != "" {
		if secs, err := strconv.ParseFloat(ra, 64); err == nil || errors.Is(err, strconv.ErrRange) {
			if secs >= 0 { // NaN and negative numbers are no delay at all
				out.RetryAfter = maxWait
				if secs < maxWait.Seconds() {
					out.RetryAfter = time.Duration(secs * float64(time.Second))
				}
				out.HasRetryAfter = true
			}
		} else if t, err := http.ParseTime(ra); err == nil {
			out.RetryAfter = min(max(t.Sub(now), 0), maxWait)
			out.HasRetryAfter = true
		}
	}
	for _, l := range []*Limit{&out.Requests, &out.InputTokens, &out.OutputTokens, &out.Tokens} {
		// A reset beyond the cap is capped: its UnixNano would not even
		// fit an int64 past the year 2262.
		if horizon := now.Add(maxWait); l.Reset.After(horizon) {
			l.Reset = horizon
		}
	}
	return out
}

// limitKeys are the canonical header names per kind, built once so that
// parsing a response allocates nothing.
var limitKeys = func() map[string][3]string {
	m := map[string][3]string{}
	for _, k := range []string{"Requests-", "Input-Tokens-", "Output-Tokens-", "Tokens-"} {
		m[k] = [3]string{hdrPrefix + k + "Limit", hdrPrefix + k + "Remaining", hdrPrefix + k + "Reset"}
	}
	return m
}()

func parseLimit(h http.Header, kind string) Limit {
	keys, ok := limitKeys[kind]
	if !ok {
		keys = [3]string{hdrPrefix + kind + "Limit", hdrPrefix + kind + "Remaining", hdrPrefix + kind + "Reset"}
	}
	l := Limit{Limit: parseCount(hget(h, keys[0])), Remaining: parseCount(hget(h, keys[1]))}
	if v := strings.TrimSpace(hget(h, keys[2])); v != "" {
		if t, err := time.Parse(time.RFC3339, v); err == nil {
			l.Reset = t
		}
	}
	return l
}

// hget is h.Get for a key already in canonical form.
func hget(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func parseCount(v string) int64 {
	v = strings.TrimSpace(v)
	if v == "" {
		return -1
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if errors.Is(err, strconv.ErrRange) && n > 0 {
		// Beyond int64: capped rather than taken as absent, like any large
		// value (keypool bounds what it learns from one).
		return math.MaxInt64
	}
	if err != nil || n < 0 {
		return -1
	}
	return n
}
