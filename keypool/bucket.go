package keypool

// The three budgets the upstream enforces per organization and model class.
const (
	kindRequests = iota
	kindInput
	kindOutput
	numKinds
)

var kindNames = [numKinds]string{"requests", "input_tokens", "output_tokens"}

// bucket is a continuous-refill token bucket: capacity = limit, refilled at
// limit/60 per second. Unlike golang.org/x/time/rate.Limiter it can be
// charged after the fact (a response's real usage may exceed the estimate,
// leaving the bucket in debt) and corrected to the level the upstream
// reports, which rate.Limiter has no way to express. The capacity is passed
// in on every call because it comes from the caller's configuration (which
// a reload may change) or from what headers taught.
//
// A bucket is guarded by its pool's lock.
type bucket struct {
	level   float64 // tokens available at last; negative is debt
	last    int64   // unix nanoseconds of the last refill
	learned float64 // limit from anthropic-ratelimit-*-limit; 0 unknown
	// charged is the running total of positive charges, to date header
	// syncs. Refunds and downward corrections are left out: they may undo
	// charges older than the response being synced, which its remaining
	// already reflects, and counting them would make a sync refill.
	charged float64
	init    bool // level is meaningful for a known capacity
}

const nanosPerMinute = 60e9

// slack absorbs floating-point error in refill arithmetic: a second's
// refill of a 60-a-minute bucket can come to 0.9999999999999999 of a
// request, and without slack that request would wait another minSleep.
const slack = 1e-9

// refill brings the bucket up to now; it never moves time backwards.
func (b *bucket) refill(now int64, capacity float64) {
	if capacity <= 0 {
		return
	}
	if !b.init {
		b.level, b.last, b.init = capacity, now, true
		return
	}
	if now > b.last {
		b.level += float64(now-b.last) * capacity * (1 / nanosPerMinute)
		b.last = now
	}
	if b.level > capacity {
		b.level = capacity
	}
}

// admits reports whether n can be taken now. A request larger than the
// whole bucket is admitted when the bucket is full, as the upstream does;
// it then leaves the bucket in debt.
func (b *bucket) admits(capacity, n float64) bool {
	if capacity <= 0 || !b.init {
		return true
	}
	return b.level+slack >= min(n, capacity)
}

// admitsBeyond is admits once held (what waiters hold ahead) is set
// aside.
func (b *bucket) admitsBeyond(capacity, n, held float64) bool {
	if capacity <= 0 || !b.init {
		return true
	}
	return b.level-held+slack >= min(n, capacity)
}

// wait is how long until admitsBeyond(capacity, n, held) becomes true by
// refill alone.
func (b *bucket) wait(capacity, n, held float64) float64 {
	if capacity <= 0 || !b.init {
		return 0
	}
	need := held + min(n, capacity) - b.level
	if need <= slack {
		return 0
	}
	return need / capacity * nanosPerMinute
}

func (b *bucket) headroom(capacity float64) float64 { return b.headroomBeyond(capacity, 0) }

// headroomBeyond is the share of capacity left beyond held.
func (b *bucket) headroomBeyond(capacity, held float64) float64 {
	if capacity <= 0 || !b.init {
		return 1
	}
	return max(0, (b.level-held)/capacity)
}

func (b *bucket) charge(n float64) {
	b.level -= n
	if n > 0 {
		b.charged += n
	}
}

// sync corrects the level from an upstream's remaining count. later is what
// was charged here after the request that carried the header was admitted
// (the upstream had not seen it yet); ahead is what requests admitted before
// it and unanswered at its admission hold (the upstream may or may not have
// seen them: one admitted earlier can reach it later); gran is the upstream's rounding
// (it floors a continuous level, and rounds token counts down to thousands).
// So the whole units left lie in [remaining-later-ahead,
// remaining-later+gran-1]. The level moves only as far as needed to land in
// that interval: a response never refills the bucket beyond what the
// upstream reports less what it may not have counted yet. raise is false
// when the headers cannot justify a higher level at all (later is unknown,
// or the bucket's capacity is a configured limit other than the upstream's):
// then the level only comes down.
// The caller refills the bucket to now first. It reports whether the level
// moved: if not, the level is still the local account of it.
func (b *bucket) sync(capacity float64, remaining int64, later, ahead, gran float64, raise bool) bool {
	if capacity <= 0 {
		return false
	}
	hi := float64(remaining) - later + gran - 1
	lo := float64(remaining) - later - ahead
	if b.level < lo {
		if raise {
			b.level = min(lo, capacity)
			return true
		}
	} else if b.level > hi {
		b.level = hi
		return true
	}
	return false
}
