package redisstate

import (
	"context"
	"math"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/cc-relay/caddy-cc-relay/keypool"
)

var nan = math.NaN()

func fmtInt(n int64) string     { return strconv.FormatInt(n, 10) }
func fmtFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// num parses a script's number; ” (unknown) is NaN.
func num(m rueidis.RedisMessage) float64 {
	if v, err := m.AsInt64(); err == nil {
		return float64(v)
	}
	s, err := m.ToString()
	if err != nil || s == "" {
		return nan
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return nan
	}
	return f
}

func (s *Store) ttlMillis() string { return fmtInt(s.cfg.BucketTTL.Milliseconds()) }

// Reserve admits a request against an organization × class budget: far
// from the limit from this instance's lease on its share of the headroom
// (no round trip; the charge is written with the next flush), else with
// one script that Redis runs behind this instance's queued charges (see
// flush.go).
func (s *Store) Reserve(ctx context.Context, b keypool.SharedBudget, admit, charge [3]float64) keypool.SharedAdmission {
	if s.Mode() != keypool.SharedModeShared {
		return s.local.reserve(b, admit, charge)
	}
	// A reservation of nothing is a read (RefreshShared): Redis answers.
	if admit != ([3]float64{}) || charge != ([3]float64{}) {
		if a, ok := s.lease(b, admit, charge); ok {
			return a
		}
	}
	r, ok := s.submit(ctx, b, &op{kind: opReserve, admit: admit, charge: charge}, true)
	if !ok {
		return s.local.reserve(b, admit, charge)
	}
	return r.a
}

type malformed struct{}

func (malformed) Error() string { return "redis: script reply malformed" }

var errMalformed error = malformed{}

// Settle applies the corrections with the next flush and waits for it.
func (s *Store) Settle(ctx context.Context, cs []keypool.SharedCorrection) keypool.SharedMode {
	if len(cs) == 0 {
		return s.Mode()
	}
	if s.Mode() != keypool.SharedModeShared || !s.submitAll(ctx, cs) {
		s.local.settle(cs)
		return keypool.SharedModeLocalFallback
	}
	return keypool.SharedModeShared
}

// settleBatch applies corrections at once, one flush.lua each in one
// pipeline: the rejoin's charge of what was spent during an outage.
func (s *Store) settleBatch(ctx context.Context, c rueidis.Client, cs []keypool.SharedCorrection) error {
	execs := make([]rueidis.LuaExec, len(cs))
	for i, cr := range cs {
		bt := &batch{b: cr.Budget, ops: []*op{{kind: opSettle, corr: cr}}}
		args := s.flushArgs(bt)
		args[argDeadline] = s.deadline(ctx)
		execs[i] = rueidis.LuaExec{Keys: []string{s.keys.budget(cr.Budget.Org, cr.Budget.Class), s.keys.org(cr.Budget.Org)}, Args: args}
	}
	for _, r := range flushScript.ExecMulti(ctx, c, execs...) {
		if err := r.Error(); err != nil {
			return err
		}
	}
	return nil
}

// Sync learns from one response's rate-limit headers with the next flush
// and waits for it.
func (s *Store) Sync(ctx context.Context, sy keypool.SharedSync) keypool.SharedSyncResult {
	if s.Mode() != keypool.SharedModeShared {
		return s.local.sync(sy)
	}
	t, _ := sy.Ticket.(*ticket)
	r, ok := s.submit(ctx, sy.Budget, &op{kind: opSync, sync: sy, t: t}, false)
	if !ok {
		return s.local.sync(sy)
	}
	return r.sync
}

func (s *Store) until(ctx context.Context, op, key, field string, until time.Time, reason string, longest time.Duration) error {
	return s.write(ctx, op, func(ctx context.Context, c rueidis.Client) error {
		return untilScript.Exec(ctx, c, []string{key}, []string{
			field, fmtInt(until.UnixMilli()), reason, fmtInt(longest.Milliseconds()), s.ttlMillis(),
		}).Error()
	})
}

// Cool keeps a budget out of rotation until until; a later cooldown wins.
func (s *Store) Cool(ctx context.Context, b keypool.SharedBudget, until time.Time, reason string) keypool.SharedMode {
	if err := s.until(ctx, "cool", s.keys.budget(b.Org, b.Class), "c", until, reason, s.cfg.MaxPark); err != nil {
		s.local.cool(b, until.UnixNano(), reason)
		return keypool.SharedModeLocalFallback
	}
	return keypool.SharedModeShared
}

// Park keeps an organization out of rotation until until, at most MaxPark
// ahead; a later park wins.
func (s *Store) Park(ctx context.Context, org string, until time.Time, reason string) keypool.SharedMode {
	if err := s.until(ctx, "park", s.keys.org(org), "p", until, reason, s.cfg.MaxPark); err != nil {
		s.local.park(org, min(until.UnixNano(), time.Now().Add(s.cfg.MaxPark).UnixNano()), reason)
		return keypool.SharedModeLocalFallback
	}
	return keypool.SharedModeShared
}

// Disable takes a key out of rotation on every instance.
func (s *Store) Disable(ctx context.Context, key, reason string) keypool.SharedMode {
	s.editView(func(v *keypool.SharedView) { v.Disabled[key] = reason })
	err := s.write(ctx, "disable", func(ctx context.Context, c rueidis.Client) error {
		return c.Do(ctx, c.B().Hset().Key(s.keys.disabled()).FieldValue().FieldValue(key, reason).Build()).Error()
	})
	return modeOf(err)
}

// Enable clears a key's disabled state, its organization's park and the
// given classes' cooldowns, on every instance: one pipelined round trip.
func (s *Store) Enable(ctx context.Context, key, org string, classes []string) keypool.SharedMode {
	s.editView(func(v *keypool.SharedView) { delete(v.Disabled, key) })
	s.local.unpark(org)
	err := s.write(ctx, "enable", func(ctx context.Context, c rueidis.Client) error {
		ks := []string{s.keys.org(org)}
		for _, cl := range classes {
			ks = append(ks, s.keys.budget(org, cl))
		}
		for _, r := range c.DoMulti(ctx,
			c.B().Hdel().Key(s.keys.disabled()).Field(key).Build(),
			c.B().Eval().Script(enableSrc).Numkeys(int64(len(ks))).Key(ks...).Build(),
		) {
			if err := r.Error(); err != nil {
				return err
			}
		}
		return nil
	})
	return modeOf(err)
}

// Pin records a session's key for ttl.
func (s *Store) Pin(ctx context.Context, session uint64, key string, ttl time.Duration) keypool.SharedMode {
	err := s.call(ctx, "pin", func(ctx context.Context, c rueidis.Client) error {
		return c.Do(ctx, c.B().Set().Key(s.keys.pin(session)).Value(key).PxMilliseconds(max(1, ttl.Milliseconds())).Build()).Error()
	})
	return modeOf(err)
}

// Pinned returns a session's key and refreshes its ttl.
func (s *Store) Pinned(ctx context.Context, session uint64, ttl time.Duration) (string, keypool.SharedMode) {
	var key string
	err := s.call(ctx, "pinned", func(ctx context.Context, c rueidis.Client) error {
		v, err := c.Do(ctx, c.B().Getex().Key(s.keys.pin(session)).PxMilliseconds(max(1, ttl.Milliseconds())).Build()).ToString()
		key = v
		return err
	})
	return key, modeOf(err)
}

// LearnOrg records the upstream organization of a key for every instance.
func (s *Store) LearnOrg(ctx context.Context, key, orgID string) keypool.SharedMode {
	s.editView(func(v *keypool.SharedView) { v.OrgIDs[key] = orgID })
	err := s.write(ctx, "learn_org", func(ctx context.Context, c rueidis.Client) error {
		return c.Do(ctx, c.B().Hset().Key(s.keys.orgIDs()).FieldValue().FieldValue(key, orgID).Build()).Error()
	})
	return modeOf(err)
}

func modeOf(err error) keypool.SharedMode {
	if err != nil && !isRedisNil(err) {
		return keypool.SharedModeLocalFallback
	}
	return keypool.SharedModeShared
}

// editView applies a local change to the view at once, so this instance
// acts on it before the next heartbeat brings it back from Redis.
func (s *Store) editView(f func(*keypool.SharedView)) {
	for {
		old := s.view.Load()
		v := *old
		v.Disabled = cloneMap(old.Disabled)
		v.OrgIDs = cloneMap(old.OrgIDs)
		f(&v)
		if s.view.CompareAndSwap(old, &v) {
			return
		}
	}
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

var _ keypool.SharedState = (*Store)(nil)
