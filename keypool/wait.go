package keypool

// waitQueue orders requests waiting for capacity by arrival, in one line
// per model class: classes have separate budgets, so a request must not
// wait behind one that waits for another class. A waiter is a channel its
// own handler goroutine blocks on: waiting costs no extra goroutine.
// Guarded by the pool's lock.
type waitQueue struct {
	lines []waitLine // by model class index
	n     int
}

type waitLine struct {
	head, tail *waiter
}

type waiter struct {
	ch         chan struct{}
	class      int
	prev, next *waiter
	queued     bool
}

// first is the waiter first in line for class, nil when none waits.
func (q *waitQueue) first(class int) *waiter {
	if class < len(q.lines) {
		return q.lines[class].head
	}
	return nil
}

func (q *waitQueue) push(class int) *waiter {
	for len(q.lines) <= class {
		q.lines = append(q.lines, waitLine{})
	}
	l := &q.lines[class]
	w := &waiter{ch: make(chan struct{}, 1), class: class, prev: l.tail, queued: true}
	if l.tail != nil {
		l.tail.next = w
	} else {
		l.head = w
	}
	l.tail = w
	q.n++
	return w
}

// remove takes w out of the queue; if w was first in its line the next
// waiter is woken to try.
func (q *waitQueue) remove(w *waiter) {
	if !w.queued {
		return
	}
	w.queued = false
	l := &q.lines[w.class]
	wasHead := l.head == w
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		l.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		l.tail = w.prev
	}
	w.prev, w.next = nil, nil
	q.n--
	if wasHead {
		q.wake(w.class)
	}
}

// wake tells the first waiter for class that capacity may have come back.
func (q *waitQueue) wake(class int) {
	if w := q.first(class); w != nil {
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
}

// wakeAll wakes the first waiter of every class.
func (q *waitQueue) wakeAll() {
	for c := range q.lines {
		q.wake(c)
	}
}
