package keypool

import (
	"math"
	"path"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/pricing"
)

// ClientRequest is what client admission needs to know of a request.
type ClientRequest struct {
	Client string
	Model  string
	// Bytes is the request body's size, the basis of the token estimates.
	Bytes int
	// MaxTokens is the request's max_tokens: the most output it can cost.
	MaxTokens int64
	// OneHourCache says the request may write 1-hour cache entries, which
	// cost more than any other prompt token.
	OneHourCache bool
}

// budgetBusyRetry is the Retry-After of a request refused because requests
// in flight hold the rest of the budget: they release what they do not
// spend when they finish.
const budgetBusyRetry = 5 * time.Second

// Admit checks req against its client's models, requests in flight,
// per-minute limits and budget, and reserves: one request, the estimated
// input tokens and the request's worst-case cost (the input estimate at
// the highest prompt price plus max_tokens of output, at the prices in
// force now). It returns a *ModelNotAllowedError or a *ClientLimitError
// when the client may not send the request now. A client that is not
// configured (anonymous) is only priced.
func (c *Clients) Admit(req *ClientRequest, res *ClientReservation) error {
	*res = ClientReservation{c: c, bytes: req.Bytes}
	res.price, res.priced = c.cfg.Prices.Lookup(req.Model)
	m := c.byName[req.Client]
	if m == nil {
		return nil
	}
	if len(m.cfg.Models) > 0 {
		ok := false
		for _, p := range m.cfg.Models {
			if ok, _ = path.Match(p, req.Model); ok {
				break
			}
		}
		if !ok {
			c.refused(m)
			return &ModelNotAllowedError{Client: m.cfg.Name, Model: req.Model}
		}
	}
	if m.cfg.Budget > 0 && !res.priced {
		c.refused(m)
		return &ModelNotAllowedError{Client: m.cfg.Name, Model: req.Model, NoPrice: true}
	}

	cs := c.cs
	cs.mu.Lock()
	defer cs.mu.Unlock()
	now := cs.clock.Now()
	nowNs := now.UnixNano()
	st := m.st
	st.roll(now, m.cfg.Period)

	fail := func(e *ClientLimitError) error {
		st.totals.Refused++
		e.Client = m.cfg.Name
		return e
	}
	if m.cfg.MaxConcurrent > 0 && st.inFlight >= m.cfg.MaxConcurrent {
		return fail(&ClientLimitError{Limit: "max_concurrent", Max: int64(m.cfg.MaxConcurrent), RetryAfter: time.Second})
	}

	ratio := c.cfg.TokenEstimateRatio
	est := st.est.estimate(req.Bytes, ratio)
	margin := st.est.margin()
	share := cs.share()
	var worst, limit int64
	var wait float64
	for k := range st.buckets {
		// With shared spend each instance enforces its share of the
		// client's per-minute limits: N instances together admit the
		// limit, whichever instance a request lands on.
		capacity := m.caps[k] / share
		if capacity <= 0 {
			continue
		}
		bk := &st.buckets[k]
		bk.refill(nowNs, capacity)
		var w float64
		switch k {
		case kindRequests:
			w = bk.wait(capacity, 1, 0)
		case kindInput:
			w = bk.wait(capacity, est*(1+margin), 0)
		case kindOutput:
			// Output is charged when it is known: admission needs the
			// bucket out of debt, as the upstream's does.
			if bk.level <= 0 {
				w = (math.Min(1, capacity) - bk.level) / capacity * nanosPerMinute
			}
		}
		if w > wait {
			// The client's limit as configured, not this instance's share.
			wait, worst, limit = w, int64(k), int64(m.caps[k])
		}
	}
	if wait > 0 {
		// Bounded, so that absurd usage reported upstream cannot overflow
		// the duration.
		wait = math.Min(math.Ceil(wait), float64(24*time.Hour))
		return fail(&ClientLimitError{Limit: [...]string{"rpm", "itpm", "otpm"}[worst], Max: limit,
			RetryAfter: time.Duration(wait)})
	}

	var need pricing.PicoUSD
	if m.cfg.Budget > 0 {
		prompt := int64(math.Ceil(st.est.whole(req.Bytes, ratio) * (1 + margin)))
		need = res.price.WorstCase(prompt, max(req.MaxTokens, 0), req.OneHourCache)
		// A request that fits what is left is admitted; one larger than
		// that only runs alone, when nothing else is reserved: spend then
		// stops within one request's cost of the budget, and a request
		// larger than the whole budget can still run once. With shared
		// spend, what other instances' requests hold (as of the last
		// exchange) counts as reserved too.
		reserved := st.reserved.Plus(st.others)
		fits := st.spent.Plus(reserved).Plus(need) <= m.cfg.Budget || reserved == 0 && st.spent < m.cfg.Budget
		if !fits {
			start := time.Unix(0, st.periodStart).UTC()
			e := &ClientLimitError{Limit: "budget", Budget: m.cfg.Budget, Spent: st.spent, Reserved: reserved, Need: need,
				Period: m.cfg.Period, Resets: m.cfg.Period.End(start)}
			e.RetryAfter = e.Resets.Sub(now)
			if st.spent < m.cfg.Budget {
				e.RetryAfter = min(e.RetryAfter, budgetBusyRetry)
			}
			return fail(e)
		}
	}

	st.buckets[kindRequests].charge(1)
	st.buckets[kindInput].charge(est)
	st.inFlight++
	st.reserved = st.reserved.Plus(need)
	st.totals.Requests++
	res.m, res.est, res.reserved, res.epoch, res.phase = m, est, need, st.epoch, clientAdmitted
	return nil
}

func (c *Clients) refused(m *clientMember) {
	c.cs.mu.Lock()
	m.st.totals.Refused++
	c.cs.mu.Unlock()
}
