package keypool

import (
	"testing"
	"time"
)

// These are unit tests of the unexported bucket type itself; the pool's
// behaviour is tested through its public API elsewhere.

func TestBucketContinuousRefill(t *testing.T) {
	var b bucket
	now := t0.UnixNano()
	b.refill(now, 60)
	if !b.init || b.level != 60 {
		t.Fatalf("a new bucket starts full: level %v init %v", b.level, b.init)
	}
	b.charge(60)
	if b.admits(60, 1) {
		t.Fatal("an empty bucket admitted a request")
	}
	// 60/min refills one per second, continuously.
	steps := []struct {
		after time.Duration
		want  float64
	}{{500 * time.Millisecond, 0.5}, {500 * time.Millisecond, 1}, {29 * time.Second, 30}, {45 * time.Second, 60}}
	for _, s := range steps {
		now += int64(s.after)
		b.refill(now, 60)
		if !near(b.level, s.want, 1e-9) {
			t.Fatalf("after +%v level %v, want %v", s.after, b.level, s.want)
		}
	}
	// Time never runs backwards and the level never exceeds capacity.
	b.charge(10)
	b.refill(now-int64(time.Minute), 60)
	if b.level != 50 {
		t.Fatalf("refill with an earlier time changed the level to %v", b.level)
	}
	// A capacity lowered by a reload clamps the level.
	b.refill(now, 20)
	if b.level != 20 {
		t.Fatalf("level %v above the new capacity 20", b.level)
	}
	// An unknown capacity leaves everything alone and admits.
	var u bucket
	u.refill(now, 0)
	if u.init || !u.admits(0, 1e9) || u.wait(0, 1e9, 0) != 0 || u.headroom(0) != 1 {
		t.Fatalf("a bucket without a limit must admit: %+v", u)
	}
}

func TestBucketOversizedRequestLeavesDebt(t *testing.T) {
	var b bucket
	now := t0.UnixNano()
	b.refill(now, 100)
	b.charge(1)
	if b.admits(100, 250) {
		t.Fatal("a request larger than the bucket was admitted while it was not full")
	}
	if w := time.Duration(b.wait(100, 250, 0)); w != 600*time.Millisecond {
		t.Fatalf("wait for full %v, want 600ms", w)
	}
	now += int64(600 * time.Millisecond)
	b.refill(now, 100)
	if !b.admits(100, 250) {
		t.Fatal("a full bucket must admit an oversized request")
	}
	b.charge(250)
	if b.level != -150 {
		t.Fatalf("level %v, want debt -150", b.level)
	}
	if b.admits(100, 1) {
		t.Fatal("a bucket in debt admitted a request")
	}
	// Paying the debt back and refilling to 1 takes 151 tokens at 100/min.
	if w := time.Duration(b.wait(100, 1, 0)); w != 90600*time.Millisecond {
		t.Fatalf("wait %v, want 90.6s", w)
	}
	if h := b.headroom(100); h != 0 {
		t.Fatalf("headroom in debt %v, want 0", h)
	}
}
