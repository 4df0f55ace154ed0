package selector

import (
	"math"
	"testing"
)

type cand struct {
	ok       bool
	headroom float64
	inFlight int
}

type fake []cand

func (f fake) Len() int { return len(f) }
func (f fake) Load(i int) (bool, float64, int) {
	return f[i].ok, f[i].headroom, f[i].inFlight
}

func all(n int) fake {
	f := make(fake, n)
	for i := range f {
		f[i] = cand{ok: true, headroom: 1}
	}
	return f
}

func ones(n int) []int {
	w := make([]int, n)
	for i := range w {
		w[i] = 1
	}
	return w
}

func TestParse(t *testing.T) {
	for _, n := range names {
		s, err := Parse(n)
		if err != nil || s.String() != n {
			t.Fatalf("Parse(%q) = %v, %v", n, s, err)
		}
	}
	if _, err := Parse("fastest"); err == nil {
		t.Fatal("Parse accepted an unknown strategy")
	}
}

func TestNeverPicksKeysWithoutCapacity(t *testing.T) {
	for _, s := range []Strategy{LeastLoaded, RoundRobin, Weighted, Priority, Random} {
		for _, n := range []int{3, 40} {
			f := all(n)
			for i := range f {
				if i%3 != 1 {
					f[i].ok = false
				}
			}
			st := NewState(ones(n), make([]int, n), 1)
			for k := 0; k < 1000; k++ {
				i := Pick(s, st, f)
				if i < 0 || !f[i].ok {
					t.Fatalf("%v n=%d: picked %d without capacity", s, n, i)
				}
			}
			none := make(fake, n)
			if i := Pick(s, st, none); i != -1 {
				t.Fatalf("%v: picked %d from an exhausted pool", s, i)
			}
		}
	}
}

func TestLeastLoadedPrefersHeadroom(t *testing.T) {
	f := fake{{true, 0.2, 0}, {true, 0.9, 0}, {true, 0.5, 0}}
	st := NewState(ones(3), nil, 1)
	for k := 0; k < 10; k++ {
		if i := Pick(LeastLoaded, st, f); i != 1 {
			t.Fatalf("picked %d, want 1 (most headroom)", i)
		}
	}
}

// With no limits learned yet every key shows full headroom; requests in
// flight must push new ones to other keys instead of piling onto one.
func TestLeastLoadedSpreadsConcurrentRequests(t *testing.T) {
	f := all(4)
	st := NewState(ones(4), nil, 1)
	for k := 0; k < 8; k++ {
		i := Pick(LeastLoaded, st, f)
		f[i].inFlight++
	}
	for i, c := range f {
		if c.inFlight != 2 {
			t.Fatalf("key %d has %d in flight, want 2 each: %+v", i, c.inFlight, f)
		}
	}
}

func TestLeastLoadedSampledLargePool(t *testing.T) {
	f := all(1000)
	st := NewState(ones(1000), nil, 7)
	for k := 0; k < 5000; k++ {
		f[Pick(LeastLoaded, st, f)].inFlight++
	}
	maxF := 0
	for _, c := range f {
		maxF = max(maxF, c.inFlight)
	}
	// Best-of-4 sampling keeps the most loaded key close to the mean (5).
	if maxF > 8 {
		t.Fatalf("most loaded key has %d in flight, want <= 8", maxF)
	}
	// Only one key left with capacity: the fallback scan must find it.
	for i := range f {
		f[i].ok = i == 777
	}
	if i := Pick(LeastLoaded, st, f); i != 777 {
		t.Fatalf("picked %d, want 777", i)
	}
}

func TestRoundRobinCycles(t *testing.T) {
	f := all(3)
	st := NewState(ones(3), nil, 1)
	var got []int
	for k := 0; k < 6; k++ {
		got = append(got, Pick(RoundRobin, st, f))
	}
	want := []int{0, 1, 2, 0, 1, 2}
	for k := range want {
		if got[k] != want[k] {
			t.Fatalf("round robin order %v, want %v", got, want)
		}
	}
	f[1].ok = false
	if a, b := Pick(RoundRobin, st, f), Pick(RoundRobin, st, f); a != 0 || b != 2 {
		t.Fatalf("round robin skipping key 1 gave %d, %d", a, b)
	}
}

func checkWeights(t *testing.T, weights []int, picks int) {
	t.Helper()
	n := len(weights)
	f := all(n)
	st := NewState(weights, nil, 1)
	count := make([]int, n)
	for k := 0; k < picks; k++ {
		count[Pick(Weighted, st, f)]++
	}
	total := 0
	for _, w := range weights {
		total += w
	}
	for i, w := range weights {
		want := float64(picks) * float64(w) / float64(total)
		if math.Abs(float64(count[i])-want) > 0.01*want+1 {
			t.Fatalf("key %d (weight %d): %d picks, want %.0f ±1%%", i, w, count[i], want)
		}
	}
}

func TestWeightedWithinOnePercent(t *testing.T) {
	checkWeights(t, []int{5, 1, 1}, 10000)
	checkWeights(t, []int{3, 7, 11, 2}, 10000)
	big := make([]int, 200)
	for i := range big {
		big[i] = 1 + i%5
	}
	checkWeights(t, big, 60000)
	// Weights too large for a precomputed cycle use the O(n) algorithm.
	checkWeights(t, []int{100000, 50001, 25003}, 10000)
}

func TestWeightedIsSmooth(t *testing.T) {
	f := all(3)
	st := NewState([]int{5, 1, 1}, nil, 1)
	var seq []int
	for k := 0; k < 7; k++ {
		seq = append(seq, Pick(Weighted, st, f))
	}
	// nginx's smooth sequence for 5,1,1 is a a b a c a a: never more than
	// two picks of the heavy key in a row... and the light keys interleaved.
	want := []int{0, 0, 1, 0, 2, 0, 0}
	for k := range want {
		if seq[k] != want[k] {
			t.Fatalf("sequence %v, want %v", seq, want)
		}
	}
}

func TestPriorityTiers(t *testing.T) {
	f := all(4)
	st := NewState(ones(4), []int{1, 0, 0, 2}, 1)
	seen := map[int]int{}
	for k := 0; k < 10; k++ {
		i := Pick(Priority, st, f)
		seen[i]++
		f[i].inFlight++
	}
	if seen[0] != 0 || seen[3] != 0 || seen[1] != 5 || seen[2] != 5 {
		t.Fatalf("priority picks %v: want only tier 0 (keys 1, 2), spread evenly", seen)
	}
	f[1].ok, f[2].ok = false, false
	if i := Pick(Priority, st, f); i != 0 {
		t.Fatalf("tier 0 exhausted: picked %d, want 0 (tier 1)", i)
	}
}

func TestRandomCoversAll(t *testing.T) {
	f := all(5)
	st := NewState(ones(5), nil, 3)
	count := make([]int, 5)
	for k := 0; k < 5000; k++ {
		count[Pick(Random, st, f)]++
	}
	for i, c := range count {
		if c < 800 || c > 1200 {
			t.Fatalf("key %d picked %d/5000 times, want ~1000", i, c)
		}
	}
}

func TestPickAmong(t *testing.T) {
	f := all(6)
	for _, s := range []Strategy{LeastLoaded, RoundRobin, Weighted, Priority, Random} {
		st := NewState(ones(6), nil, 1)
		for k := 0; k < 20; k++ {
			i := PickAmong(s, st, f, []int{2, 4})
			if i != 2 && i != 4 {
				t.Fatalf("%v: PickAmong picked %d outside {2,4}", s, i)
			}
		}
		f2 := all(6)
		f2[2].ok, f2[4].ok = false, false
		if i := PickAmong(s, st, f2, []int{2, 4}); i != -1 {
			t.Fatalf("%v: PickAmong picked %d with no capacity in subset", s, i)
		}
	}
}
