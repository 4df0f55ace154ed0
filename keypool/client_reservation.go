package keypool

import (
	"github.com/cc-relay/caddy-cc-relay/internal/pricing"
)

// ClientReservation is one request's hold on its client's limits and
// budget. Admit fills it in; exactly one Settle ends it.
type ClientReservation struct {
	c        *Clients
	m        *clientMember
	price    pricing.Price
	priced   bool
	bytes    int
	est      float64
	reserved pricing.PicoUSD
	epoch    uint64
	usage    pricing.Usage
	haveIn   bool
	reached  bool // an attempt got an answer from the upstream
	admitted bool
	settled  bool
	cost     pricing.PicoUSD
}

// Add records one attempt's usage; reached says the upstream answered the
// attempt. Call it once per attempt, before Settle.
func (r *ClientReservation) Add(u pricing.Usage, haveInput, reached bool) {
	if r == nil || r.settled {
		return
	}
	r.usage.Add(u)
	r.haveIn = r.haveIn || haveInput
	r.reached = r.reached || reached
}

// Settle ends the reservation once (later calls do nothing): the request's
// cost is priced from its usage at the prices of its admission and charged
// to the client's spend in place of the reservation, the buckets get the
// real token counts, and a request that never reached the upstream gives
// back its request and input estimate.
func (r *ClientReservation) Settle() {
	if r == nil || r.c == nil || r.settled {
		return
	}
	r.settled = true
	if r.priced {
		r.cost = r.price.Cost(r.usage)
	}
	if !r.admitted {
		return
	}
	cs := r.c.cs
	cs.mu.Lock()
	defer cs.mu.Unlock()
	st := r.m.st
	st.inFlight--
	u := r.usage
	switch {
	case !r.reached:
		st.buckets[kindRequests].charge(-1)
		st.buckets[kindInput].charge(-r.est)
	case r.haveIn:
		st.buckets[kindInput].charge(float64(u.InputTokens+u.CacheCreationInputTokens) - r.est)
		st.est.observe(r.bytes, Usage{InputTokens: u.InputTokens, CacheCreationInputTokens: u.CacheCreationInputTokens,
			CacheReadInputTokens: u.CacheReadInputTokens, HaveInput: true})
	default:
		// Answered without usage (an error): the upstream counted no input.
		st.buckets[kindInput].charge(-r.est)
	}
	st.buckets[kindOutput].charge(float64(u.OutputTokens))
	if st.epoch == r.epoch {
		st.reserved = st.reserved.Plus(-r.reserved)
		st.spent = st.spent.Plus(r.cost)
	}
	if r.cost != 0 {
		st.dirty = true
	}
	t := &st.totals
	t.InputTokens += u.InputTokens
	t.OutputTokens += u.OutputTokens
	t.CacheReadTokens += u.CacheReadInputTokens
	t.CacheCreationTokens += u.CacheCreationInputTokens
	t.CostPicoUSD = int64(pricing.PicoUSD(t.CostPicoUSD).Plus(r.cost))
}

// Cost is the request's cost once settled; 0 when its model has no price.
func (r *ClientReservation) Cost() pricing.PicoUSD { return r.cost }

// Priced reports whether the request's model has a price.
func (r *ClientReservation) Priced() bool { return r.priced }

// Usage is the usage added so far.
func (r *ClientReservation) Usage() pricing.Usage { return r.usage }

// Client is the configured client's name, "" for an unconfigured one.
func (r *ClientReservation) Client() string {
	if r.m == nil {
		return ""
	}
	return r.m.cfg.Name
}
