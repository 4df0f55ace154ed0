package redisstate

// Two relay instances, one pool: keypool pools over their own States, each
// with its own Store on one real redis-server, as two Caddy processes would
// have. What one instance spends, learns or decides, the other sees.

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
	"github.com/cc-relay/caddy-cc-relay/internal/redistest"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// instance is one relay's pool on a shared store.
type instance struct {
	st    *keypool.State
	pool  *keypool.Pool
	store *Store
	clk   *clock.Fake
}

func poolConfig(keys []keypool.KeyConfig, shared keypool.SharedState) keypool.Config {
	return keypool.Config{
		Keys:               keys,
		TokenEstimateRatio: keypool.DefaultTokenEstimateRatio,
		DefaultCooldown:    10 * time.Second,
		SpendCapPark:       time.Hour,
		Sticky:             true,
		StickyTTL:          time.Hour,
		StickyMaxSessions:  1000,
		Seed:               1,
		Shared:             shared,
	}
}

// newInstance starts an instance of the test's pool on srv. The pool's
// local clock is fake; the shared buckets refill on Redis's clock, so the
// tests use limits that refill negligibly while they run (3 a minute).
func newInstance(t *testing.T, srv *redistest.Server, keys ...keypool.KeyConfig) *instance {
	t.Helper()
	return newInstanceWith(t, srv, func(*Config) {}, keys...)
}

// newInstanceWith is newInstance with the store's configuration modified.
func newInstanceWith(t *testing.T, srv *redistest.Server, mod func(*Config), keys ...keypool.KeyConfig) *instance {
	t.Helper()
	s := newStore(t, srv, func(c *Config) { c.Pool = t.Name(); mod(c) })
	clk := clock.NewFake(time.Now())
	st := keypool.NewState(clk)
	p, err := st.NewPool(poolConfig(keys, s))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.WaitShared)
	return &instance{st: st, pool: p, store: s, clk: clk}
}

func (in *instance) acquire(req keypool.Request) (*keypool.Reservation, error) {
	r := new(keypool.Reservation)
	return r, in.pool.Acquire(context.Background(), &req, r)
}

func mustAcquire(t *testing.T, in *instance, req keypool.Request) *keypool.Reservation {
	t.Helper()
	r, err := in.acquire(req)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	return r
}

func mustRefuse(t *testing.T, in *instance, req keypool.Request) *keypool.NoCapacityError {
	t.Helper()
	_, err := in.acquire(req)
	var nc *keypool.NoCapacityError
	if !errors.As(err, &nc) {
		t.Fatalf("Acquire = %v, want a refusal", err)
	}
	return nc
}

// headersWith is a response's rate-limit headers with every triple absent
// but what set says.
func headersWith(set func(h *keypool.RateLimitHeaders)) keypool.RateLimitHeaders {
	absent := keypool.Limit{Limit: -1, Remaining: -1}
	h := keypool.RateLimitHeaders{Requests: absent, InputTokens: absent, OutputTokens: absent, Tokens: absent}
	set(&h)
	return h
}

func ok200() keypool.Result {
	return keypool.Result{Status: 200, Usage: keypool.Usage{InputTokens: 10, OutputTokens: 5, HaveInput: true, HaveOutput: true}}
}

const sonnet = "claude-sonnet-4-5"

// The first complaint: N instances admitted N times the quota.
// With one store they admit it once between them, and the refusal's hint
// says when the shared budget refills.
func TestInstancesShareOneBudget(t *testing.T) {
	srv := redistest.Start(t)
	key := keypool.KeyConfig{Name: "a", Org: "o", Limits: keypool.Limits{RPM: 4}}
	a, b := newInstance(t, srv, key), newInstance(t, srv, key)
	req := keypool.Request{Model: sonnet, Bytes: 400}
	for _, in := range []*instance{a, b, a, b} {
		mustAcquire(t, in, req).Settle(ok200())
	}
	for _, in := range []*instance{a, b} {
		nc := mustRefuse(t, in, req)
		if nc.RetryAfter < 5*time.Second {
			t.Fatalf("retry after %v; the shared budget refills one request in 15 s", nc.RetryAfter)
		}
	}
	// Without the store, the second instance would have had its own four.
	solo, err := keypool.NewState(clock.NewFake(time.Now())).NewPool(poolConfig([]keypool.KeyConfig{key}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := solo.Acquire(context.Background(), &req, new(keypool.Reservation)); err != nil {
		t.Fatalf("a pool without the store: %v", err)
	}
}

// A refused instance does not give up: it picks another organization's key,
// which the store admits.
func TestRefusedByTheStoreTriesAnotherOrganization(t *testing.T) {
	srv := redistest.Start(t)
	keys := []keypool.KeyConfig{
		{Name: "a", Org: "o1", Limits: keypool.Limits{RPM: 2}},
		{Name: "b", Org: "o2", Limits: keypool.Limits{RPM: 2}},
	}
	x, y := newInstance(t, srv, keys...), newInstance(t, srv, keys...)
	req := keypool.Request{Model: sonnet, Bytes: 400}
	used := map[string]int{}
	for i := range 4 {
		in := x
		if i%2 == 1 {
			in = y
		}
		r := mustAcquire(t, in, req)
		used[r.KeyName()]++
		r.Settle(ok200())
	}
	if used["a"] != 2 || used["b"] != 2 {
		t.Fatalf("admissions per key %v, want 2 and 2: both organizations' budgets, once", used)
	}
	mustRefuse(t, x, req)
	mustRefuse(t, y, req)
}

// Settling passes the correction on: an estimate larger than the real
// input is given back to the shared budget, so the other instance can use
// it.
func TestSettleCorrectsTheSharedBudget(t *testing.T) {
	srv := redistest.Start(t)
	key := keypool.KeyConfig{Name: "a", Org: "o", Limits: keypool.Limits{ITPM: 1000}}
	a, b := newInstance(t, srv, key), newInstance(t, srv, key)
	// 3200 bytes: an estimate of about 800 tokens at the default ratio.
	r := mustAcquire(t, a, keypool.Request{Model: sonnet, Bytes: 3200})
	if r.Estimate() < 700 {
		t.Fatalf("estimate %d", r.Estimate())
	}
	mustRefuse(t, b, keypool.Request{Model: sonnet, Bytes: 3200})
	r.Settle(keypool.Result{Status: 200, Usage: keypool.Usage{InputTokens: 100, HaveInput: true}})
	a.pool.WaitShared()
	// 900 of 1000 are left in the store: b admits what a gave back.
	mustAcquire(t, b, keypool.Request{Model: sonnet, Bytes: 3200})
}

// Headers seen by one instance move the budget both see: the remaining
// count is the upstream's, whichever instance asked.
func TestHeadersSyncTheSharedBudget(t *testing.T) {
	srv := redistest.Start(t)
	key := keypool.KeyConfig{Name: "a", Org: "o", Limits: keypool.Limits{RPM: 50}}
	a, b := newInstance(t, srv, key), newInstance(t, srv, key)
	r := mustAcquire(t, a, keypool.Request{Model: sonnet, Bytes: 400})
	// The upstream has 2 requests left (someone else uses the org too).
	r.ObserveHeaders(200, headersWith(func(h *keypool.RateLimitHeaders) { h.Requests = keypool.Limit{Limit: 50, Remaining: 2} }))
	r.Settle(ok200())
	a.pool.WaitShared()
	mustAcquire(t, b, keypool.Request{Model: sonnet, Bytes: 400})
	mustAcquire(t, b, keypool.Request{Model: sonnet, Bytes: 400})
	mustRefuse(t, b, keypool.Request{Model: sonnet, Bytes: 400})
}

// Limits learned from headers on one instance are the other's too.
func TestLearnedLimitsAreShared(t *testing.T) {
	srv := redistest.Start(t)
	key := keypool.KeyConfig{Name: "a", Org: "o"} // nothing configured
	a, b := newInstance(t, srv, key), newInstance(t, srv, key)
	r := mustAcquire(t, a, keypool.Request{Model: sonnet, Bytes: 400})
	r.ObserveHeaders(200, headersWith(func(h *keypool.RateLimitHeaders) { h.Requests = keypool.Limit{Limit: 3, Remaining: 1} }))
	r.Settle(ok200())
	a.pool.WaitShared()
	// b never saw a header: it learns the limit (3) and the level (1)
	// from the store's reply to its first reservation.
	mustAcquire(t, b, keypool.Request{Model: sonnet, Bytes: 400}).Settle(ok200())
	mustRefuse(t, b, keypool.Request{Model: sonnet, Bytes: 400})
	snap := b.pool.Snapshot()
	if got := snap.Keys[0].Budgets[0].Requests.Learned; got != 3 {
		t.Fatalf("b's learned rpm %d, want 3 (learned by a)", got)
	}
}

// A 429 on one instance cools the budget on the other.
func TestCooldownIsShared(t *testing.T) {
	srv := redistest.Start(t)
	keys := []keypool.KeyConfig{{Name: "a", Org: "o1"}, {Name: "b", Org: "o2"}}
	x, y := newInstance(t, srv, keys...), newInstance(t, srv, keys...)
	only := []bool{true, false}
	r := mustAcquire(t, x, keypool.Request{Model: sonnet, Bytes: 400, Only: only})
	r.ObserveHeaders(429, headersWith(func(h *keypool.RateLimitHeaders) { h.RetryAfter, h.HasRetryAfter = time.Minute, true }))
	r.Settle(keypool.Result{Status: 429})
	x.pool.WaitShared()
	nc := mustRefuse(t, y, keypool.Request{Model: sonnet, Bytes: 400, Only: only})
	if nc.RetryAfter < 50*time.Second {
		t.Fatalf("retry after %v, want the minute the other instance's 429 said", nc.RetryAfter)
	}
	// The other organization is unaffected.
	if r := mustAcquire(t, y, keypool.Request{Model: sonnet, Bytes: 400}); r.KeyName() != "b" {
		t.Fatalf("got key %s, want b", r.KeyName())
	}
}

// A key disabled on one instance is out on the other after a heartbeat;
// enabled on the other, it is back on the first.
func TestDisableAndEnableReachEveryInstance(t *testing.T) {
	srv := redistest.Start(t)
	keys := []keypool.KeyConfig{{Name: "a"}, {Name: "b"}}
	x, y := newInstance(t, srv, keys...), newInstance(t, srv, keys...)
	only := []bool{true, false}
	r := mustAcquire(t, x, keypool.Request{Model: sonnet, Only: only})
	r.Disable("upstream 401: invalid x-api-key")
	r.Settle(keypool.Result{Status: 401})
	x.pool.WaitShared()
	y.store.beat()
	nc := mustRefuse(t, y, keypool.Request{Model: sonnet, Only: only})
	if !nc.NoKeys {
		t.Fatalf("refusal %+v, want no enabled key", nc)
	}
	if got := y.pool.Snapshot().Keys[0]; got.State != "disabled" || got.Reason != "upstream 401: invalid x-api-key" {
		t.Fatalf("y sees key a as %s (%q)", got.State, got.Reason)
	}
	// The view must be newer than the disable for an enable to count.
	y.clk.Advance(time.Minute)
	x.clk.Advance(time.Minute)
	if !y.pool.Enable("a") {
		t.Fatal("Enable(a) = false")
	}
	waitNewerView(t, x)
	mustAcquire(t, x, keypool.Request{Model: sonnet, Only: only}).Settle(ok200())
}

// waitNewerView runs heartbeats until in's view is later than its pool's
// last disable by more than the view's lag (the fake clock moved it on).
func waitNewerView(t *testing.T, in *instance) {
	t.Helper()
	in.store.beat()
	if in.store.View().Disabled["a"] != "" {
		t.Fatal("the view still has key a disabled after the other instance enabled it")
	}
}

// A conversation whose turns land on different instances stays on the key
// that holds its prompt cache.
func TestSessionPinsFollowAcrossInstances(t *testing.T) {
	srv := redistest.Start(t)
	keys := []keypool.KeyConfig{{Name: "a", Org: "o1"}, {Name: "b", Org: "o2"}, {Name: "c", Org: "o3"}}
	x, y := newInstance(t, srv, keys...), newInstance(t, srv, keys...)
	// The instances' own choices differ: y has served a request more.
	mustAcquire(t, y, keypool.Request{Model: sonnet, Bytes: 400}).Settle(ok200())
	moved := 0
	for s := uint64(1); s <= 12; s++ {
		// The first turn goes to a key the other instance would not
		// choose on its own.
		only := []bool{s%3 == 0, s%3 == 1, s%3 == 2}
		first := mustAcquire(t, x, keypool.Request{Model: sonnet, Bytes: 4000, Session: s, Only: only})
		first.Settle(ok200())
		x.pool.WaitShared()
		for turn := range 3 {
			in := y
			if turn%2 == 1 {
				in = x
			}
			r := mustAcquire(t, in, keypool.Request{Model: sonnet, Bytes: 4400 + 400*turn, Session: s})
			if r.KeyName() != first.KeyName() {
				moved++
			}
			r.Settle(ok200())
			in.pool.WaitShared()
		}
	}
	if moved != 0 {
		t.Fatalf("%d of 36 later turns moved off their session's key", moved)
	}
}

// failingPool is a pool on a store with the failure tests' timeout.
func failingPool(t *testing.T, srv *redistest.Server, key keypool.KeyConfig) (*keypool.Pool, *Store) {
	t.Helper()
	s := newStore(t, srv, func(c *Config) { c.Pool = t.Name(); c.Timeout = failTimeout })
	p, err := keypool.NewState(clock.NewFake(time.Now())).NewPool(poolConfig([]keypool.KeyConfig{key}, s))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.WaitShared)
	return p, s
}

// Redis gone: requests are still served, from this instance's share, and
// no call waits longer than the store's timeout.
func TestRedisDownStillServes(t *testing.T) {
	srv := redistest.Start(t)
	key := keypool.KeyConfig{Name: "a", Org: "o", Limits: keypool.Limits{RPM: 60}}
	p, s := failingPool(t, srv, key)
	srv.Kill()
	for i := range 5 {
		start := time.Now()
		r := new(keypool.Reservation)
		if err := p.Acquire(context.Background(), &keypool.Request{Model: sonnet, Bytes: 400, Session: uint64(i + 1)}, r); err != nil {
			t.Fatalf("request %d with Redis down: %v", i, err)
		}
		r.ObserveHeaders(200, headersWith(func(h *keypool.RateLimitHeaders) { h.Requests = keypool.Limit{Limit: 60, Remaining: 50} }))
		r.Settle(ok200())
		if d := time.Since(start); d > 3*failTimeout {
			t.Fatalf("request %d took %v with Redis down", i, d)
		}
	}
	if m := s.Mode(); m != keypool.SharedModeLocalFallback {
		t.Fatalf("mode %s", m)
	}
}

// A reload that adds redis carries what this process spent up to the
// store: the other instance does not get a second budget.
func TestAddingRedisMovesSpendingUp(t *testing.T) {
	srv := redistest.Start(t)
	key := keypool.KeyConfig{Name: "a", Org: "o", Limits: keypool.Limits{RPM: 4}}
	st := keypool.NewState(clock.NewFake(time.Now()))
	local, err := st.NewPool(poolConfig([]keypool.KeyConfig{key}, nil))
	if err != nil {
		t.Fatal(err)
	}
	req := keypool.Request{Model: sonnet, Bytes: 400}
	for range 3 {
		r := new(keypool.Reservation)
		if err := local.Acquire(context.Background(), &req, r); err != nil {
			t.Fatal(err)
		}
		r.Settle(ok200())
	}
	s := newStore(t, srv, func(c *Config) { c.Pool = t.Name() })
	shared, err := st.NewPool(poolConfig([]keypool.KeyConfig{key}, s))
	if err != nil {
		t.Fatal(err)
	}
	local.Close()
	shared.WaitShared()
	other := newInstance(t, srv, key)
	mustAcquire(t, other, req)
	mustRefuse(t, other, req)
}

// Many requests at once from two instances never admit more than the
// shared budget between them.
func TestConcurrentInstancesNeverOveradmit(t *testing.T) {
	srv := redistest.Start(t)
	key := keypool.KeyConfig{Name: "a", Org: "o", Limits: keypool.Limits{RPM: 20}}
	a, b := newInstance(t, srv, key), newInstance(t, srv, key)
	type res struct{ err error }
	out := make(chan res, 64)
	for i := range 64 {
		in := a
		if i%2 == 1 {
			in = b
		}
		go func() {
			r, err := in.acquire(keypool.Request{Model: sonnet, Bytes: 400, Client: fmt.Sprint("c", i%3)})
			if err == nil {
				r.Settle(ok200())
			}
			out <- res{err}
		}()
	}
	admitted := 0
	for range 64 {
		if (<-out).err == nil {
			admitted++
		}
	}
	// 20 a minute refill a third of a request a second: the test's own
	// run time may add one.
	if admitted < 20 || admitted > 21 {
		t.Fatalf("admitted %d of 64 with a shared budget of 20", admitted)
	}
}

// An instance that served nothing lately shows the pool-wide levels once
// it refreshes its mirror (the admin API does before a snapshot).
func TestRefreshSharedShowsOtherInstancesSpending(t *testing.T) {
	srv := redistest.Start(t)
	key := keypool.KeyConfig{Name: "a", Org: "o", Limits: keypool.Limits{RPM: 6}}
	a, b := newInstance(t, srv, key), newInstance(t, srv, key)
	req := keypool.Request{Model: sonnet, Bytes: 400}
	mustAcquire(t, b, req).Settle(ok200())
	for range 3 {
		mustAcquire(t, a, req).Settle(ok200())
	}
	a.pool.WaitShared()
	remaining := func() int64 { return b.pool.Snapshot().Keys[0].Budgets[0].Requests.Remaining }
	if got := remaining(); got != 5 {
		t.Fatalf("b's mirror before refresh: %d left, want its own view (5)", got)
	}
	b.pool.RefreshShared(context.Background())
	if got := remaining(); got != 2 {
		t.Fatalf("b after refresh: %d left, want the pool's 2", got)
	}
}

// A reload that removes redis keeps the levels the mirror last had: the
// instance goes on from the shared state, not from full budgets.
func TestRemovingRedisKeepsTheLevels(t *testing.T) {
	srv := redistest.Start(t)
	key := keypool.KeyConfig{Name: "a", Org: "o", Limits: keypool.Limits{RPM: 4}}
	a, b := newInstance(t, srv, key), newInstance(t, srv, key)
	req := keypool.Request{Model: sonnet, Bytes: 400}
	for range 3 {
		mustAcquire(t, a, req).Settle(ok200())
	}
	a.pool.WaitShared()
	mustAcquire(t, b, req).Settle(ok200()) // b's mirror now says 0 left
	local, err := b.st.NewPool(poolConfig([]keypool.KeyConfig{key}, nil))
	if err != nil {
		t.Fatal(err)
	}
	b.pool.Close()
	r := new(keypool.Reservation)
	var nc *keypool.NoCapacityError
	if err := local.Acquire(context.Background(), &req, r); !errors.As(err, &nc) {
		t.Fatalf("after removing redis: %v, want a refusal (the shared budget is spent)", err)
	}
}

// A stalled Redis (SIGSTOP) costs a request at most the store's timeout,
// once: the breaker then keeps requests off it.
func TestStalledRedisCostsAtMostTheTimeout(t *testing.T) {
	srv := redistest.Start(t)
	key := keypool.KeyConfig{Name: "a", Org: "o", Limits: keypool.Limits{RPM: 600}}
	p, s := failingPool(t, srv, key)
	srv.Pause()
	defer func() {
		if m := s.Mode(); m != keypool.SharedModeLocalFallback {
			t.Errorf("mode %s with Redis stalled", m)
		}
	}()
	defer srv.Resume()
	var slow int
	for i := range 10 {
		start := time.Now()
		r := new(keypool.Reservation)
		if err := p.Acquire(context.Background(), &keypool.Request{Model: sonnet, Bytes: 400, Session: uint64(i + 1)}, r); err != nil {
			t.Fatalf("request %d with Redis stalled: %v", i, err)
		}
		r.Settle(ok200())
		d := time.Since(start)
		if d > 3*failTimeout {
			t.Fatalf("request %d took %v", i, d)
		}
		if d > failTimeout/2 {
			slow++
		}
	}
	if slow > 1 {
		t.Fatalf("%d of 10 requests waited for the stalled Redis; only the first should", slow)
	}
}

// Redis restarted empty: the instances rejoin and the store is rebuilt
// from what they spent meanwhile, not handed out full.
func TestRestartedEmptyRedisIsRebuiltConservatively(t *testing.T) {
	srv := redistest.Start(t)
	key := keypool.KeyConfig{Name: "a", Org: "o", Limits: keypool.Limits{RPM: 6}}
	a := newInstance(t, srv, key)
	req := keypool.Request{Model: sonnet, Bytes: 400}
	for range 4 {
		mustAcquire(t, a, req).Settle(ok200())
	}
	a.pool.WaitShared()
	srv.Restart() // empty: no persistence
	// The heartbeat finds the pool's epoch gone and starts a new one:
	// this instance rebuilds the store from its mirror (or, had it
	// fallen back meanwhile, the store's rejoin charges what it spent).
	a.store.beat()
	mustAcquire(t, a, req).Settle(ok200())
	a.pool.WaitShared()
	a.store.beat()
	if m := a.store.Mode(); m != keypool.SharedModeShared {
		t.Fatalf("mode %s after Redis came back", m)
	}
	b := newInstance(t, srv, key)
	admitted := 0
	for range 6 {
		if _, err := b.acquire(req); err == nil {
			admitted++
		}
	}
	// 6 a minute, 5 spent by a: one is left (the test's run time may
	// refill a fraction).
	if admitted > 1 {
		t.Fatalf("a fresh instance got %d of a budget of which 1 was left, from a Redis restarted empty", admitted)
	}
}

// Headers that move the shared input level to the upstream's account make
// the usage's correction of the estimate void: it is not applied on top,
// whether the sync's answer comes before Settle or after.
func TestSyncedInputIsNotCorrectedTwice(t *testing.T) {
	srv := redistest.Start(t)
	key := keypool.KeyConfig{Name: "a", Org: "o", Limits: keypool.Limits{ITPM: 10000}}
	a, b := newInstance(t, srv, key), newInstance(t, srv, key)
	mustAcquire(t, b, keypool.Request{Model: sonnet, Bytes: 40}).Settle(ok200())
	r := mustAcquire(t, a, keypool.Request{Model: sonnet, Bytes: 3200})
	r.ObserveHeaders(200, headersWith(func(h *keypool.RateLimitHeaders) {
		h.InputTokens = keypool.Limit{Limit: 10000, Remaining: 5000}
		h.Tokens = keypool.Limit{Limit: 10000, Remaining: 5000}
	}))
	// The real input was far below the estimate; the upstream's 5000
	// (rounded down to thousands) already counts it.
	r.Settle(keypool.Result{Status: 200, Usage: keypool.Usage{InputTokens: 100, HaveInput: true, OutputTokens: 1, HaveOutput: true}})
	a.pool.WaitShared()
	b.pool.RefreshShared(context.Background())
	got := b.pool.Snapshot().Keys[0].Budgets[0].InputTokens.Remaining
	if got < 5000 || got > 6100 {
		t.Fatalf("shared input level %d, want within the upstream's [5000, 5999] (plus refill)", got)
	}
}

// A request admitted on one instance before a request on another, but
// not yet counted by the upstream when the other's response says what is
// left, is not handed out again: the sync stops below it.
func TestSyncDoesNotRaisePastUnansweredRequestsOfOtherInstances(t *testing.T) {
	srv := redistest.Start(t)
	key := keypool.KeyConfig{Name: "a", Org: "o", Limits: keypool.Limits{RPM: 10}}
	a, b := newInstance(t, srv, key), newInstance(t, srv, key)
	req := keypool.Request{Model: sonnet, Bytes: 400}
	e := mustAcquire(t, a, req) // still on its way to the upstream
	r := mustAcquire(t, b, req)
	// The upstream saw r, not yet e: 9 of 10 left.
	r.ObserveHeaders(200, headersWith(func(h *keypool.RateLimitHeaders) { h.Requests = keypool.Limit{Limit: 10, Remaining: 9} }))
	r.Settle(ok200())
	b.pool.WaitShared()
	a.pool.RefreshShared(context.Background())
	if got := a.pool.Snapshot().Keys[0].Budgets[0].Requests.Remaining; got != 8 {
		t.Fatalf("%d requests left after the sync, want 8: e is still coming", got)
	}
	e.Settle(ok200())
}

// An instance whose session table still pins a conversation to a key the

func TestStalePinFollowsTheConversation(t *testing.T) {
	srv := redistest.Start(t)
	keys := []keypool.KeyConfig{{Name: "a", Org: "o1", Limits: keypool.Limits{RPM: 50}}, {Name: "b", Org: "o2", Limits: keypool.Limits{RPM: 50}}}
	// Near the limit (here: every admission asks Redis) a known session's
	// pin is read beside the reservation; far from it, not (see
	// TestLeaseAdmitsWithoutRoundTrip).
	x, y := newInstanceWith(t, srv, askEveryTime, keys...), newInstanceWith(t, srv, askEveryTime, keys...)
	onlyA, onlyB := []bool{true, false}, []bool{false, true}
	const s = 42
	r := mustAcquire(t, y, keypool.Request{Model: sonnet, Bytes: 4000, Session: s, Only: onlyA})
	r.Settle(ok200())
	y.pool.WaitShared()
	// The conversation moves to b on x (a was out for it).
	r = mustAcquire(t, x, keypool.Request{Model: sonnet, Bytes: 4400, Session: s, Only: onlyB})
	r.Settle(ok200())
	x.pool.WaitShared()
	// y still pins it to a; the store says b.
	r = mustAcquire(t, y, keypool.Request{Model: sonnet, Bytes: 4800, Session: s})
	if r.KeyName() != "b" {
		t.Fatalf("the next turn went to %s on the instance with a stale pin, want b", r.KeyName())
	}
	r.Settle(ok200())
	y.pool.WaitShared()
	// The undone reservation on a left nothing behind: a's organization
	// has had one request (the first turn).
	y.pool.RefreshShared(context.Background())
	for _, k := range y.pool.Snapshot().Keys {
		if k.Name == "a" {
			if got := k.Budgets[0].Requests.Remaining; got != 49 {
				t.Fatalf("a's organization has %d left, want 49", got)
			}
		}
	}
}

// Keys of one upstream organization, with nothing configured, are one
// budget on every instance, whichever of its keys answered each instance
// first: the organization learned from anthropic-organization-id has the
// same name in the store everywhere. (Named after the first key an
// instance saw, two instances kept two budgets of one organization, each
// admitting what the upstream had left: bench/cluster's learned run.)
func TestLearnedOrganizationIsOneBudgetOnEveryInstance(t *testing.T) {
	srv := redistest.Start(t)
	keys := []keypool.KeyConfig{{Name: "a1"}, {Name: "a2"}}
	x, y := newInstance(t, srv, keys...), newInstance(t, srv, keys...)
	// Each instance's first answer comes from another key of org-a, which
	// has 4 requests of 10 left.
	first := func(in *instance, only []bool) {
		r := mustAcquire(t, in, keypool.Request{Model: sonnet, Bytes: 400, Only: only})
		r.ObserveHeaders(200, headersWith(func(h *keypool.RateLimitHeaders) {
			h.OrganizationID = "org-a"
			h.Requests = keypool.Limit{Limit: 10, Remaining: 4}
		}))
		r.Settle(ok200())
		in.pool.WaitShared()
	}
	first(x, []bool{true, false})
	first(y, []bool{false, true})
	// The heartbeats tell each which other key belongs to org-a.
	x.store.beat()
	y.store.beat()
	admitted := 0
	for i := range 10 {
		in := x
		if i%2 == 1 {
			in = y
		}
		if r, err := in.acquire(keypool.Request{Model: sonnet, Bytes: 400}); err == nil {
			admitted++
			r.Settle(ok200())
			in.pool.WaitShared()
		}
	}
	if admitted != 4 {
		t.Fatalf("the two instances admitted %d requests, want the organization's 4 left", admitted)
	}
	// The first requests were charged to their key's own budget before the
	// organization was known: their part in its unanswered sums was
	// released there, not in the organization's.
	c := direct(t, srv)
	for _, org := range []string{"key:a1", "key:a2", "id:org-a"} {
		u, err := c.Do(context.Background(), c.B().Hget().Key(x.store.keys.budget(org, "sonnet")).Field("u1").Build()).ToString()
		if err != nil || u != "0" {
			t.Fatalf("%s: unanswered requests %q (%v), want 0", org, u, err)
		}
	}
}
