package mockanthropic

import "time"

// unitsPerToken scales token amounts so that refilling at limit/60 tokens per
// second is an exact integer per nanosecond: a bucket whose per-minute limit is
// L gains exactly L units every nanosecond, so the refill math never rounds.
const unitsPerToken = int64(time.Minute)

// MaxLimit is the largest per-minute limit the mock enforces. Larger limits
// are clamped to it so that a full bucket (limit × 6·10¹⁰ units) fits in int64.
const MaxLimit = 100_000_000

// bucket is a continuous-refill token bucket: capacity = limit tokens, refill =
// limit/60 tokens per second. It is not safe for concurrent use; the Server's
// mutex guards it.
type bucket struct {
	limit int64     // tokens per minute and capacity in tokens; > 0
	level int64     // units; negative after charges beyond what was available
	last  time.Time // when level was last brought up to date
}

// newBucket returns a full bucket, or nil for limit <= 0 (unlimited).
func newBucket(limit int64, now time.Time) *bucket {
	if limit <= 0 {
		return nil
	}
	if limit > MaxLimit {
		limit = MaxLimit
	}
	return &bucket{limit: limit, level: limit * unitsPerToken, last: now}
}

func (b *bucket) capacity() int64 { return b.limit * unitsPerToken }

// advance refills the bucket for the time elapsed since the last update.
// A clock that stands still or goes backwards refills nothing.
func (b *bucket) advance(now time.Time) {
	if !now.After(b.last) {
		return
	}
	elapsed := int64(now.Sub(b.last))
	b.last = now
	need := b.capacity() - b.level
	if need <= 0 {
		return
	}
	// Compare before multiplying: elapsed × limit could overflow after a long idle spell.
	if elapsed >= ceilDiv(need, b.limit) {
		b.level = b.capacity()
		return
	}
	b.level += elapsed * b.limit
}

// take removes n tokens; the level may go negative (debt that refill repays).
func (b *bucket) take(n int64) { b.level -= n * unitsPerToken }

// tokens is the whole number of tokens available, never negative.
func (b *bucket) tokens() int64 {
	if b.level <= 0 {
		return 0
	}
	return b.level / unitsPerToken
}

// until is how long until the level reaches at least units, 0 if it already has.
func (b *bucket) until(units int64) time.Duration {
	if b.level >= units {
		return 0
	}
	return time.Duration(ceilDiv(units-b.level, b.limit))
}

// untilFull is how long until the bucket is back at capacity.
func (b *bucket) untilFull() time.Duration { return b.until(b.capacity()) }

// ceilDiv divides rounding up; a and b are positive.
func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }
