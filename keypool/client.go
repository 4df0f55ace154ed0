package keypool

import (
	"fmt"
	"math"
	"path"
	"sync"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
	"github.com/cc-relay/caddy-cc-relay/internal/pricing"
)

// ClientConfig is one client's own limits, checked before the pool is
// touched. Zero values mean no limit.
type ClientConfig struct {
	Name string
	// Limits are the client's own per-minute limits, as continuous-refill
	// buckets like the pool's.
	Limits Limits
	// MaxConcurrent bounds the client's requests in flight (a stream
	// counts until it ends; a request waiting for a key counts too).
	MaxConcurrent int
	// Weight is the client's share under contention (default 1).
	Weight int
	// Budget caps the client's spend per Period; 0 is no cap.
	Budget pricing.PicoUSD
	Period Period
	// Models are path.Match patterns of the models the client may use;
	// empty allows all.
	Models []string
}

// ClientsConfig is one configuration of a pool's clients.
type ClientsConfig struct {
	Clients []ClientConfig
	// Prices prices usage; nil prices nothing.
	Prices *pricing.Table
	// TokenEstimateRatio is request-body bytes per input token before the
	// client's estimator has seen real usage. It must be positive; there
	// is no default (the caller sets it, e.g. to DefaultTokenEstimateRatio).
	TokenEstimateRatio float64
}

// ClientState is the part of a pool's clients that survives config
// reloads: rate buckets, requests in flight, spend and reservations, keyed
// by client name. Its methods are safe for concurrent use.
type ClientState struct {
	mu      sync.Mutex
	clock   clock.Clock
	clients map[string]*clientState
	flushMu sync.Mutex // one Flush or ShareSpend at a time, so writes land in order
	// shared, when set, shares spend with other instances (UseShared).
	shared SharedSpend
}

// NewClientState returns an empty client state that reads time from c.
func NewClientState(c clock.Clock) *ClientState {
	if c == nil {
		c = clock.Real{}
	}
	return &ClientState{clock: c, clients: map[string]*clientState{}}
}

// Destruct satisfies caddy.Destructor; spend is saved by whoever owns the
// store (see Flush) before the last configuration lets go.
func (cs *ClientState) Destruct() error { return nil }

// clientState is one client's state. Guarded by its ClientState's lock.
type clientState struct {
	name     string
	buckets  [numKinds]bucket
	est      estimator
	inFlight int

	// Spend of the current period. epoch changes whenever spent and
	// reserved start over (a new period), so that a reservation made
	// before settles into nothing rather than into the new period.
	period      Period
	periodStart int64 // unix nanoseconds
	periodEnd   int64 // unix nanoseconds: the next period's start
	epoch       uint64
	spent       pricing.PicoUSD
	reserved    pricing.PicoUSD

	// With shared spend (ClientState.shared), spent is the shared total
	// last seen (base) plus this instance's spend since: admission reads
	// it without a round trip. resets is the shared total's reset count
	// last seen; resetDue says an operator's reset waits for the next
	// exchange; sharedGen changes with every reset and new period, so
	// that the reply of an exchange begun before is dropped.
	// others is what the other instances' requests in flight hold of the
	// budget, as of the last exchange.
	base      pricing.PicoUSD
	others    pricing.PicoUSD
	resets    int64
	resetDue  bool
	sharedGen uint64

	totals ClientTotals
	loaded bool // spend was read from the store (or there was none)
	dirty  bool // spend changed since the last Flush
}

// ClientTotals are a client's counters since the state was created.
type ClientTotals struct {
	Requests            int64 `json:"requests"`
	Refused             int64 `json:"refused"`
	InputTokens         int64 `json:"input_tokens"`
	OutputTokens        int64 `json:"output_tokens"`
	CacheReadTokens     int64 `json:"cache_read_input_tokens"`
	CacheCreationTokens int64 `json:"cache_creation_input_tokens"`
	// CostPicoUSD is the exact cost in picodollars (1e-12 USD).
	CostPicoUSD int64 `json:"cost_picousd"`
}

// roll moves the client's spend into the period holding now, under the
// configured period kind. A period that began after the spend's (a new
// day, or a change to a shorter period) starts it over; a change to a
// longer period that holds the old one keeps it.
func (c *clientState) roll(now time.Time, p Period) {
	if ns := now.UnixNano(); c.period == p && c.periodStart <= ns && ns < c.periodEnd {
		// Within the period: no calendar arithmetic (it cost about a
		// microsecond of every request's admission).
		return
	}
	s := p.Start(now)
	start := s.UnixNano()
	c.periodEnd = p.End(s).UnixNano()
	if c.period == p && c.periodStart == start {
		return
	}
	if c.periodStart < start {
		c.spent, c.reserved = 0, 0
		c.epoch++
		c.dirty = true
		c.base, c.others, c.resets, c.resetDue = 0, 0, 0, false
		c.sharedGen++
	}
	c.period, c.periodStart = p, start
}

// Clients is one configuration's view of a ClientState. Its methods are
// safe for concurrent use.
type Clients struct {
	cs      *ClientState
	cfg     ClientsConfig
	byName  map[string]*clientMember
	members []*clientMember
}

type clientMember struct {
	cfg  ClientConfig
	st   *clientState
	caps [numKinds]float64
}

// NewClients builds cfg's view over cs, matching clients by name. It
// validates the configuration first and changes nothing when it fails.
func (cs *ClientState) NewClients(cfg ClientsConfig) (*Clients, error) {
	seen := map[string]bool{}
	for _, c := range cfg.Clients {
		if c.Name == "" {
			return nil, fmt.Errorf("client without a name")
		}
		if seen[c.Name] {
			return nil, fmt.Errorf("duplicate client %q", c.Name)
		}
		seen[c.Name] = true
		if c.Limits.RPM < 0 || c.Limits.ITPM < 0 || c.Limits.OTPM < 0 || c.MaxConcurrent < 0 || c.Weight < 0 || c.Budget < 0 {
			return nil, fmt.Errorf("client %q: limits, weight and budget must not be negative", c.Name)
		}
		if c.Period > PeriodWeek {
			return nil, fmt.Errorf("client %q: unknown budget period", c.Name)
		}
		for _, m := range c.Models {
			if _, err := path.Match(m, ""); err != nil {
				return nil, fmt.Errorf("client %q: bad model pattern %q", c.Name, m)
			}
		}
	}
	// No default here: the caller sets the ratio (see ClientsConfig).
	if r := cfg.TokenEstimateRatio; !(r > 0) || math.IsInf(r, 1) {
		return nil, fmt.Errorf("token estimate ratio must be a positive number of bytes per token, got %v", r)
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	now := cs.clock.Now()
	c := &Clients{cs: cs, cfg: cfg, byName: map[string]*clientMember{}}
	for _, cc := range cfg.Clients {
		st := cs.clients[cc.Name]
		if st == nil {
			st = &clientState{name: cc.Name}
			cs.clients[cc.Name] = st
		}
		st.roll(now, cc.Period)
		m := &clientMember{cfg: cc, st: st}
		m.caps = [numKinds]float64{float64(cc.Limits.RPM), float64(cc.Limits.ITPM), float64(cc.Limits.OTPM)}
		c.byName[cc.Name] = m
		c.members = append(c.members, m)
	}
	return c, nil
}

// Weight is the client's share under contention: its configured weight,
// at least 1.
func (c *Clients) Weight(name string) int {
	if m := c.byName[name]; m != nil {
		return max(m.cfg.Weight, 1)
	}
	return 1
}

// Has reports whether name is a configured client.
func (c *Clients) Has(name string) bool { return c.byName[name] != nil }

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

// ClientLimitError refuses a request over one of its client's own limits.
type ClientLimitError struct {
	Client string
	// Limit is "rpm", "itpm", "otpm", "max_concurrent" or "budget".
	Limit string
	// Max is the configured limit (requests or tokens per minute, requests
	// in flight); 0 for the budget.
	Max int64
	// RetryAfter is when the limit will admit the request.
	RetryAfter time.Duration

	// For the budget: what it is, for which period, what was spent and is
	// reserved by requests in flight, what this request may cost, and when
	// the period ends.
	Budget, Spent, Reserved, Need pricing.PicoUSD
	Period                        Period
	Resets                        time.Time
}

func (e *ClientLimitError) Error() string {
	switch e.Limit {
	case "max_concurrent":
		return fmt.Sprintf("client %q already has %d requests in flight, its max_concurrent limit; retry when one has finished", e.Client, e.Max)
	case "budget":
		resets := e.Resets.UTC().Format(time.RFC3339)
		if e.Spent >= e.Budget {
			return fmt.Sprintf("client %q has spent %s of its %s %s budget; the budget resets at %s",
				e.Client, e.Spent, e.Budget, e.Period.adjective(), resets)
		}
		return fmt.Sprintf("client %q has %s of its %s %s budget left (%s spent, %s reserved by requests in flight), less than this request may cost (%s); retry when requests in flight have finished, or after the budget resets at %s",
			e.Client, e.Budget-e.Spent-e.Reserved, e.Budget, e.Period.adjective(), e.Spent, e.Reserved, e.Need, resets)
	}
	what := map[string]string{"rpm": "requests", "itpm": "input tokens", "otpm": "output tokens"}[e.Limit]
	return fmt.Sprintf("client %q is over its own %s limit of %d %s per minute; retry in %ds",
		e.Client, e.Limit, e.Max, what, int64(math.Ceil(e.RetryAfter.Seconds())))
}

// ModelNotAllowedError refuses a model the client may not use.
type ModelNotAllowedError struct {
	Client, Model string
	// NoPrice: the client has a budget and the model has no price, so its
	// cost could not be counted.
	NoPrice bool
}

func (e *ModelNotAllowedError) Error() string {
	if e.NoPrice {
		return fmt.Sprintf("client %q has a budget and model %q has no price on this relay", e.Client, e.Model)
	}
	return fmt.Sprintf("client %q may not use model %q", e.Client, e.Model)
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
	res.m, res.est, res.reserved, res.epoch, res.admitted = m, est, need, st.epoch, true
	return nil
}

func (c *Clients) refused(m *clientMember) {
	c.cs.mu.Lock()
	m.st.totals.Refused++
	c.cs.mu.Unlock()
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

// Reset starts the named client's spend for the current period over and
// refills its per-minute buckets. Requests in flight keep their
// reservations. It reports false for an unknown client.
func (c *Clients) Reset(name string) bool {
	m := c.byName[name]
	if m == nil {
		return false
	}
	cs := c.cs
	cs.mu.Lock()
	defer cs.mu.Unlock()
	st := m.st
	st.roll(cs.clock.Now(), m.cfg.Period)
	st.spent = 0
	st.dirty = true
	// With shared spend the next exchange sets the shared total to what
	// this instance spends until then, for every instance.
	st.base, st.resetDue = 0, cs.shared != nil
	st.sharedGen++
	for k := range st.buckets {
		if m.caps[k] > 0 && st.buckets[k].init {
			st.buckets[k].level = m.caps[k]
		}
	}
	return true
}
