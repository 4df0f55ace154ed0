package keypool

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
)

func TestStickyHitStaysOnPinnedKey(t *testing.T) {
	p, _ := newPool(t, Config{Sticky: true, Keys: keys("a", "b", "c")})
	r := acquire(t, p, Request{Model: sonnet, Session: 42})
	if r.Sticky != StickyNew || r.Sticky.String() != "new" {
		t.Fatalf("first request: %v", r.Sticky)
	}
	pinned := r.KeyName()
	// The pinned key has the most in flight; least_loaded would avoid it.
	for i := 0; i < 5; i++ {
		r := acquire(t, p, Request{Model: sonnet, Session: 42})
		if r.Sticky != StickyHit || r.KeyName() != pinned {
			t.Fatalf("request %d: %v on %s, want hit on %s", i, r.Sticky, r.KeyName(), pinned)
		}
	}
	if n := inFlight(p, pinned); n != 6 {
		t.Fatalf("%d in flight on the pinned key", n)
	}
	// No session, or stickiness off: StickyNone.
	if r := acquire(t, p, Request{Model: sonnet}); r.Sticky != StickyNone {
		t.Fatalf("no session: %v", r.Sticky)
	}
	p2, _ := newPool(t, Config{Keys: keys("a", "b")})
	if r := acquire(t, p2, Request{Model: sonnet, Session: 42}); r.Sticky != StickyNone {
		t.Fatalf("sticky off: %v", r.Sticky)
	}
	if n := p2.Snapshot().StickySessions; n != 0 {
		t.Fatalf("sticky off pinned %d sessions", n)
	}
	s := p.Snapshot()
	if s.StickySessions != 1 {
		t.Fatalf("%d sessions pinned", s.StickySessions)
	}
	for _, k := range s.Keys {
		if want := b2i(k.Name == pinned); int64(k.Sticky) != want {
			t.Fatalf("key %s: %d sessions", k.Name, k.Sticky)
		}
	}
}

// When the pinned key cannot take a request, the session moves within its
// cache scope first (its workspace), then anywhere, and is re-pinned.
func TestStickyMovesWithinScopeThenAnywhere(t *testing.T) {
	p, _ := newPool(t, Config{Sticky: true, Keys: []KeyConfig{
		{Name: "w1", Workspace: "W", Limits: Limits{RPM: 1}},
		{Name: "w2", Workspace: "W", Limits: Limits{RPM: 2}},
		{Name: "x", Workspace: "X"},
		{Name: "free"}, // no limit: least_loaded's favourite
	}})
	r := acquireOn(t, p, "w1", Request{Model: sonnet, Session: 7})
	if r.Sticky != StickyNew {
		t.Fatalf("%v", r.Sticky)
	}
	// w1 is out of requests: w2 shares its workspace.
	r = acquire(t, p, Request{Model: sonnet, Session: 7})
	if r.Sticky != StickyScope || r.KeyName() != "w2" {
		t.Fatalf("%v on %s, want scope move to w2", r.Sticky, r.KeyName())
	}
	// Re-pinned to w2.
	r = acquire(t, p, Request{Model: sonnet, Session: 7})
	if r.Sticky != StickyHit || r.KeyName() != "w2" {
		t.Fatalf("%v on %s, want hit on w2", r.Sticky, r.KeyName())
	}
	// The whole workspace is out: anywhere.
	r = acquire(t, p, Request{Model: sonnet, Session: 7})
	if r.Sticky != StickyMoved || (r.KeyName() != "x" && r.KeyName() != "free") {
		t.Fatalf("%v on %s, want moved out of W", r.Sticky, r.KeyName())
	}
	moved := r.KeyName()
	r = acquire(t, p, Request{Model: sonnet, Session: 7})
	if r.Sticky != StickyHit || r.KeyName() != moved {
		t.Fatalf("%v on %s, want hit on %s", r.Sticky, r.KeyName(), moved)
	}
	for o, s := range map[StickyOutcome]string{StickyNone: "none", StickyHit: "hit", StickyScope: "scope", StickyMoved: "moved"} {
		if o.String() != s {
			t.Fatalf("%d.String() = %q", o, o.String())
		}
	}
}

// Without workspaces the cache scope is the organization: a pinned key
// taken out (disabled, excluded) hands over to another key of its org.
func TestStickyScopeIsOrganization(t *testing.T) {
	p, _ := newPool(t, Config{Sticky: true, Keys: []KeyConfig{
		{Name: "a1", Org: "A"}, {Name: "a2", Org: "A"}, {Name: "b1", Org: "B"}, {Name: "b2", Org: "B"},
	}})
	r := acquireOn(t, p, "a1", Request{Model: sonnet, Session: 9})
	r.Disable("revoked")
	for i := 0; i < 4; i++ {
		r = acquire(t, p, Request{Model: sonnet, Session: 9})
		want := StickyHit
		if i == 0 {
			want = StickyScope
		}
		if r.Sticky != want || r.KeyName() != "a2" {
			t.Fatalf("request %d: %v on %s, want %v on a2", i, r.Sticky, r.KeyName(), want)
		}
	}
	// A retry that excluded the organization moves out of it.
	a := &Attempts{}
	a.ExcludeOrg(r)
	r = acquire(t, p, Request{Model: sonnet, Session: 9, Attempts: a})
	if r.Sticky != StickyMoved || (r.KeyName() != "b1" && r.KeyName() != "b2") {
		t.Fatalf("%v on %s, want moved to org B", r.Sticky, r.KeyName())
	}
}

func TestStickyTTLRefreshedOnUse(t *testing.T) {
	p, clk := newPool(t, Config{Sticky: true, StickyTTL: 10 * time.Minute, Keys: keys("a", "b", "c", "d")})
	pinned := acquire(t, p, Request{Model: sonnet, Session: 1}).KeyName()
	for i := 0; i < 3; i++ {
		clk.Advance(9 * time.Minute) // 27 minutes in all: alive because used
		r := acquire(t, p, Request{Model: sonnet, Session: 1})
		if r.Sticky != StickyHit || r.KeyName() != pinned {
			t.Fatalf("after %d×9m: %v on %s", i+1, r.Sticky, r.KeyName())
		}
	}
	clk.Advance(10 * time.Minute)
	if r := acquire(t, p, Request{Model: sonnet, Session: 1}); r.Sticky != StickyNew {
		t.Fatalf("after the TTL: %v, want new", r.Sticky)
	}
	// The default TTL is an hour.
	p2, clk2 := newPool(t, Config{Sticky: true, Keys: keys("a", "b")})
	acquire(t, p2, Request{Model: sonnet, Session: 1})
	clk2.Advance(59 * time.Minute)
	if r := acquire(t, p2, Request{Model: sonnet, Session: 1}); r.Sticky != StickyHit {
		t.Fatalf("within the default TTL: %v", r.Sticky)
	}
	clk2.Advance(time.Hour)
	if r := acquire(t, p2, Request{Model: sonnet, Session: 1}); r.Sticky != StickyNew {
		t.Fatalf("after the default TTL: %v", r.Sticky)
	}
}

func TestStickyMaxSessionsEvictsLRU(t *testing.T) {
	p, _ := newPool(t, Config{Sticky: true, StickyMaxSessions: 3, Keys: keys("a", "b")})
	pinned := func(s uint64) bool {
		p.st.mu.Lock()
		defer p.st.mu.Unlock()
		_, ok := p.st.sticky.idx[s]
		return ok
	}
	for s := uint64(1); s <= 3; s++ {
		acquire(t, p, Request{Model: sonnet, Session: s})
	}
	acquire(t, p, Request{Model: sonnet, Session: 1}) // 2 is now the least recently used
	acquire(t, p, Request{Model: sonnet, Session: 4})
	if pinned(2) || !pinned(1) || !pinned(3) || !pinned(4) {
		t.Fatalf("pins 1..4: %v %v %v %v, want 2 evicted", pinned(1), pinned(2), pinned(3), pinned(4))
	}
	if n := p.Snapshot().StickySessions; n != 3 {
		t.Fatalf("%d sessions, want 3", n)
	}
	if r := acquire(t, p, Request{Model: sonnet, Session: 3}); r.Sticky != StickyHit {
		t.Fatalf("session 3: %v", r.Sticky)
	}
	if r := acquire(t, p, Request{Model: sonnet, Session: 2}); r.Sticky != StickyNew {
		t.Fatalf("evicted session 2: %v", r.Sticky)
	}
	// 1 was least recently used.
	if pinned(1) || !pinned(3) || !pinned(4) || !pinned(2) {
		t.Fatal("want 1 evicted after pinning 2 again")
	}
	var total int
	for _, k := range p.Snapshot().Keys {
		total += k.Sticky
	}
	if total != 3 {
		t.Fatalf("per-key sticky counts sum to %d, want 3", total)
	}
}

func TestStickyExpiredEntriesRecycled(t *testing.T) {
	p, clk := newPool(t, Config{Sticky: true, StickyTTL: time.Minute, Keys: keys("a")})
	for s := uint64(1); s <= 100; s++ {
		acquire(t, p, Request{Model: sonnet, Session: s}).Settle(ok200())
	}
	clk.Advance(2 * time.Minute)
	for s := uint64(101); s <= 200; s++ {
		acquire(t, p, Request{Model: sonnet, Session: s}).Settle(ok200())
	}
	p.st.mu.Lock()
	n, slots := p.st.sticky.len(), len(p.st.sticky.entries)
	p.st.mu.Unlock()
	if n != 100 || slots != 100 {
		t.Fatalf("%d sessions in %d slots, want 100 in 100 (expired ones reused)", n, slots)
	}
	if k := p.Snapshot().Keys[0]; k.Sticky != 100 {
		t.Fatalf("key counts %d sessions", k.Sticky)
	}
}

// stickyBytesPerSession pins n sessions and measures the heap they hold.
func stickyBytesPerSession(tb testing.TB, n int) float64 {
	st := NewState(clock.NewFake(t0))
	p, err := newPoolOn(st, Config{Sticky: true, StickyMaxSessions: n, Keys: keys("a", "b", "c", "d")})
	if err != nil {
		tb.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var res Reservation
	req := Request{Model: sonnet}
	for i := 0; i < n; i++ {
		req.Session = uint64(i+1) * 0x9e3779b97f4a7c15
		if err := p.Acquire(context.Background(), &req, &res); err != nil {
			tb.Fatal(err)
		}
		res.Settle(ok200())
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := p.Snapshot().StickySessions; got != n {
		tb.Fatalf("%d sessions pinned, want %d", got, n)
	}
	runtime.KeepAlive(p)
	return float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n)
}

func TestStickyMemoryPerSession(t *testing.T) {
	per := stickyBytesPerSession(t, 100000)
	t.Logf("sticky sessions: %.1f bytes per pinned session (100k sessions)", per)
	if per > 2*stickyEntrySize {
		t.Fatalf("%.1f bytes per session, more than twice the documented %d", per, stickyEntrySize)
	}
}

func BenchmarkStickyMemory(b *testing.B) {
	var per float64
	for b.Loop() {
		per = stickyBytesPerSession(b, 100000)
	}
	b.ReportMetric(per, "bytes/session")
}
