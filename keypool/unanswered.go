package keypool

// unanswered lists a budget's reservations that have had no response yet
// (no headers, not settled), in admission order. The upstream may not have
// counted them when it reports a remaining count: one admitted earlier can
// reach it after one admitted later (goroutines and connections reorder
// them), so a header sync must not raise the level past what they hold
// (see bucket.sync). Guarded by the pool's lock, like the budget.
type unanswered struct {
	head, tail *Reservation
}

// awaiting is a reservation's place in its budget's unanswered list; list
// is nil once it has been answered.
type awaiting struct {
	list       *unanswered
	prev, next *Reservation
}

// push appends a reservation just admitted.
func (l *unanswered) push(r *Reservation) {
	r.wait = awaiting{list: l, prev: l.tail}
	if l.tail != nil {
		l.tail.wait.next = r
	} else {
		l.head = r
	}
	l.tail = r
}

// answered takes r off its list: the upstream has counted it, or never
// will. It is idempotent.
func (r *Reservation) answered() {
	w := &r.wait
	if w.list == nil {
		return
	}
	if w.prev != nil {
		w.prev.wait.next = w.next
	} else {
		w.list.head = w.next
	}
	if w.next != nil {
		w.next.wait.prev = w.prev
	} else {
		w.list.tail = w.prev
	}
	r.wait = awaiting{}
}

// ahead sums what the reservations admitted before r and still unanswered
// hold in each bucket: charges the upstream may not have seen when it
// answered r. It is zero once r is answered.
func (r *Reservation) ahead() [numKinds]float64 {
	var sum [numKinds]float64
	if r.wait.list == nil {
		return sum
	}
	for e := r.wait.list.head; e != nil && e != r; e = e.wait.next {
		in := e.est
		if e.input == inputCharged {
			in = e.in
		}
		sum[kindRequests]++
		sum[kindInput] += in
		sum[kindOutput] += e.output
	}
	return sum
}
