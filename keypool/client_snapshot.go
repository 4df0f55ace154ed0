package keypool

import (
	"math"
	"time"
)

// ClientSnapshot is one client's state at one moment, for operators. It
// holds the client's name, never its token.
type ClientSnapshot struct {
	Name          string   `json:"name"`
	Weight        int      `json:"weight"`
	Models        []string `json:"models,omitempty"`
	MaxConcurrent int      `json:"max_concurrent"`
	InFlight      int      `json:"in_flight"`
	// Requests, InputTokens and OutputTokens are the client's own
	// per-minute limits (Configured 0: none; Remaining -1 then). With
	// shared spend Remaining is of this instance's share of the limit.
	Requests     BucketSnapshot `json:"requests"`
	InputTokens  BucketSnapshot `json:"input_tokens"`
	OutputTokens BucketSnapshot `json:"output_tokens"`
	Spend        SpendSnapshot  `json:"spend"`
	Totals       ClientTotals   `json:"totals"`
}

// SpendSnapshot is a client's spend in its current period (the budget's,
// or the calendar month without a budget), in USD and exactly in
// picodollars. With spend shared across instances, spent is the shared
// total plus this instance's spend since the last exchange, and reserved
// counts the other instances' requests in flight as of that exchange.
type SpendSnapshot struct {
	Period      string    `json:"period"`
	PeriodStart time.Time `json:"period_start"`
	Resets      time.Time `json:"resets"`
	SpentUSD    float64   `json:"spent_usd"`
	ReservedUSD float64   `json:"reserved_usd"`
	// BudgetUSD and RemainingUSD (budget - spent; requests in flight hold
	// ReservedUSD of it) are absent without a budget.
	BudgetUSD       *float64 `json:"budget_usd,omitempty"`
	RemainingUSD    *float64 `json:"remaining_usd,omitempty"`
	SpentPicoUSD    int64    `json:"spent_picousd"`
	ReservedPicoUSD int64    `json:"reserved_picousd"`
	BudgetPicoUSD   int64    `json:"budget_picousd,omitempty"`
}

// Snapshot returns the configured clients' state now, in configuration
// order.
func (c *Clients) Snapshot() []ClientSnapshot {
	cs := c.cs
	cs.mu.Lock()
	defer cs.mu.Unlock()
	now := cs.clock.Now()
	share := cs.share()
	out := make([]ClientSnapshot, 0, len(c.members))
	for _, m := range c.members {
		st := m.st
		st.roll(now, m.cfg.Period)
		s := ClientSnapshot{
			Name: m.cfg.Name, Weight: max(m.cfg.Weight, 1), Models: m.cfg.Models,
			MaxConcurrent: m.cfg.MaxConcurrent, InFlight: st.inFlight, Totals: st.totals,
		}
		dst := [numKinds]*BucketSnapshot{&s.Requests, &s.InputTokens, &s.OutputTokens}
		for k := range st.buckets {
			*dst[k] = BucketSnapshot{Configured: int64(m.caps[k]), Remaining: -1}
			if m.caps[k] > 0 {
				st.buckets[k].refill(now.UnixNano(), m.caps[k]/share)
				dst[k].Remaining = int64(math.Floor(st.buckets[k].level))
			}
		}
		start := time.Unix(0, st.periodStart).UTC()
		s.Spend = SpendSnapshot{
			Period: m.cfg.Period.String(), PeriodStart: start, Resets: m.cfg.Period.End(start),
			SpentUSD: st.spent.USD(), ReservedUSD: st.reserved.Plus(st.others).USD(),
			SpentPicoUSD: int64(st.spent), ReservedPicoUSD: int64(st.reserved.Plus(st.others)),
		}
		if b := m.cfg.Budget; b > 0 {
			budget, left := b.USD(), (b - st.spent).USD()
			s.Spend.BudgetUSD, s.Spend.RemainingUSD, s.Spend.BudgetPicoUSD = &budget, &left, int64(b)
		}
		out = append(out, s)
	}
	return out
}
