package keypool

// unanswered is what a budget's reservations that have had no response yet
// (no headers, not settled) hold in each bucket. The upstream may not have
// counted them when it reports a remaining count: one admitted earlier can
// reach it after one admitted later (goroutines and connections reorder
// them). A request e admitted before r that reached the upstream after r
// had no response when r was admitted (its response comes after it reached
// the upstream, after r did, after r was admitted). So what was unanswered
// at r's admission bounds what the upstream may not have counted in r's
// remaining besides what was charged after r; a header sync never raises
// the level past that (see bucket.sync). Guarded by the pool's lock, like
// the budget.
type unanswered [numKinds]float64

// awaiting is a reservation's part in its budget's unanswered sums.
type awaiting struct {
	on    *budget           // the budget it counts in; nil once answered
	held  [numKinds]float64 // what it added to on.unanswered
	ahead [numKinds]float64 // on.unanswered when it was admitted
}

// await counts r, just admitted and charged, as unanswered on b.
func (b *budget) await(r *Reservation) {
	// Field by field, as reserve fills the reservation (a composite
	// literal is built on the stack and copied over).
	w := &r.wait
	w.on, w.ahead = b, b.unanswered
	w.held[kindRequests], w.held[kindInput], w.held[kindOutput] = 1, r.est, 0
	b.unanswered[kindRequests]++
	b.unanswered[kindInput] += r.est
}

// answered ends r's part in the unanswered sums: the upstream has counted
// it, or never will. It is idempotent.
func (r *Reservation) answered() {
	b := r.wait.on
	if b == nil {
		return
	}
	for k, n := range r.wait.held {
		b.unanswered[k] = max(0, b.unanswered[k]-n) // no float residue below 0
	}
	r.wait.on = nil
}
