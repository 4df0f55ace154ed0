package redisstate

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/cc-relay/caddy-cc-relay/internal/pricing"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// SpendGrace is how long a client's spend outlives its budget period in
// Redis: long enough for an instance that was away over the period's end
// to find it, short enough that old periods do not pile up.
const SpendGrace = 24 * time.Hour

// Spend is the client spend of a Store's pool, shared on Redis: one hash
// per client name and budget period, added to with HINCRBY (exact
// picodollars) by one script per exchange. It goes through the Store's
// breaker: while Redis is away an exchange fails at once and the caller
// keeps counting locally.
type Spend struct{ s *Store }

// Spend is the store's shared client spend.
func (s *Store) Spend() *Spend { return &Spend{s} }

// Add applies the updates with one script (one round trip) and returns the
// totals after.
func (sp *Spend) Add(ctx context.Context, us []keypool.SpendUpdate) ([]keypool.SpendTotal, error) {
	if len(us) == 0 {
		return nil, nil
	}
	ks := make([]string, len(us))
	// Holds count for as long as the instance counts as alive: a dead
	// instance's requests in flight stop counting with it.
	args := make([]string, 0, 3+6*len(us))
	args = append(args, sp.s.cfg.Instance, fmtInt(sp.s.cfg.Alive.Milliseconds()), "0")
	for i, u := range us {
		ks[i] = sp.s.keys.spend(u.Client, u.Period.String(), u.PeriodStart.Unix())
		op := "add"
		if u.Reset {
			op = "set"
		}
		expire := u.Period.End(u.PeriodStart).Add(SpendGrace).UnixMilli()
		args = append(args, op, fmtInt(int64(max(u.Add, 0))), fmtInt(int64(max(u.Floor, 0))), fmtInt(u.Resets),
			fmtInt(int64(max(u.Reserved, 0))), fmtInt(expire))
	}
	var vs []rueidis.RedisMessage
	err := sp.s.call(ctx, "spend", func(ctx context.Context, c rueidis.Client) error {
		args[2] = sp.s.deadline(ctx)
		var err error
		vs, err = spendScript.Exec(ctx, c, ks, args).ToArray()
		if err == nil && len(vs) != 3*len(us) {
			err = errMalformed
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]keypool.SpendTotal, len(us))
	for i := range out {
		spent, err1 := exactInt(vs[3*i])
		resets, err2 := exactInt(vs[3*i+1])
		others, err3 := exactInt(vs[3*i+2])
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, errMalformed
		}
		out[i] = keypool.SpendTotal{Spent: pricing.PicoUSD(spent), Resets: resets, Others: pricing.PicoUSD(others)}
	}
	return out, nil
}

// exactInt reads a decimal string reply without going through a float.
func exactInt(m rueidis.RedisMessage) (int64, error) {
	s, err := m.ToString()
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(s, 10, 64)
}

// Instances is the number of instances alive at the last heartbeat (the
// last before an outage while Redis is away), at least 1.
func (sp *Spend) Instances() int { return max(1, sp.s.view.Load().InstancesAlive) }

var _ keypool.SharedSpend = (*Spend)(nil)
