package keypool

import (
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
// organization.
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

// ParseHeaders reads the rate-limit headers of an upstream response. It
// never fails: malformed values are treated as absent.
func ParseHeaders(h http.Header, now time.Time) RateLimitHeaders {
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
		if secs, err := strconv.ParseFloat(ra, 64); err == nil {
			if secs >= 0 && secs < 1e7 {
				out.RetryAfter = time.Duration(secs * float64(time.Second))
				out.HasRetryAfter = true
			}
		} else if t, err := http.ParseTime(ra); err == nil {
			out.RetryAfter = max(t.Sub(now), 0)
			out.HasRetryAfter = true
		}
	}
	return out
}

func parseLimit(h http.Header, kind string) Limit {
	l := Limit{Limit: parseCount(h.Get(hdrPrefix + kind + "Limit")), Remaining: parseCount(h.Get(hdrPrefix + kind + "Remaining"))}
	if v := strings.TrimSpace(h.Get(hdrPrefix + kind + "Reset")); v != "" {
		if t, err := time.Parse(time.RFC3339, v); err == nil {
			l.Reset = t
		}
	}
	return l
}

func parseCount(v string) int64 {
	v = strings.TrimSpace(v)
	if v == "" {
		return -1
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	return n
}
