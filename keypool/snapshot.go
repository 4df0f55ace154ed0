package keypool

import (
	"math"
	"time"
)

// Snapshot is a pool's state at one moment, for operators. It holds key
// names, never secrets.
type Snapshot struct {
	Keys           []KeySnapshot `json:"keys"`
	Strategy       string        `json:"strategy"`
	StickySessions int           `json:"sticky_sessions"`
	Waiting        int           `json:"waiting"`
	// Estimator reports the input-token estimator per model class.
	Estimator map[string]EstimatorSnapshot `json:"estimator,omitempty"`
}

// EstimatorSnapshot describes the calibrated estimate of one model class.
type EstimatorSnapshot struct {
	Observations    int64   `json:"observations"`
	TokensPerByte   float64 `json:"tokens_per_byte"`
	ChargeableShare float64 `json:"chargeable_share"`
	ErrorFixedRatio float64 `json:"error_fixed_ratio"`
	ErrorCalibrated float64 `json:"error_calibrated"`
}

// KeySnapshot is one key's state.
type KeySnapshot struct {
	Name  string `json:"name"`
	Org   string `json:"org"`
	Scope string `json:"cache_scope"`
	// State is "ok", "cooling" (some model class), "parked" or "disabled".
	State    string           `json:"state"`
	Until    *time.Time       `json:"until,omitempty"`
	Reason   string           `json:"reason,omitempty"`
	Weight   int              `json:"weight"`
	Priority int              `json:"priority"`
	InFlight int              `json:"in_flight"`
	Sticky   int              `json:"sticky_sessions"`
	Budgets  []BudgetSnapshot `json:"budgets"`
	Totals   Totals           `json:"totals"`
}

// BudgetSnapshot is the budget of a key's organization for one model class.
type BudgetSnapshot struct {
	Class        string         `json:"class"`
	Requests     BucketSnapshot `json:"requests"`
	InputTokens  BucketSnapshot `json:"input_tokens"`
	OutputTokens BucketSnapshot `json:"output_tokens"`
	CoolingUntil *time.Time     `json:"cooling_until,omitempty"`
	CoolReason   string         `json:"cool_reason,omitempty"`
}

// BucketSnapshot is one per-minute budget.
type BucketSnapshot struct {
	// Configured is the limit from the configuration, 0 if none.
	Configured int64 `json:"configured"`
	// Learned is the limit the upstream's headers reported, 0 if none.
	Learned int64 `json:"learned"`
	// Remaining is what is left now; -1 when no limit is known.
	Remaining int64 `json:"remaining"`
}

// Snapshot returns the pool's state now.
func (p *Pool) Snapshot() Snapshot {
	st := p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.clock.Now().UnixNano()
	s := Snapshot{Strategy: p.cfg.Strategy.String(), StickySessions: st.sticky.len(), Waiting: st.waitq.n}
	for i := range p.members {
		m := &p.members[i]
		o := m.ks.org.resolve()
		ks := KeySnapshot{
			Name: m.cfg.Name, Org: o.label(), Scope: m.cfg.Workspace, State: "ok",
			Weight: max(m.cfg.Weight, 1), Priority: m.cfg.Priority,
			InFlight: m.ks.inFlight, Sticky: m.ks.sticky, Totals: m.ks.totals,
		}
		if ks.Scope == "" {
			ks.Scope = ks.Org
		}
		for c, b := range o.budgets {
			if b == nil {
				continue
			}
			caps := p.capsOf(i, b)
			bs := BudgetSnapshot{Class: st.cnames[c]}
			out := [numKinds]*BucketSnapshot{&bs.Requests, &bs.InputTokens, &bs.OutputTokens}
			for k := range b.buckets {
				b.buckets[k].refill(now, caps[k])
				*out[k] = BucketSnapshot{Configured: int64(m.caps[k]), Learned: int64(b.buckets[k].learned), Remaining: -1}
				if caps[k] > 0 && b.buckets[k].init {
					out[k].Remaining = int64(math.Floor(b.buckets[k].level))
				}
			}
			if b.coolUntil > now {
				t := time.Unix(0, b.coolUntil).UTC()
				bs.CoolingUntil, bs.CoolReason = &t, b.coolReason
				if ks.State == "ok" || ks.Until.Before(t) {
					ks.State, ks.Until, ks.Reason = "cooling", &t, bs.Class+": "+b.coolReason
				}
			}
			ks.Budgets = append(ks.Budgets, bs)
		}
		if o.parkUntil > now {
			t := time.Unix(0, o.parkUntil).UTC()
			ks.State, ks.Until, ks.Reason = "parked", &t, o.parkReason
		}
		if m.ks.disabled != "" {
			ks.State, ks.Until, ks.Reason = "disabled", nil, m.ks.disabled
		}
		s.Keys = append(s.Keys, ks)
	}
	for c, e := range st.est {
		if e.n == 0 {
			continue
		}
		if s.Estimator == nil {
			s.Estimator = map[string]EstimatorSnapshot{}
		}
		s.Estimator[st.cnames[c]] = EstimatorSnapshot{
			Observations: e.n, TokensPerByte: e.perByte, ChargeableShare: e.chargeable,
			ErrorFixedRatio: e.errFixed, ErrorCalibrated: e.errCalibrated,
		}
	}
	return s
}
