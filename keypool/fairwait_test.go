package keypool

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
)

// labelled is an Acquire result with the name the test gave its request.
type labelled struct {
	name string
	acqResult
}

// queue starts Acquire for req in the background, reporting to out, and
// returns once it waits (n timers pending in all).
func queue(t *testing.T, p *Pool, clk *clock.Fake, out chan labelled, name string, req Request, n int) {
	t.Helper()
	go func() {
		r := new(Reservation)
		err := p.Acquire(context.Background(), &req, r)
		out <- labelled{name, acqResult{r, err}}
	}()
	clk.BlockUntil(n)
}

func next(t *testing.T, out chan labelled) labelled {
	t.Helper()
	select {
	case l := <-out:
		if l.err != nil {
			t.Fatalf("%s: %v", l.name, l.err)
		}
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("no admission")
	}
	return labelled{}
}

// rpmPool has one key at 60 requests a minute (one a second), drained.
func rpmPool(t *testing.T) (*Pool, *clock.Fake) {
	t.Helper()
	p, clk := newPool(t, Config{MaxWait: 10 * time.Minute, Keys: []KeyConfig{{Name: "a", Limits: Limits{RPM: 60}}}})
	for range 60 {
		acquire(t, p, Request{Model: sonnet})
	}
	return p, clk
}

// admitOneAtATime advances the clock one refill (1 s) at a time and
// returns the order in which n waiters were admitted.
func admitOneAtATime(t *testing.T, clk *clock.Fake, out chan labelled, waiting, n int) []string {
	t.Helper()
	var got []string
	for range n {
		clk.Advance(time.Second)
		got = append(got, next(t, out).name)
		waiting--
		clk.BlockUntil(waiting) // the others have re-armed their timers
	}
	return got
}

// A client with one request waiting is served in turn with one that has
// twenty waiting, not after all of them.
func TestWaitIsFairAmongClients(t *testing.T) {
	p, clk := rpmPool(t)
	out := make(chan labelled, 32)
	for i := range 20 {
		queue(t, p, clk, out, "greedy", Request{Model: sonnet, Client: "greedy"}, i+1)
	}
	queue(t, p, clk, out, "light", Request{Model: sonnet, Client: "light"}, 21)
	got := admitOneAtATime(t, clk, out, 21, 2)
	if got[0] != "light" && got[1] != "light" {
		t.Fatalf("admitted %v: the light client waits behind the greedy one's backlog", got)
	}
}

// Weights set the shares: weight 2 gets two admissions for every one of
// weight 1 while both have requests waiting, whoever queued first.
func TestWaitHonoursClientWeights(t *testing.T) {
	p, clk := rpmPool(t)
	out := make(chan labelled, 64)
	n := 0
	for range 20 {
		n++
		queue(t, p, clk, out, "one", Request{Model: sonnet, Client: "one", ClientWeight: 1}, n)
	}
	for range 20 {
		n++
		queue(t, p, clk, out, "two", Request{Model: sonnet, Client: "two", ClientWeight: 2}, n)
	}
	got := admitOneAtATime(t, clk, out, n, 12)
	count := map[string]int{}
	for _, g := range got {
		count[g]++
	}
	if count["two"] != 8 || count["one"] != 4 {
		t.Fatalf("admitted %v (%v), want 8 of weight 2 and 4 of weight 1", count, got)
	}
}

// Within one client, waiters are served in arrival order.
func TestWaitIsFirstComeFirstServedWithinAClient(t *testing.T) {
	p, clk := rpmPool(t)
	out := make(chan labelled, 8)
	for i := range 5 {
		queue(t, p, clk, out, fmt.Sprint(i), Request{Model: sonnet, Client: "c"}, i+1)
	}
	got := admitOneAtATime(t, clk, out, 5, 5)
	if fmt.Sprint(got) != "[0 1 2 3 4]" {
		t.Fatalf("order %v", got)
	}
}

// A large request waiting for a full bucket on one key does not hold up a
// small one that another key can take now; the large one is admitted when
// its key has refilled.
func TestWaitSmallPassesLargeOnAnotherKey(t *testing.T) {
	p, clk := newPool(t, Config{MaxWait: time.Minute, Keys: []KeyConfig{
		{Name: "a", Limits: Limits{ITPM: 1000}}, {Name: "b", Limits: Limits{ITPM: 1000}},
	}})
	acquireOn(t, p, "a", Request{Model: sonnet, Bytes: 400})  // a: 900 left, full in 6 s
	acquireOn(t, p, "b", Request{Model: sonnet, Bytes: 2800}) // b: 300 left, full in 42 s
	large := startAcquire(context.Background(), p, Request{Model: sonnet, Bytes: 4000})
	clk.BlockUntil(1)
	small := await(t, startAcquire(context.Background(), p, Request{Model: sonnet, Bytes: 400}))
	if small.err != nil || small.res.KeyName() != "b" {
		t.Fatalf("small request: %+v, want admitted on b at once", small)
	}
	if _, done := pendingResult(large); done {
		t.Fatal("large admitted before its key refilled")
	}
	clk.Advance(6 * time.Second)
	if got := await(t, large); got.err != nil || got.res.KeyName() != "a" {
		t.Fatalf("large request: %+v, want admitted on a", got)
	}
}

// A waiter that cannot be admitted before its own deadline holds nothing:
// smaller requests behind it are admitted as the bucket refills.
func TestWaitHopelessHeadDoesNotBlock(t *testing.T) {
	p, clk := newPool(t, Config{MaxWait: 10 * time.Second, Keys: []KeyConfig{{Name: "a", Limits: Limits{ITPM: 1000}}}})
	acquire(t, p, Request{Model: sonnet, Bytes: 4000}) // drained; full in 60 s
	large := startAcquire(context.Background(), p, Request{Model: sonnet, Bytes: 4000})
	clk.BlockUntil(1)
	small := startAcquire(context.Background(), p, Request{Model: sonnet, Bytes: 40}) // 10 tokens: 0.6 s
	clk.BlockUntil(2)
	clk.Advance(600 * time.Millisecond)
	if got := await(t, small); got.err != nil {
		t.Fatalf("small request behind a hopeless one: %v", got.err)
	}
	clk.Advance(10 * time.Second)
	var nc *NoCapacityError
	if got := await(t, large); !errors.As(got.err, &nc) {
		t.Fatalf("large request: %+v, want a timeout", got)
	}
}

// A large request that can be admitted within its wait is not starved by
// a stream of small ones arriving after it: it holds its budget, and goes
// first when the bucket allows.
func TestWaitLargeIsNotStarved(t *testing.T) {
	p, clk := newPool(t, Config{MaxWait: 2 * time.Minute, Keys: []KeyConfig{{Name: "a", Limits: Limits{ITPM: 1000}}}})
	acquire(t, p, Request{Model: sonnet, Bytes: 2000}) // 500 left: full in 30 s
	out := make(chan labelled, 64)
	queue(t, p, clk, out, "large", Request{Model: sonnet, Bytes: 4000, Client: "big"}, 1)
	for i := range 30 {
		// Each second a small request (10 tokens, 0.6 s of refill) from
		// a client of its own arrives.
		queue(t, p, clk, out, fmt.Sprint("small", i), Request{Model: sonnet, Bytes: 40, Client: fmt.Sprint("c", i)}, i+2)
		clk.Advance(time.Second)
		if i < 29 {
			clk.BlockUntil(i + 2)
		}
	}
	// 30 s: the bucket is full; the first admission of all is the large
	// one.
	if got := next(t, out); got.name != "large" {
		t.Fatalf("%s admitted first; the large request was starved", got.name)
	}
	// It took the whole bucket: the small ones follow as it refills.
	clk.Advance(600 * time.Millisecond)
	if got := next(t, out); got.name != "small0" {
		t.Fatalf("then %s, want small0", got.name)
	}
}

// Without max_wait, when capacity is short, the client above its share of
// recent use is refused and the other admitted.
func TestShortCapacityRefusesTheClientOverItsShare(t *testing.T) {
	p, _ := newPool(t, Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{RPM: 100}}}})
	for range 92 {
		// The 92nd finds 9% left, but nobody else uses the pool: admitted.
		acquire(t, p, Request{Model: sonnet, Client: "greedy"})
	}
	acquire(t, p, Request{Model: sonnet, Client: "light"})
	nc := refused(t, p, Request{Model: sonnet, Client: "greedy"})
	if !nc.OverShare || nc.RetryAfter < time.Second {
		t.Fatalf("refusal %+v, want OverShare with a retry hint", nc)
	}
	acquire(t, p, Request{Model: sonnet, Client: "light"})
	// A weight that covers the use makes it the client's share.
	acquire(t, p, Request{Model: sonnet, Client: "greedy", ClientWeight: 100})
}

// Past holdDepth blocked waiters nobody reserves ahead, but the order and
// the admission of whatever fits still hold.
func TestWaitBeyondHoldDepth(t *testing.T) {
	p, clk := rpmPool(t)
	out := make(chan labelled, 128)
	n := holdDepth + 6
	for i := range n {
		queue(t, p, clk, out, fmt.Sprint(i), Request{Model: sonnet, Client: "c"}, i+1)
	}
	got := admitOneAtATime(t, clk, out, n, n)
	for i, g := range got {
		if g != fmt.Sprint(i) {
			t.Fatalf("admission %d went to waiter %s: %v", i, g, got)
		}
	}
}

// Issue 14's scenario in the pool: a greedy client keeps 16 requests
// waiting (closed loop: each admitted one comes straight back) on a
// saturated pool; a light client's requests, one every 5 s, are each
// admitted within one admission interval (1 s), and every interval admits
// someone: the pool stays fully used.
func TestWaitLightClientBesideAGreedyClosedLoop(t *testing.T) {
	p, clk := rpmPool(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type admission struct {
		who          string
		asked, gotAt time.Time
	}
	out := make(chan admission, 64)
	for range 16 {
		go func() {
			for ctx.Err() == nil {
				r := new(Reservation)
				asked := clk.Now()
				if err := p.Acquire(ctx, &Request{Model: sonnet, Client: "greedy"}, r); err != nil {
					return
				}
				r.Settle(ok200())
				out <- admission{"greedy", asked, clk.Now()}
			}
		}()
	}
	clk.BlockUntil(16)
	lightWaiting := 0
	var lightWaits []time.Duration
	for step := 1; step <= 50; step++ {
		if step%5 == 0 {
			go func() {
				r := new(Reservation)
				asked := clk.Now()
				if err := p.Acquire(ctx, &Request{Model: sonnet, Client: "light"}, r); err != nil {
					t.Error(err)
					return
				}
				r.Settle(ok200())
				out <- admission{"light", asked, clk.Now()}
			}()
			lightWaiting++
			clk.BlockUntil(16 + lightWaiting)
		}
		clk.Advance(time.Second)
		var a admission
		select {
		case a = <-out:
		case <-time.After(10 * time.Second):
			t.Fatalf("second %d admitted nobody", step)
		}
		if a.who == "light" {
			lightWaiting--
			lightWaits = append(lightWaits, a.gotAt.Sub(a.asked))
		}
		clk.BlockUntil(16 + lightWaiting) // the greedy one is back in line
	}
	if len(lightWaits) != 10 {
		t.Fatalf("%d of 10 light requests admitted", len(lightWaits))
	}
	for i, w := range lightWaits {
		if w > time.Second {
			t.Fatalf("light request %d waited %v, want at most one admission interval: %v", i, w, lightWaits)
		}
	}
}
