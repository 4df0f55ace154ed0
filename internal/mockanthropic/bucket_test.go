package mockanthropic

import (
	"testing"
	"time"
)

func TestBucketRefill(t *testing.T) {
	b := newBucket(60, t0)
	if got := b.tokens(); got != 60 {
		t.Fatalf("new bucket has %d tokens, want full 60", got)
	}
	b.take(60)
	if got := b.tokens(); got != 0 {
		t.Fatalf("after taking all: %d tokens", got)
	}
	// 60 per minute is exactly 1 per second.
	b.advance(t0.Add(time.Second))
	if b.level != unitsPerToken {
		t.Fatalf("after 1s level = %d units, want exactly 1 token (%d)", b.level, unitsPerToken)
	}
	b.advance(t0.Add(1500 * time.Millisecond))
	if got := b.tokens(); got != 1 {
		t.Fatalf("after 1.5s: %d whole tokens, want 1", got)
	}
	// A clock going backwards refills nothing and takes nothing back.
	before := b.level
	b.advance(t0)
	if b.level != before {
		t.Fatalf("clock going backwards changed the level")
	}
	// Refill stops at capacity.
	b.advance(t0.Add(time.Hour))
	if got := b.tokens(); got != 60 {
		t.Fatalf("after an hour: %d tokens, want capacity 60", got)
	}
}

func TestBucketDebtAndWaits(t *testing.T) {
	b := newBucket(60, t0)
	b.take(100) // e.g. output beyond what was left: 40 tokens of debt
	if got := b.tokens(); got != 0 {
		t.Fatalf("in debt: %d tokens, want 0", got)
	}
	if got := b.until(unitsPerToken); got != 41*time.Second {
		t.Fatalf("until 1 token = %v, want 41s", got)
	}
	if got := b.untilFull(); got != 100*time.Second {
		t.Fatalf("until full = %v, want 100s", got)
	}
	b.advance(t0.Add(41 * time.Second))
	if got := b.tokens(); got != 1 {
		t.Fatalf("after 41s: %d tokens, want 1", got)
	}
}

func TestBucketOddLimit(t *testing.T) {
	b := newBucket(7, t0)
	b.take(7)
	// 7 per minute: one token every 60/7 s = 8.571428571…s, rounded up to the ns.
	want := 8571428572 * time.Nanosecond
	if got := b.until(unitsPerToken); got != want {
		t.Fatalf("until 1 token = %v, want %v", got, want)
	}
	b.advance(t0.Add(want - 1))
	if b.tokens() != 0 {
		t.Fatalf("a nanosecond early the token is already there")
	}
	b.advance(t0.Add(want))
	if b.tokens() != 1 {
		t.Fatalf("the token is not there on time")
	}
	b.advance(t0.Add(time.Minute))
	if b.tokens() != 7 {
		t.Fatalf("after a minute: %d tokens, want 7", b.tokens())
	}
}

func TestBucketHugeLimitDoesNotOverflow(t *testing.T) {
	b := newBucket(1e15, t0)
	if b.limit != MaxLimit {
		t.Fatalf("limit %d not clamped to %d", b.limit, MaxLimit)
	}
	b.take(MaxLimit)
	b.advance(t0.Add(1000 * time.Hour))
	if got := b.tokens(); got != MaxLimit {
		t.Fatalf("after a long idle spell: %d tokens, want %d", got, MaxLimit)
	}
	if newBucket(0, t0) != nil || newBucket(-1, t0) != nil {
		t.Fatalf("limit <= 0 must be unlimited (nil bucket)")
	}
}
