package keypool

import (
	"context"
	"errors"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/anthropic"
	"github.com/cc-relay/caddy-cc-relay/internal/clock"
)

// t0 is where every fake clock starts.
var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

const (
	sonnet = "claude-sonnet-4-5"
	haiku  = "claude-haiku-4-5"
	opus   = "claude-opus-4-1"
)

// newPool builds a pool over a fresh state with a fake clock at t0.
func newPool(t testing.TB, cfg Config) (*Pool, *clock.Fake) {
	t.Helper()
	clk := clock.NewFake(t0)
	p, err := newPoolOn(NewState(clk), cfg)
	if err != nil {
		t.Fatalf("NewPool: %v", err)
	}
	return p, clk
}

// onlyKey is a Request.Only that lets only the named key serve.
func onlyKey(t testing.TB, p *Pool, name string) []bool {
	t.Helper()
	only := make([]bool, p.Len())
	for i := range only {
		if p.Name(i) == name {
			only[i] = true
			return only
		}
	}
	t.Fatalf("no key %q in the pool", name)
	return nil
}

// withDefaults fills what keypool leaves to its caller with the values
// the Caddy module's Provision sets, so tests state only what they test.
func withDefaults(cfg Config) Config {
	if cfg.TokenEstimateRatio == 0 {
		cfg.TokenEstimateRatio = DefaultTokenEstimateRatio
	}
	if cfg.StickyTTL == 0 {
		cfg.StickyTTL = time.Hour
	}
	if cfg.StickyMaxSessions == 0 {
		cfg.StickyMaxSessions = 100000
	}
	if cfg.DefaultCooldown == 0 {
		cfg.DefaultCooldown = 10 * time.Second
	}
	if cfg.SpendCapPark == 0 {
		cfg.SpendCapPark = time.Hour
	}
	return cfg
}

// newPoolOn is st.NewPool(withDefaults(cfg)).
func newPoolOn(st *State, cfg Config) (*Pool, error) { return st.NewPool(withDefaults(cfg)) }

func keys(names ...string) []KeyConfig {
	out := make([]KeyConfig, len(names))
	for i, n := range names {
		out[i] = KeyConfig{Name: n}
	}
	return out
}

// acquire reserves req or fails the test.
func acquire(t testing.TB, p *Pool, req Request) *Reservation {
	t.Helper()
	r := new(Reservation)
	if err := p.Acquire(context.Background(), &req, r); err != nil {
		t.Fatalf("Acquire(%+v): %v", req, err)
	}
	return r
}

// refused asserts that req gets a *NoCapacityError at once and returns it.
func refused(t testing.TB, p *Pool, req Request) *NoCapacityError {
	t.Helper()
	var r Reservation
	err := p.Acquire(context.Background(), &req, &r)
	var nc *NoCapacityError
	if !errors.As(err, &nc) {
		t.Fatalf("Acquire(%+v) = %v (key %q), want *NoCapacityError", req, err, keyOf(&r))
	}
	return nc
}

func keyOf(r *Reservation) string {
	if r.ks == nil {
		return ""
	}
	return r.ks.name
}

// acquireOn reserves req on the named key, through Request.Only.
func acquireOn(t testing.TB, p *Pool, name string, req Request) *Reservation {
	t.Helper()
	req.Only = onlyKey(t, p, name)
	r := acquire(t, p, req)
	if r.KeyName() != name {
		t.Fatalf("acquireOn(%q) reserved %q", name, r.KeyName())
	}
	return r
}

func memberIndex(t testing.TB, p *Pool, name string) int {
	t.Helper()
	for i := range p.members {
		if p.members[i].cfg.Name == name {
			return i
		}
	}
	t.Fatalf("no key %q", name)
	return -1
}

// level is the named key's organization's bucket of the given kind for
// model's class, refilled to now. It returns NaN while no limit is known.
func level(t testing.TB, p *Pool, name, model string, kind int) float64 {
	t.Helper()
	i := memberIndex(t, p, name)
	st := p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	b := p.members[i].ks.org.resolve().budget(p.classIndexOf(model))
	caps := p.capsOf(i, b)
	b.buckets[kind].refill(st.clock.Now().UnixNano(), caps[kind])
	if caps[kind] <= 0 || !b.buckets[kind].init {
		return math.NaN()
	}
	return b.buckets[kind].level
}

func inFlight(p *Pool, name string) int {
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	for i := range p.members {
		if p.members[i].cfg.Name == name {
			return p.members[i].ks.inFlight
		}
	}
	return -1
}

// durNear compares durations computed in floating point.
func durNear(got, want time.Duration) bool {
	d := got - want
	return d > -time.Microsecond && d < time.Microsecond
}

func near(got, want, tol float64) bool { return math.Abs(got-want) <= tol }

func wantLevel(t testing.TB, p *Pool, name, model string, kind int, want, tol float64) {
	t.Helper()
	if got := level(t, p, name, model, kind); !near(got, want, tol) {
		t.Fatalf("%s %s %s level = %.3f, want %.3f ±%g", name, model, kindNames[kind], got, want, tol)
	}
}

// wantLevelAtMost fails the test when the level is above most: more than
// what the upstream's headers justify, after when.
func wantLevelAtMost(t testing.TB, p *Pool, name, model string, kind int, most float64, when string) {
	t.Helper()
	if got := level(t, p, name, model, kind); got > most+1e-6 {
		t.Fatalf("%s level %v %s: more than the %v justified", kindNames[kind], got, when, most)
	}
}

// hdr builds response headers from name/value pairs.
func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// observe feeds r the given response headers, parsed as the relay parses
// them (anthropic.ParseRateLimits capped at MaxCooldown): most tests speak
// in the upstream's header names.
func observe(r *Reservation, clk *clock.Fake, status int, kv ...string) {
	r.ObserveHeaders(status, anthropic.ParseRateLimits(hdr(kv...), clk.Now(), MaxCooldown))
}

// noHeaders is a response that says nothing about its limits: every Limit
// absent, no retry-after. Tests set the fields they mean.
func noHeaders() RateLimitHeaders {
	none := Limit{Limit: -1, Remaining: -1}
	return RateLimitHeaders{Requests: none, InputTokens: none, OutputTokens: none, Tokens: none}
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func ok200() Result { return Result{Status: 200} }

// within runs f in a goroutine and fails the test if it has not returned
// within a generous real-time bound (a hang guard, not a timing guess).
func within(t testing.TB, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not return", what)
	}
}

type acqResult struct {
	res *Reservation
	err error
}

// startAcquire runs Acquire in a goroutine and delivers its result.
func startAcquire(ctx context.Context, p *Pool, req Request) <-chan acqResult {
	ch := make(chan acqResult, 1)
	go func() {
		r := new(Reservation)
		err := p.Acquire(ctx, &req, r)
		ch <- acqResult{r, err}
	}()
	return ch
}

// await receives one result with a hang guard.
func await(t testing.TB, ch <-chan acqResult) acqResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("Acquire did not return")
	}
	return acqResult{}
}

// pending reports whether ch has a result already (no waiting).
func pendingResult(ch <-chan acqResult) (acqResult, bool) {
	select {
	case r := <-ch:
		return r, true
	default:
		return acqResult{}, false
	}
}
