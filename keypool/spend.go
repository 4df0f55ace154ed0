package keypool

import (
	"context"
	"errors"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/pricing"
)

// SpendRecord is what persists of one client's spend: the period it
// belongs to and the exact amount, so that a restart neither forgets a
// budget's spend nor carries it into a new period.
type SpendRecord struct {
	Client      string    `json:"client"`
	Period      string    `json:"period"`
	PeriodStart time.Time `json:"period_start"`
	// SpentPicoUSD is the period's spend in picodollars (1e-12 USD).
	SpentPicoUSD int64 `json:"spent_picousd"`
}

// SpendStore keeps client spend outside the process. The Caddy module
// implements it over Caddy's storage (the file system by default); a
// shared store such as Redis can implement it the same way. Load reports
// found=false, and no error, for a client it has nothing for.
type SpendStore interface {
	Load(ctx context.Context, client string) (rec SpendRecord, found bool, err error)
	Save(ctx context.Context, rec SpendRecord) error
}

// Load reads the spend of every client of c not read before (the first
// configuration to list it since the state was created) from store. In
// memory spend wins over stored spend: a reload keeps what the running
// process counted. A stored record of an earlier period is ignored. It
// returns the errors of the clients it could not read; those start from
// nothing and are read again by the next configuration.
func (c *Clients) Load(ctx context.Context, store SpendStore) error {
	if store == nil {
		return nil
	}
	var errs []error
	for _, m := range c.members {
		cs := c.cs
		cs.mu.Lock()
		loaded := m.st.loaded
		cs.mu.Unlock()
		if loaded {
			continue
		}
		rec, found, err := store.Load(ctx, m.cfg.Name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cs.mu.Lock()
		st := m.st
		if !st.loaded {
			st.loaded = true
			st.roll(cs.clock.Now(), m.cfg.Period)
			// Spend of a period that began before the current one is
			// over; spend of the current period (or of a shorter
			// period inside it) still counts.
			if found && rec.PeriodStart.UnixNano() >= st.periodStart && rec.SpentPicoUSD > 0 {
				st.spent = st.spent.Plus(pricing.PicoUSD(rec.SpentPicoUSD))
				if cs.shared != nil {
					// Stored spend was shared already: a floor for the
					// shared total, not spend to add to it again.
					st.base = st.base.Plus(pricing.PicoUSD(rec.SpentPicoUSD))
				}
			}
		}
		cs.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Flush saves the spend of every client of c that changed since the last
// Flush. A record that fails to save stays due for the next one.
func (c *Clients) Flush(ctx context.Context, store SpendStore) error {
	if store == nil {
		return nil
	}
	cs := c.cs
	cs.flushMu.Lock()
	defer cs.flushMu.Unlock()
	type due struct {
		st  *clientState
		rec SpendRecord
	}
	var todo []due
	cs.mu.Lock()
	now := cs.clock.Now()
	for _, m := range c.members {
		st := m.st
		st.roll(now, m.cfg.Period)
		if !st.dirty || !st.loaded {
			// Not loaded: saving would overwrite what the store holds
			// with a partial count.
			continue
		}
		st.dirty = false
		todo = append(todo, due{st, SpendRecord{Client: st.name, Period: st.period.String(),
			PeriodStart: time.Unix(0, st.periodStart).UTC(), SpentPicoUSD: int64(st.spent)}})
	}
	cs.mu.Unlock()
	var errs []error
	for _, d := range todo {
		if err := store.Save(ctx, d.rec); err != nil {
			errs = append(errs, err)
			cs.mu.Lock()
			d.st.dirty = true
			cs.mu.Unlock()
		}
	}
	return errors.Join(errs...)
}

// Dirty reports whether some client's spend has changed since the last
// Flush.
func (c *Clients) Dirty() bool {
	cs := c.cs
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, m := range c.members {
		if m.st.dirty && m.st.loaded {
			return true
		}
	}
	return false
}

// SpendKey names one client's spend in one budget period: by the client's
// name, never its token, and the period's kind and start.
type SpendKey struct {
	Client      string
	Period      Period
	PeriodStart time.Time
}

// SpendUpdate is one client's part of an exchange with a SharedSpend.
type SpendUpdate struct {
	SpendKey
	// Add is this instance's spend not yet in the shared total; 0 only
	// reads the total.
	Add pricing.PicoUSD
	// Floor is the shared total this instance last saw. A total that is
	// missing or lower (the store lost it: a Redis restarted empty) is
	// raised back to it before Add is added, unless the total was reset
	// since (its Resets differ): a restart does not hand out a budget
	// again, and an operator's reset is not undone.
	Floor pricing.PicoUSD
	// Resets is the total's reset count this instance last saw.
	Resets int64
	// Reserved is what this instance's requests in flight hold of the
	// client's budget now: the other instances count it as reserved
	// until this instance's next exchange replaces it, or until it is
	// no longer alive.
	Reserved pricing.PicoUSD
	// Reset sets the total to Add and counts one more reset: an
	// operator's reset (Clients.Reset) reaching every instance.
	Reset bool
}

// SpendTotal is a client's shared total after an exchange.
type SpendTotal struct {
	Spent  pricing.PicoUSD
	Resets int64
	// Others is what the other live instances' requests in flight hold
	// of the budget, as each last reported it.
	Others pricing.PicoUSD
}

// SharedSpend keeps client spend shared by several relay instances: the
// Redis engine in internal/redisstate implements it, one total per client
// name and budget period. Admission never calls it: each instance keeps
// the last shared total of every client plus its own spend since, and
// exchanges both in one batch (Clients.ShareSpend, about once a second).
type SharedSpend interface {
	// Add applies the updates in one batch (one round trip) and returns
	// the totals after, in the same order. On an error nothing is known
	// to have been applied: the caller keeps counting locally and sends
	// the same spend again with the next exchange (a reply lost after
	// the batch ran then counts it twice: the error errs on the safe
	// side).
	Add(ctx context.Context, us []SpendUpdate) ([]SpendTotal, error)
	// Instances is the number of relay instances sharing the spend, at
	// least 1: each enforces its share of a client's per-minute limits.
	Instances() int
}

// UseShared makes the client state share spend through sp from now on
// (nil: back to this process alone). What the state has counted so far
// becomes each client's floor: a shared total lower than it (an empty
// Redis) is raised to it, one that is higher wins, so switching on shared
// spend never counts a period's spend twice. It applies to every
// configuration of the state.
func (c *Clients) UseShared(sp SharedSpend) {
	cs := c.cs
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, st := range cs.clients {
		if sp != nil && cs.shared == nil {
			st.base = st.spent
		}
		if sp == nil {
			st.others = 0
		}
	}
	cs.shared = sp
}

// share is the number of instances each client's per-minute limits are
// split over: 1 without shared spend. Call with cs.mu held.
func (cs *ClientState) share() float64 {
	if cs.shared == nil {
		return 1
	}
	return float64(max(1, cs.shared.Instances()))
}

// ShareSpend exchanges spend with the shared store, when there is one: it
// adds every client's spend not yet shared to its shared total and reads
// the totals of the others, in one batch. Admission then counts the
// shared total plus this instance's spend since. While the store is
// unreachable it returns the error and changes nothing: spend keeps
// counting locally and goes up with the next exchange that succeeds.
func (c *Clients) ShareSpend(ctx context.Context) error {
	cs := c.cs
	cs.flushMu.Lock()
	defer cs.flushMu.Unlock()
	type sent struct {
		st    *clientState
		gen   uint64
		spent pricing.PicoUSD // st.spent when the update was made
	}
	cs.mu.Lock()
	sp := cs.shared
	if sp == nil {
		cs.mu.Unlock()
		return nil
	}
	now := cs.clock.Now()
	us := make([]SpendUpdate, 0, len(c.members))
	sents := make([]sent, 0, len(c.members))
	for _, m := range c.members {
		st := m.st
		st.roll(now, m.cfg.Period)
		us = append(us, SpendUpdate{
			SpendKey: SpendKey{Client: st.name, Period: st.period, PeriodStart: time.Unix(0, st.periodStart).UTC()},
			Add:      st.spent.Plus(-st.base), Floor: st.base, Resets: st.resets, Reset: st.resetDue,
			Reserved: st.reserved,
		})
		sents = append(sents, sent{st, st.sharedGen, st.spent})
		st.resetDue = false
	}
	cs.mu.Unlock()
	totals, err := sp.Add(ctx, us)
	if err == nil && len(totals) != len(us) {
		err = errors.New("shared spend: reply does not match the updates")
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for i, s := range sents {
		st := s.st
		if err == nil {
			// Holds of requests in flight are not tied to a total.
			st.others = totals[i].Others
		}
		if st.sharedGen != s.gen {
			// A reset or a new period since: the reply is of a total
			// this instance no longer counts.
			continue
		}
		if err != nil {
			st.resetDue = st.resetDue || us[i].Reset
			continue
		}
		t := totals[i]
		st.spent = t.Spent.Plus(st.spent.Plus(-s.spent))
		st.base, st.resets = t.Spent, t.Resets
	}
	return err
}
