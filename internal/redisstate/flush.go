package redisstate

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// Admission, corrections and header syncs reach Redis in batches: each is
// queued per budget and a flush sends every budget's queue as one script
// (lua/flush.lua) per budget, all in one round trip, at most FlushInterval
// after the first was queued, or at once when a caller needs an answer to
// admit (near the limit) or the queue is long. Per request that is a
// fraction of a script instead of two or three (the measured cost of
// issue 13's first design: ~90 µs of redis-server time per request on the
// benchmark's two cores).
//
// Far from the limit admission needs no round trip: every flush's reply
// tells this instance its budgets' levels (its view), and while the view
// is fresh the instance admits locally (a lease) a small share of what it
// saw: with N the instances alive (one more than the last heartbeat
// counted, for one that joined since), since what this instance charged
// that its view does not hold yet and level the view's level refilled to
// now, a request is admitted locally when, for every bucket,
//
//	since + admit ≤ LeaseShare × level / N        (LeaseShare 0.1)
//
// so that all instances together charge Redis at most a tenth of the
// level between two views of theirs. A view is trusted for two flush
// intervals (40 ms), in which an instance refreshes it about twice: the
// others' unseen charges come to at most about 2 × 0.1 of the level, and
// no instance admits what the shared bucket would have refused unless
// the level fell by most of itself within 40 ms, which the same rule on
// every instance does not allow. (A share of the capacity instead of the
// level would not shrink near the limit, and a configured limit above the
// upstream's leaves the level far below capacity for good.) The charges
// go to Redis with the next flush (write-behind), whose reply refreshes
// the view. Near the limit (a tenth of the level split N ways is less
// than the request), with a view older than two flush intervals (an idle
// instance knows nothing of the others' spending) or in a cooldown or
// park, admission waits for Redis: the reservation rides an immediate
// flush behind this instance's queued charges, so Redis decides on the
// whole account. A busy pool far from its limits (the overhead benchmark)
// thus admits without a round trip, and one that spends close to them
// (bench/cluster's quota run) mostly as before.

// opKind is what a queued operation asks of its budget.
type opKind uint8

const (
	opReserve opKind = iota // admit and charge, or refuse: a caller waits
	opCharge                // charge what the lease admitted: nobody waits
	opSettle                // a correction: a caller waits
	opSync                  // a header sync: a caller waits
)

// ticket is a charge the lease admitted, until its flush says the marks and
// the unanswered sums it was charged after (what its header sync needs).
// Guarded by the flusher's lock.
type ticket struct {
	batch *batch // the batch it is queued in, until sent
	index int    // its operation's number in that batch, from 1
	state ticketState
	marks [3]float64
	ahead [3]float64
}

// ticketState: queued ─flush─▶ resolved (marks known) or lost (the flush
// failed: marks unknown, a sync then only lowers).
type ticketState uint8

const (
	ticketQueued ticketState = iota
	ticketResolved
	ticketLost
)

type op struct {
	kind          opKind
	admit, charge [3]float64
	corr          keypool.SharedCorrection
	sync          keypool.SharedSync
	t             *ticket      // opCharge: its ticket; opSync: the request's
	done          chan opReply // nil for opCharge
}

type opReply struct {
	a    keypool.SharedAdmission
	sync keypool.SharedSyncResult
	mode keypool.SharedMode
}

// batchKey groups operations that one script can run: one budget, with
// the same configured caps.
type batchKey struct {
	org, class string
	caps       [3]float64
}

type batch struct {
	b   keypool.SharedBudget
	ops []*op
	// positive is what the batch's operations charge (never a refund), to
	// take out of the view's since when the reply has it.
	positive [3]float64
}

// view is a budget as the last flush's reply left it.
type view struct {
	levels     [3]float64
	known      [3]bool
	caps       [3]float64
	cool, park int64 // unix ns
	at         int64 // unix ns of the reply
	since      [3]float64
	inFlight   [3]float64 // since's part in the batch sent, not yet replied
}

// flusher queues operations and sends them.
type flusher struct {
	mu      sync.Mutex
	queue   map[batchKey]*batch
	ops     int
	first   int64 // when the queue became non-empty (unix ns)
	urgent  bool
	views   map[batchKey]*view
	closed  bool
	wake    chan struct{}
	flushed sync.Cond // signalled after every flush, for tests
	seq     uint64
}

func (f *flusher) init() {
	f.queue = map[batchKey]*batch{}
	f.views = map[batchKey]*view{}
	f.wake = make(chan struct{}, 1)
	f.flushed.L = &f.mu
}

// A reservation's outcome in flush.lua's reply.
const (
	replyAdmitted = 0
	replyWait     = 1
	replyCooling  = 2
	replyParked   = 3
)

// argDeadline is the index of flush.lua's deadline argument.
const argDeadline = 5

// maxBatchOps flushes at once when this many operations are queued.
const maxBatchOps = 256

func keyOf(b keypool.SharedBudget) batchKey { return batchKey{b.Org, b.Class, b.Caps} }

// enqueue adds o to its budget's queue; f.mu is held.
func (s *Store) enqueue(b keypool.SharedBudget, o *op, urgent bool) {
	f := &s.flush
	k := keyOf(b)
	bt := f.queue[k]
	if bt == nil {
		bt = &batch{b: b}
		f.queue[k] = bt
	}
	bt.ops = append(bt.ops, o)
	if o.kind == opCharge {
		o.t.batch, o.t.index = bt, len(bt.ops)
	}
	if o.kind != opSync {
		d := o.charge
		if o.kind == opSettle {
			d = o.corr.Delta
		}
		for i, v := range d {
			if v > 0 {
				bt.positive[i] += v
				if vw := f.views[k]; vw != nil {
					vw.since[i] += v
				}
			}
		}
	}
	if f.ops == 0 {
		f.first = s.cfg.Clock.Now().UnixNano()
	}
	f.ops++
	signal := f.ops == 1
	if urgent || f.ops >= maxBatchOps {
		signal = signal || !f.urgent
		f.urgent = true
	}
	if signal {
		select {
		case f.wake <- struct{}{}:
		default:
		}
	}
}

// submit queues o and waits for its flush. When the store is closed it
// returns false and the caller answers locally.
func (s *Store) submit(ctx context.Context, b keypool.SharedBudget, o *op, urgent bool) (opReply, bool) {
	o.done = make(chan opReply, 1)
	s.flush.mu.Lock()
	if s.flush.closed {
		s.flush.mu.Unlock()
		return opReply{}, false
	}
	s.enqueue(b, o, urgent)
	s.flush.mu.Unlock()
	select {
	case r := <-o.done:
		return r, true
	case <-ctx.Done():
		// The flush still runs it; the caller no longer waits (and is
		// told nothing was admitted).
		unknown := [3]float64{nan, nan, nan}
		return opReply{
			a:    keypool.SharedAdmission{Outcome: keypool.SharedWait, Mode: keypool.SharedModeShared, Levels: unknown},
			sync: keypool.SharedSyncResult{Mode: keypool.SharedModeShared, Levels: unknown, Caps: unknown},
			mode: keypool.SharedModeShared,
		}, true
	}
}

// submitAll queues corrections and waits for their flush; false when the
// store is closed.
func (s *Store) submitAll(ctx context.Context, cs []keypool.SharedCorrection) bool {
	ops := make([]*op, len(cs))
	s.flush.mu.Lock()
	if s.flush.closed {
		s.flush.mu.Unlock()
		return false
	}
	for i, c := range cs {
		ops[i] = &op{kind: opSettle, corr: c, done: make(chan opReply, 1)}
		s.enqueue(c.Budget, ops[i], false)
	}
	s.flush.mu.Unlock()
	for _, o := range ops {
		select {
		case <-o.done:
		case <-ctx.Done():
			return true
		}
	}
	return true
}

// lease admits b locally when its view is fresh and this instance's share
// of the headroom holds the request (see the comment at the top); the
// charge is queued for the next flush.
func (s *Store) lease(b keypool.SharedBudget, admit, charge [3]float64) (keypool.SharedAdmission, bool) {
	f := &s.flush
	f.mu.Lock()
	defer f.mu.Unlock()
	k := keyOf(b)
	v := f.views[k]
	now := s.cfg.Clock.Now().UnixNano()
	if s.cfg.LeaseShare <= 0 || f.closed || v == nil || now-v.at > int64(2*s.cfg.FlushInterval) || v.cool > now || v.park > now {
		return keypool.SharedAdmission{}, false
	}
	// One instance more than the last heartbeat counted: one that joined
	// since is not known here yet, and admits its share too.
	n := float64(max(1, s.share.Load()) + 1)
	var lv [3]float64
	for i := range 3 {
		c := v.caps[i]
		if !v.known[i] || c <= 0 {
			continue
		}
		lv[i] = min(c, v.levels[i]+float64(now-v.at)*c/nanosPerMinute)
		if v.since[i]+admit[i] > s.cfg.LeaseShare*lv[i]/n {
			return keypool.SharedAdmission{}, false
		}
	}
	t := &ticket{}
	s.enqueue(b, &op{kind: opCharge, charge: charge, t: t}, false)
	a := keypool.SharedAdmission{Outcome: keypool.SharedAdmitted, Known: v.known, Caps: v.caps, Mode: keypool.SharedModeShared, Ticket: t}
	for i := range 3 {
		a.Marks[i] = nan // the flush knows them: the ticket carries them to the sync
		if v.known[i] {
			a.Levels[i] = lv[i] - v.since[i]
		}
	}
	return a, true
}

// runFlusher sends the queues: FlushInterval after the first operation
// was queued, or at once when one is urgent.
func (s *Store) runFlusher() {
	defer close(s.flushDone)
	f := &s.flush
	for {
		select {
		case <-s.stop:
			s.flushNow()
			return
		case <-f.wake:
		}
		for {
			f.mu.Lock()
			ops, urgent, first := f.ops, f.urgent, f.first
			f.mu.Unlock()
			if ops == 0 {
				break
			}
			if !urgent {
				t := s.cfg.Clock.NewTimerAt(time.Unix(0, first).Add(s.cfg.FlushInterval))
				select {
				case <-t.C():
				case <-f.wake:
					t.Stop()
					continue // urgent now: look again
				case <-s.stop:
					t.Stop()
					s.flushNow()
					return
				}
			}
			s.flushNow()
		}
	}
}

// flushNow sends every queued batch, one script each, concurrently (the
// client pipelines them on one connection), and answers their operations.
func (s *Store) flushNow() {
	f := &s.flush
	f.mu.Lock()
	q := f.queue
	f.queue = map[batchKey]*batch{}
	f.ops, f.urgent = 0, false
	type sent struct {
		k    batchKey
		bt   *batch
		args []string
	}
	var all []sent
	for k, bt := range q {
		if v := f.views[k]; v != nil {
			v.inFlight = bt.positive
		}
		all = append(all, sent{k, bt, s.flushArgs(bt)})
		for _, o := range bt.ops {
			if o.kind == opCharge {
				o.t.batch = nil
			}
		}
	}
	f.mu.Unlock()
	var wg sync.WaitGroup
	for _, x := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.flushBatch(x.k, x.bt, x.args)
		}()
	}
	wg.Wait()
	f.mu.Lock()
	f.seq++
	f.flushed.Broadcast()
	f.mu.Unlock()
}

// flushArgs encodes a batch for flush.lua; f.mu is held (tickets).
func (s *Store) flushArgs(bt *batch) []string {
	args := make([]string, 0, 5+8*len(bt.ops))
	for _, v := range bt.b.Caps {
		args = append(args, fmtFloat(max(v, 0)))
	}
	// argDeadline is set when the script is sent (the call's deadline).
	args = append(args, s.ttlMillis(), fmtFloat(s.cfg.MaxLimit), "0")
	f3 := func(v [3]float64) {
		for _, x := range v {
			args = append(args, fmtFloat(x))
		}
	}
	for _, o := range bt.ops {
		switch o.kind {
		case opReserve:
			args = append(args, "r")
			f3(o.admit)
			f3(o.charge)
		case opCharge:
			args = append(args, "c")
			f3(o.charge)
		case opSettle:
			args = append(args, "d")
			f3(o.corr.Delta)
			f3(o.corr.Release)
		case opSync:
			sy := &o.sync
			obs := int64(0)
			if !sy.Observed.IsZero() {
				obs = sy.Observed.UnixMilli()
			}
			args = append(args, "s", fmtInt(obs))
			marks, ahead := s.syncMarks(bt, o)
			for i := range 3 {
				raise := "0"
				if sy.Raise[i] {
					raise = "1"
				}
				args = append(args, fmtInt(sy.Limit[i]), fmtInt(sy.Remaining[i]), marks[i],
					fmtFloat(sy.Own[i]), fmtFloat(max(sy.Gran[i], 1)), raise)
			}
			args = append(args, ahead[:]...)
			f3(sy.Release)
		}
	}
	return args
}

// syncMarks are a sync's marks and ahead as flush.lua takes them: its
// own, or its ticket's (resolved by an earlier flush, or "#i": the charge
// queued in the same batch); "" unknown.
func (s *Store) syncMarks(bt *batch, o *op) (marks, ahead [3]string) {
	sy := &o.sync
	t := o.t
	for i := range 3 {
		ahead[i] = fmtFloat(max(sy.Ahead[i], 0))
		switch {
		case !math.IsNaN(sy.Mark[i]):
			marks[i] = fmtFloat(sy.Mark[i])
		case t != nil && t.batch == bt:
			marks[i], ahead[i] = "#"+fmtInt(int64(t.index)), "#"+fmtInt(int64(t.index))
		case t != nil && t.state == ticketResolved:
			marks[i], ahead[i] = fmtFloat(t.marks[i]), fmtFloat(t.ahead[i])
		}
	}
	return marks, ahead
}

// flushBatch runs one budget's batch and answers its operations; on
// failure (the breaker opens) they are answered from the local budgets.
func (s *Store) flushBatch(k batchKey, bt *batch, args []string) {
	var vs []rueidis.RedisMessage
	err := s.call(context.Background(), "flush", func(ctx context.Context, c rueidis.Client) error {
		args[argDeadline] = s.deadline(ctx)
		var err error
		vs, err = flushScript.Exec(ctx, c, []string{s.keys.budget(bt.b.Org, bt.b.Class), s.keys.org(bt.b.Org)}, args).ToArray()
		if err == nil && len(vs) < 8 {
			err = errMalformed
		}
		return err
	})
	f := &s.flush
	if err != nil {
		f.mu.Lock()
		if v := f.views[k]; v != nil {
			v.since = sub3(v.since, v.inFlight)
			v.inFlight = [3]float64{}
			v.at = 0 // not trusted: the next admission asks
		}
		for _, o := range bt.ops {
			if o.kind == opCharge {
				o.t.state = ticketLost
			}
		}
		f.mu.Unlock()
		s.answerLocally(bt)
		return
	}
	var levels, caps [3]float64
	var known [3]bool
	for i := range 3 {
		levels[i], caps[i] = num(vs[i]), num(vs[3+i])
		known[i] = !math.IsNaN(levels[i])
	}
	now := s.cfg.Clock.Now().UnixNano()
	f.mu.Lock()
	v := f.views[k]
	if v == nil {
		v = &view{}
		f.views[k] = v
		// Charges queued meanwhile were not counted against a view.
		if q := f.queue[k]; q != nil {
			v.since = q.positive
		}
	} else {
		v.since = sub3(v.since, v.inFlight)
	}
	v.inFlight = [3]float64{}
	v.levels, v.known, v.caps, v.at = levels, known, caps, now
	v.cool = int64(num(vs[6])) * int64(time.Millisecond)
	v.park = int64(num(vs[7])) * int64(time.Millisecond)
	replies := s.parseFlush(bt, vs[8:], levels, known, caps)
	f.mu.Unlock()
	s.local.remember(bt.b, levels, known, caps)
	for j, o := range bt.ops {
		if o.done != nil {
			o.done <- replies[j]
		}
	}
}

func sub3(a, b [3]float64) [3]float64 {
	for i := range a {
		a[i] = max(0, a[i]-b[i])
	}
	return a
}

// parseFlush reads each operation's part of the reply; f.mu is held
// (tickets).
func (s *Store) parseFlush(bt *batch, vs []rueidis.RedisMessage, levels [3]float64, known [3]bool, caps [3]float64) []opReply {
	out := make([]opReply, len(bt.ops))
	at := 0
	next := func(n int) []rueidis.RedisMessage {
		if at+n > len(vs) {
			return make([]rueidis.RedisMessage, n) // malformed: unknowns
		}
		r := vs[at : at+n]
		at += n
		return r
	}
	for j, o := range bt.ops {
		r := &out[j]
		r.mode = keypool.SharedModeShared
		switch o.kind {
		case opReserve:
			v := next(9)
			a := keypool.SharedAdmission{Mode: keypool.SharedModeShared, Levels: levels, Known: known, Caps: caps}
			outcome, _ := v[0].AsInt64()
			switch outcome {
			case replyAdmitted:
				a.Outcome = keypool.SharedAdmitted
				for i := range 3 {
					a.Marks[i] = num(v[3+i])
					if x := num(v[6+i]); x > 0 {
						a.Ahead[i] = x
					}
				}
			case replyWait:
				a.Outcome = keypool.SharedWait
				a.Wait = time.Duration(num(v[1])) * time.Microsecond
			default: // replyCooling, replyParked
				a.Outcome = keypool.SharedCooling
				if outcome == replyParked {
					a.Outcome = keypool.SharedParked
				}
				a.Until = time.UnixMilli(int64(num(v[1])))
				a.Reason, _ = v[2].ToString()
			}
			r.a = a
		case opCharge:
			v := next(6)
			o.t.state = ticketResolved
			for i := range 3 {
				o.t.marks[i] = num(v[i])
				o.t.ahead[i] = max(0, num(v[3+i]))
			}
		case opSync:
			v := next(3)
			r.sync = keypool.SharedSyncResult{Mode: keypool.SharedModeShared, Levels: levels, Caps: caps}
			for i := range 3 {
				m, _ := v[i].AsInt64()
				r.sync.Moved[i] = m == 1
			}
		}
	}
	return out
}

// answerLocally answers a batch Redis did not take from the local
// budgets of local-fallback, in order: charges the lease admitted are
// charged there too.
func (s *Store) answerLocally(bt *batch) {
	for _, o := range bt.ops {
		var r opReply
		r.mode = keypool.SharedModeLocalFallback
		switch o.kind {
		case opReserve:
			r.a = s.local.reserve(bt.b, o.admit, o.charge)
		case opCharge:
			s.local.settle([]keypool.SharedCorrection{{Budget: bt.b, Delta: o.charge}})
		case opSettle:
			s.local.settle([]keypool.SharedCorrection{o.corr})
		case opSync:
			r.sync = s.local.sync(o.sync)
		}
		if o.done != nil {
			o.done <- r
		}
	}
}

// waitFlushes waits until n flushes have completed since the store
// started; for tests.
func (s *Store) waitFlushes(n uint64) {
	f := &s.flush
	f.mu.Lock()
	defer f.mu.Unlock()
	for f.seq < n {
		f.flushed.Wait()
	}
}

// flushes is how many flushes have completed; for tests.
func (s *Store) flushes() uint64 {
	f := &s.flush
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seq
}
