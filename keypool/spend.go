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
