package redisstate

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
	"github.com/cc-relay/caddy-cc-relay/internal/pricing"
	"github.com/cc-relay/caddy-cc-relay/internal/redistest"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// midday is noon (UTC) of today: the spend keys' expiry is by Redis's
// clock, so the fake clock's periods must be current ones.
func midday() time.Time { return time.Now().UTC().Truncate(24 * time.Hour).Add(12 * time.Hour) }

// spendInstance is one relay instance's client spend: its own client state
// sharing spend through its own store on the common Redis.
type spendInstance struct {
	store   *Store
	clients *keypool.Clients
}

// twoInstances starts two instances of one pool on srv, both with client
// "alice" holding a daily budget of budget, timed by clk.
func twoInstances(t *testing.T, srv *redistest.Server, clk clock.Clock, budget pricing.PicoUSD) [2]spendInstance {
	t.Helper()
	tab, err := pricing.NewTable(nil)
	if err != nil {
		t.Fatal(err)
	}
	var out [2]spendInstance
	for i := range out {
		s := newStore(t, srv, func(c *Config) { c.Pool = t.Name(); c.Instance = "i" + strconv.Itoa(i); c.Timeout = failTimeout })
		c, err := keypool.NewClientState(clk).NewClients(keypool.ClientsConfig{
			Clients:            []keypool.ClientConfig{{Name: "alice", Budget: budget, Period: keypool.PeriodDay}},
			Prices:             tab,
			TokenEstimateRatio: keypool.DefaultTokenEstimateRatio,
		})
		if err != nil {
			t.Fatal(err)
		}
		c.UseShared(s.Spend())
		out[i] = spendInstance{s, c}
	}
	for _, in := range out {
		in.store.beat()
	}
	return out
}

// spend runs one request of alice's on in: 1000 output tokens of Sonnet
// ($0.015 plus a little input). It reports the request's cost, or false
// when alice's budget refused it.
func (in spendInstance) spend(t *testing.T) (pricing.PicoUSD, bool) {
	t.Helper()
	var r keypool.ClientReservation
	err := in.clients.Admit(&keypool.ClientRequest{Client: "alice", Model: "claude-sonnet-4-5", Bytes: 400, MaxTokens: 1000}, &r)
	var le *keypool.ClientLimitError
	if errors.As(err, &le) && le.Limit == "budget" {
		return 0, false
	}
	if err != nil {
		t.Fatal(err)
	}
	r.Add(pricing.Usage{InputTokens: 100, OutputTokens: 1000}, true, true)
	r.Settle()
	return r.Cost(), true
}

func (in spendInstance) spent() pricing.PicoUSD {
	return pricing.PicoUSD(in.clients.Snapshot()[0].Spend.SpentPicoUSD)
}

// sharedTotal is alice's total in Redis for the day of now.
func sharedTotal(t *testing.T, srv *redistest.Server, in spendInstance, now time.Time) pricing.PicoUSD {
	t.Helper()
	c := direct(t, srv)
	k := in.store.keys.spend("alice", "day", keypool.PeriodDay.Start(now).Unix())
	v, err := c.Do(context.Background(), c.B().Hget().Key(k).Field("s").Build()).ToString()
	if err != nil {
		t.Fatalf("alice's total in redis: %v", err)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return pricing.PicoUSD(n)
}

// A client's budget holds across instances: requests alternate between
// two instances, each exchanging spend after each request (as the
// heartbeat-paced exchange does between requests), and the client is
// refused by both once the shared total reaches the budget, within one
// request of it; the total in Redis is the exact sum of the costs.
func TestSharedSpendBudgetAcrossInstances(t *testing.T) {
	srv := redistest.Start(t)
	clk := clock.NewFake(midday())
	budget := pricing.PerUSD / 10 // $0.10: about six requests
	ins := twoInstances(t, srv, clk, budget)
	ctx := context.Background()
	var sum, last pricing.PicoUSD
	n := 0
	for i := 0; ; i++ {
		if i == 100 {
			t.Fatal("the budget never refused")
		}
		cost, ok := ins[i%2].spend(t)
		if !ok {
			break
		}
		sum, last, n = sum+cost, cost, n+1
		for _, in := range ins {
			if err := in.clients.ShareSpend(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if sum < budget || sum >= budget+last {
		t.Fatalf("spent %s over %d requests of a %s budget; want within one request (%s) over", sum, n, budget, last)
	}
	if got := sharedTotal(t, srv, ins[0], clk.Now()); got != sum {
		t.Fatalf("total in redis %d, want the exact sum %d", got, sum)
	}
	for i, in := range ins {
		if _, ok := in.spend(t); ok {
			t.Fatalf("instance %d admitted alice over her budget", i)
		}
		if got := in.spent(); got != sum {
			t.Fatalf("instance %d reports %s spent, want %s", i, got, sum)
		}
	}
	// Without sharing, each instance would have let her spend the whole
	// budget: about twice as many requests.
	if n > int(budget/last)+1 {
		t.Fatalf("%d requests admitted, one budget holds %d", n, budget/last+1)
	}
	// The next day starts over, on a new key.
	clk.Advance(12 * time.Hour)
	if _, ok := ins[1].spend(t); !ok {
		t.Fatal("a new day did not start the budget over")
	}
}

// Redis killed: both instances keep counting locally (an exchange fails at
// once, nothing is lost); restarted empty: the totals are rebuilt from
// what each instance last saw (the largest wins) plus what each spent
// during the outage, exactly.
func TestSharedSpendThroughOutage(t *testing.T) {
	srv := redistest.Start(t)
	clk := clock.NewFake(midday())
	ins := twoInstances(t, srv, clk, 100*pricing.PerUSD)
	ctx := context.Background()
	var before pricing.PicoUSD
	for i := range 4 {
		c, _ := ins[i%2].spend(t)
		before += c
	}
	for range 2 { // the second round brings each the other's spend
		for _, in := range ins {
			if err := in.clients.ShareSpend(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	srv.Kill()
	var during [2]pricing.PicoUSD
	for i := range 6 {
		c, ok := ins[i%2].spend(t)
		if !ok {
			t.Fatal("refused during the outage")
		}
		during[i%2] += c
		start := time.Now()
		if err := ins[i%2].clients.ShareSpend(ctx); err == nil {
			t.Fatal("an exchange with a dead redis succeeded")
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("an exchange with a dead redis took %v", d)
		}
	}
	for i, in := range ins {
		// Each counts the shared total it last saw plus its own.
		if got, want := in.spent(), before+during[i]; got != want {
			t.Fatalf("instance %d during the outage: %s spent, want %s", i, got, want)
		}
	}
	srv.Restart()
	// Each rejoins at a heartbeat and exchanges. A command on a connection
	// the kill broke fails (EOF, before it reaches the new server) and
	// opens the breaker again: then the next heartbeat rejoins, as it
	// would a second later in service.
	exchange := func(in spendInstance) {
		t.Helper()
		for i := 0; ; i++ {
			if i == 50 {
				t.Fatal("did not rejoin a restarted redis")
			}
			if in.store.Mode() == keypool.SharedModeShared && in.clients.ShareSpend(ctx) == nil {
				return
			}
			in.store.beat()
			time.Sleep(20 * time.Millisecond)
		}
	}
	for range 2 { // the second round brings each the other's spend
		for _, in := range ins {
			exchange(in)
		}
	}
	want := before + during[0] + during[1]
	if got := sharedTotal(t, srv, ins[0], clk.Now()); got != want {
		t.Fatalf("rebuilt total %s, want %s (before the outage) + %s + %s", got, before, during[0], during[1])
	}
	for i, in := range ins {
		if got := in.spent(); got != want {
			t.Fatalf("instance %d after rejoin: %s, want %s", i, got, want)
		}
	}
}

// Redis stalled (SIGSTOP) while an exchange was on its way: the instance
// gives up on it at its timeout and sends the same spend again with its
// next exchange after the SIGCONT; the script that waited in the
// connection and ran when Redis continued added nothing, so the total is
// exact, not that spend twice.
func TestSharedSpendThroughStall(t *testing.T) {
	srv := redistest.Start(t)
	clk := clock.NewFake(midday())
	ins := twoInstances(t, srv, clk, 100*pricing.PerUSD)
	ctx := context.Background()
	var sum pricing.PicoUSD
	for range 2 {
		c, _ := ins[0].spend(t)
		sum += c
	}
	if err := ins[0].clients.ShareSpend(ctx); err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	c, _ := ins[0].spend(t)
	sum += c
	if err := ins[0].clients.ShareSpend(ctx); err == nil {
		srv.Resume()
		t.Fatal("an exchange with a stalled redis succeeded")
	}
	srv.Resume()
	for i := 0; ins[0].store.Mode() != keypool.SharedModeShared || ins[0].clients.ShareSpend(ctx) != nil; i++ {
		if i == 50 {
			t.Fatal("did not rejoin after the stall")
		}
		ins[0].store.beat()
		time.Sleep(20 * time.Millisecond)
	}
	if got := sharedTotal(t, srv, ins[0], clk.Now()); got != sum {
		t.Fatalf("total %s after the stall, want %s (the exchange that timed out counted %s)", got, sum, got-sum)
	}
}

// An operator's reset on one instance reaches the other, and a floor does
// not undo it.
func TestSharedSpendReset(t *testing.T) {
	srv := redistest.Start(t)
	clk := clock.NewFake(midday())
	ins := twoInstances(t, srv, clk, 100*pricing.PerUSD)
	ctx := context.Background()
	for i := range 4 {
		ins[i%2].spend(t)
	}
	exchange := func() {
		t.Helper()
		for _, in := range ins {
			if err := in.clients.ShareSpend(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	exchange()
	exchange()
	if !ins[0].clients.Reset("alice") {
		t.Fatal("reset")
	}
	cost, _ := ins[1].spend(t) // spent on the other instance before it hears
	exchange()
	exchange()
	for i, in := range ins {
		if got := in.spent(); got != cost {
			t.Fatalf("instance %d after a reset elsewhere: %s, want %s (spent since)", i, got, cost)
		}
	}
}

// Large totals stay exact: beyond 2^53 picodollars ($9007) a Lua number
// would round.
func TestSharedSpendExactBeyondFloatPrecision(t *testing.T) {
	srv := redistest.Start(t)
	s := newStore(t, srv)
	k := keypool.SpendKey{Client: "big", Period: keypool.PeriodMonth, PeriodStart: keypool.PeriodMonth.Start(time.Now())}
	big := pricing.PicoUSD(1<<53 + 1)
	got, err := s.Spend().Add(context.Background(), []keypool.SpendUpdate{{SpendKey: k, Add: big}, {SpendKey: k, Add: 2, Floor: big + 10}})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Spent != big || got[1].Spent != big+12 {
		t.Fatalf("totals %+v, want %d then %d", got, big, big+12)
	}
}

// Keys name the client, never anything else of it; spend keys expire
// after their period.
func TestSharedSpendKeys(t *testing.T) {
	srv := redistest.Start(t)
	s := newStore(t, srv, func(c *Config) { c.Pool = "p" })
	c := direct(t, srv)
	ctx := context.Background()
	start := keypool.PeriodMonth.Start(time.Now())
	if _, err := s.Spend().Add(ctx, []keypool.SpendUpdate{{SpendKey: keypool.SpendKey{Client: "a{b}", Period: keypool.PeriodMonth, PeriodStart: start}, Add: 5}}); err != nil {
		t.Fatal(err)
	}
	ks, err := c.Do(ctx, c.B().Keys().Pattern("*spend*").Build()).AsStrSlice()
	if err != nil || len(ks) != 1 || ks[0] != "{cc_relay:p}:spend:month:"+strconv.FormatInt(start.Unix(), 10)+":a%7Bb%7D" {
		t.Fatalf("spend keys %q %v", ks, err)
	}
	at, _ := c.Do(ctx, c.B().Pexpiretime().Key(ks[0]).Build()).AsInt64()
	if want := start.AddDate(0, 1, 0).Add(SpendGrace).UnixMilli(); at != want {
		t.Fatalf("expires at %d, want %d (period end + grace)", at, want)
	}
	if strings.Contains(ks[0], "{b}") {
		t.Fatal("a client name opened a hash tag")
	}
}

// Requests in flight on one instance hold the budget on the others from
// the next exchange on: 16 concurrent requests on one instance and the
// other refuses what would go beyond the budget; the holds go when the
// requests settle, or when their instance is no longer alive.
func TestSharedSpendHoldsAcrossInstances(t *testing.T) {
	srv := redistest.Start(t)
	clk := clock.NewFake(midday())
	ins := twoInstances(t, srv, clk, pricing.PerUSD) // $1
	ctx := context.Background()
	exchange := func() {
		t.Helper()
		for _, in := range ins {
			if err := in.clients.ShareSpend(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	req := keypool.ClientRequest{Client: "alice", Model: "claude-sonnet-4-5", Bytes: 400, MaxTokens: 5000} // about $0.075 at worst
	var held []*keypool.ClientReservation
	for range 16 {
		r := new(keypool.ClientReservation)
		if ins[0].clients.Admit(&req, r) == nil {
			held = append(held, r)
		}
	}
	if len(held) < 12 || len(held) > 13 {
		t.Fatalf("%d of 16 concurrent $0.075 requests admitted on a $1 budget", len(held))
	}
	exchange()
	var r keypool.ClientReservation
	err := ins[1].clients.Admit(&req, &r)
	var le *keypool.ClientLimitError
	if !errors.As(err, &le) || le.Limit != "budget" || le.Reserved < pricing.PerUSD*8/10 {
		t.Fatalf("the other instance: %v, want a budget refusal counting the holds", err)
	}
	for _, r := range held {
		r.Add(pricing.Usage{InputTokens: 100, OutputTokens: 10}, true, true)
		r.Settle()
	}
	exchange()
	if err := ins[1].clients.Admit(&req, &r); err != nil {
		t.Fatalf("after the requests settled: %v", err)
	}
	// Instance 1's request in flight, instance 1 then gone: its hold
	// counts until its deadline (made past here, as its liveness would
	// run out) and is dropped then.
	exchange()
	exchange() // instance 0 hears of it after instance 1 told
	if got := ins[0].clients.Snapshot()[0].Spend.ReservedPicoUSD; got == 0 {
		t.Fatal("instance 0 does not see instance 1's request in flight")
	}
	c := direct(t, srv)
	k := ins[0].store.keys.spend("alice", "day", keypool.PeriodDay.Start(clk.Now()).Unix())
	if err := c.Do(ctx, c.B().Hset().Key(k).FieldValue().FieldValue("h:i1", "60000000000 1").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if err := ins[0].clients.ShareSpend(ctx); err != nil {
		t.Fatal(err)
	}
	if got := ins[0].clients.Snapshot()[0].Spend.ReservedPicoUSD; got != 0 {
		t.Fatalf("a dead instance's hold still counts: %d", got)
	}
}
