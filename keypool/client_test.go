package keypool

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
	"github.com/cc-relay/caddy-cc-relay/internal/pricing"
)

// sonnetPrice is the built-in Sonnet 4.x price: $3 / $15 per million
// tokens, cache writes $3.75 (5m) / $6 (1h), reads $0.30.
var sonnetPrice = pricing.NewPrice(3_000_000, 15_000_000)

func newClients(t *testing.T, clk clock.Clock, cfgs ...ClientConfig) (*ClientState, *Clients) {
	t.Helper()
	cs := NewClientState(clk)
	return cs, mustClients(t, cs, cfgs...)
}

func mustClients(t *testing.T, cs *ClientState, cfgs ...ClientConfig) *Clients {
	t.Helper()
	tab, err := pricing.NewTable(nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := cs.NewClients(ClientsConfig{Clients: cfgs, Prices: tab, TokenEstimateRatio: DefaultTokenEstimateRatio})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// admit admits a request of bytes body bytes for client, or fails.
func admit(t *testing.T, c *Clients, client string, bytes int, maxTokens int64) *ClientReservation {
	t.Helper()
	r := new(ClientReservation)
	if err := c.Admit(&ClientRequest{Client: client, Model: sonnet, Bytes: bytes, MaxTokens: maxTokens}, r); err != nil {
		t.Fatalf("Admit(%s): %v", client, err)
	}
	return r
}

// limited asserts a *ClientLimitError on limit and returns it.
func limited(t *testing.T, c *Clients, client, limit string, bytes int, maxTokens int64) *ClientLimitError {
	t.Helper()
	var r ClientReservation
	err := c.Admit(&ClientRequest{Client: client, Model: sonnet, Bytes: bytes, MaxTokens: maxTokens}, &r)
	var le *ClientLimitError
	if !errors.As(err, &le) || le.Limit != limit {
		t.Fatalf("Admit(%s) = %v, want a %s limit error", client, err, limit)
	}
	return le
}

func done(r *ClientReservation, in, out int64) {
	r.Add(pricing.Usage{InputTokens: in, OutputTokens: out}, true, true)
	r.Settle()
}

func TestClientRPM(t *testing.T) {
	clk := clock.NewFake(t0)
	_, c := newClients(t, clk, ClientConfig{Name: "alice", Limits: Limits{RPM: 2}}, ClientConfig{Name: "bob"})
	done(admit(t, c, "alice", 40, 10), 10, 1)
	done(admit(t, c, "alice", 40, 10), 10, 1)
	le := limited(t, c, "alice", "rpm", 40, 10)
	// One request refills in 30s at 2 per minute.
	if le.RetryAfter != 30*time.Second || le.Max != 2 {
		t.Fatalf("retry after %v, max %d", le.RetryAfter, le.Max)
	}
	if !strings.Contains(le.Error(), `client "alice" is over its own rpm limit of 2 requests per minute; retry in 30s`) {
		t.Fatalf("message %q", le.Error())
	}
	// Another client is not limited by alice's limit.
	done(admit(t, c, "bob", 40, 10), 10, 1)
	clk.Advance(29 * time.Second)
	limited(t, c, "alice", "rpm", 40, 10)
	clk.Advance(time.Second)
	done(admit(t, c, "alice", 40, 10), 10, 1)
}

func TestClientRequestNotReachingUpstreamIsRefunded(t *testing.T) {
	clk := clock.NewFake(t0)
	_, c := newClients(t, clk, ClientConfig{Name: "alice", Limits: Limits{RPM: 1}})
	r := admit(t, c, "alice", 40, 10)
	r.Add(pricing.Usage{}, false, false) // the pool had no key: nothing went upstream
	r.Settle()
	r.Settle() // once only
	done(admit(t, c, "alice", 40, 10), 10, 1)
	limited(t, c, "alice", "rpm", 40, 10)
}

func TestClientITPMAndOTPM(t *testing.T) {
	clk := clock.NewFake(t0)
	_, c := newClients(t, clk, ClientConfig{Name: "alice", Limits: Limits{ITPM: 1000, OTPM: 600}})
	// 4000 bytes estimate 1000 input tokens: the whole bucket.
	r := admit(t, c, "alice", 4000, 10)
	le := limited(t, c, "alice", "itpm", 400, 10)
	if le.RetryAfter != 6*time.Second { // 100 tokens at 1000/min
		t.Fatalf("itpm retry after %v", le.RetryAfter)
	}
	// Settled at its real input (500): the rest comes back.
	done(r, 500, 900)
	// 900 output tokens against 600 per minute: 300 in debt.
	le = limited(t, c, "alice", "otpm", 40, 10)
	if le.RetryAfter <= 30*time.Second || le.RetryAfter > 31*time.Second {
		t.Fatalf("otpm retry after %v, want just over 30s", le.RetryAfter)
	}
	if !strings.Contains(le.Error(), "otpm limit of 600 output tokens per minute") {
		t.Fatalf("message %q", le.Error())
	}
	clk.Advance(31 * time.Second)
	done(admit(t, c, "alice", 40, 10), 10, 1)

	// Absurd usage leaves a bounded wait, not an overflowed one.
	done(admit(t, c, "alice", 40, 10), 1, 1<<62)
	le = limited(t, c, "alice", "otpm", 40, 10)
	if le.RetryAfter != 24*time.Hour {
		t.Fatalf("retry after %v", le.RetryAfter)
	}
}

func TestClientMaxConcurrent(t *testing.T) {
	clk := clock.NewFake(t0)
	_, c := newClients(t, clk, ClientConfig{Name: "alice", MaxConcurrent: 2})
	a := admit(t, c, "alice", 40, 10)
	b := admit(t, c, "alice", 40, 10)
	le := limited(t, c, "alice", "max_concurrent", 40, 10)
	if le.RetryAfter != time.Second || !strings.Contains(le.Error(), "already has 2 requests in flight") {
		t.Fatalf("%v: %q", le.RetryAfter, le.Error())
	}
	done(a, 1, 1)
	admit(t, c, "alice", 40, 10)
	done(b, 1, 1)
	if s := c.Snapshot()[0]; s.InFlight != 1 || s.Totals.Refused != 1 || s.Totals.Requests != 3 {
		t.Fatalf("snapshot %+v", s)
	}
}

func TestClientModels(t *testing.T) {
	clk := clock.NewFake(t0)
	_, c := newClients(t, clk,
		ClientConfig{Name: "alice", Models: []string{"claude-haiku-*", "claude-sonnet-4-5*"}},
		ClientConfig{Name: "bob", Budget: pricing.PerUSD},
	)
	var r ClientReservation
	for model, ok := range map[string]bool{"claude-haiku-4-5": true, "claude-sonnet-4-5-20250929": true, "claude-opus-4-5": false} {
		err := c.Admit(&ClientRequest{Client: "alice", Model: model, Bytes: 10}, &r)
		var me *ModelNotAllowedError
		if ok != (err == nil) || !ok && (!errors.As(err, &me) || me.Error() != fmt.Sprintf("client %q may not use model %q", "alice", model)) {
			t.Errorf("%s: %v", model, err)
		}
		r.Settle()
	}
	// A budget cannot count a model without a price.
	err := c.Admit(&ClientRequest{Client: "bob", Model: "my-local-model", Bytes: 10}, &r)
	var me *ModelNotAllowedError
	if !errors.As(err, &me) || !me.NoPrice {
		t.Fatalf("unpriced model under a budget: %v", err)
	}
	if _, err := NewClientState(clk).NewClients(ClientsConfig{Clients: []ClientConfig{{Name: "x", Models: []string{"["}}}, TokenEstimateRatio: DefaultTokenEstimateRatio}); err == nil {
		t.Fatal("bad pattern accepted")
	}
}

func TestClientCostAndSpend(t *testing.T) {
	clk := clock.NewFake(t0)
	_, c := newClients(t, clk, ClientConfig{Name: "alice"})
	r := admit(t, c, "alice", 400, 100)
	r.Add(pricing.Usage{InputTokens: 10, OutputTokens: 20, CacheCreationInputTokens: 30, CacheCreation1h: 10, CacheReadInputTokens: 40}, true, true)
	r.Settle()
	// 10×3 + 20×15 + 20×3.75 + 10×6 + 40×0.30 = 477 micro-dollars.
	want := pricing.PicoUSD(477_000_000)
	if r.Cost() != want {
		t.Fatalf("cost %d, want %d", r.Cost(), want)
	}
	s := c.Snapshot()[0]
	if s.Spend.SpentPicoUSD != int64(want) || s.Totals.CostPicoUSD != int64(want) || s.Spend.ReservedPicoUSD != 0 || s.Spend.Period != "month" {
		t.Fatalf("spend %+v totals %+v", s.Spend, s.Totals)
	}
	// An unconfigured client (client_auth off) is priced, not limited.
	var a ClientReservation
	if err := c.Admit(&ClientRequest{Client: "anonymous", Model: sonnet, Bytes: 10}, &a); err != nil {
		t.Fatal(err)
	}
	a.Add(pricing.Usage{OutputTokens: 1}, true, true)
	a.Settle()
	if a.Cost() != 15_000_000 || a.Client() != "" {
		t.Fatalf("anonymous cost %d", a.Cost())
	}
}

// TestClientPriceAtAdmission: a reload that changes prices does not
// reprice a request admitted before it.
func TestClientPriceAtAdmission(t *testing.T) {
	clk := clock.NewFake(t0)
	cs, c := newClients(t, clk, ClientConfig{Name: "alice"})
	r := admit(t, c, "alice", 40, 10)
	tab, _ := pricing.NewTable([]pricing.Rule{{Pattern: "claude-sonnet-*", Price: pricing.NewPrice(100_000_000, 100_000_000)}})
	c2, err := cs.NewClients(ClientsConfig{Clients: []ClientConfig{{Name: "alice"}}, Prices: tab, TokenEstimateRatio: DefaultTokenEstimateRatio})
	if err != nil {
		t.Fatal(err)
	}
	done(r, 1, 1)
	if r.Cost() != 18_000_000 {
		t.Fatalf("cost %d: not the price at admission", r.Cost())
	}
	r2 := new(ClientReservation)
	if err := c2.Admit(&ClientRequest{Client: "alice", Model: sonnet, Bytes: 40}, r2); err != nil {
		t.Fatal(err)
	}
	done(r2, 1, 1)
	if r2.Cost() != 200_000_000 {
		t.Fatalf("cost %d under the new prices", r2.Cost())
	}
	if got := c2.Snapshot()[0].Spend.SpentPicoUSD; got != 218_000_000 {
		t.Fatalf("spend %d did not survive the reload", got)
	}
}

// TestClientBudgetConcurrent: 16 concurrent requests against a budget
// smaller than their worst cases together never overdraw it by more than
// one request's cost.
func TestClientBudgetConcurrent(t *testing.T) {
	clk := clock.NewFake(t0)
	budget := pricing.PerUSD / 100 // $0.01
	_, c := newClients(t, clk, ClientConfig{Name: "alice", Budget: budget, Period: PeriodDay})
	// Worst case of one request: 100 prompt tokens at $3.75 + 100 output
	// at $15 = $0.001875; real cost 100 in + 100 out = $0.0018.
	const bytes, maxTok = 400, 100
	perReq := sonnetPrice.Cost(pricing.Usage{InputTokens: 100, OutputTokens: 100})
	worst := sonnetPrice.WorstCase(100, 100, false)
	var admitted, refusedN int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for round := 0; round < 10; round++ {
		var held []*ClientReservation
		for i := 0; i < 16; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := new(ClientReservation)
				err := c.Admit(&ClientRequest{Client: "alice", Model: sonnet, Bytes: bytes, MaxTokens: maxTok}, r)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					var le *ClientLimitError
					if !errors.As(err, &le) || le.Limit != "budget" {
						t.Errorf("refused with %v", err)
					}
					refusedN++
					return
				}
				admitted++
				held = append(held, r)
			}()
		}
		wg.Wait()
		// Every admitted request holds its worst case: together they fit.
		if s := c.Snapshot()[0]; s.Spend.SpentPicoUSD+s.Spend.ReservedPicoUSD > int64(budget)+int64(worst) {
			t.Fatalf("round %d: spent %d + reserved %d over budget %d", round, s.Spend.SpentPicoUSD, s.Spend.ReservedPicoUSD, budget)
		}
		for _, r := range held {
			done(r, 100, 100)
		}
	}
	s := c.Snapshot()[0]
	spent := pricing.PicoUSD(s.Spend.SpentPicoUSD)
	if spent > budget+perReq || spent < budget-worst {
		t.Fatalf("spent %s of %s: not within one request (%s) of the budget", spent, budget, perReq)
	}
	if spent != pricing.PicoUSD(admitted)*perReq {
		t.Fatalf("spent %s, want %d × %s exactly", spent, admitted, perReq)
	}
	if refusedN == 0 {
		t.Fatal("nothing was refused")
	}
	le := limited(t, c, "alice", "budget", bytes, maxTok)
	wantReset := time.Date(2025, 6, 2, 0, 0, 0, 0, time.UTC)
	if !le.Resets.Equal(wantReset) || le.RetryAfter != 12*time.Hour {
		t.Fatalf("resets %v, retry after %v", le.Resets, le.RetryAfter)
	}
	if !strings.Contains(le.Error(), `client "alice" has spent $0.0`) || !strings.Contains(le.Error(), "of its $0.01 daily budget; the budget resets at 2025-06-02T00:00:00Z") {
		t.Fatalf("message %q", le.Error())
	}
}

// TestClientBudgetReservedMessage: refused because requests in flight hold
// the rest, the client hears so and retries soon.
func TestClientBudgetReservedMessage(t *testing.T) {
	clk := clock.NewFake(t0)
	_, c := newClients(t, clk, ClientConfig{Name: "alice", Budget: pricing.PerUSD / 1000, Period: PeriodDay}) // $0.001
	// Worst case 100×3.75 + 100×15 = $0.001875 > budget: runs alone.
	r := admit(t, c, "alice", 400, 100)
	le := limited(t, c, "alice", "budget", 400, 100)
	if le.RetryAfter != budgetBusyRetry || !strings.Contains(le.Error(), "reserved by requests in flight") {
		t.Fatalf("%v %q", le.RetryAfter, le.Error())
	}
	done(r, 100, 100) // $0.0018: over the budget by less than one request
	le = limited(t, c, "alice", "budget", 400, 100)
	if le.RetryAfter != 12*time.Hour {
		t.Fatalf("retry after %v", le.RetryAfter)
	}
}

func TestBudgetPeriods(t *testing.T) {
	// 2026-12-06 is a Sunday.
	sun := time.Date(2026, 12, 6, 23, 59, 59, 0, time.UTC)
	for _, c := range []struct {
		p     Period
		at    time.Time
		start time.Time
		end   time.Time
	}{
		{PeriodDay, sun, time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)},
		{PeriodWeek, sun, time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)},
		{PeriodWeek, sun.Add(time.Second), time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 14, 0, 0, 0, 0, time.UTC)},
		{PeriodMonth, time.Date(2026, 12, 31, 23, 0, 0, 0, time.UTC), time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)},
		// Another zone's time is placed in UTC.
		{PeriodDay, time.Date(2026, 12, 7, 1, 0, 0, 0, time.FixedZone("CET", 3600)), time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)},
	} {
		s := c.p.Start(c.at)
		if !s.Equal(c.start) || !c.p.End(s).Equal(c.end) {
			t.Errorf("%s at %v: [%v, %v), want [%v, %v)", c.p, c.at, s, c.p.End(s), c.start, c.end)
		}
	}
	for _, s := range []string{"day", "week", "month"} {
		if p, err := ParsePeriod(s); err != nil || p.String() != s {
			t.Errorf("ParsePeriod(%q) = %v, %v", s, p, err)
		}
	}
	if _, err := ParsePeriod("year"); err == nil {
		t.Error("year accepted")
	}
}

// TestClientBudgetAcrossUTCBoundary moves a fake clock over midnight and
// over a Monday: the spent budget comes back exactly then.
func TestClientBudgetAcrossUTCBoundary(t *testing.T) {
	sun := time.Date(2026, 12, 6, 23, 59, 0, 0, time.UTC) // a Sunday
	for _, p := range []Period{PeriodDay, PeriodWeek} {
		clk := clock.NewFake(sun)
		_, c := newClients(t, clk, ClientConfig{Name: "alice", Budget: pricing.PerUSD / 1000, Period: p})
		done(admit(t, c, "alice", 40, 10), 1000, 0) // $0.003: over
		le := limited(t, c, "alice", "budget", 40, 10)
		if le.RetryAfter != time.Minute {
			t.Fatalf("%s: retry after %v, want the minute to midnight", p, le.RetryAfter)
		}
		clk.Advance(59 * time.Second)
		limited(t, c, "alice", "budget", 40, 10)
		clk.Advance(time.Second)
		r := admit(t, c, "alice", 40, 10)
		s := c.Snapshot()[0]
		if s.Spend.SpentPicoUSD != 0 || !s.Spend.PeriodStart.Equal(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)) {
			t.Fatalf("%s: after midnight %+v", p, s.Spend)
		}
		done(r, 1, 0)
		if got := c.Snapshot()[0].Spend.SpentPicoUSD; got != 3_000_000 {
			t.Fatalf("%s: spent %d", p, got)
		}
	}
	// A monthly budget does not reset at midnight, but on the 1st.
	clk := clock.NewFake(time.Date(2026, 11, 30, 23, 59, 0, 0, time.UTC))
	_, c := newClients(t, clk, ClientConfig{Name: "alice", Budget: pricing.PerUSD / 1000, Period: PeriodMonth})
	done(admit(t, c, "alice", 40, 10), 1000, 0)
	clk.Advance(time.Minute)
	admit(t, c, "alice", 40, 10)
}

// TestClientReservationAcrossPeriod: a request admitted before midnight
// and settled after it neither charges the new day nor corrupts its
// reservations.
func TestClientReservationAcrossPeriod(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 12, 6, 23, 59, 0, 0, time.UTC))
	_, c := newClients(t, clk, ClientConfig{Name: "alice", Budget: pricing.PerUSD, Period: PeriodDay})
	r := admit(t, c, "alice", 40, 10)
	clk.Advance(2 * time.Minute)
	r2 := admit(t, c, "alice", 40, 10)
	done(r, 1000, 0)
	s := c.Snapshot()[0]
	if s.Spend.SpentPicoUSD != 0 || s.Spend.ReservedPicoUSD != int64(r2.reserved) {
		t.Fatalf("spend %+v", s.Spend)
	}
	done(r2, 1, 0)
	if s := c.Snapshot()[0]; s.Spend.SpentPicoUSD != 3_000_000 || s.Spend.ReservedPicoUSD != 0 {
		t.Fatalf("spend %+v", s.Spend)
	}
}

// memStore is a SpendStore in memory, standing for Caddy's storage.
type memStore struct {
	mu    sync.Mutex
	recs  map[string]SpendRecord
	fail  bool
	saves int
}

func (m *memStore) Load(_ context.Context, client string) (SpendRecord, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return SpendRecord{}, false, errors.New("storage down")
	}
	r, ok := m.recs[client]
	return r, ok, nil
}

func (m *memStore) Save(_ context.Context, rec SpendRecord) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return errors.New("storage down")
	}
	if m.recs == nil {
		m.recs = map[string]SpendRecord{}
	}
	m.recs[rec.Client] = rec
	m.saves++
	return nil
}

// TestClientSpendSurvivesReloadAndRestart: a reload (a new configuration
// over the same state) keeps spend in memory; a restart (a fresh state)
// reads it back from the store; a new period does not.
func TestClientSpendSurvivesReloadAndRestart(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC))
	store := &memStore{}
	cfg := ClientConfig{Name: "alice", Budget: pricing.PerUSD, Period: PeriodDay}
	cs, c := newClients(t, clk, cfg)
	if err := c.Load(ctx, store); err != nil {
		t.Fatal(err)
	}
	done(admit(t, c, "alice", 40, 10), 1000, 100) // $0.0045
	const spent = 4_500_000_000
	if !c.Dirty() {
		t.Fatal("spend not due for saving")
	}

	// Reload: the new configuration's Load must not add the store's
	// (older) figure to what memory holds.
	if err := c.Flush(ctx, store); err != nil {
		t.Fatal(err)
	}
	done(admit(t, c, "alice", 40, 10), 1000, 100)
	c2 := mustClients(t, cs, cfg)
	if err := c2.Load(ctx, store); err != nil {
		t.Fatal(err)
	}
	if got := c2.Snapshot()[0].Spend.SpentPicoUSD; got != 2*spent {
		t.Fatalf("after reload spent %d, want %d", got, 2*spent)
	}
	if err := c2.Flush(ctx, store); err != nil {
		t.Fatal(err)
	}
	if c2.Dirty() {
		t.Fatal("still dirty after a flush")
	}
	saves := store.saves
	if err := c2.Flush(ctx, store); err != nil || store.saves != saves {
		t.Fatalf("a clean flush wrote (%d → %d saves)", saves, store.saves)
	}

	// Restart: a fresh state reads the spend back.
	cs3 := NewClientState(clk)
	c3 := mustClients(t, cs3, cfg)
	if err := c3.Load(ctx, store); err != nil {
		t.Fatal(err)
	}
	if got := c3.Snapshot()[0].Spend.SpentPicoUSD; got != 2*spent {
		t.Fatalf("after restart spent %d, want %d", got, 2*spent)
	}

	// A restart on the next day starts the new day from nothing.
	clk.Advance(14 * time.Hour)
	c4 := mustClients(t, NewClientState(clk), cfg)
	if err := c4.Load(ctx, store); err != nil {
		t.Fatal(err)
	}
	if got := c4.Snapshot()[0].Spend.SpentPicoUSD; got != 0 {
		t.Fatalf("yesterday's spend %d counted today", got)
	}

	// A store that fails to load is reported, and the client is not
	// saved over what the store holds.
	store.fail = true
	c5 := mustClients(t, NewClientState(clk), cfg)
	if err := c5.Load(ctx, store); err == nil || !strings.Contains(err.Error(), "storage down") {
		t.Fatalf("load error %v", err)
	}
	store.fail = false
	done(admit(t, c5, "alice", 40, 10), 1, 0)
	if c5.Dirty() {
		t.Fatal("an unloaded client is due for saving")
	}
}

func TestClientFlushRetriesFailedSaves(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(t0)
	store := &memStore{}
	_, c := newClients(t, clk, ClientConfig{Name: "alice"})
	_ = c.Load(ctx, store)
	done(admit(t, c, "alice", 40, 10), 1, 0)
	store.fail = true
	if err := c.Flush(ctx, store); err == nil {
		t.Fatal("failed save not reported")
	}
	store.fail = false
	if !c.Dirty() {
		t.Fatal("failed save forgotten")
	}
	if err := c.Flush(ctx, store); err != nil || store.recs["alice"].SpentPicoUSD != 3_000_000 {
		t.Fatalf("flush %v, stored %+v", err, store.recs)
	}
}

func TestClientReset(t *testing.T) {
	clk := clock.NewFake(t0)
	_, c := newClients(t, clk, ClientConfig{Name: "alice", Limits: Limits{RPM: 1}, Budget: pricing.PerUSD / 1000, Period: PeriodDay})
	done(admit(t, c, "alice", 40, 10), 1000, 0)
	limited(t, c, "alice", "rpm", 40, 10)
	if c.Reset("nobody") {
		t.Fatal("reset an unknown client")
	}
	if !c.Reset("alice") {
		t.Fatal("reset failed")
	}
	done(admit(t, c, "alice", 40, 10), 1, 0)
	if got := c.Snapshot()[0].Spend.SpentPicoUSD; got != 3_000_000 {
		t.Fatalf("spent %d after reset", got)
	}
}

func TestClientsConfigErrors(t *testing.T) {
	cs := NewClientState(nil)
	for _, cfg := range [][]ClientConfig{
		{{Name: ""}},
		{{Name: "a"}, {Name: "a"}},
		{{Name: "a", Limits: Limits{RPM: -1}}},
		{{Name: "a", Budget: -1}},
		{{Name: "a", Period: 9}},
	} {
		if _, err := cs.NewClients(ClientsConfig{Clients: cfg, TokenEstimateRatio: DefaultTokenEstimateRatio}); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
	// keypool sets no default: a missing ratio is the caller's mistake.
	if _, err := cs.NewClients(ClientsConfig{Clients: []ClientConfig{{Name: "a"}}}); err == nil || !strings.Contains(err.Error(), "token estimate ratio") {
		t.Errorf("zero token estimate ratio: %v", err)
	}
}
