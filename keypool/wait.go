package keypool

import (
	"math"
	"slices"
	"time"
)

// The wait queue: requests that found no capacity and may wait (MaxWait).
//
// Order. Waiters of one model class (classes have separate budgets) are
// served in weighted fair order by tokens, first come first served within
// one client: start-time fair queuing. A waiter's start tag is
// max(V, the finish tag of its client's previous request), its finish tag
// start + cost/weight, where cost is the tokens it is expected to use and
// V is the start tag of the last waiter served. Waiters are tried in
// start-tag order, so a client with many requests waiting is served in
// turn with one that has few, in proportion to their weights, instead of
// ahead of it. When a class has no waiter left, V and the tags reset.
//
// No head-of-line blocking. Every time capacity may have come back (a
// settle, a waiter's refill timer, an enable, a waiter leaving) one pass
// tries the waiters in that order. A waiter that fits is admitted, whatever
// waits before it. A waiter that does not fit reserves ahead: it holds
// what it waits for (one request, its input tokens up to the bucket's
// capacity) on the budget that will admit it first, so that nobody after
// it in the order (nor a request that does not wait: a retry, another
// configuration's) can take that; the rest of the pool stays open to them.
// It is then admitted when that budget allows, ahead of later arrivals.
// A waiter that cannot be admitted before its own deadline holds nothing:
// it would time out anyway, and holding would only stall the requests
// behind it. Output is not held: it is charged as it is produced.
//
// A waiter is a channel its own handler goroutine blocks on: waiting costs
// no extra goroutine. Whoever runs the pass reserves on the waiter's behalf
// and wakes it. When no request waits, none of this runs: Acquire checks
// one slice length. Guarded by the pool's lock.
type waitQueue struct {
	classes []*classQueue // by model class index; nil until one waits
	n       int
	seq     uint64
}

type classQueue struct {
	order   []*waiter // service order: by start tag, then arrival
	vtime   float64   // V: the start tag of the last waiter served
	clients map[string]*clientTag
}

// clientTag is a client's place in a class's fair order. Entries exist
// while the client has waiters (or was served ahead of V), so the map is
// bounded by the number of waiters.
type clientTag struct {
	finish  float64
	waiting int
}

type waiter struct {
	ch     chan struct{}
	p      *Pool // the configuration the request arrived in
	req    *Request
	res    *Reservation
	class  int
	client string
	start  float64
	seq    uint64
	// est and margin are the input estimate and admission margin; need
	// is what admission asks (at least est*(1+margin)).
	est, margin, need float64
	deadline          int64
	// wakeAt is when the last pass expects the waiter could be admitted
	// (its deadline when it holds nothing); armed is when its goroutine
	// set its timer to, so a pass that finds an earlier time wakes it.
	wakeAt, armed int64
	hold          *budget // the budget it holds, nil for none
	holdIn        float64 // input tokens held there (and one request)
	noKeys        bool    // the last pass found every key disabled
	done          bool    // admitted: res is filled in
	queued        bool
}

// waiting reports whether any request waits for class.
func (q *waitQueue) waiting(class int) bool {
	return class < len(q.classes) && q.classes[class] != nil && len(q.classes[class].order) > 0
}

// push queues w in fair order; cost is the tokens it is expected to use.
func (q *waitQueue) push(w *waiter, weight int, cost float64) {
	for len(q.classes) <= w.class {
		q.classes = append(q.classes, nil)
	}
	cq := q.classes[w.class]
	if cq == nil {
		cq = &classQueue{clients: map[string]*clientTag{}}
		q.classes[w.class] = cq
	}
	ct := cq.clients[w.client]
	if ct == nil {
		ct = &clientTag{finish: cq.vtime}
		cq.clients[w.client] = ct
	}
	w.start = max(cq.vtime, ct.finish)
	ct.finish = w.start + max(cost, 1)/float64(max(weight, 1))
	ct.waiting++
	q.seq++
	w.seq = q.seq
	i := len(cq.order)
	for i > 0 && w.before(cq.order[i-1]) {
		i--
	}
	cq.order = slices.Insert(cq.order, i, w)
	w.queued = true
	q.n++
}

func (w *waiter) before(o *waiter) bool {
	if w.start != o.start {
		return w.start < o.start
	}
	return w.seq < o.seq
}

// remove takes w out of the queue: served (admitted) or not (it left).
func (q *waitQueue) remove(w *waiter, served bool) {
	if !w.queued {
		return
	}
	w.queued = false
	w.dropHold()
	cq := q.classes[w.class]
	if i := slices.Index(cq.order, w); i >= 0 {
		cq.order = slices.Delete(cq.order, i, i+1)
	}
	q.n--
	ct := cq.clients[w.client]
	ct.waiting--
	if served {
		cq.vtime = max(cq.vtime, w.start)
	} else if ct.waiting == 0 {
		// It used nothing: its client's next request starts where it
		// would have.
		ct.finish = w.start
	}
	if len(cq.order) == 0 {
		// Idle: fairness is about contention, history starts over.
		clear(cq.clients)
		cq.vtime = 0
		return
	}
	for name, t := range cq.clients {
		if t.waiting == 0 && t.finish <= cq.vtime {
			delete(cq.clients, name) // it would start at V anyway
		}
	}
}

func (w *waiter) dropHold() {
	if b := w.hold; b != nil {
		b.holdReq--
		b.holdIn -= w.holdIn
		if b.holdReq <= 0 {
			b.holdReq, b.holdIn = 0, 0 // no float residue
		}
		w.hold, w.holdIn = nil, 0
	}
}

func (w *waiter) signal() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// minSleep keeps a waiter whose expected admission time has come without
// admission (rounding, or a limit the estimate does not model) from
// spinning.
const minSleep = int64(time.Millisecond)

// holdDepth bounds the work of a pass: only the first holdDepth waiters
// that do not fit reserve ahead (computing where and when they could be
// admitted is a walk over every key); those behind them hold nothing and
// wait for a pass to reach them, which happens as those ahead are
// admitted. They are still admitted whenever they fit.
const holdDepth = 64

// dispatch is one pass over class's waiters (see waitQueue): it admits
// those that fit and places the holds of those that do not. st.mu is held.
func (st *State) dispatch(class int, now int64) {
	q := &st.waitq
	if !q.waiting(class) {
		return
	}
	cq := q.classes[class]
	for _, w := range cq.order {
		w.dropHold()
	}
	// Within a pass levels only fall and holds only grow, so a plain
	// request (no session pin to follow) of a pool where one of need
	// minNeed did not fit cannot fit with a need at least as large: its
	// pick is skipped.
	var minPool *Pool
	minNeed := math.Inf(1)
	blocked := 0
	for i := 0; i < len(cq.order); {
		w := cq.order[i]
		if now >= w.deadline {
			i++ // it leaves on its own, holding nothing
			continue
		}
		p := w.p
		plain := !p.cfg.Sticky || w.req.Session == 0
		k, e := -1, w.est
		if !plain || p != minPool || w.need < minNeed {
			var so StickyOutcome
			k, so, e = p.pick(now, class, w.est, w.margin, w.req)
			if k >= 0 {
				p.reserve(k, now, class, e, w.req, w.res, so)
				w.done = true
				q.remove(w, true)
				w.signal()
				continue // the next waiter moved up to i
			}
		}
		w.need = max(w.need, e*(1+w.margin))
		if plain && (p != minPool || w.need < minNeed) {
			minPool, minNeed = p, w.need
		}
		blocked++
		w.wakeAt = w.deadline
		if blocked > holdDepth {
			w.noKeys = p.noKeys(w.req.Only)
		} else {
			at, b, capIn, noKeys := p.earliest(now, class, w.need, w.req.Only)
			w.noKeys = noKeys
			if b != nil && at <= w.deadline {
				w.hold, w.holdIn = b, w.need
				if capIn > 0 {
					w.holdIn = min(w.need, capIn)
				}
				b.holdReq++
				b.holdIn += w.holdIn
				w.wakeAt = max(at, now+minSleep)
			}
		}
		if w.wakeAt < w.armed || w.noKeys {
			w.signal()
		}
		i++
	}
}

// dispatchAll runs a pass for every class that has waiters.
func (st *State) dispatchAll(now int64) {
	for c := range st.waitq.classes {
		st.dispatch(c, now)
	}
}
