package redisstate

import (
	"sync"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

type budgetKey struct{ org, class string }

// seen is a budget as Redis last described it.
type seen struct {
	levels [3]float64
	known  [3]bool
	caps   [3]float64
	at     int64 // unix ns
}

// fbBucket is one budget while Redis is away: capacity and refill are this
// instance's 1/N share of the limit.
type fbBucket struct {
	b       keypool.SharedBudget // caps as configured (0: learned)
	caps    [3]float64           // share capacities
	levels  [3]float64
	last    int64
	cool    int64
	coolWhy string
	// spent is what this instance charged (net of corrections) and
	// released of the unanswered sums while Redis was away: what a Redis
	// that kept its data has not seen.
	spent, released [3]float64
}

// localBudgets are the budgets of local-fallback, and the last shared view
// of each budget they start from.
type localBudgets struct {
	clk clock.Clock
	mu  sync.Mutex
	n   int64
	// epoch is the pool's epoch in Redis when the fallback began ("" when
	// the instance never joined): the rejoin tells by it whether Redis
	// kept the pool's state.
	epoch   string
	seen    map[budgetKey]seen
	buckets map[budgetKey]*fbBucket
	parks   map[string]parkState
}

type parkState struct {
	until  int64
	reason string
}

func (l *localBudgets) init(c clock.Clock) {
	l.clk = c
	l.n = 1
	l.seen = map[budgetKey]seen{}
	l.buckets = map[budgetKey]*fbBucket{}
	l.parks = map[string]parkState{}
}

func (l *localBudgets) now() int64 { return l.clk.Now().UnixNano() }

// remember records what Redis said about a budget.
func (l *localBudgets) remember(b keypool.SharedBudget, levels [3]float64, known [3]bool, caps [3]float64) {
	l.mu.Lock()
	l.seen[budgetKey{b.Org, b.Class}] = seen{levels, known, caps, l.now()}
	l.mu.Unlock()
}

// enter starts a fallback period with n instances sharing each limit,
// Redis's state being of epoch.
func (l *localBudgets) enter(n int64, epoch string) {
	l.mu.Lock()
	l.n, l.epoch = max(1, n), epoch
	l.mu.Unlock()
}

const nanosPerMinute = 60e9

// bucket returns the fallback bucket of b, created from the last shared
// view: this instance's share of what was left, refilled since.
func (l *localBudgets) bucket(b keypool.SharedBudget, now int64) *fbBucket {
	k := budgetKey{b.Org, b.Class}
	fb := l.buckets[k]
	if fb == nil {
		fb = &fbBucket{b: b, last: now}
		sn, ok := l.seen[k]
		n := float64(l.n)
		for i := range 3 {
			c := b.Caps[i]
			if c <= 0 && ok {
				c = sn.caps[i]
			}
			fb.caps[i] = c / n
			lv := c
			if ok && sn.known[i] && c > 0 {
				lv = min(c, sn.levels[i]+float64(now-sn.at)*c/nanosPerMinute)
			}
			fb.levels[i] = lv / n
		}
		l.buckets[k] = fb
	}
	for i := range 3 {
		if c := fb.caps[i]; c > 0 && now > fb.last {
			fb.levels[i] = min(c, fb.levels[i]+float64(now-fb.last)*c/nanosPerMinute)
		}
	}
	fb.last = max(fb.last, now)
	return fb
}

func (l *localBudgets) reserve(b keypool.SharedBudget, admit, charge [3]float64) keypool.SharedAdmission {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	a := keypool.SharedAdmission{Mode: keypool.SharedModeLocalFallback}
	if p := l.parks[b.Org]; p.until > now {
		a.Outcome, a.Until, a.Reason = keypool.SharedParked, time.Unix(0, p.until), p.reason
		return a
	}
	fb := l.bucket(b, now)
	if fb.cool > now {
		a.Outcome, a.Until, a.Reason = keypool.SharedCooling, time.Unix(0, fb.cool), fb.coolWhy
		return a
	}
	var wait float64
	for i := range 3 {
		c := fb.caps[i]
		a.Caps[i], a.Known[i] = c, c > 0
		if c <= 0 {
			continue
		}
		if n := min(admit[i], c); fb.levels[i] < n {
			wait = max(wait, (n-fb.levels[i])/c*nanosPerMinute)
		}
	}
	if wait > 0 {
		a.Outcome, a.Wait = keypool.SharedWait, time.Duration(wait)
		a.Levels = fb.levels
		return a
	}
	for i := range 3 {
		if c := fb.caps[i]; c > 0 {
			fb.levels[i] = max(fb.levels[i]-charge[i], -c)
		}
		fb.spent[i] += charge[i]
	}
	a.Levels = fb.levels
	for i := range a.Marks {
		a.Marks[i] = nan // charges are not tracked across a fallback
	}
	return a
}

func (l *localBudgets) settle(cs []keypool.SharedCorrection) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for _, c := range cs {
		fb := l.bucket(c.Budget, now)
		for i := range 3 {
			if cp := fb.caps[i]; cp > 0 {
				fb.levels[i] = max(min(fb.levels[i]-c.Delta[i], cp), -cp)
			}
			fb.spent[i] += c.Delta[i]
			fb.released[i] += c.Release[i]
		}
	}
}

// sync in local-fallback only lowers: the remaining count is the whole
// organization's, this instance holds a 1/N share of it.
func (l *localBudgets) sync(s keypool.SharedSync) keypool.SharedSyncResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	fb := l.bucket(s.Budget, now)
	n := float64(l.n)
	r := keypool.SharedSyncResult{Mode: keypool.SharedModeLocalFallback}
	for i := range 3 {
		fb.released[i] += s.Release[i]
		if s.Budget.Caps[i] <= 0 && s.Limit[i] > 0 && fb.caps[i] <= 0 {
			fb.caps[i] = float64(s.Limit[i]) / n
			fb.levels[i] = fb.caps[i]
		}
		if s.Remaining[i] >= 0 && fb.caps[i] > 0 {
			if share := float64(s.Remaining[i]) / n; fb.levels[i] > share+s.Gran[i]-1 {
				fb.levels[i] = share
				r.Moved[i] = true
			}
		}
		r.Levels[i], r.Caps[i] = fb.levels[i], fb.caps[i]
	}
	return r
}

func (l *localBudgets) cool(b keypool.SharedBudget, until int64, reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fb := l.bucket(b, l.now())
	if until > fb.cool {
		fb.cool, fb.coolWhy = until, reason
	}
}

func (l *localBudgets) park(org string, until int64, reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if until > l.parks[org].until {
		l.parks[org] = parkState{until, reason}
	}
}

func (l *localBudgets) unpark(org string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.parks, org)
	for k, fb := range l.buckets {
		if k.org == org {
			fb.cool, fb.coolWhy = 0, ""
		}
	}
}

// debts are what the shared budgets must be charged with on rejoin, Redis's
// state being of epoch now.
//
// A Redis that kept the pool's state (the epoch is the one the fallback
// began in: a stall, a network outage, timeouts) refilled the budgets
// itself meanwhile and holds what was spent before the outage: it is
// charged exactly what this instance spent during it, and released what
// it answered. Scripts sent before the outage that ran late change
// nothing (their deadline had passed, see late in lua/prelude.lua), so
// nothing is counted twice. Charging the deficit instead charged the
// budgets' spending before the outage a second time (a fallback bucket
// starts from the last shared level): after a 5 s stall the buckets were
// a capacity in debt and the pool admitted nearly nothing for 19 s.
//
// A Redis that lost it (restarted empty; or this instance never joined)
// holds full budgets: each instance charges its fallback bucket's deficit
// from full, which, as the bucket started from this instance's share of
// the last shared level, rebuilds what was spent before the outage too.
func (l *localBudgets) debts(epoch string) []keypool.SharedCorrection {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	kept := l.epoch != "" && l.epoch == epoch
	var out []keypool.SharedCorrection
	for _, fb := range l.buckets {
		if kept {
			if fb.spent != [3]float64{} || fb.released != [3]float64{} {
				out = append(out, keypool.SharedCorrection{Budget: fb.b, Delta: fb.spent, Release: fb.released})
			}
			continue
		}
		fb = l.bucket(fb.b, now)
		var d [3]float64
		any := false
		for i := range 3 {
			if fb.caps[i] > 0 && fb.levels[i] < fb.caps[i] {
				d[i] = fb.caps[i] - fb.levels[i]
				any = true
			}
		}
		if any {
			out = append(out, keypool.SharedCorrection{Budget: fb.b, Delta: d})
		}
	}
	return out
}

// reset ends a fallback period.
func (l *localBudgets) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.buckets)
	clear(l.parks)
}
