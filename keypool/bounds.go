package keypool

import (
	"math"
	"time"
)

// Bounds on everything the upstream (or a client) can push into the pool's
// state. One response, header or date must never put a budget out of use
// for longer than a limit's own period would, nor poison what the pool
// learns for every organization. README.md ("Bounds and safety limits")
// lists them for operators.
const (
	// MaxCooldown caps a cooldown from any source: retry-after (seconds or
	// HTTP date), anthropic-ratelimit-*-reset, default_cooldown. The
	// upstream's limits are per minute; a day is plenty.
	MaxCooldown = 24 * time.Hour
	// MaxPark caps how long an organization stays parked for its spend
	// cap, whatever date the upstream names or spend_cap_park says: a
	// spend cap resets monthly at the latest.
	MaxPark = 31 * 24 * time.Hour

	// maxLearnedRPM and maxLearnedTPM cap limits learned from
	// anthropic-ratelimit-*-limit (requests, and input or output tokens per
	// minute): far above any published tier, so a bogus header of 10^15
	// cannot make a bucket effectively infinite. Configured limits are the
	// operator's and are not capped here.
	maxLearnedRPM = 1_000_000
	maxLearnedTPM = 100_000_000

	// inputSlack is what the upstream may count on top of the body's own
	// bytes: the system prompt it adds for tool use is a few hundred
	// tokens. A token is at least about one byte of the body, so a
	// request's input can hardly exceed bytes + inputSlack tokens.
	inputSlack = 4096
	// maxOutputNoLimit bounds a request's output when its max_tokens is
	// not known (and the bucket's capacity is smaller): above the largest
	// output any Claude model offers.
	maxOutputNoLimit = 1 << 18
	// maxUsageField bounds each usage count of one response before it is
	// added to a key's totals, so that no response can overflow them.
	maxUsageField = 1 << 31
)

var maxLearned = [numKinds]float64{maxLearnedRPM, maxLearnedTPM, maxLearnedTPM}

// learnedLimit is a limit header's value as the pool may believe it.
func learnedLimit(k int, v int64) float64 { return math.Min(float64(v), maxLearned[k]) }

// inputBound is the most input one request can be charged: what its body
// could hold, or the whole bucket (a document referenced by file id holds
// more than its reference's bytes; the bucket's capacity bounds what the
// upstream would admit at once anyway).
func inputBound(bytes int, capacity float64) float64 {
	return math.Max(float64(max(bytes, 0))+inputSlack, capacity)
}

// outputBound is the most output one request can be charged: its
// max_tokens (the upstream never writes more), else the bucket's capacity
// or maxOutputNoLimit, whichever is larger.
func outputBound(maxTokens int, capacity float64) float64 {
	if maxTokens > 0 {
		return float64(maxTokens)
	}
	return math.Max(capacity, maxOutputNoLimit)
}

// floor keeps the bucket at most one capacity in debt: whatever one
// response said, a budget is usable again within two periods.
func (b *bucket) floor(capacity float64) {
	if capacity > 0 && b.init && b.level < -capacity {
		b.level = -capacity
	}
}

// clampTo puts the level into [-capacity, capacity]: what a reload that
// lowers a key's limits does to the budget it had.
func (b *bucket) clampTo(capacity float64) {
	if capacity > 0 && b.init {
		b.level = math.Max(-capacity, math.Min(b.level, capacity))
	}
}

// capUntil turns an upstream time into unix nanoseconds at most d after
// now, without overflowing however far t lies: a date beyond the cap is
// capped, not ignored. Times not after now give now.
func capUntil(now int64, t time.Time, d time.Duration) int64 {
	if t.IsZero() {
		return now
	}
	wait := t.Sub(time.Unix(0, now)) // saturates instead of overflowing
	if wait <= 0 {
		return now
	}
	return now + int64(min(wait, d))
}

// capUsage bounds each field of an upstream usage report.
func capUsage(u Usage) Usage {
	c := func(v int64) int64 { return min(max(v, 0), maxUsageField) }
	u.InputTokens = c(u.InputTokens)
	u.CacheCreationInputTokens = c(u.CacheCreationInputTokens)
	u.CacheReadInputTokens = c(u.CacheReadInputTokens)
	u.OutputTokens = c(u.OutputTokens)
	return u
}
