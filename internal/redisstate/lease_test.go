package redisstate

// Batched flushes and admission without a round trip far from the limit
// (flush.go): what reaches Redis when, and that the instances together
// still never admit more than the bucket holds.

import (
	"context"
	"math"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
	"github.com/cc-relay/caddy-cc-relay/internal/redistest"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// flushCounter counts the store's flush scripts (round trips of budget
// operations).
type flushCounter struct{ n atomic.Int64 }

func (c *flushCounter) observe(cfg *Config) {
	cfg.OnRoundTrip = func(op string, _ time.Duration, _ error) {
		if op == "flush" {
			c.n.Add(1)
		}
	}
}

// level is a bucket's level as Redis holds it.
func level(t *testing.T, srv *redistest.Server, s *Store, b keypool.SharedBudget, k int) float64 {
	t.Helper()
	c := direct(t, srv)
	v, err := c.Do(context.Background(), c.B().Hget().Key(s.keys.budget(b.Org, b.Class)).Field("l"+strconv.Itoa(k+1)).Build()).ToString()
	if err != nil {
		t.Fatal(err)
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// stored reads a budget's level of bucket k and the Redis time (µs) it was
// stored at. Redis refills on its own clock, which the tests cannot stop:
// expected levels are computed from these instants, not from the test's.
func stored(t *testing.T, srv *redistest.Server, s *Store, b keypool.SharedBudget, k int) (lvl, at float64) {
	t.Helper()
	c := direct(t, srv)
	vs, err := c.Do(context.Background(), c.B().Hmget().Key(s.keys.budget(b.Org, b.Class)).Field("l"+strconv.Itoa(k+1), "t").Build()).ToArray()
	if err != nil || len(vs) != 2 {
		t.Fatalf("reading budget %s: %v", b.Org, err)
	}
	var f [2]float64
	for i, v := range vs {
		str, err := v.ToString()
		if err != nil {
			t.Fatal(err)
		}
		if f[i], err = strconv.ParseFloat(str, 64); err != nil {
			t.Fatal(err)
		}
	}
	return f[0], f[1]
}

// Far from the limit a reservation makes no round trip; its charge reaches
// Redis with the flush FlushInterval after it, not before.
func TestLeaseChargesRedisWithinTheFlushInterval(t *testing.T) {
	srv := redistest.Start(t)
	clk := clock.NewFake(time.Now())
	var flushes flushCounter
	s := newStore(t, srv, func(c *Config) { c.Clock = clk; flushes.observe(c) })
	ctx := context.Background()
	b := budget("cfg:lease", 1000, 0, 0)
	one := [3]float64{1, 0, 0}
	if a := s.Reserve(ctx, b, one, one); a.Outcome != keypool.SharedAdmitted || a.Ticket != nil {
		t.Fatalf("first reservation (no view yet) must ask Redis: %+v", a)
	}
	if n := flushes.n.Load(); n != 1 {
		t.Fatalf("%d flushes for the first reservation, want 1", n)
	}
	first, firstAt := stored(t, srv, s, b, 0)
	// One instance (two counted, for one that may have joined): each may
	// take a tenth of the level over 2 between views, 49 requests.
	for i := range 5 {
		a := s.Reserve(ctx, b, one, one)
		if a.Outcome != keypool.SharedAdmitted || a.Ticket == nil || a.Mode != keypool.SharedModeShared {
			t.Fatalf("reservation %d far from the limit: %+v, want admitted without a round trip", i+2, a)
		}
		if a.Levels[0] > 999-float64(i+1)+0.01 {
			t.Fatalf("reservation %d: level %v does not count the lease's charges", i+2, a.Levels[0])
		}
	}
	if n := flushes.n.Load(); n != 1 {
		t.Fatalf("%d flushes after 5 leased reservations, want still 1", n)
	}
	if l := level(t, srv, s, b, 0); l < 998.9 {
		t.Fatalf("Redis has level %v before the flush interval passed, want 999 (charges not yet sent)", l)
	}
	seq := s.flushes()
	clk.BlockUntil(1) // the flusher waits for its interval
	clk.Advance(s.cfg.FlushInterval)
	s.waitFlushes(seq + 1)
	// The first reservation's level, refilled by Redis's clock until the
	// flush, less the 5 leased charges.
	l, at := stored(t, srv, s, b, 0)
	if want := first + (at-firstAt)*1000/60e6 - 5; math.Abs(l-want) > 0.01 {
		t.Fatalf("Redis has level %v after the flush interval, want %v (the 5 leased charges)", l, want)
	}
	if n := flushes.n.Load(); n != 2 {
		t.Fatalf("%d flushes, want 2: the 5 charges in one", n)
	}
}

// Near the limit admission asks Redis, and two instances, each leasing
// what it may, together never admit more than the bucket holds.
func TestNearTheLimitTwoInstancesNeverOveradmit(t *testing.T) {
	srv := redistest.Start(t)
	var fa, fb flushCounter
	a := newStore(t, srv, func(c *Config) { c.Pool = t.Name(); fa.observe(c) })
	bs := newStore(t, srv, func(c *Config) { c.Pool = t.Name(); fb.observe(c) })
	a.beat()
	bs.beat() // both count two instances
	ctx := context.Background()
	const capacity = 200
	b := budget("cfg:near", capacity, 0, 0)
	one := [3]float64{1, 0, 0}
	start := time.Now()
	admitted, leased, asked := 0, 0, 0
	for i := 0; i < 2*capacity; i++ {
		s := a
		if i%2 == 1 {
			s = bs
		}
		r := s.Reserve(ctx, b, one, one)
		switch {
		case r.Outcome != keypool.SharedAdmitted:
		case r.Ticket != nil:
			admitted++
			leased++
		default:
			admitted++
			asked++
		}
	}
	refill := math.Ceil(time.Since(start).Seconds()*capacity/60) + 1
	if admitted < capacity || float64(admitted) > capacity+refill {
		t.Fatalf("two instances admitted %d of a bucket of %d (+%v refilled)", admitted, capacity, refill)
	}
	if leased == 0 || asked == 0 {
		t.Fatalf("leased %d, asked %d: far from the limit the lease admits, near it Redis", leased, asked)
	}
	// Everything queued reaches Redis, which never went below the debt
	// Redis itself would allow (none: every charge was admitted).
	a.Close()
	bs.Close()
	if l := level(t, srv, a, b, 0); l < -0.5 {
		t.Fatalf("the shared level went to %v: the leases overdrew it", l)
	}
}

// A header sync of a request the lease admitted takes its marks from the
// flush that charged it: in the same batch, or from an earlier one. With
// marks known a sync may raise the level to what the upstream reports.
func TestSyncOfALeasedRequestKnowsItsMarks(t *testing.T) {
	srv := redistest.Start(t)
	clk := clock.NewFake(time.Now())
	s := newStore(t, srv, func(c *Config) { c.Clock = clk })
	ctx := context.Background()
	b := budget("cfg:marks", 1000, 0, 0)
	one := [3]float64{1, 0, 0}
	s.Reserve(ctx, b, one, one) // a view: 999, one request unanswered
	flushNow := func() {
		seq := s.flushes()
		clk.BlockUntil(1)
		clk.Advance(s.cfg.FlushInterval)
		s.waitFlushes(seq + 1)
	}
	// settle charges d requests, as another instance's spending would.
	settle := func(d float64) {
		done := make(chan struct{})
		go func() {
			s.Settle(ctx, []keypool.SharedCorrection{{Budget: b, Delta: [3]float64{d, 0, 0}}})
			close(done)
		}()
		waitQueued(t, s, 1)
		flushNow()
		<-done
	}
	for _, sameBatch := range []bool{true, false} {
		settle(100) // the level is 100 below what the upstream will say
		a := s.Reserve(ctx, b, one, one)
		if a.Ticket == nil {
			t.Fatalf("not leased: %+v", a)
		}
		if !sameBatch {
			flushNow() // the charge goes alone; the sync follows later
		}
		// The upstream says 990 left, above the level: with the request's
		// marks known the level rises to 990 less the one request that
		// is still unanswered (the first); unknown, it would stay.
		done := make(chan keypool.SharedSyncResult, 1)
		go func() {
			sy := keypool.SharedSync{Budget: b, Ticket: a.Ticket, Own: one, Release: one}
			for k := range 3 {
				sy.Limit[k], sy.Remaining[k], sy.Mark[k], sy.Gran[k], sy.Raise[k] = -1, -1, math.NaN(), 1, true
			}
			sy.Limit[0], sy.Remaining[0] = 1000, 990
			done <- s.Sync(ctx, sy)
		}()
		waitQueued(t, s, map[bool]int{true: 2, false: 1}[sameBatch])
		flushNow()
		r := <-done
		if !r.Moved[0] || r.Levels[0] != 989 {
			t.Fatalf("same batch %v: sync %+v, want the level raised to 989 (marks known)", sameBatch, r)
		}
	}
}

// waitQueued waits until n operations are queued (a goroutine's Sync has
// reached the queue); bounded by the test's timeout.
func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	for {
		s.flush.mu.Lock()
		q := s.flush.ops
		s.flush.mu.Unlock()
		if q >= n {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// countingState counts what a pool asks of its store.
type countingState struct {
	keypool.SharedState
	leased, asked, pinned atomic.Int64
}

func (c *countingState) Reserve(ctx context.Context, b keypool.SharedBudget, admit, charge [3]float64) keypool.SharedAdmission {
	a := c.SharedState.Reserve(ctx, b, admit, charge)
	if a.Ticket != nil {
		c.leased.Add(1)
	} else {
		c.asked.Add(1)
	}
	return a
}

func (c *countingState) Pinned(ctx context.Context, session uint64, ttl time.Duration) (string, keypool.SharedMode) {
	c.pinned.Add(1)
	return c.SharedState.Pinned(ctx, session, ttl)
}

// A pool far from its limits admits without a round trip, a known
// session's pin included, and another instance still learns from its
// headers.
func TestPoolFarFromTheLimitAdmitsWithoutRoundTrips(t *testing.T) {
	srv := redistest.Start(t)
	key := keypool.KeyConfig{Name: "a", Org: "o", Limits: keypool.Limits{RPM: 10000, ITPM: 1e9, OTPM: 1e9}}
	// Views are trusted for two flush intervals: a long interval keeps a
	// loaded machine (CI runs packages side by side under -race) from
	// making the view stale between requests.
	s := newStore(t, srv, func(c *Config) { c.Pool = t.Name(); c.FlushInterval = 2 * time.Second })
	cs := &countingState{SharedState: s}
	p, err := keypool.NewState(clock.NewFake(time.Now())).NewPool(poolConfig([]keypool.KeyConfig{key}, cs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.WaitShared)
	other := newInstance(t, srv, key)
	for i := range 20 {
		req := keypool.Request{Model: sonnet, Bytes: 400, Session: 7}
		var r keypool.Reservation
		if err := p.Acquire(context.Background(), &req, &r); err != nil {
			t.Fatal(err)
		}
		if i == 19 {
			// The upstream counts others too: 100 requests left.
			r.ObserveHeaders(200, headersWith(func(h *keypool.RateLimitHeaders) { h.Requests = keypool.Limit{Limit: 10000, Remaining: 100} }))
		}
		r.Settle(ok200())
	}
	if got := cs.asked.Load(); got != 1 {
		t.Fatalf("%d reservations asked Redis (%d leased), want only the first (no view before it)", got, cs.leased.Load())
	}
	if got := cs.pinned.Load(); got != 1 {
		t.Fatalf("%d pin reads for one session, want 1 (before this instance knew it)", got)
	}
	p.WaitShared()
	// The other instance sees the upstream's count: 100 left less what
	// was charged after that request (its first admission asks Redis).
	mustAcquire(t, other, keypool.Request{Model: sonnet, Bytes: 400}).Settle(ok200())
	if got := other.pool.Snapshot().Keys[0].Budgets[0].Requests.Remaining; got > 100 {
		t.Fatalf("other instance sees %d requests left, want at most the 100 the headers said", got)
	}
}

// A 5xx's refund reaches Redis (before the response's sync, in the same
// background write), for a leased request too.
func TestServerErrorRefundReachesRedis(t *testing.T) {
	srv := redistest.Start(t)
	key := keypool.KeyConfig{Name: "a", Org: "o", Limits: keypool.Limits{RPM: 60}}
	s := newStore(t, srv, func(c *Config) { c.Pool = t.Name(); c.FlushInterval = 100 * time.Millisecond })
	cs := &countingState{SharedState: s}
	p, err := keypool.NewState(clock.NewFake(time.Now())).NewPool(poolConfig([]keypool.KeyConfig{key}, cs))
	if err != nil {
		t.Fatal(err)
	}
	acquire := func() *keypool.Reservation {
		var r keypool.Reservation
		if err := p.Acquire(context.Background(), &keypool.Request{Model: sonnet, Bytes: 400}, &r); err != nil {
			t.Fatal(err)
		}
		return &r
	}
	b := keypool.SharedBudget{Org: "cfg:o", Class: "sonnet", Caps: [3]float64{60}}
	acquire().Settle(ok200()) // asks Redis: a view
	first, firstAt := stored(t, srv, s, b, 0)
	r := acquire()
	if cs.leased.Load() != 1 {
		t.Fatalf("the second request was not leased (%d asked)", cs.asked.Load())
	}
	r.ObserveHeaders(529, headersWith(func(*keypool.RateLimitHeaders) {}))
	r.Settle(keypool.Result{Status: 529})
	p.WaitShared()
	s.Close() // sends what is queued
	// The first request's level and what refilled since (one a second, on
	// Redis's clock): the second request charged and refunded. Without the
	// refund it would be one less.
	l, at := stored(t, srv, s, b, 0)
	if want := first + (at-firstAt)*60/60e6; math.Abs(l-want) > 0.01 {
		t.Fatalf("level %v after one request and one 529, want %v (the 529 refunded)", l, want)
	}
}
