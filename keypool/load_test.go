package keypool

import (
	"math/rand/v2"
	"testing"
)

// These tests stay inside the package on purpose: they compare view.Load,
// an unexported function, with its reference on budget states written
// directly (random levels, debts, cooldowns, parks), most of which no
// sequence of public calls reaches in a test's time.

// loadLoop is view.Load as it was before it was unrolled for speed: the
// reference the unrolled one must match exactly.
func (v *view) loadLoop(i int) (bool, float64, int) {
	m := &v.p.members[i]
	if m.ks.disabled != "" || v.exclude.excludes(m.ks) {
		return false, 0, 0
	}
	o := m.ks.org.resolve()
	if o.parkUntil > v.now {
		return false, 0, 0
	}
	b := o.budget(v.class)
	if b.coolUntil > v.now {
		return false, 0, 0
	}
	caps := v.p.capsOf(i, b)
	h := 1.0
	need := [numKinds]float64{1, v.est, 0}
	for k := range b.buckets {
		bk := &b.buckets[k]
		bk.refill(v.now, caps[k])
		if k == kindOutput {
			if caps[k] > 0 && bk.init && bk.level-max(0, b.pendingOut) <= 0 {
				return false, 0, 0
			}
		} else if !bk.admits(caps[k], need[k]) {
			return false, 0, 0
		}
		h = min(h, bk.headroom(caps[k]))
	}
	return true, h, m.ks.inFlight
}

// TestLoadMatchesLoop drives Load and the reference through random budget
// states (configured, learned and unknown limits; fresh, drained, indebted
// and full buckets; cooldowns, parked organizations, output in flight) and
// wants the same answer and the same buckets afterwards, bit for bit.
func TestLoadMatchesLoop(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(vs ...float64) float64 { return vs[rng.IntN(len(vs))] }
	for n := 0; n < 20000; n++ {
		cfg := Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{
			RPM:  int64(pick(0, 0, 50, 4000)),
			ITPM: int64(pick(0, 0, 30000, 2e6)),
			OTPM: int64(pick(0, 0, 8000, 4e5)),
		}}}}
		p, _ := newPool(t, cfg)
		st := p.st
		class := st.classIndex("sonnet")
		o := p.members[0].ks.org
		b := o.budget(class)
		now := t0.UnixNano() + rng.Int64N(int64(120e9))
		for k := range b.buckets {
			bk := &b.buckets[k]
			bk.learned = pick(0, 0, 60, 1000, 5e5)
			if rng.IntN(4) > 0 {
				bk.init = true
				capacity := max(p.members[0].caps[k], bk.learned, 1)
				bk.level = capacity * pick(-0.5, 0, 0.001, 0.3, 1, 1.2) * rng.Float64()
				bk.last = now - rng.Int64N(int64(90e9)) + int64(pick(0, 0, 5e9))
			}
		}
		b.pendingOut = pick(0, 0, -3, 50, 7000)
		if rng.IntN(8) == 0 {
			b.coolUntil = now + int64(pick(-1, 1))
		}
		if rng.IntN(8) == 0 {
			o.parkUntil = now + int64(pick(-1, 1))
		}
		p.members[0].ks.inFlight = rng.IntN(3)
		if rng.IntN(16) == 0 {
			p.members[0].ks.disabled = "rejected"
		}
		v := &p.view
		v.now, v.class, v.est = now, class, pick(1, 10, 900, 40000, 3e6)

		saved := *b
		ok1, h1, f1 := v.loadLoop(0)
		after := *b
		*b = saved
		ok2, h2, f2 := v.Load(0)
		if ok1 != ok2 || h1 != h2 || f1 != f2 || after != *b {
			t.Fatalf("case %d: Load = %v %v %v, buckets %+v\nreference %v %v %v, buckets %+v\nbefore %+v",
				n, ok2, h2, f2, *b, ok1, h1, f1, after, saved)
		}
	}
}
