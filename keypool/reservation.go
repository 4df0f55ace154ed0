package keypool

import (
	"context"
	"math"
	"time"
)

// Reservation is one attempt's hold on a key. The zero value is unused;
// Acquire fills it in. Exactly one Settle ends it.
type Reservation struct {
	p     *Pool
	idx   int
	ks    *keyState
	o     *org
	bud   *budget
	class int
	bytes int
	// maxTokens is the request's max_tokens (0: unknown), which bounds
	// the output it can be charged.
	maxTokens int
	est       float64
	// mark is each bucket's running charge total at admission, to tell
	// what was charged after this request (see bucket.charged); void once
	// a sync or an organization merge has made it meaningless.
	mark   [numKinds]float64
	input  inputState
	in     float64  // input charged for real, once usage said it
	output float64  // output charged so far
	seen   [3]int64 // input, cache creation, cache read tokens counted in totals
	outRes float64  // output expected, counted in the budget's pendingOut until produced
	status int
	// cu is the client's usage record and cuCost what was added to it at
	// admission; Settle corrects it to what was charged.
	cu     *clientUse
	cuCost float64
	Sticky StickyOutcome
	// attempts is the request's, counted by this reservation.
	attempts *Attempts
	// link is the reservation's standing with the shared store (nil:
	// none; shared_pool.go), and delta what the local accounting charged
	// after admission, for the store's correction.
	link  *sharedLink
	delta [numKinds]float64
	wait  awaiting // its part in its budget's unanswered sums
}

// chargeBucket charges n to kind k of b for this reservation.
func (r *Reservation) chargeBucket(b *budget, k int, n float64) {
	b.buckets[k].charge(n)
	r.delta[k] += n
}

// inputState is where a reservation's input accounting stands: what its
// budget's input level holds for it, and so what usage, a header sync or
// Settle must still do.
//
//	estimated ─sync moved─▶ synced ─usage─▶ charged
//	    │  └──sync kept───▶ syncKept ─usage─▶ charged
//	    ├─usage──────────────────────────────▶ charged
//	    └─5xx headers─▶ refunded ─usage─────▶ charged
//	any open state ─Settle─▶ settled;  passive ─Settle─▶ settled
type inputState uint8

// The order matters: the states up to inputSynced are those in which the
// upstream's verdict on the input is still unknown (no refund, no usage).
const (
	// inputEstimated: the estimate is in the level; nothing replaced it.
	// Usage corrects it to the real input; a failed attempt refunds it.
	inputEstimated inputState = iota
	// inputSyncKept: a header sync found the level within the headers'
	// rounding and left it: the estimate is still in it, and usage
	// corrects it (else the level drifts up to the rounding above the
	// upstream's). The upstream counted the request: no refund.
	inputSyncKept
	// inputSynced: a header sync (or an organization merge) set the level
	// to the upstream's account, which holds this request's input as the
	// upstream counted it: usage changes nothing, no refund.
	inputSynced
	// inputRefunded: the headers said the upstream did not take the
	// request (5xx, 529): its estimate and request were given back, so
	// usage, if any still comes, is charged whole.
	inputRefunded
	// inputCharged: usage said the real input and it is in the level;
	// only growth of the cumulative count is charged from here.
	inputCharged
	// inputPassive: charged to no budget (not a Messages request).
	inputPassive
	// inputSettled: Settle ended the reservation.
	inputSettled
)

// open reports whether the reservation still accounts for input: it is
// neither passive nor settled.
func (s inputState) open() bool { return s < inputPassive }

// marksValid reports whether mark still dates this reservation's charges.
func (r *Reservation) marksValid() bool { return r.mark[kindRequests] >= 0 }

func (r *Reservation) voidMarks() { r.mark[kindRequests] = -1 }

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

// current returns the reservation's budget now, following an organization
// merge learned since it was made.
func (r *Reservation) current() (*org, *budget) {
	o := r.ks.org.resolve()
	if o != r.o {
		nb := o.budget(r.class)
		if r.input != inputSettled {
			pend := max(0, r.outRes-r.output)
			r.bud.pendingOut -= pend
			nb.pendingOut += pend
		}
		r.o, r.bud = o, nb
		// The marks no longer describe this budget, and its level is
		// the merged one: the estimate is no longer ours to correct.
		r.voidMarks()
		if r.input == inputEstimated {
			r.input = inputSynced
		}
	}
	return r.o, r.bud
}

// ObserveHeaders learns from an upstream response's headers: its
// organization, its limits and remaining counts (syncHeaders), and on a
// 429 a cooldown of the organization's budget for this model class
// (coolDown).
func (r *Reservation) ObserveHeaders(status int, h RateLimitHeaders) {
	p := r.p
	st := p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.clock.Now().UnixNano()
	r.status = status
	if id := h.OrganizationID; id != "" {
		if sh := p.cfg.Shared; sh != nil && r.ks.org.resolve().id != id {
			name := r.ks.name
			p.background(func(ctx context.Context) { sh.LearnOrg(ctx, name, id) })
		}
		st.learnOrg(r.ks, id, now, p.members[r.idx].caps)
	}
	if !r.input.open() {
		// count_tokens and models have their own upstream limits: their
		// headers say nothing about the Messages budgets. A settled
		// reservation has nothing left to correct.
		return
	}
	in := h.InputTokens
	if !in.Present() {
		// Older responses carry only the combined token limit.
		in = h.Tokens
	}
	lims := [numKinds]Limit{h.Requests, in, h.OutputTokens}
	if r.link != nil {
		r.observeShared(now, status, h, lims)
		return
	}
	b := r.syncHeaders(now, status, lims)
	r.coolDown(now, status, h, lims, b)
}

// syncHeaders refunds a request the upstream did not take, learns the
// limits and corrects the levels to the remaining counts; it returns the
// budget it worked on. st.mu is held.
func (r *Reservation) syncHeaders(now int64, status int, lims [numKinds]Limit) *budget {
	p := r.p
	marksValid := r.ks.org.resolve() == r.o && r.marksValid()
	_, b := r.current()
	if status >= 500 && r.input <= inputSynced {
		// 5xx and 529: the upstream took neither the request nor its
		// input. Give them back before syncing, which otherwise takes
		// them as counted and leaves the estimate charged whenever the
		// level lies within the headers' rounding: no penalty.
		b.buckets[kindRequests].charge(-1)
		b.buckets[kindInput].charge(-r.est)
		r.input = inputRefunded
	}
	own := [numKinds]float64{1, r.est, r.output}
	ahead := r.wait.ahead // unanswered at r's admission: maybe not upstream before r
	r.answered()
	for k, l := range lims {
		if l.Limit > 0 {
			b.buckets[k].learned = learnedLimit(k, l.Limit)
		}
		caps := p.capsOf(r.idx, b)
		b.buckets[k].refill(now, caps[k])
		if l.Remaining < 0 || caps[k] <= 0 {
			continue
		}
		later := 0.0
		if marksValid {
			later = math.Max(0, b.buckets[k].charged-r.mark[k]-own[k])
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
		moved := b.buckets[k].sync(caps[k], l.Remaining, later, ahead[k], gran, raise)
		b.buckets[k].floor(caps[k])
		if k == kindInput {
			r.voidMarks()
			if r.input <= inputSynced { // not refunded, charged, passive or settled
				r.input = inputSyncKept
				if moved {
					r.input = inputSynced
				}
			}
		}
	}
	return b
}

// coolDown cools b down on a 429 (for retry-after, else until the latest
// reset of an exhausted bucket, else DefaultCooldown) and when an older
// response's tokens-* says the token limit is exhausted; never for longer
// than MaxCooldown. st.mu is held.
func (r *Reservation) coolDown(now int64, status int, h RateLimitHeaders, lims [numKinds]Limit, b *budget) {
	// tokens-* copies the tighter of input-tokens-* and output-tokens-*,
	// and its reset is when that bucket is full again. When the per-kind
	// triples are there the buckets already follow them and refill
	// continuously; cooling until a full refill would idle the organization
	// for up to a minute whenever under 1000 tokens (the rounding) are left.
	// Only when tokens-* is all an older response says is it a cooldown.
	if reset := capUntil(now, h.Tokens.Reset, MaxCooldown); h.Tokens.Remaining == 0 && reset > now && !h.InputTokens.Present() && !h.OutputTokens.Present() {
		b.coolUntil = max(b.coolUntil, reset)
		b.coolReason = "token limit exhausted"
	}
	if status != 429 {
		return
	}
	r.ks.totals.RateLimited++
	var until int64
	switch {
	case h.HasRetryAfter:
		until = now + int64(min(max(h.RetryAfter, time.Second), MaxCooldown))
	default:
		for _, l := range lims {
			if reset := capUntil(now, l.Reset, MaxCooldown); l.Remaining == 0 && reset > until {
				until = reset
			}
		}
		if until <= now {
			until = now + int64(r.p.cfg.DefaultCooldown)
		}
	}
	if until > b.coolUntil {
		b.coolUntil = until
		b.coolReason = "upstream 429"
	}
}

// Disable takes the reserved key out of rotation (the upstream rejected it)
// until a probe passes (health.go), a reload changes it or an operator
// enables it.
func (r *Reservation) Disable(reason string) {
	st := r.p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	r.ks.disabled = reason
	r.ks.health.disabledAt(st.clock.Now().UnixNano())
	if sh := r.p.cfg.Shared; sh != nil {
		name := r.ks.name
		r.p.background(func(ctx context.Context) { sh.Disable(ctx, name, reason) })
	}
}

// Park takes the reserved key's organization out of rotation until the
// given time, or for the pool's SpendCapPark when until is zero or past;
// never longer than MaxPark.
func (r *Reservation) Park(until time.Time, reason string) {
	st := r.p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.clock.Now().UnixNano()
	at := capUntil(now, until, MaxPark)
	if at <= now {
		at = now + int64(r.p.cfg.SpendCapPark)
	}
	o, _ := r.current()
	// A longer park already in place stays (capped too: it was set here),
	// with its own reason.
	if at >= o.parkUntil {
		o.parkUntil, o.parkReason = at, reason
	}
	if sh := r.p.cfg.Shared; sh != nil {
		name := o.name
		r.p.background(func(ctx context.Context) { sh.Park(ctx, name, time.Unix(0, at), reason) })
	}
}

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
	if !r.input.open() {
		return
	}
	_, b := r.current()
	u = capUsage(u)
	caps := r.p.capsOf(r.idx, b)
	if u.HaveInput {
		in := math.Min(float64(u.InputTokens+u.CacheCreationInputTokens), inputBound(r.bytes, caps[kindInput]))
		switch r.input {
		case inputRefunded:
			r.chargeBucket(b, kindInput, in)
		case inputEstimated, inputSyncKept:
			r.chargeBucket(b, kindInput, in-r.est)
		case inputCharged:
			if in > r.in {
				// Cumulative usage grew during the turn (server tools
				// add input): the upstream charges that too, after any
				// header.
				r.chargeBucket(b, kindInput, in-r.in)
				r.in = in
			}
		}
		if r.input != inputCharged {
			r.input, r.in = inputCharged, in
			r.p.st.est[r.class].observe(r.bytes, u)
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
	if out := math.Min(float64(u.OutputTokens), outputBound(r.maxTokens, caps[kindOutput])); u.HaveOutput && out > r.output {
		d := out - r.output
		b.pendingOut -= max(0, r.outRes-r.output) - max(0, r.outRes-out)
		r.chargeBucket(b, kindOutput, d)
		r.ks.totals.OutputTokens += int64(d)
		r.output = out
	}
	b.buckets[kindInput].floor(caps[kindInput])
	b.buckets[kindOutput].floor(caps[kindOutput])
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
	if r.input == inputSettled {
		return
	}
	r.charge(res.Usage)
	_, b := r.current()
	b.pendingOut -= max(0, r.outRes-r.output) // no more output comes
	ok := res.Status >= 200 && res.Status < 300
	if ok && r.output > 0 {
		r.p.st.est[r.class].observeOutput(r.output)
	}
	if r.input == inputEstimated && !ok {
		// The upstream did not count this request's input.
		r.chargeBucket(b, kindInput, -r.est)
		if res.Status == 0 || res.Status >= 500 {
			r.chargeBucket(b, kindRequests, -1) // not the key's fault: no penalty
		}
	}
	r.settleShared()
	r.input = inputSettled
	r.answered()
	r.ks.inFlight--
	if ok {
		r.ks.totals.Succeeded++
	} else {
		r.ks.totals.Failed++
	}
	var now int64
	if r.cu != nil || st.waitq.waiting(r.class) {
		now = st.clock.Now().UnixNano()
	}
	if r.cu != nil {
		r.cu.add(now, r.in+r.output-r.cuCost)
	}
	if st.waitq.waiting(r.class) {
		st.dispatch(r.class, now)
	}
}
