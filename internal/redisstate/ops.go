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

// Reserve admits a request against an organization × class budget with one
// script: the whole admission is one round trip.
func (s *Store) Reserve(ctx context.Context, b keypool.SharedBudget, admit, charge [3]float64) keypool.SharedAdmission {
	var vs []rueidis.RedisMessage
	err := s.call(ctx, "reserve", func(ctx context.Context, c rueidis.Client) error {
		args := make([]string, 0, 10)
		for _, v := range b.Caps {
			args = append(args, fmtFloat(max(v, 0)))
		}
		for _, v := range admit {
			args = append(args, fmtFloat(v))
		}
		for _, v := range charge {
			args = append(args, fmtFloat(v))
		}
		args = append(args, s.ttlMillis())
		// What the request holds as unanswered: its request and input.
		args = append(args, fmtFloat(charge[0]), fmtFloat(charge[1]), "0", s.deadline(ctx))
		var err error
		vs, err = reserveScript.Exec(ctx, c, []string{s.keys.budget(b.Org, b.Class), s.keys.org(b.Org)}, args).ToArray()
		if err == nil && len(vs) != 15 {
			err = errMalformed
		}
		return err
	})
	if err != nil {
		return s.local.reserve(b, admit, charge)
	}
	a := keypool.SharedAdmission{Mode: keypool.SharedModeShared}
	outcome, _ := vs[0].AsInt64()
	for i := range 3 {
		a.Levels[i] = num(vs[3+i])
		a.Known[i] = !math.IsNaN(a.Levels[i])
		a.Marks[i] = num(vs[6+i])
		a.Caps[i] = num(vs[9+i])
		if v := num(vs[12+i]); v > 0 { // NaN on a refusal
			a.Ahead[i] = v
		}
	}
	switch outcome {
	case 0:
		a.Outcome = keypool.SharedAdmitted
	case 1:
		a.Outcome = keypool.SharedWait
		a.Wait = time.Duration(num(vs[1])) * time.Microsecond
	case 2, 3:
		a.Outcome = keypool.SharedCooling
		if outcome == 3 {
			a.Outcome = keypool.SharedParked
		}
		a.Until = time.UnixMilli(int64(num(vs[1])))
		a.Reason, _ = vs[2].ToString()
		return a
	}
	s.local.remember(b, a.Levels, a.Known, a.Caps)
	return a
}

type malformed struct{}

func (malformed) Error() string { return "redis: script reply malformed" }

var errMalformed error = malformed{}

// Settle applies the corrections in one pipelined batch.
func (s *Store) Settle(ctx context.Context, cs []keypool.SharedCorrection) keypool.SharedMode {
	if len(cs) == 0 {
		return s.Mode()
	}
	err := s.call(ctx, "settle", func(ctx context.Context, c rueidis.Client) error {
		return s.settleBatch(ctx, c, cs)
	})
	if err != nil {
		s.local.settle(cs)
		return keypool.SharedModeLocalFallback
	}
	return keypool.SharedModeShared
}

func (s *Store) settleBatch(ctx context.Context, c rueidis.Client, cs []keypool.SharedCorrection) error {
	execs := make([]rueidis.LuaExec, len(cs))
	for i, cr := range cs {
		args := make([]string, 0, 10)
		for _, v := range cr.Budget.Caps {
			args = append(args, fmtFloat(max(v, 0)))
		}
		for _, v := range cr.Delta {
			args = append(args, fmtFloat(v))
		}
		args = append(args, s.ttlMillis())
		for _, v := range cr.Release {
			args = append(args, fmtFloat(v))
		}
		args = append(args, s.deadline(ctx))
		execs[i] = rueidis.LuaExec{Keys: []string{s.keys.budget(cr.Budget.Org, cr.Budget.Class)}, Args: args}
	}
	for _, r := range settleScript.ExecMulti(ctx, c, execs...) {
		if err := r.Error(); err != nil {
			return err
		}
	}
	return nil
}

// Sync learns from one response's rate-limit headers.
func (s *Store) Sync(ctx context.Context, sy keypool.SharedSync) keypool.SharedSyncResult {
	var vs []rueidis.RedisMessage
	err := s.call(ctx, "sync", func(ctx context.Context, c rueidis.Client) error {
		obs := int64(0)
		if !sy.Observed.IsZero() {
			obs = sy.Observed.UnixMilli()
		}
		args := make([]string, 0, 24)
		args = append(args, fmtInt(obs), s.ttlMillis(), fmtFloat(s.cfg.MaxLimit))
		for i := range 3 {
			mark := ""
			if !math.IsNaN(sy.Mark[i]) {
				mark = fmtFloat(sy.Mark[i])
			}
			raise := "0"
			if sy.Raise[i] {
				raise = "1"
			}
			args = append(args, fmtFloat(max(sy.Budget.Caps[i], 0)), fmtInt(sy.Limit[i]), fmtInt(sy.Remaining[i]),
				mark, fmtFloat(sy.Own[i]), fmtFloat(max(sy.Gran[i], 1)), raise)
		}
		for _, v := range sy.Ahead {
			args = append(args, fmtFloat(max(v, 0)))
		}
		for _, v := range sy.Release {
			args = append(args, fmtFloat(v))
		}
		args = append(args, s.deadline(ctx))
		var err error
		vs, err = syncScript.Exec(ctx, c, []string{s.keys.budget(sy.Budget.Org, sy.Budget.Class)}, args).ToArray()
		if err == nil && len(vs) != 9 {
			err = errMalformed
		}
		return err
	})
	if err != nil {
		return s.local.sync(sy)
	}
	r := keypool.SharedSyncResult{Mode: keypool.SharedModeShared}
	var known [3]bool
	for i := range 3 {
		m, _ := vs[i].AsInt64()
		r.Moved[i] = m == 1
		r.Levels[i] = num(vs[3+i])
		r.Caps[i] = num(vs[6+i])
		known[i] = !math.IsNaN(r.Levels[i])
	}
	s.local.remember(sy.Budget, r.Levels, known, r.Caps)
	return r
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
