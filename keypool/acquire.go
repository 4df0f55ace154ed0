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

// NoCapacityError is returned by Acquire when no key can take the request.
type NoCapacityError struct {
	// RetryAfter is when the earliest key will be able to take it.
	RetryAfter time.Duration
	// NoKeys is set when every key is disabled: waiting will not help.
	NoKeys bool
}

func (e *NoCapacityError) Error() string {
	if e.NoKeys {
		return "no enabled upstream key"
	}
	return fmt.Sprintf("all upstream keys are at their rate limits; retry in %s", e.RetryAfter)
}

// StickyOutcome says how a request's session pin was used.
type StickyOutcome uint8

// Sticky outcomes.
const (
	StickyNone  StickyOutcome = iota // no session, or stickiness off
	StickyNew                        // first request of a session
	StickyHit                        // stayed on its pinned key
	StickyScope                      // moved within its cache scope
	StickyMoved                      // moved out of its cache scope
)

var stickyNames = [...]string{"none", "new", "hit", "scope", "moved"}

func (s StickyOutcome) String() string { return stickyNames[s] }

// Reservation is one attempt's hold on a key. The zero value is unused;
// Acquire fills it in. Exactly one Settle ends it.
type Reservation struct {
	p       *Pool
	idx     int
	ks      *keyState
	o       *org
	bud     *budget
	class   int
	bytes   int
	est     float64
	mark    [numKinds]float64
	input   float64  // input charged for real, once usage said it
	output  float64  // output charged so far
	seen    [3]int64 // input, cache creation, cache read tokens counted in totals
	synced  bool     // headers set the levels; they include our input
	inKept  bool     // ...except input: the sync left the estimate in the level
	outRes  float64  // output expected, counted in the budget's pendingOut until produced
	haveIn  bool
	passive bool
	settled bool
	status  int
	// refunded: the upstream refused the request and its reservation was
	// given back when the headers arrived.
	refunded bool
	Sticky   StickyOutcome
}

// KeyIndex is the reserved key's index in its pool.
func (r *Reservation) KeyIndex() int { return r.idx }

// KeyName is the reserved key's name; "" when nothing was reserved.
func (r *Reservation) KeyName() string {
	if r.ks == nil {
		return ""
	}
	return r.ks.name
}

// Estimate is the input tokens reserved up front.
func (r *Reservation) Estimate() int64 { return int64(r.est) }

// Class is the request's model class.
func (r *Reservation) Class() string {
	// The class table grows under the lock as new classes appear.
	st := r.p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.cnames[r.class]
}

// Acquire picks a key for req and reserves one request and the estimated
// input tokens on its organization's budget for req's model class. When no
// key can take it, it waits up to the pool's MaxWait in arrival order (a
// retry never waits), then returns a *NoCapacityError. A cancelled ctx
// leaves the queue at once.
func (p *Pool) Acquire(ctx context.Context, req *Request, res *Reservation) error {
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
	var w *waiter
	var deadline int64
	for {
		if st.waitq.first(class) == w || req.Attempts.N() > 0 {
			i, so, e := p.pick(now, class, est, margin, req)
			if i >= 0 {
				p.reserve(i, now, class, e, req, res, so)
				if w != nil {
					st.waitq.remove(w)
				}
				st.mu.Unlock()
				return nil
			}
			// A session leaving its cache scope (or starting one) was
			// priced whole: the retry hint must wait for that price, or
			// clients (and waiters) come back before any key can take it.
			need = max(need, e*(1+margin))
		}
		after, noKeys := p.retryAfter(now, class, need, req.Only)
		if noKeys || p.cfg.MaxWait <= 0 || req.Attempts.N() > 0 {
			if w != nil {
				st.waitq.remove(w)
			}
			st.mu.Unlock()
			return &NoCapacityError{RetryAfter: after, NoKeys: noKeys}
		}
		if w == nil {
			w = st.waitq.push(class)
			deadline = now + int64(p.cfg.MaxWait)
		}
		if now >= deadline {
			st.waitq.remove(w)
			st.mu.Unlock()
			return &NoCapacityError{RetryAfter: after}
		}
		sleep := time.Duration(deadline - now)
		if st.waitq.first(class) == w {
			// Only the head can be admitted next; it wakes when refill
			// should let it in. Others wake when the head leaves.
			sleep = min(sleep, max(after, time.Millisecond))
		}
		st.mu.Unlock()
		t := st.clock.NewTimer(sleep)
		select {
		case <-w.ch:
		case <-t.C():
		case <-ctx.Done():
			t.Stop()
			st.mu.Lock()
			st.waitq.remove(w)
			st.mu.Unlock()
			return ctx.Err()
		}
		t.Stop()
		st.mu.Lock()
		now = st.clock.Now().UnixNano()
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
	res.class, res.bytes, res.est = class, req.Bytes, est
	res.Sticky, res.passive = so, req.Passive
	for k := range b.b {
		res.mark[k] = b.b[k].charged
	}
	if req.Passive {
		res.est = 0
	} else {
		b.b[kindRequests].charge(1)
		b.b[kindInput].charge(est)
		res.outRes = p.st.est[class].outMean
		b.pendingOut += res.outRes
	}
	m.ks.inFlight++
	m.ks.totals.Requests++
	if a := req.Attempts; a != nil {
		a.n++
	}
	if so != StickyNone {
		p.st.sticky.pin(req.Session, m.ks, now, p.ttl, p.cfg.StickyMaxSessions, int32(min(req.Bytes, math.MaxInt32)), int32(class))
	}
}

// retryAfter is how long until some enabled key could admit the request,
// counting every budget and every cooldown. noKeys reports that every key
// is disabled.
func (p *Pool) retryAfter(now int64, class int, est float64, only []bool) (time.Duration, bool) {
	best := int64(math.MaxInt64)
	for i := range p.members {
		m := &p.members[i]
		if m.ks.disabled != "" || only != nil && (i >= len(only) || !only[i]) {
			continue
		}
		o := m.ks.org.resolve()
		b := o.budget(class)
		caps := p.capsOf(i, b)
		at := max(now, o.parkUntil, b.coolUntil)
		need := [numKinds]float64{1, est, 0}
		for k := range b.b {
			bk := &b.b[k]
			bk.refill(now, caps[k])
			var w float64
			if k == kindOutput {
				// Output must climb back above what is still being
				// produced.
				if caps[k] > 0 && bk.init {
					w = max(0, max(0, b.pendingOut)+math.Min(1, caps[k])-bk.level) / caps[k] * nanosPerMinute
				}
			} else {
				w = bk.wait(caps[k], need[k])
			}
			at = max(at, now+int64(w))
		}
		best = min(best, at)
	}
	if best == math.MaxInt64 {
		return p.cfg.DefaultCooldown, true
	}
	return time.Duration(best - now), false
}

// RetryAfter is how long until some key could admit a request for model
// with a body of the given size.
func (p *Pool) RetryAfter(model string, bytes int) (time.Duration, bool) {
	st := p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	class := st.classIndex(p.classify(model))
	e := &st.est[class]
	return p.retryAfter(st.clock.Now().UnixNano(), class, e.estimate(bytes, p.cfg.TokenEstimateRatio)*(1+e.margin()), nil)
}

// current returns the reservation's budget now, following an organization
// merge learned since it was made.
func (r *Reservation) current() (*org, *budget) {
	o := r.ks.org.resolve()
	if o != r.o {
		nb := o.budget(r.class)
		if !r.settled {
			pend := max(0, r.outRes-r.output)
			r.bud.pendingOut -= pend
			nb.pendingOut += pend
		}
		r.o, r.bud = o, nb
		r.synced = true // the marks no longer describe this budget
	}
	return r.o, r.bud
}

// ObserveHeaders learns from an upstream response's headers: its
// organization, its limits and remaining counts, and on a 429 a cooldown of
// the organization's budget for this model class.
func (r *Reservation) ObserveHeaders(status int, h RateLimitHeaders) {
	p := r.p
	st := p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.clock.Now().UnixNano()
	r.status = status
	if h.OrganizationID != "" {
		st.learnOrg(r.ks, h.OrganizationID, now, p.members[r.idx].caps)
	}
	if r.passive {
		// count_tokens and models have their own upstream limits: their
		// headers say nothing about the Messages budgets.
		return
	}
	marksValid := r.ks.org.resolve() == r.o && !r.synced
	_, b := r.current()
	if status >= 500 && !r.passive && !r.haveIn && !r.refunded {
		// 5xx and 529: the upstream took neither the request nor its
		// input. Give them back before syncing, which otherwise takes
		// them as counted and leaves the estimate charged whenever the
		// level lies within the headers' rounding: no penalty.
		b.b[kindRequests].charge(-1)
		b.b[kindInput].charge(-r.est)
		r.refunded = true
	}
	in := h.InputTokens
	if !in.Present() {
		// Older responses carry only the combined token limit.
		in = h.Tokens
	}
	lims := [numKinds]Limit{h.Requests, in, h.OutputTokens}
	own := [numKinds]float64{1, r.est, r.output}
	if r.passive {
		own[kindRequests] = 0 // a passive reservation charged no request
	}
	synced := false
	for k, l := range lims {
		if l.Limit > 0 {
			b.b[k].learned = float64(l.Limit)
		}
		caps := p.capsOf(r.idx, b)
		b.b[k].refill(now, caps[k])
		if l.Remaining < 0 || caps[k] <= 0 {
			continue
		}
		later := 0.0
		if marksValid {
			later = math.Max(0, b.b[k].charged-r.mark[k]-own[k])
		}
		gran := 1.0
		if k != kindRequests && l.Remaining%1000 == 0 {
			gran = 1000 // the upstream rounds token counts down to thousands
		}
		// Raise the level only when what was charged since this request
		// was admitted is known, and the bucket is the upstream's own: a
		// configured limit other than the upstream's (the operator's share
		// of the organization) must not be refilled by the upstream having
		// more left.
		cfg := p.members[r.idx].caps[k]
		raise := marksValid && (cfg == 0 || cfg == float64(l.Limit))
		moved := b.b[k].sync(caps[k], l.Remaining, later, gran, raise)
		if k == kindInput {
			synced = true
			r.inKept = !moved
		}
	}
	if synced {
		r.synced = true
	}
	// tokens-* copies the tighter of input-tokens-* and output-tokens-*,
	// and its reset is when that bucket is full again. When the per-kind
	// triples are there the buckets already follow them and refill
	// continuously; cooling until a full refill would idle the organization
	// for up to a minute whenever under 1000 tokens (the rounding) are left.
	// Only when tokens-* is all an older response says is it a cooldown.
	if h.Tokens.Remaining == 0 && h.Tokens.Reset.UnixNano() > now && !h.InputTokens.Present() && !h.OutputTokens.Present() {
		b.coolUntil = max(b.coolUntil, h.Tokens.Reset.UnixNano())
		b.coolReason = "token limit exhausted"
	}
	if status == 429 {
		r.ks.totals.RateLimited++
		var until int64
		switch {
		case h.HasRetryAfter:
			until = now + int64(max(h.RetryAfter, time.Second))
		default:
			for _, l := range lims {
				if l.Remaining == 0 && l.Reset.UnixNano() > until {
					until = l.Reset.UnixNano()
				}
			}
			if until <= now {
				until = now + int64(p.cfg.DefaultCooldown)
			}
		}
		if until > b.coolUntil {
			b.coolUntil = until
			b.coolReason = "upstream 429"
		}
	}
}

// Disable takes the reserved key out of rotation (the upstream rejected it)
// until a reload changes it or an operator enables it.
func (r *Reservation) Disable(reason string) {
	st := r.p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	r.ks.disabled = reason
}

// Park takes the reserved key's organization out of rotation until the
// given time, or for the pool's SpendCapPark when until is zero.
func (r *Reservation) Park(until time.Time, reason string) {
	st := r.p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.clock.Now()
	if until.IsZero() || !until.After(now) {
		until = now.Add(r.p.cfg.SpendCapPark)
	}
	o, _ := r.current()
	o.parkUntil = max(o.parkUntil, until.UnixNano())
	o.parkReason = reason
}

// ExcludeOrg makes later attempts of the request avoid the reserved key's
// organization (it answered 429 for the whole organization).
func (a *Attempts) ExcludeOrg(r *Reservation) { a.orgs = append(a.orgs, r.ks.org) }

// ExcludeKey makes later attempts avoid the reserved key.
func (a *Attempts) ExcludeKey(r *Reservation) { a.keys = append(a.keys, r.ks) }

// Usage is token usage as the upstream reports it, cumulative.
type Usage struct {
	InputTokens              int64
	CacheCreationInputTokens int64
	CacheReadInputTokens     int64
	OutputTokens             int64
	HaveInput                bool
	HaveOutput               bool
}

// Charge applies usage seen so far: the real input once (replacing the
// estimate unless headers already synced the budget) and output as it
// grows. Call it whenever the streamed usage changes.
func (r *Reservation) Charge(u Usage) {
	st := r.p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	r.charge(u)
}

func (r *Reservation) charge(u Usage) {
	if r.settled || r.passive {
		return
	}
	_, b := r.current()
	if u.HaveInput {
		in := float64(u.InputTokens + u.CacheCreationInputTokens)
		if !r.haveIn {
			r.haveIn = true
			r.input = in
			switch {
			case r.refunded:
				b.b[kindInput].charge(r.input)
			case !r.synced, r.inKept:
				// A sync that left the level alone (it was within the
				// headers' rounding) did not replace the estimate by
				// the real charge: without this the level drifts up to
				// the rounding (999 tokens) above the upstream's.
				b.b[kindInput].charge(r.input - r.est)
			}
			r.p.st.est[r.class].observe(r.bytes, u)
		} else if in > r.input {
			// Cumulative usage grew during the turn (server tools add
			// input): the upstream charges that too, after any header.
			b.b[kindInput].charge(in - r.input)
			r.input = in
		}
		t := &r.ks.totals
		cur := [3]int64{u.InputTokens, u.CacheCreationInputTokens, u.CacheReadInputTokens}
		for i, dst := range [3]*int64{&t.InputTokens, &t.CacheCreationTokens, &t.CacheReadTokens} {
			if cur[i] > r.seen[i] {
				*dst += cur[i] - r.seen[i]
				r.seen[i] = cur[i]
			}
		}
	}
	if u.HaveOutput && float64(u.OutputTokens) > r.output {
		d := float64(u.OutputTokens) - r.output
		b.pendingOut -= max(0, r.outRes-r.output) - max(0, r.outRes-float64(u.OutputTokens))
		b.b[kindOutput].charge(d)
		r.ks.totals.OutputTokens += int64(d)
		r.output = float64(u.OutputTokens)
	}
}

// Result is how an attempt ended.
type Result struct {
	// Status is the upstream's status code; 0 when no response arrived.
	Status int
	Usage  Usage
}

// Settle ends the reservation exactly once (later calls do nothing): it
// charges the final usage, or when the upstream did not take the request
// (no response, 5xx, 529, or a rejection) gives the estimate back.
func (r *Reservation) Settle(res Result) {
	if r == nil || r.p == nil {
		return
	}
	st := r.p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if r.settled {
		return
	}
	r.charge(res.Usage)
	_, b := r.current()
	b.pendingOut -= max(0, r.outRes-r.output) // no more output comes
	r.settled = true
	r.ks.inFlight--
	ok := res.Status >= 200 && res.Status < 300
	if ok && r.output > 0 && !r.passive {
		r.p.st.est[r.class].observeOutput(r.output)
	}
	if !r.haveIn && !r.synced && !ok && !r.passive && !r.refunded {
		// The upstream did not count this request's input.
		b.b[kindInput].charge(-r.est)
		if res.Status == 0 || res.Status >= 500 {
			b.b[kindRequests].charge(-1) // not the key's fault: no penalty
		}
	}
	if ok {
		r.ks.totals.Succeeded++
	} else {
		r.ks.totals.Failed++
	}
	st.waitq.wake(r.class)
}

// classOf is st.classIndex(p.classify(model)), remembering the last model:
// a relay sees few model names, and classify scans the name. st.mu is held.
func (p *Pool) classOf(model string) int {
	if p.lastOK && model == p.lastModel {
		return p.lastClass
	}
	c := p.st.classIndex(p.classify(model))
	p.lastModel, p.lastClass, p.lastOK = model, c, true
	return c
}
