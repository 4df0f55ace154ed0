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
	phase    clientPhase
	answer   clientAnswer
	cost     pricing.PicoUSD
}

// clientPhase is where a client reservation stands:
//
//	priced ─Admit admits─▶ admitted ─Settle─▶ settled
//	   └─────────────Settle──────────────────▶ settled
//
// A priced reservation (an anonymous client, or one Admit refused) holds
// nothing: settling it only prices its usage.
type clientPhase uint8

const (
	clientPriced clientPhase = iota
	clientAdmitted
	clientSettled
)

// clientAnswer is the best the request's attempts got from the upstream,
// which decides what settling gives back.
type clientAnswer uint8

const (
	// answerNone: no attempt reached the upstream; the request and its
	// input estimate are given back.
	answerNone clientAnswer = iota
	// answerNoUsage: answered without usage (an error); the upstream
	// counted no input.
	answerNoUsage
	// answerUsage: answered with the input's usage, which replaces the
	// estimate.
	answerUsage
)

// Add records one attempt's usage; reached says the upstream answered the
// attempt. Call it once per attempt, before Settle.
func (r *ClientReservation) Add(u pricing.Usage, haveInput, reached bool) {
	if r == nil || r.phase == clientSettled {
		return
	}
	r.usage.Add(u)
	switch {
	case !reached:
	case haveInput:
		r.answer = answerUsage
	default:
		r.answer = max(r.answer, answerNoUsage)
	}
}

// Settle ends the reservation once (later calls do nothing): the request's
// cost is priced from its usage at the prices of its admission and charged
// to the client's spend in place of the reservation, the buckets get the
// real token counts, and a request that never reached the upstream gives
// back its request and input estimate.
func (r *ClientReservation) Settle() {
	if r == nil || r.c == nil || r.phase == clientSettled {
		return
	}
	admitted := r.phase == clientAdmitted
	r.phase = clientSettled
	if r.priced {
		r.cost = r.price.Cost(r.usage)
	}
	if !admitted {
		return
	}
	cs := r.c.cs
	cs.mu.Lock()
	defer cs.mu.Unlock()
	st := r.m.st
	st.inFlight--
	u := r.usage
	switch r.answer {
	case answerNone:
		st.buckets[kindRequests].charge(-1)
		st.buckets[kindInput].charge(-r.est)
	case answerUsage:
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
