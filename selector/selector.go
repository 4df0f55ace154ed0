// Package selector chooses one upstream key out of a pool.
//
// Strategies are pure functions over a read-only view of the candidates
// (Candidates) plus a small per-pool State. The package holds no locks: the
// caller (the key pool) serialises access to State and guarantees that the
// view does not change during one Pick.
//
// Every strategy returns only candidates whose Load reports ok; keys that are
// disabled, cooling down or out of budget are never picked.
package selector

import (
	"fmt"
	"math/rand/v2"
	"slices"
)

// Candidates is a read-only view of the keys a strategy chooses from. It is
// valid for the duration of one Pick.
type Candidates interface {
	// Len is the number of candidates; they are indexed 0..Len()-1.
	Len() int
	// Load reports whether candidate i can take the request now (ok), the
	// fraction in [0,1] of its most constrained budget that is left
	// (headroom, 1 when no limit is known), and how many requests it has
	// in flight.
	Load(i int) (ok bool, headroom float64, inFlight int)
}

// Strategy names a selection strategy.
type Strategy uint8

// The strategies, as named in the Caddyfile.
const (
	// LeastLoaded picks the key with the most headroom left, discounted by
	// its requests in flight so that concurrent requests spread out before
	// any response has taught the pool its limits.
	LeastLoaded Strategy = iota
	// RoundRobin cycles through the keys in configuration order.
	RoundRobin
	// Weighted is smooth weighted round robin over the keys' weights.
	Weighted
	// Priority uses the lowest priority number that has capacity, and
	// LeastLoaded among the keys of that tier.
	Priority
	// Random picks uniformly among keys with capacity.
	Random
)

var names = [...]string{"least_loaded", "round_robin", "weighted", "priority", "random"}

func (s Strategy) String() string {
	if int(s) < len(names) {
		return names[s]
	}
	return fmt.Sprintf("strategy(%d)", s)
}

// Parse returns the strategy with the given Caddyfile name.
func Parse(name string) (Strategy, error) {
	for i, n := range names {
		if n == name {
			return Strategy(i), nil
		}
	}
	return 0, fmt.Errorf("unknown strategy %q (want least_loaded, round_robin, weighted, priority or random)", name)
}

const (
	// exactScan is the pool size up to which LeastLoaded looks at every
	// key. Above it, it samples: the best of sampleSize random keys
	// balances nearly as well (the "power of d choices") and keeps the
	// cost of a pick independent of the pool size.
	exactScan  = 16
	sampleSize = 2
	// maxSchedule bounds the precomputed smooth weighted sequence; pools
	// whose reduced weights sum to more fall back to the O(n) algorithm.
	maxSchedule = 1 << 16
)

// State is the per-pool memory of the strategies: cursors, smooth weighted
// round robin weights, priority tiers and a random source. It is not safe
// for concurrent use; the pool's lock guards it.
type State struct {
	n        int
	weights  []int
	current  []int   // smooth weighted round robin, O(n) fallback
	schedule []int32 // one full smooth weighted cycle, when small enough
	tiers    [][]int // candidate indices by ascending priority
	next     int     // round robin / schedule / tie-break cursor
	rng      rand.PCG
}

// NewState prepares strategy state for candidates with the given weights
// and priorities (both indexed like the candidates; weights < 1 count as 1).
// The seed makes the random choices reproducible in tests.
func NewState(weights, priorities []int, seed uint64) *State {
	n := len(weights)
	st := &State{n: n, weights: make([]int, n), current: make([]int, n)}
	st.rng.Seed(seed, seed^0x9e3779b97f4a7c15)
	for i, w := range weights {
		st.weights[i] = max(w, 1)
	}
	st.schedule = buildSchedule(st.weights)

	byPrio := map[int][]int{}
	var prios []int
	for i := 0; i < n; i++ {
		p := 0
		if i < len(priorities) {
			p = priorities[i]
		}
		if _, ok := byPrio[p]; !ok {
			prios = append(prios, p)
		}
		byPrio[p] = append(byPrio[p], i)
	}
	slices.Sort(prios)
	for _, p := range prios {
		st.tiers = append(st.tiers, byPrio[p])
	}
	return st
}

// Pick returns the index of the chosen candidate, or -1 when no candidate
// can take the request.
func Pick(s Strategy, st *State, c Candidates) int {
	n := c.Len()
	if n == 0 {
		return -1
	}
	switch s {
	case RoundRobin:
		return st.roundRobin(c, n)
	case Weighted:
		return st.weighted(c, n)
	case Priority:
		for _, tier := range st.tiers {
			if i := st.leastLoaded(c, tier, len(tier)); i >= 0 {
				return i
			}
		}
		return -1
	case Random:
		return st.random(c, n)
	default:
		return st.leastLoaded(c, nil, n)
	}
}

// PickAmong is Pick restricted to the listed candidate indices (used for
// sticky sessions that must stay within one cache scope). Weighted and
// RoundRobin degrade to a rotating scan of the subset.
func PickAmong(s Strategy, st *State, c Candidates, among []int) int {
	switch s {
	case LeastLoaded, Priority:
		return st.leastLoaded(c, among, len(among))
	case Random:
		off := st.intn(len(among))
		return scanFrom(c, among, len(among), off)
	default:
		st.next++
		return scanFrom(c, among, len(among), st.next%max(len(among), 1))
	}
}

func (st *State) intn(n int) int {
	if n <= 1 {
		return 0
	}
	// Lemire's multiply-shift: unbiased enough for selection and no division.
	return int((uint64(uint32(st.rng.Uint64())) * uint64(n)) >> 32)
}

func at(among []int, j int) int {
	if among == nil {
		return j
	}
	return among[j]
}

func scanFrom(c Candidates, among []int, n, off int) int {
	for k := 0; k < n; k++ {
		i := at(among, (off+k)%n)
		if ok, _, _ := c.Load(i); ok {
			return i
		}
	}
	return -1
}

func score(headroom float64, inFlight int) float64 {
	return headroom / float64(1+inFlight)
}

// leastLoaded picks the best-scoring candidate among n (all, or the listed
// subset). Ties rotate so that idle pools with no learned limits still
// spread serial traffic.
func (st *State) leastLoaded(c Candidates, among []int, n int) int {
	if n == 0 {
		return -1
	}
	best, bestScore := -1, -1.0
	if n <= exactScan {
		st.next++
		off := st.next % n
		for k := 0; k < n; k++ {
			i := at(among, (off+k)%n)
			ok, h, f := c.Load(i)
			if ok && score(h, f) > bestScore {
				best, bestScore = i, score(h, f)
			}
		}
		return best
	}
	for k := 0; k < sampleSize; k++ {
		i := at(among, st.intn(n))
		ok, h, f := c.Load(i)
		if ok && score(h, f) > bestScore {
			best, bestScore = i, score(h, f)
		}
	}
	if best >= 0 {
		return best
	}
	// Most sampled keys are exhausted: look at all of them once.
	off := st.intn(n)
	for k := 0; k < n; k++ {
		i := at(among, (off+k)%n)
		ok, h, f := c.Load(i)
		if ok && score(h, f) > bestScore {
			best, bestScore = i, score(h, f)
		}
	}
	return best
}

func (st *State) roundRobin(c Candidates, n int) int {
	for k := 0; k < n; k++ {
		i := st.next % n
		st.next = i + 1
		if ok, _, _ := c.Load(i); ok {
			return i
		}
	}
	return -1
}

func (st *State) random(c Candidates, n int) int {
	for k := 0; k < sampleSize; k++ {
		i := st.intn(n)
		if ok, _, _ := c.Load(i); ok {
			return i
		}
	}
	return scanFrom(c, nil, n, st.intn(n))
}

func (st *State) weighted(c Candidates, n int) int {
	if n != st.n {
		return scanFrom(c, nil, n, 0)
	}
	if st.schedule != nil {
		m := len(st.schedule)
		// Skipping keys without capacity hands their turns to the next
		// ones in the cycle; bounded so a nearly exhausted pool falls
		// through to one plain scan.
		for k := 0; k < min(m, 2*n+8); k++ {
			i := int(st.schedule[st.next%m])
			st.next = (st.next + 1) % m
			if ok, _, _ := c.Load(i); ok {
				return i
			}
		}
		return scanFrom(c, nil, n, 0)
	}
	// Smooth weighted round robin (as in nginx) over the keys with capacity.
	total, best := 0, -1
	for i := 0; i < n; i++ {
		if ok, _, _ := c.Load(i); !ok {
			continue
		}
		st.current[i] += st.weights[i]
		total += st.weights[i]
		if best < 0 || st.current[i] > st.current[best] {
			best = i
		}
	}
	if best >= 0 {
		st.current[best] -= total
	}
	return best
}

// buildSchedule precomputes one cycle of smooth weighted round robin so a
// weighted pick costs O(1) however many keys there are.
func buildSchedule(weights []int) []int32 {
	if len(weights) == 0 {
		return nil
	}
	g := 0
	for _, w := range weights {
		g = gcd(g, w)
	}
	total := 0
	reduced := make([]int, len(weights))
	for i, w := range weights {
		reduced[i] = w / g
		total += reduced[i]
		if total > maxSchedule {
			return nil
		}
	}
	cur := make([]int, len(weights))
	out := make([]int32, 0, total)
	for len(out) < total {
		best := 0
		for i, w := range reduced {
			cur[i] += w
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		out = append(out, int32(best))
	}
	return out
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
