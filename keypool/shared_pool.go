package keypool

import (
	"context"
	"math"
	"sync"
	"time"
)

// How a pool uses its SharedState (Config.Shared). The in-process budgets
// stay: they are a mirror of the shared ones, refreshed by every reply of
// the store, and they keep choosing the key (selection, the wait queue and
// retry hints cost no round trip). The store has the last word: a key the
// mirror picked is reserved in the store with one script, and when the
// store refuses (another instance took the capacity), the local
// reservation is withdrawn, the mirror takes the store's levels, cooldown
// or park, and the request picks again — another organization, or a wait
// in the local queue until the mirror says the budget has refilled.
//
// Per request: Reserve (one round trip near the limit, none far from it
// with redisstate's lease), Sync when the response's headers arrive and a
// correction after it ends (both in the background; redisstate batches
// them). A request with a session reads its pin when this instance does
// not know the session, or knows it and the reservation asked the store;
// it writes the pin when it moves (and every half ttl, to keep it alive).

// maxSharedTries bounds how often one request may be refused by the store
// and pick again before it is refused itself; each refusal lowers the
// mirror, so a second pick lands elsewhere or waits.
const maxSharedTries = 8

func (p *Pool) acquireShared(ctx context.Context, req *Request, res *Reservation) error {
	sh := p.cfg.Shared
	st := p.st
	p.applyView(sh.View())
	// A session's pin is read from the store before the pick when this
	// instance knows nothing of the session (its last turns went to other
	// instances). A session this instance knows is served from its own
	// table, and its pin is read only when the store admitted with a round
	// trip anyway (near the limit, where moves happen: the pinned key ran
	// out of capacity); a pin that moved on another instance then undoes
	// the reservation and the request follows it. Far from the limit,
	// where the store admits without a round trip (a lease: Ticket set),
	// nothing is read: a move made elsewhere is followed here once this
	// instance's reservations ask the store again.
	pinned, read := "", false
	known := false
	if p.cfg.Sticky && req.Session != 0 {
		if known = p.knowsSession(req.Session); !known {
			pinned, read = p.followPin(ctx, req), true
		}
	}
	start := st.clock.Now()
	var hint time.Duration
	for try := 0; ; try++ {
		wait := p.cfg.MaxWait - st.clock.Now().Sub(start)
		if p.cfg.MaxWait > 0 && wait <= 0 {
			wait = time.Nanosecond // its deadline has passed: refused at once
		}
		if p.cfg.MaxWait == 0 {
			wait = 0
		}
		if err := p.acquire(ctx, req, res, wait); err != nil {
			if nc, ok := err.(*NoCapacityError); ok && !nc.NoKeys && hint > nc.RetryAfter {
				nc.RetryAfter = hint
			}
			return err
		}
		if res.input == inputPassive {
			return nil
		}
		b, admit, charge := p.sharedRequest(res)
		a := sh.Reserve(ctx, b, admit, charge)
		if p.applyAdmission(res, b, a, charge) {
			if known && a.Ticket == nil && a.Mode == SharedModeShared {
				pinned, _ = sh.Pinned(ctx, req.Session, time.Duration(p.ttl))
				read = true
				if pinned != "" && pinned != res.ks.name && p.follow(req, pinned) {
					// The conversation moved to another key on another
					// instance: follow it there.
					p.undoAdmission(res)
					known = false
					continue
				}
			}
			if key := res.ks.name; res.Sticky != StickyNone && p.sharePin(req.Session, res.Sticky, key, pinned, read) {
				p.background(func(ctx context.Context) {
					sh.Pin(ctx, req.Session, key, time.Duration(p.ttl))
				})
			}
			return nil
		}
		switch a.Outcome {
		case SharedWait:
			hint = a.Wait
		default:
			hint = a.Until.Sub(st.clock.Now())
		}
		if try+1 >= maxSharedTries || ctx.Err() != nil {
			if err := ctx.Err(); err != nil {
				return err
			}
			return &NoCapacityError{RetryAfter: max(hint, 0)}
		}
	}
}

// sharePin reports whether the session's pin to key must be written to the
// store: it differs from the pin read there, or (not read) this instance
// pinned it anew (so is not a hit) or has not written it for half its ttl.
func (p *Pool) sharePin(session uint64, so StickyOutcome, key, pinned string, read bool) bool {
	st := p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.clock.Now().UnixNano()
	if read && pinned == key {
		st.sticky.shareDue(session, now, p.ttl, true) // the read refreshed it
		return false
	}
	return st.sticky.shareDue(session, now, p.ttl, read || so != StickyHit)
}

// knowsSession reports whether this instance's session table pins the
// session.
func (p *Pool) knowsSession(session uint64) bool {
	st := p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	ks, _, _ := st.sticky.get(session, st.clock.Now().UnixNano(), p.ttl)
	return ks != nil
}

// follow pins the session locally to the key the store names, when that
// key may serve the request; it reports whether it did.
func (p *Pool) follow(req *Request, name string) bool {
	st := p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	ks := st.keys[name]
	if ks == nil || ks.disabled != "" {
		return false
	}
	i, ok := p.byKey[ks]
	if !ok || !servable(req.Only, i) || req.Attempts.excludes(ks) {
		return false
	}
	st.sticky.pin(req.Session, ks, st.clock.Now().UnixNano(), p.ttl, p.cfg.StickyMaxSessions, 0, -1)
	return true
}

// undoAdmission gives back a reservation the store admitted, locally and
// in the store (in the background), as if it had never been made.
func (p *Pool) undoAdmission(res *Reservation) {
	st := p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	l := res.link
	c := SharedCorrection{
		Budget:  l.budget,
		Delta:   [3]float64{-l.charged[0], -l.charged[1], -l.charged[2]},
		Release: l.unanswered(),
	}
	l.phase = linkDone
	res.withdraw(st.clock.Now().UnixNano())
	p.background(func(ctx context.Context) { l.sh.Settle(ctx, []SharedCorrection{c}) })
}

// sharedRequest is what the store must admit and charge for res: one
// request and the input estimate plus its margin admitted, the estimate and
// the expected output charged. The output is charged up front (and
// corrected when the response ends) so that other instances see output in
// flight, which the in-process pool keeps as its budget's pendingOut.
func (p *Pool) sharedRequest(res *Reservation) (SharedBudget, [3]float64, [3]float64) {
	st := p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	o, _ := res.current()
	margin := st.est[res.class].margin()
	b := SharedBudget{Org: o.name, Class: st.cnames[res.class], Caps: p.members[res.idx].caps}
	return b, [3]float64{1, res.est * (1 + margin), 0}, [3]float64{1, res.est, res.outRes}
}

// applyAdmission records the store's answer: the mirror takes its levels,
// learned limits, cooldown or park; an admitted reservation remembers what
// the store charged; a refused one is withdrawn. It reports admission.
func (p *Pool) applyAdmission(res *Reservation, sb SharedBudget, a SharedAdmission, charge [3]float64) bool {
	st := p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.clock.Now().UnixNano()
	o, b := res.current()
	if a.Mode == SharedModeLocalFallback {
		st.fellBack = true
	}
	p.mirror(res.idx, b, a.Levels, a.Known, a.Caps, a.Mode, now)
	switch a.Outcome {
	case SharedAdmitted:
		res.link = &sharedLink{sh: p.cfg.Shared, budget: sb, charged: charge, marks: a.Marks, ahead: a.Ahead, ticket: a.Ticket}
		return true
	case SharedCooling:
		if at := capUntil(now, a.Until, MaxCooldown); at > b.coolUntil {
			b.coolUntil, b.coolReason = at, a.Reason
		}
	case SharedParked:
		if at := capUntil(now, a.Until, MaxPark); at > o.parkUntil {
			o.parkUntil, o.parkReason = at, a.Reason
		}
	}
	res.withdraw(now)
	return false
}

// mirror sets the local budget of key i to the store's levels (mode says
// whether they are the pool-wide ones or this instance's fallback share)
// and adopts limits the store learned from any instance's headers. st.mu
// is held.
func (p *Pool) mirror(i int, b *budget, levels [3]float64, known [3]bool, caps [3]float64, mode SharedMode, now int64) {
	m := &p.members[i]
	for k := range b.buckets {
		if !known[k] || math.IsNaN(levels[k]) {
			continue
		}
		bk := &b.buckets[k]
		if mode == SharedModeShared && m.caps[k] == 0 && caps[k] > 0 {
			bk.learned = learnedLimit(k, int64(caps[k]))
		}
		c := capOf(m.caps[k], bk)
		if c <= 0 {
			continue
		}
		bk.refill(now, c)
		l := levels[k]
		if k == kindOutput {
			// The store's output level has the expected output of every
			// request in flight charged; locally that of this instance's
			// is kept apart as pendingOut, and subtracted on admission.
			l += max(0, b.pendingOut)
		}
		bk.level = max(min(l, c), -c)
	}
}

// unanswered is what the reservation holds in the store's unanswered sums
// until a sync or its settle releases it: its request and input charge.
func (l *sharedLink) unanswered() [3]float64 {
	return [3]float64{l.charged[kindRequests], l.charged[kindInput], 0}
}

// withdraw undoes a local reservation the store refused, as if it had
// never been made. st.mu is held.
func (r *Reservation) withdraw(now int64) {
	r.answered()
	b := r.bud
	b.buckets[kindRequests].charge(-1)
	b.buckets[kindInput].charge(-r.est)
	b.pendingOut -= r.outRes
	if r.cu != nil {
		r.cu.add(now, -r.cuCost)
	}
	r.ks.inFlight--
	r.ks.totals.Requests--
	if a := r.attempts; a != nil {
		a.n--
	}
	*r = Reservation{}
}

// followPin makes the local session table agree with the store's pin, so
// that a conversation whose turns land on different instances stays on the
// key that holds its prompt cache. It returns the store's pin ("" for
// none).
func (p *Pool) followPin(ctx context.Context, req *Request) string {
	name, mode := p.cfg.Shared.Pinned(ctx, req.Session, time.Duration(p.ttl))
	if name == "" || mode != SharedModeShared {
		return name
	}
	st := p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.clock.Now().UnixNano()
	ks := st.keys[name]
	if ks == nil || ks.refs == 0 {
		return name
	}
	if _, ok := p.byKey[ks]; !ok {
		return name
	}
	if cur, _, _ := st.sticky.get(req.Session, now, p.ttl); cur != ks {
		// The last turn went elsewhere: its size is not known here, so
		// the next is priced as a first turn within the cache scope.
		st.sticky.pin(req.Session, ks, now, p.ttl, p.cfg.StickyMaxSessions, 0, -1)
	}
	return name
}

// applyView takes what other instances changed since the last heartbeat:
// keys disabled or enabled elsewhere, organization ids learned elsewhere.
func (p *Pool) applyView(v SharedView) {
	st := p.st
	at := v.Refreshed.UnixNano()
	st.mu.Lock()
	defer st.mu.Unlock()
	if at == 0 || at == p.viewAt {
		return
	}
	p.viewAt = at
	now := st.clock.Now().UnixNano()
	if v.Epoch != "" && v.Epoch != st.epoch {
		if st.epoch != "" && v.EpochMine && !st.fellBack {
			// The store lost the pool's state and this instance was
			// first to see it: it charges the store with what its mirror
			// says was spent, as a reload adding redis does, so that a
			// Redis restarted empty does not hand out a fresh budget.
			// (After a fallback the mirror holds this instance's share,
			// not the pool's, and the store's rejoin charged what it
			// spent meanwhile.)
			p.moveStateUp(now)
		}
		st.epoch = v.Epoch
	}
	if v.Mode == SharedModeShared {
		st.fellBack = false
	}
	changed := false
	for i := range p.members {
		m := &p.members[i]
		ks := m.ks
		reason, off := v.Disabled[ks.name]
		switch {
		case off && ks.disabled == "":
			ks.disabled = reason
			ks.health.disabledAt(now)
		case !off && ks.disabled != "" && now > ks.health.since+int64(viewLag):
			// Enabled on another instance (a disable made here after
			// the view was read stays until the view can know it).
			ks.disabled = ""
			changed = true
		}
		if id := v.OrgIDs[ks.name]; id != "" {
			st.learnOrg(ks, id, now, m.caps)
		}
	}
	if changed {
		st.dispatchAll(now)
	}
}

// viewLag is how long a local change may take to reach the store's view.
const viewLag = 3 * time.Second

// background runs a write to the store off the request path. Writes are
// bounded by the store's own timeout; WaitShared waits for them.
func (p *Pool) background(f func(ctx context.Context)) {
	p.st.sharedOps.Add(1)
	go func() {
		defer p.st.sharedOps.Done()
		f(context.Background())
	}()
}

// WaitShared waits until the writes to the shared state started so far
// (corrections, pins, cooldowns) have been made; for tests and shutdown.
func (p *Pool) WaitShared() { p.st.sharedOps.Wait() }

// sharedLink is a reservation's standing with the store once admitted. It
// is its own allocation because the store's answer to a header sync may
// arrive after the caller has settled (and reused) the reservation.
// Guarded by the pool's lock.
type sharedLink struct {
	sh SharedState
	// budget is the store's budget that admitted and charged it: its
	// corrections and its part in the unanswered sums go there even when
	// its organization has since been merged or renamed (see
	// State.learnOrg), as the charge does not move with them.
	budget  SharedBudget
	charged [numKinds]float64 // what the store charged at admission
	marks   [numKinds]float64 // its running totals before that
	ahead   [numKinds]float64 // the store's unanswered sums before that
	// ticket is the store's handle on a charge it admitted without a
	// round trip (SharedAdmission.Ticket): marks and ahead come from it.
	ticket any
	phase  linkPhase
	// final is the correction Settle left while a sync was in flight.
	final SharedCorrection
}

// linkPhase orders a reservation's sync and correction with the store:
//
//	admitted ─headers─▶ syncing ─answer─▶ synced ─Settle─▶ done
//	    │                  └─Settle─▶ settledSyncing ─answer─▶ done
//	    └─Settle──────────────────────────────────────────▶ done
//
// The correction goes out exactly once, after the sync's answer is known:
// when the sync moved the store's input level to the upstream's account,
// that account already holds the real input, and the usage's correction of
// the estimate must not be applied on top.
type linkPhase uint8

const (
	linkAdmitted linkPhase = iota
	linkSyncing
	linkSynced
	linkSettledSyncing
	linkDone
)

// observeShared is ObserveHeaders with a shared store: the headers move
// the store's budget (Sync, in the background: the response is not held
// for it) and the mirror follows; a 5xx's refund is written before the
// sync, in the same background write. st.mu is held.
func (r *Reservation) observeShared(now int64, status int, h RateLimitHeaders, lims [numKinds]Limit) {
	p := r.p
	st := p.st
	l := r.link
	o, b := r.current()
	budget := SharedBudget{Org: o.name, Class: st.cnames[r.class], Caps: p.members[r.idx].caps}
	// The headers describe the organization as it is now (the budget
	// its keys share at present); what this request was charged lies in
	// the budget that admitted it.
	same := budget.Org == l.budget.Org
	var refund []SharedCorrection
	if status >= 500 && r.input <= inputSynced {
		// As syncHeaders: the upstream took neither the request nor its
		// input. The store gets the refund before the sync (in the same
		// background write: the response does not wait for the store).
		b.buckets[kindRequests].charge(-1)
		b.buckets[kindInput].charge(-r.est)
		r.input = inputRefunded
		refund = []SharedCorrection{{Budget: l.budget, Delta: [3]float64{-1, -r.est, 0}}}
	}
	r.answered()
	s := SharedSync{Budget: budget, Observed: time.Unix(0, now), Own: l.charged}
	if l.phase == linkAdmitted {
		if same {
			s.Release, s.Ahead = l.unanswered(), l.ahead
		} else {
			rel := SharedCorrection{Budget: l.budget, Release: l.unanswered()}
			p.background(func(ctx context.Context) { l.sh.Settle(ctx, []SharedCorrection{rel}) })
		}
	}
	for k, lim := range lims {
		s.Limit[k], s.Remaining[k] = lim.Limit, lim.Remaining
		if lim.Limit > 0 {
			b.buckets[k].learned = learnedLimit(k, lim.Limit)
		}
		s.Mark[k] = math.NaN()
		if r.marksValid() && o == r.o && same {
			s.Mark[k] = l.marks[k]
			s.Ticket = l.ticket
		}
		s.Gran[k] = 1
		if k != kindRequests && lim.Remaining >= 0 && lim.Remaining%1000 == 0 {
			s.Gran[k] = 1000
		}
		cfg := p.members[r.idx].caps[k]
		s.Raise[k] = cfg == 0 || cfg == float64(lim.Limit)
	}
	r.voidMarks()
	if r.input <= inputSynced && s.Remaining[kindInput] >= 0 {
		// The upstream counted the request: usage corrects the estimate
		// unless the sync's answer says the store took the upstream's
		// account instead (syncAnswered).
		r.input = inputSyncKept
	}
	coolBefore := b.coolUntil
	r.coolDown(now, status, h, lims, b)
	if cool, why := b.coolUntil, b.coolReason; cool > coolBefore {
		p.background(func(ctx context.Context) { l.sh.Cool(ctx, budget, time.Unix(0, cool), why) })
	}
	if l.phase != linkAdmitted {
		if refund != nil {
			p.background(func(ctx context.Context) { l.sh.Settle(ctx, refund) })
		}
		return // one sync per reservation
	}
	l.phase = linkSyncing
	// A sync of another budget than the one charged leaves the charge's
	// correction to be made.
	idx, class, tracksInput := r.idx, r.class, s.Remaining[kindInput] >= 0 && same
	p.background(func(ctx context.Context) {
		if refund != nil {
			l.sh.Settle(ctx, refund)
		}
		res := l.sh.Sync(ctx, s)
		var final []SharedCorrection
		// The correction goes out after the lock is released: the store
		// may hold it for its next batch.
		defer func() {
			if final != nil {
				l.sh.Settle(ctx, final)
			}
		}()
		st.mu.Lock()
		defer st.mu.Unlock()
		known := [3]bool{!math.IsNaN(res.Levels[0]), !math.IsNaN(res.Levels[1]), !math.IsNaN(res.Levels[2])}
		p.mirror(idx, o.resolve().budget(class), res.Levels, known, res.Caps, res.Mode, st.clock.Now().UnixNano())
		moved := tracksInput && res.Moved[kindInput]
		switch l.phase {
		case linkSyncing:
			l.phase = linkSynced
			if moved {
				r.syncMovedInput()
			}
		case linkSettledSyncing:
			l.phase = linkDone
			if moved {
				l.final.Delta[kindInput] = 0
			}
			if l.final.Delta != [3]float64{} {
				final = []SharedCorrection{l.final}
			}
		}
	})
}

// syncMovedInput records that a header sync set the store's input level to
// the upstream's account, which holds this request's input: what usage
// corrected of the estimate before is void, and usage corrects nothing
// more (as inputSynced in process; when usage came first, only its growth
// from here is charged). st.mu is held.
func (r *Reservation) syncMovedInput() {
	r.delta[kindInput] = 0
	if r.input == inputSyncKept {
		r.input = inputSynced
	}
}

// settleShared sends the store what this reservation's accounting changed
// after admission: refunds, the real input instead of the estimate, the
// real output instead of the expected; or leaves it to a sync in flight.
// st.mu is held.
func (r *Reservation) settleShared() {
	l := r.link
	if l == nil {
		return
	}
	d := r.delta
	d[kindOutput] -= l.charged[kindOutput]
	c := SharedCorrection{Budget: l.budget, Delta: d}
	switch l.phase {
	case linkSyncing:
		l.phase, l.final = linkSettledSyncing, c
		return
	case linkAdmitted:
		// No headers came: the store still counts it as unanswered.
		c.Release = l.unanswered()
	}
	l.phase = linkDone
	if c.Delta == [3]float64{} && c.Release == [3]float64{} {
		return
	}
	r.p.background(func(ctx context.Context) { l.sh.Settle(ctx, []SharedCorrection{c}) })
}

// moveStateUp charges a store the pool starts to use with what this
// process's budgets have spent and not yet refilled, so that adding redis
// to a running relay does not hand out a second budget. st.mu is held.
func (p *Pool) moveStateUp(now int64) {
	var cs []SharedCorrection
	p.eachBudget(func(i int, o *org, c int, b *budget) {
		var d [3]float64
		caps := p.capsOf(i, b)
		for k := range b.buckets {
			bk := &b.buckets[k]
			if caps[k] <= 0 || !bk.init {
				continue
			}
			bk.refill(now, caps[k])
			d[k] = caps[k] - bk.level
		}
		if d != [3]float64{} {
			cs = append(cs, SharedCorrection{Budget: SharedBudget{Org: o.name, Class: p.st.cnames[c], Caps: p.members[i].caps}, Delta: d})
		}
	})
	if len(cs) == 0 {
		return
	}
	sh := p.cfg.Shared
	p.background(func(ctx context.Context) { sh.Settle(ctx, cs) })
}

// RefreshShared brings the mirror of every budget the pool has used up to
// the store's levels, so that a snapshot on an instance that served
// nothing lately shows the pool-wide state: one script per budget (a
// reservation of nothing), issued concurrently. Without a store it does
// nothing.
func (p *Pool) RefreshShared(ctx context.Context) {
	sh := p.cfg.Shared
	if sh == nil {
		return
	}
	type target struct {
		i int
		o *org
		c int
		b SharedBudget
	}
	st := p.st
	var ts []target
	st.mu.Lock()
	p.eachBudget(func(i int, o *org, c int, _ *budget) {
		ts = append(ts, target{i, o, c, SharedBudget{Org: o.name, Class: st.cnames[c], Caps: p.members[i].caps}})
	})
	st.mu.Unlock()
	as := make([]SharedAdmission, len(ts))
	var wg sync.WaitGroup
	for j := range ts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			as[j] = sh.Reserve(ctx, ts[j].b, [3]float64{}, [3]float64{})
		}()
	}
	wg.Wait()
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.clock.Now().UnixNano()
	for j, t := range ts {
		if t.o.resolve() != t.o {
			continue // merged meanwhile
		}
		a := as[j]
		p.mirror(t.i, t.o.budget(t.c), a.Levels, a.Known, a.Caps, a.Mode, now)
		switch a.Outcome {
		case SharedCooling:
			if b := t.o.budget(t.c); capUntil(now, a.Until, MaxCooldown) > b.coolUntil {
				b.coolUntil, b.coolReason = capUntil(now, a.Until, MaxCooldown), a.Reason
			}
		case SharedParked:
			if at := capUntil(now, a.Until, MaxPark); at > t.o.parkUntil {
				t.o.parkUntil, t.o.parkReason = at, a.Reason
			}
		}
	}
}

// eachBudget calls f once for every budget the pool's organizations have
// used, with the index of a key of that organization. st.mu is held.
func (p *Pool) eachBudget(f func(i int, o *org, class int, b *budget)) {
	seen := map[*org]bool{}
	for i := range p.members {
		o := p.members[i].ks.org.resolve()
		if seen[o] {
			continue
		}
		seen[o] = true
		for c, b := range o.budgets {
			if b != nil {
				f(i, o, c, b)
			}
		}
	}
}
