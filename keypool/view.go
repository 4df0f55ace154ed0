package keypool

// view is the selector's window on the pool for one pick; it reuses one
// value per pool so a pick allocates nothing.
type view struct {
	p       *Pool
	now     int64
	class   int
	est     float64
	exclude *Attempts
	only    []bool
}

func (v *view) Len() int { return len(v.p.members) }

func (v *view) Load(i int) (bool, float64, int) {
	m := &v.p.members[i]
	ks := m.ks
	if ks.disabled != "" || v.exclude != nil && v.exclude.excludes(ks) || !servable(v.only, i) {
		return false, 0, 0
	}
	o := ks.org
	if o.into != nil {
		o = o.resolve()
	}
	now := v.now
	if o.parkUntil > now {
		return false, 0, 0
	}
	b := o.budget(v.class)
	if b.coolUntil > now {
		return false, 0, 0
	}
	// Load runs for every candidate a strategy looks at (every key of a
	// pool of up to 16 under least_loaded), so the three kinds are written
	// out rather than looped over with capsOf's array: same order, same
	// arithmetic, without the stack copies. A bucket of unknown capacity
	// is left alone, admits and has headroom 1 (see bucket).
	// What waiters hold ahead (see waitQueue) is not there to take; both
	// holds are zero unless someone waits.
	h := 1.0
	bk := &b.buckets[kindRequests]
	if c := capOf(m.caps[kindRequests], bk); c > 0 {
		bk.refill(now, c)
		if !bk.admitsBeyond(c, 1, b.holdReq) {
			return false, 0, 0
		}
		h = min(h, bk.headroomBeyond(c, b.holdReq))
	}
	bk = &b.buckets[kindInput]
	if c := capOf(m.caps[kindInput], bk); c > 0 {
		bk.refill(now, c)
		if !bk.admitsBeyond(c, v.est, b.holdIn) {
			return false, 0, 0
		}
		h = min(h, bk.headroomBeyond(c, b.holdIn))
	}
	bk = &b.buckets[kindOutput]
	if c := capOf(m.caps[kindOutput], bk); c > 0 {
		bk.refill(now, c)
		// Output is charged as it is produced: admission needs positive
		// headroom, not max_tokens of it, once what the requests in
		// flight are still producing is counted.
		if bk.init && bk.level-max(0, b.pendingOut) <= 0 {
			return false, 0, 0
		}
		h = min(h, bk.headroom(c))
	}
	return true, h, ks.inFlight
}

// capOf is one kind's capacity: the configured org-wide cap, else what
// the bucket learned (0: unknown).
func capOf(cfg float64, bk *bucket) float64 {
	if cfg == 0 {
		return bk.learned
	}
	return cfg
}
