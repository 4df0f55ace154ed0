package keypool

import (
	"math"
	"time"
)

// Fair share without waiting. When requests do not wait (no MaxWait), the
// wait queue's fair order has nothing to order: whoever asks first takes
// the capacity. So when capacity is short, the client that has used more
// than its weighted share of it lately is the one refused, and the others
// are admitted.
//
// "Recent use" is each client's tokens (input and output, estimated at
// admission and corrected at settle) decaying exponentially with a time
// constant of shareDecay, about one period of the upstream's per-minute
// limits. A client's share is its weight over the sum of the weights of
// the clients with recent use. "Short" means the budget the strategy
// picked has less than shortHeadroom of some limit left (beyond what
// waiters hold) before taking the request. With one active client nobody
// is refused for its share.
const (
	shareDecay    = float64(time.Minute)
	shortHeadroom = 0.10
	// maxTrackedClients bounds the usage table. Clients are normally the
	// configured client tokens; beyond the bound, clients whose recent use
	// has decayed away are dropped first, and a client that finds no room
	// is not tracked (and never refused for its share).
	maxTrackedClients = 1024
)

// clientUse is one client's recent token use. Guarded by the pool's lock.
type clientUse struct {
	tokens float64 // at time at
	at     int64
	weight int
}

func (u *clientUse) decayed(now int64) float64 {
	if now <= u.at {
		return u.tokens
	}
	return u.tokens * math.Exp(-float64(now-u.at)/shareDecay)
}

func (u *clientUse) add(now int64, n float64) {
	u.tokens = max(0, u.decayed(now)+n)
	u.at = max(u.at, now)
}

// clientUse returns the named client's usage record, or nil when the
// table is full of clients with recent use.
func (st *State) clientUse(name string, weight int, now int64) *clientUse {
	u := st.usage[name]
	if u == nil {
		if st.usage == nil {
			st.usage = map[string]*clientUse{}
		}
		if len(st.usage) >= maxTrackedClients {
			for n, o := range st.usage {
				if o.decayed(now) < 1 {
					delete(st.usage, n)
				}
			}
			if len(st.usage) >= maxTrackedClients {
				return nil
			}
		}
		u = &clientUse{at: now}
		st.usage[name] = u
	}
	u.weight = max(weight, 1)
	return u
}

// overShare reports whether req must be refused for its client's share:
// the budget of key i (just picked for it) is short and the client has
// used more than its weighted share lately. after is when the budget will
// no longer be short for a request of need input tokens.
func (p *Pool) overShare(i int, now int64, class int, need float64, req *Request) (time.Duration, bool) {
	m := &p.members[i]
	b := m.ks.org.resolve().budget(class)
	caps := p.capsOf(i, b)
	held := [numKinds]float64{b.holdReq, b.holdIn, 0}
	n := [numKinds]float64{1, need, 0}
	var wait float64
	short := false
	for k := kindRequests; k <= kindInput; k++ {
		bk := &b.buckets[k]
		if caps[k] <= 0 || !bk.init {
			continue
		}
		if bk.headroomBeyond(caps[k], held[k]) < shortHeadroom {
			short = true
		}
		wait = max(wait, bk.wait(caps[k], n[k], held[k]+shortHeadroom*caps[k]))
	}
	if !short {
		return 0, false
	}
	st := p.st
	me := st.clientUse(req.Client, req.ClientWeight, now)
	if me == nil {
		return 0, false
	}
	var total, weights float64
	active := 0
	for _, u := range st.usage {
		t := u.decayed(now)
		if t < 1 && u != me {
			continue
		}
		total += t
		weights += float64(u.weight)
		active++
	}
	if active < 2 || total <= 0 {
		return 0, false
	}
	if me.decayed(now)/total <= float64(me.weight)/weights {
		return 0, false
	}
	return time.Duration(max(wait, float64(time.Second))), true
}
