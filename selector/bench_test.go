package selector

import (
	"fmt"
	"testing"
)

// benchPool mimics the key pool's view: a load computed from a few floats per
// candidate, as the real pool does when it refills a budget on access.
type benchPool struct {
	level    []float64
	capacity []float64
	inFlight []int
}

func newBenchPool(n int) *benchPool {
	p := &benchPool{level: make([]float64, n), capacity: make([]float64, n), inFlight: make([]int, n)}
	for i := 0; i < n; i++ {
		p.capacity[i] = 1000
		p.level[i] = float64(100 + (i*37)%900)
	}
	return p
}

func (p *benchPool) Len() int { return len(p.level) }
func (p *benchPool) Load(i int) (bool, float64, int) {
	return p.level[i] >= 1, p.level[i] / p.capacity[i], p.inFlight[i]
}

func BenchmarkPick(b *testing.B) {
	for _, s := range []Strategy{LeastLoaded, RoundRobin, Weighted, Priority, Random} {
		for _, n := range []int{1, 3, 10, 100, 1000} {
			p := newBenchPool(n)
			w, prio := benchWeights(n)
			b.Run(fmt.Sprintf("%v/keys=%d", s, n), func(b *testing.B) {
				st := NewState(w, prio, 1)
				b.ReportAllocs()
				for b.Loop() {
					if Pick(s, st, p) < 0 {
						b.Fatal("no pick")
					}
				}
			})
		}
	}
}

// BenchmarkPickParallel runs picks on every core at once, each goroutine
// with its own State and view as separate pools would have: selection
// shares nothing, so it scales with cores.
func BenchmarkPickParallel(b *testing.B) {
	for _, s := range []Strategy{LeastLoaded, RoundRobin, Weighted, Priority, Random} {
		for _, n := range []int{3, 100, 1000} {
			w, prio := benchWeights(n)
			b.Run(fmt.Sprintf("%v/keys=%d", s, n), func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					p := newBenchPool(n)
					st := NewState(w, prio, 1)
					for pb.Next() {
						if Pick(s, st, p) < 0 {
							b.Error("no pick")
							return
						}
					}
				})
			})
		}
	}
}

// benchWeights gives n keys mixed weights (1-4) and three priority tiers.
func benchWeights(n int) (weights, priorities []int) {
	weights, priorities = make([]int, n), make([]int, n)
	for i := range weights {
		weights[i] = 1 + i%4
		priorities[i] = i % 3
	}
	return weights, priorities
}
