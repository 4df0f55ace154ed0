package keypool

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
	"github.com/cc-relay/caddy-cc-relay/internal/pricing"
)

// memSpend is a SharedSpend in memory with the Redis script's rules; the
// engine itself is tested against a real redis-server in
// internal/redisstate.
type memSpend struct {
	mu        sync.Mutex
	totals    map[SpendKey]SpendTotal
	instances int
	others    pricing.PicoUSD // other instances' holds, in every reply
	fail      bool
	during    func() // called inside Add, between reading and replying
	got       [][]SpendUpdate
}

func (m *memSpend) Add(_ context.Context, us []SpendUpdate) ([]SpendTotal, error) {
	m.mu.Lock()
	if m.fail {
		m.mu.Unlock()
		return nil, errors.New("redis: local-fallback")
	}
	if m.totals == nil {
		m.totals = map[SpendKey]SpendTotal{}
	}
	m.got = append(m.got, us)
	out := make([]SpendTotal, len(us))
	for i, u := range us {
		t, ok := m.totals[u.SpendKey]
		switch {
		case u.Reset:
			t = SpendTotal{Spent: u.Add, Resets: t.Resets + 1}
		case !ok:
			t = SpendTotal{Spent: u.Floor + u.Add, Resets: u.Resets}
		default:
			if t.Resets == u.Resets && t.Spent < u.Floor {
				t.Spent = u.Floor
			}
			t.Spent += u.Add
		}
		m.totals[u.SpendKey], out[i] = t, t
		out[i].Others = m.others
	}
	during := m.during
	m.mu.Unlock()
	if during != nil {
		during()
	}
	return out, nil
}

func (m *memSpend) Instances() int { return max(1, m.instances) }

func (m *memSpend) last() []SpendUpdate {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.got[len(m.got)-1]
}

// sharedAlice is a state with client alice ($1 a day) sharing spend
// through a memSpend.
func sharedAlice(t *testing.T) (*clock.Fake, *Clients, *memSpend) {
	t.Helper()
	clk := clock.NewFake(t0)
	_, c := newClients(t, clk, ClientConfig{Name: "alice", Budget: pricing.PerUSD, Period: PeriodDay})
	sp := &memSpend{}
	c.UseShared(sp)
	return clk, c, sp
}

func spentOf(c *Clients) pricing.PicoUSD { return pricing.PicoUSD(c.Snapshot()[0].Spend.SpentPicoUSD) }

// With shared spend each instance enforces its share of a client's
// per-minute limits; the error names the configured limit.
func TestClientSharedLimitsSplitOverInstances(t *testing.T) {
	clk := clock.NewFake(t0)
	_, c := newClients(t, clk, ClientConfig{Name: "alice", Limits: Limits{RPM: 60}})
	sp := &memSpend{instances: 3}
	c.UseShared(sp)
	for range 20 {
		done(admit(t, c, "alice", 40, 10), 10, 1)
	}
	if le := limited(t, c, "alice", "rpm", 40, 10); le.Max != 60 || le.RetryAfter != 3*time.Second {
		t.Fatalf("limit %d retry %v, want the configured 60 and 3 s (20 a minute here)", le.Max, le.RetryAfter)
	}
	if s := c.Snapshot()[0].Requests; s.Configured != 60 || s.Remaining != 0 {
		t.Fatalf("snapshot %+v", s)
	}
	c.UseShared(nil) // redis removed by a reload: the whole limit again
	clk.Advance(20 * time.Second)
	for range 20 {
		done(admit(t, c, "alice", 40, 10), 10, 1)
	}
}

// Admission counts the shared total plus this instance's spend since; an
// exchange that fails changes nothing and the next one sends it all.
func TestClientShareSpendKeepsCountingWhileUnreachable(t *testing.T) {
	ctx := context.Background()
	_, c, sp := sharedAlice(t)
	done(admit(t, c, "alice", 40, 10), 1000, 0) // $0.003
	key := SpendKey{Client: "alice", Period: PeriodDay, PeriodStart: PeriodDay.Start(t0)}
	sp.totals = map[SpendKey]SpendTotal{key: {Spent: 7_000_000_000}} // another instance's
	if err := c.ShareSpend(ctx); err != nil {
		t.Fatal(err)
	}
	if got := spentOf(c); got != 10_000_000_000 {
		t.Fatalf("spent %d, want the shared 10_000_000_000", got)
	}
	sp.fail = true
	done(admit(t, c, "alice", 40, 10), 1000, 0)
	if err := c.ShareSpend(ctx); err == nil {
		t.Fatal("no error from an unreachable store")
	}
	done(admit(t, c, "alice", 40, 10), 1000, 0)
	if got := spentOf(c); got != 16_000_000_000 {
		t.Fatalf("spent %d while unreachable, want 16_000_000_000", got)
	}
	sp.fail = false
	if err := c.ShareSpend(ctx); err != nil {
		t.Fatal(err)
	}
	if u := sp.last()[0]; u.Add != 6_000_000_000 || u.Floor != 10_000_000_000 {
		t.Fatalf("rejoin sent %+v, want add 6e9 over a floor of 10e9", u)
	}
	if got := sp.totals[key].Spent; got != 16_000_000_000 {
		t.Fatalf("shared %d", got)
	}
}

// Spend read from storage after shared spend is on is a floor, not spend
// to add again; spend counted before it was switched on is too.
func TestClientSharedSpendFloors(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(t0)
	cfg := ClientConfig{Name: "alice", Budget: pricing.PerUSD, Period: PeriodDay}
	store := &memStore{recs: map[string]SpendRecord{"alice": {Client: "alice", Period: "day",
		PeriodStart: PeriodDay.Start(t0), SpentPicoUSD: 5_000_000_000}}}
	_, c := newClients(t, clk, cfg)
	sp := &memSpend{}
	c.UseShared(sp)
	if err := c.Load(ctx, store); err != nil {
		t.Fatal(err)
	}
	if err := c.ShareSpend(ctx); err != nil {
		t.Fatal(err)
	}
	if u := sp.last()[0]; u.Add != 0 || u.Floor != 5_000_000_000 {
		t.Fatalf("sent %+v, want a floor of the stored spend and nothing added", u)
	}
	_, c2 := newClients(t, clk, cfg)
	done(admit(t, c2, "alice", 40, 10), 1000, 0)
	c2.UseShared(sp)
	if err := c2.ShareSpend(ctx); err != nil {
		t.Fatal(err)
	}
	if u := sp.last()[0]; u.Add != 0 || u.Floor != 3_000_000_000 || spentOf(c2) != 5_000_000_000 {
		t.Fatalf("sent %+v, spent %d: want the local count as a floor and the larger shared total", u, spentOf(c2))
	}
}

// A reset while an exchange is on its way drops that exchange's reply and
// goes out with the next one; so does a new period.
func TestClientShareSpendResetDuringExchange(t *testing.T) {
	ctx := context.Background()
	clk, c, sp := sharedAlice(t)
	done(admit(t, c, "alice", 40, 10), 1000, 0)
	sp.during = func() { c.Reset("alice") }
	if err := c.ShareSpend(ctx); err != nil {
		t.Fatal(err)
	}
	sp.during = nil
	if got := spentOf(c); got != 0 {
		t.Fatalf("spent %d after a reset, want 0", got)
	}
	done(admit(t, c, "alice", 40, 10), 1, 0)
	if err := c.ShareSpend(ctx); err != nil {
		t.Fatal(err)
	}
	if u := sp.last()[0]; !u.Reset || u.Add != 3_000_000 {
		t.Fatalf("sent %+v, want the reset with the spend since", u)
	}
	if got := spentOf(c); got != 3_000_000 {
		t.Fatalf("spent %d", got)
	}
	// A failed reset is sent again.
	c.Reset("alice")
	sp.fail = true
	_ = c.ShareSpend(ctx)
	sp.fail = false
	if err := c.ShareSpend(ctx); err != nil {
		t.Fatal(err)
	}
	if u := sp.last()[0]; !u.Reset || u.Add != 0 {
		t.Fatalf("sent %+v, want the reset again", u)
	}
	// A new period: a new key from nothing.
	clk.Advance(24 * time.Hour)
	if err := c.ShareSpend(ctx); err != nil {
		t.Fatal(err)
	}
	if u := sp.last()[0]; u.Reset || u.Floor != 0 || !u.PeriodStart.Equal(PeriodDay.Start(clk.Now())) {
		t.Fatalf("sent %+v in a new period", u)
	}
}

// Other instances' requests in flight count as reserved at admission: a
// request beyond what they leave is refused, and one larger than the rest
// does not run "alone" while they hold any.
func TestClientSharedHoldsOfOtherInstances(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(t0)
	_, c := newClients(t, clk, ClientConfig{Name: "alice", Budget: pricing.PerUSD / 100, Period: PeriodDay}) // $0.01
	sp := &memSpend{others: pricing.PerUSD / 100}
	c.UseShared(sp)
	if err := c.ShareSpend(ctx); err != nil {
		t.Fatal(err)
	}
	le := limited(t, c, "alice", "budget", 40, 10)
	if le.Reserved != pricing.PerUSD/100 || le.RetryAfter != budgetBusyRetry {
		t.Fatalf("refusal %+v, want the other instances' holds as reserved", le)
	}
	sp.others = 0
	if err := c.ShareSpend(ctx); err != nil {
		t.Fatal(err)
	}
	done(admit(t, c, "alice", 40, 10), 10, 1)
	if u := sp.last()[0]; u.Reserved != 0 {
		t.Fatalf("sent %+v with nothing in flight", u)
	}
	r := admit(t, c, "alice", 40, 10)
	if err := c.ShareSpend(ctx); err != nil {
		t.Fatal(err)
	}
	if u := sp.last()[0]; u.Reserved == 0 {
		t.Fatalf("sent %+v with a request in flight", u)
	}
	done(r, 10, 1)
}
