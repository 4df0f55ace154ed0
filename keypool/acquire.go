package keypool

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/cc-relay/caddy-cc-relay/selector"
)

// Request is what the pool needs to know about a request to place it.
type Request struct {
	Model string
	// Bytes is the size of the request body, the basis of the input-token
	// estimate.
	Bytes int
	// Session is a hash of the client and its conversation, 0 for none.
	Session uint64
	// MaxTokens is the request's max_tokens, 0 when unknown. The upstream
	// never writes more output than this, so no usage report can charge
	// more.
	MaxTokens int
	// Passive requests (endpoints other than Messages) get a key but are
	// charged to no budget.
	Passive bool
	// Attempts carries the keys and organizations a retry must avoid; nil
	// for a first attempt.
	Attempts *Attempts
	// Only, when not nil, lists the keys (by index) that can serve the
	// request at all, e.g. the ones whose upstream has its model: no
	// other key is ever chosen, and only these count for the retry hint.
	Only []bool
	// Client names who sent the request, for fair shares under
	// contention; "" is one anonymous client.
	Client string
	// ClientWeight is the client's share under contention relative to
	// others; 0 means 1.
	ClientWeight int
}

// Attempts remembers what earlier attempts of one request ruled out.
type Attempts struct {
	keys []*keyState
	orgs []*org
	n    int
}

// N is the number of attempts reserved so far.
func (a *Attempts) N() int {
	if a == nil {
		return 0
	}
	return a.n
}

func (a *Attempts) excludes(ks *keyState) bool {
	if a == nil {
		return false
	}
	for _, k := range a.keys {
		if k == ks {
			return true
		}
	}
	o := ks.org.resolve()
	for _, x := range a.orgs {
		if x.resolve() == o {
			return true
		}
	}
	return false
}

// ExcludeOrg makes later attempts of the request avoid the reserved key's
// organization (it answered 429 for the whole organization).
func (a *Attempts) ExcludeOrg(r *Reservation) { a.orgs = append(a.orgs, r.ks.org) }

// ExcludeKey makes later attempts avoid the reserved key.
func (a *Attempts) ExcludeKey(r *Reservation) { a.keys = append(a.keys, r.ks) }

// NoCapacityError is returned by Acquire when no key can take the request.
type NoCapacityError struct {
	// RetryAfter is when the earliest key will be able to take it.
	RetryAfter time.Duration
	// NoKeys is set when every key is disabled: waiting will not help.
	NoKeys bool
	// OverShare is set when capacity is short and the request's client
	// has used more than its weighted share of it lately: others are
	// served first.
	OverShare bool
}

func (e *NoCapacityError) Error() string {
	if e.NoKeys {
		return "no enabled upstream key"
	}
	if e.OverShare {
		return fmt.Sprintf("capacity is short and this client has used more than its share; retry in %s", e.RetryAfter)
	}
	return fmt.Sprintf("all upstream keys are at their rate limits; retry in %s", e.RetryAfter)
}

// Acquire picks a key for req and reserves one request and the estimated
// input tokens on its organization's budget for req's model class. When no
// key can take it, it waits up to the pool's MaxWait in weighted fair order
// among clients (see waitQueue; a retry never waits), then returns a
// *NoCapacityError. Without MaxWait, when the chosen budget is short (see
// shortHeadroom), a client above its weighted share of recent use is
// refused. A cancelled ctx leaves the queue at once.
func (p *Pool) Acquire(ctx context.Context, req *Request, res *Reservation) error {
	if p.cfg.Shared != nil {
		return p.acquireShared(ctx, req, res)
	}
	return p.acquire(ctx, req, res, p.cfg.MaxWait)
}

// acquire is Acquire on this process's budgets, waiting at most maxWait.
func (p *Pool) acquire(ctx context.Context, req *Request, res *Reservation, maxWait time.Duration) error {
	st := p.st
	// The clock is read before the lock: on a VM a read costs about as
	// much as the rest of a pick, and every request would wait for the
	// lock behind it. A reading older than one already applied (this
	// request waited for the lock) only makes the request look that much
	// earlier; buckets never refill backwards.
	now := st.clock.Now().UnixNano()
	st.mu.Lock()
	class := p.classOf(req.Model)
	est := st.est[class].estimate(req.Bytes, p.cfg.TokenEstimateRatio)
	// Admission asks for the estimate plus its typical error, so that a
	// bucket just refilled to an underestimate does not send a request
	// the upstream then refuses; the reservation is the estimate.
	margin := st.est[class].margin()
	need := est * (1 + margin)
	retry := req.Attempts.N() > 0
	mayWait := maxWait > 0 && !retry
	if !mayWait || !st.waitq.waiting(class) {
		// Nobody waits for this class (or this request will not wait):
		// take what is free, beyond what waiters hold.
		i, so, e := p.pick(now, class, est, margin, req)
		if i >= 0 {
			if req.Client != "" && !mayWait && !retry {
				if after, over := p.overShare(i, now, class, e*(1+margin), req); over {
					st.mu.Unlock()
					return &NoCapacityError{RetryAfter: after, OverShare: true}
				}
			}
			p.reserve(i, now, class, e, req, res, so)
			st.mu.Unlock()
			return nil
		}
		// A session leaving its cache scope (or starting one) was priced
		// whole: the retry hint must wait for that price, or clients (and
		// waiters) come back before any key can take it.
		need = max(need, e*(1+margin))
	}
	after, noKeys := p.retryAfter(now, class, need, req.Only)
	if noKeys || !mayWait || ctx.Err() != nil {
		st.mu.Unlock()
		if err := ctx.Err(); err != nil && !noKeys && mayWait {
			return err
		}
		return &NoCapacityError{RetryAfter: after, NoKeys: noKeys}
	}
	return p.wait(ctx, now, class, est, margin, need, req, res, maxWait)
}

// wait queues the request and blocks until a pass admits it, its deadline
// passes or ctx ends. st.mu is held on entry and released on return.
func (p *Pool) wait(ctx context.Context, now int64, class int, est, margin, need float64, req *Request, res *Reservation, maxWait time.Duration) error {
	st := p.st
	w := &waiter{
		ch: make(chan struct{}, 1), p: p, req: req, res: res, class: class, client: req.Client,
		est: est, margin: margin, need: need, deadline: now + int64(maxWait),
	}
	st.waitq.push(w, req.ClientWeight, need+st.est[class].outMean)
	st.dispatch(class, now)
	for {
		if w.done {
			st.mu.Unlock()
			return nil
		}
		if now >= w.deadline || w.noKeys {
			st.waitq.remove(w, false)
			after, noKeys := p.retryAfter(now, class, w.need, req.Only)
			st.dispatch(class, now) // what it held is free for the others
			st.mu.Unlock()
			return &NoCapacityError{RetryAfter: after, NoKeys: noKeys}
		}
		w.armed = min(w.wakeAt, w.deadline)
		at := max(w.armed, now+minSleep)
		st.mu.Unlock()
		// Armed at a point in time: time may move on before the timer
		// exists, and a sleep counted from then would wake late.
		t := st.clock.NewTimerAt(time.Unix(0, at))
		fired := false
		select {
		case <-w.ch:
		case <-t.C():
			fired = true
		case <-ctx.Done():
			t.Stop()
			st.mu.Lock()
			if w.done {
				// Admitted as it left: give the reservation back, the
				// caller sees only that its client went away.
				st.mu.Unlock()
				res.Settle(Result{})
				return ctx.Err()
			}
			st.waitq.remove(w, false)
			st.dispatch(class, st.clock.Now().UnixNano())
			st.mu.Unlock()
			return ctx.Err()
		}
		if !t.Stop() {
			// Woken by a signal while the timer fired too: select
			// chose at random, and the time it was armed for has come.
			fired = true
		}
		st.mu.Lock()
		now = st.clock.Now().UnixNano()
		if !w.done && (fired || now >= w.wakeAt) {
			// Its refill time (or deadline) came, whether its timer
			// told it or time moved while it woke for a signal: a pass
			// decides, so that the order holds whoever wakes first.
			st.dispatch(class, now)
		}
	}
}

// pick chooses a key for a request estimated at est input tokens, asking
// admission for est*(1+margin); it returns the estimate to reserve.
func (p *Pool) pick(now int64, class int, est, margin float64, req *Request) (int, StickyOutcome, float64) {
	v := &p.view
	v.now, v.class, v.est, v.exclude, v.only = now, class, est*(1+margin), req.Attempts, req.Only
	defer func() { v.exclude, v.only = nil, nil }()
	so := StickyNone
	if p.cfg.Sticky && req.Session != 0 {
		so = StickyNew
		if ks, lastBytes, lastClass := p.st.sticky.get(req.Session, now, p.ttl); ks != nil {
			if i, ok := p.byKey[ks]; ok {
				// Within its cache scope the next turn of a conversation
				// is charged at least what it added to the prompt (the
				// rest is read from the cache); a share of the whole
				// prompt knows nothing of the turn's size.
				w := est
				if int(lastClass) == class && lastBytes > 0 {
					if int(lastBytes) <= req.Bytes {
						w = max(w, p.st.est[class].whole(req.Bytes-int(lastBytes), p.cfg.TokenEstimateRatio))
					} else {
						// Shorter: the conversation was rewritten.
						w = max(w, p.st.est[class].whole(req.Bytes, p.cfg.TokenEstimateRatio))
					}
				}
				v.est = w * (1 + margin)
				if ok, _, _ := v.Load(i); ok {
					return i, StickyHit, w
				}
				if j := selector.PickAmong(p.cfg.Strategy, p.sel, v, p.scope(i)); j >= 0 {
					return j, StickyScope, w
				}
				so = StickyMoved
			}
		}
		// Outside its cache scope a conversation's prompt is all written
		// anew: price it whole, not at the learned share that cache hits
		// keep low, or a move is admitted where the upstream refuses it.
		est = max(est, p.st.est[class].whole(req.Bytes, p.cfg.TokenEstimateRatio))
		v.est = est * (1 + margin)
	}
	return selector.Pick(p.cfg.Strategy, p.sel, v), so, est
}

// scope lists the keys that share key i's prompt cache: its workspace when
// configured, else its organization.
func (p *Pool) scope(i int) []int {
	p.scratch = p.scratch[:0]
	ws, o := p.members[i].cfg.Workspace, p.members[i].ks.org.resolve()
	for j := range p.members {
		if j == i {
			continue
		}
		m := &p.members[j]
		if ws != "" && m.cfg.Workspace == ws || ws == "" && m.cfg.Workspace == "" && m.ks.org.resolve() == o {
			p.scratch = append(p.scratch, j)
		}
	}
	return p.scratch
}

func (p *Pool) reserve(i int, now int64, class int, est float64, req *Request, res *Reservation, so StickyOutcome) {
	m := &p.members[i]
	o := m.ks.org.resolve()
	b := o.budget(class)
	// Zeroed in place, then filled field by field: a composite literal is
	// built on the stack and copied over, and that copy's wide loads of
	// narrow stores stall store forwarding (a tenth of an Acquire).
	*res = Reservation{}
	res.p, res.idx, res.ks, res.o, res.bud = p, i, m.ks, o, b
	res.class, res.bytes, res.est, res.maxTokens = class, req.Bytes, est, req.MaxTokens
	res.Sticky = so
	for k := range b.buckets {
		res.mark[k] = b.buckets[k].charged
	}
	if req.Passive {
		res.est, res.input = 0, inputPassive
	} else {
		b.buckets[kindRequests].charge(1)
		// A body larger than the bucket is admitted when it is full, as
		// upstream; it still leaves at most one capacity of debt, and
		// the reservation is what was charged, so that settling it
		// corrects exactly that.
		if bk := &b.buckets[kindInput]; bk.init && est > bk.level {
			if c := capOf(m.caps[kindInput], bk); c > 0 && est > bk.level+c {
				est = max(0, bk.level+c)
				res.est = est
			}
		}
		b.buckets[kindInput].charge(est)
		res.outRes = p.st.est[class].outMean
		b.pendingOut += res.outRes
		b.await(res)
	}
	if req.Client != "" && !req.Passive {
		if cu := p.st.clientUse(req.Client, req.ClientWeight, now); cu != nil {
			res.cu, res.cuCost = cu, est+res.outRes
			cu.add(now, res.cuCost)
		}
	}
	m.ks.inFlight++
	m.ks.totals.Requests++
	if a := req.Attempts; a != nil {
		a.n++
		res.attempts = a
	}
	if so != StickyNone {
		p.st.sticky.pin(req.Session, m.ks, now, p.ttl, p.cfg.StickyMaxSessions, int32(min(req.Bytes, math.MaxInt32)), int32(class))
	}
}

// retryAfter is how long until some enabled key could admit the request,
// counting every budget, every cooldown and what waiters hold. noKeys
// reports that every key is disabled.
func (p *Pool) retryAfter(now int64, class int, est float64, only []bool) (time.Duration, bool) {
	at, _, _, noKeys := p.earliest(now, class, est, only)
	if noKeys {
		return p.cfg.DefaultCooldown, true
	}
	return time.Duration(at - now), false
}

// noKeys reports whether every key of the pool is disabled.
func (p *Pool) noKeys(only []bool) bool {
	for i := range p.members {
		if p.members[i].ks.disabled == "" && servable(only, i) {
			return false
		}
	}
	return true
}

// earliest is when some enabled key could admit a request of est input
// tokens, with the budget that would and its input capacity (0: unknown).
func (p *Pool) earliest(now int64, class int, est float64, only []bool) (int64, *budget, float64, bool) {
	best := int64(math.MaxInt64)
	var bestB *budget
	var bestIn float64
	for i := range p.members {
		m := &p.members[i]
		if m.ks.disabled != "" || !servable(only, i) {
			continue
		}
		o := m.ks.org.resolve()
		b := o.budget(class)
		caps := p.capsOf(i, b)
		at := max(now, o.parkUntil, b.coolUntil)
		need := [numKinds]float64{1, est, 0}
		held := [numKinds]float64{b.holdReq, b.holdIn, 0}
		for k := range b.buckets {
			bk := &b.buckets[k]
			bk.refill(now, caps[k])
			var w float64
			if k == kindOutput {
				// Output must climb back above what is still being
				// produced.
				if caps[k] > 0 && bk.init {
					w = max(0, max(0, b.pendingOut)+math.Min(1, caps[k])-bk.level) / caps[k] * nanosPerMinute
				}
			} else {
				w = bk.wait(caps[k], need[k], held[k])
			}
			at = max(at, now+int64(min(w, float64(MaxCooldown))))
		}
		if at < best {
			best, bestB, bestIn = at, b, caps[kindInput]
		}
	}
	return best, bestB, bestIn, bestB == nil
}

// RetryAfter is how long until some key could admit a request for model
// with a body of the given size.
func (p *Pool) RetryAfter(model string, bytes int) (time.Duration, bool) {
	st := p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	class := p.classIndexOf(model)
	e := &st.est[class]
	return p.retryAfter(st.clock.Now().UnixNano(), class, e.estimate(bytes, p.cfg.TokenEstimateRatio)*(1+e.margin()), nil)
}

// servable reports whether key i may serve a request restricted to only
// (nil: every key may).
func servable(only []bool, i int) bool { return only == nil || i < len(only) && only[i] }
