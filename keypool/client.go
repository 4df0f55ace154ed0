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
