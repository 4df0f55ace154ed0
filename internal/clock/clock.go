// Package clock lets the key pool and the handler read time and wait through
// an interface, so tests move time by hand instead of sleeping.
package clock

import (
	"sync"
	"sync/atomic"
	"time"
)

// Clock tells the time and makes timers.
type Clock interface {
	Now() time.Time
	NewTimer(d time.Duration) Timer
	// NewTimerAt fires at a point in time rather than after a duration:
	// a waiter that read the time, let go of a lock and only then arms
	// its timer must not wake late by however far time moved meanwhile.
	NewTimerAt(at time.Time) Timer
}

// Timer is the part of *time.Timer the pool uses.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}

// Real is the wall clock.
type Real struct{}

// anchor is the last wall-clock reading Real.Now extends on the monotonic
// clock: one vDSO read per call instead of time.Now's two. It is re-read
// every second so that the wall time never drifts from the system's (NTP
// steps, suspend) by more than a second's worth.
var anchor atomic.Pointer[time.Time]

func init() {
	t := time.Now()
	anchor.Store(&t)
}

// Now returns the current time.
func (Real) Now() time.Time {
	a := anchor.Load()
	d := time.Since(*a)
	if d < 0 || d > time.Second {
		t := time.Now()
		anchor.Store(&t)
		return t
	}
	return a.Add(d)
}

// NewTimer returns a *time.Timer; it holds no goroutine.
func (Real) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

// NewTimerAt returns a *time.Timer that fires at at.
func (r Real) NewTimerAt(at time.Time) Timer { return r.NewTimer(time.Until(at)) }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time { return r.t.C }
func (r realTimer) Stop() bool          { return r.t.Stop() }

// Fake is a manually advanced clock for tests. Its zero value is not usable;
// use NewFake.
type Fake struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
	// Waiters counts timers created and not yet fired or stopped, so a test
	// can wait until code under test has started waiting (see BlockUntil).
	cond *sync.Cond
}

// NewFake returns a fake clock set to t.
func NewFake(t time.Time) *Fake {
	f := &Fake{now: t}
	f.cond = sync.NewCond(&f.mu)
	return f
}

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Advance moves time forward by d and fires every timer that is due.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	now := f.now
	kept := f.timers[:0]
	var due []*fakeTimer
	for _, t := range f.timers {
		if !t.when.After(now) {
			due = append(due, t)
		} else {
			kept = append(kept, t)
		}
	}
	f.timers = kept
	f.mu.Unlock()
	for _, t := range due {
		t.ch <- now
	}
}

// NewTimer returns a timer that fires when the fake time reaches now+d.
func (f *Fake) NewTimer(d time.Duration) Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.timerAt(f.now.Add(d))
}

// NewTimerAt returns a timer that fires when the fake time reaches at (at
// once when it has).
func (f *Fake) NewTimerAt(at time.Time) Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.timerAt(at)
}

// timerAt arms a timer for at; f.mu is held.
func (f *Fake) timerAt(at time.Time) Timer {
	t := &fakeTimer{f: f, when: at, ch: make(chan time.Time, 1)}
	if !at.After(f.now) {
		t.ch <- f.now
		return t
	}
	f.timers = append(f.timers, t)
	f.cond.Broadcast()
	return t
}

// BlockUntil waits until at least n timers are pending: code under test has
// reached its wait. It is bounded by the caller's own test timeout.
func (f *Fake) BlockUntil(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.timers) < n {
		f.cond.Wait()
	}
}

// Pending returns how many timers are waiting to fire.
func (f *Fake) Pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.timers)
}

type fakeTimer struct {
	f    *Fake
	when time.Time
	ch   chan time.Time
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	for i, o := range t.f.timers {
		if o == t {
			t.f.timers = append(t.f.timers[:i], t.f.timers[i+1:]...)
			t.f.cond.Broadcast()
			return true
		}
	}
	return false
}
