package main

import (
	"fmt"
	"sort"
	"time"
)

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func minmax(v []float64) (float64, float64) {
	if len(v) == 0 {
		return 0, 0
	}
	lo, hi := v[0], v[0]
	for _, x := range v {
		lo, hi = min(lo, x), max(hi, x)
	}
	return lo, hi
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// pairStats summarises alternating A/B rounds: per-site medians and the
// median (and range) of the per-pair differences.
type pairStats struct {
	label                  string
	conc, n, pairs         int
	rpsA, rpsB, ratio      []float64
	p50A, p50B, p99A, p99B []float64 // µs
	d50, d99               []float64 // µs, B - A per pair
	cpuA, cpuB, dcpu       []float64 // µs of Caddy CPU per request
	allocA, allocB, dalloc []float64 // objects per request
	bytesA, bytesB, dbytes []float64 // bytes per request
	errorsA, errorsB       int
	firstErr               string
	other                  []float64 // cores used by other processes, the more of the pair's two rounds
	reruns                 int       // pairs run again because other processes were busy
	disturbed              int       // pairs kept although other processes were busy (re-runs used up)
}

func (s *pairStats) add(a, b *roundResult) {
	s.pairs++
	s.rpsA, s.rpsB = append(s.rpsA, a.rps()), append(s.rpsB, b.rps())
	s.ratio = append(s.ratio, b.rps()/a.rps())
	s.p50A, s.p50B = append(s.p50A, us(a.pct(0.5))), append(s.p50B, us(b.pct(0.5)))
	s.p99A, s.p99B = append(s.p99A, us(a.pct(0.99))), append(s.p99B, us(b.pct(0.99)))
	s.d50 = append(s.d50, us(b.pct(0.5))-us(a.pct(0.5)))
	s.d99 = append(s.d99, us(b.pct(0.99))-us(a.pct(0.99)))
	ca, cb := a.perReq(float64(a.cpuNS))/1000, b.perReq(float64(b.cpuNS))/1000
	s.cpuA, s.cpuB, s.dcpu = append(s.cpuA, ca), append(s.cpuB, cb), append(s.dcpu, cb-ca)
	ma, mb := a.perReq(float64(a.mallocs)), b.perReq(float64(b.mallocs))
	s.allocA, s.allocB, s.dalloc = append(s.allocA, ma), append(s.allocB, mb), append(s.dalloc, mb-ma)
	ba, bb := a.perReq(float64(a.allocB)), b.perReq(float64(b.allocB))
	s.bytesA, s.bytesB, s.dbytes = append(s.bytesA, ba), append(s.bytesB, bb), append(s.dbytes, bb-ba)
	s.errorsA += a.errors
	s.errorsB += b.errors
	if s.firstErr == "" {
		s.firstErr = a.firstErr + b.firstErr
	}
}

// rng formats the median and the range across pairs.
func rng(v []float64, format string) string {
	lo, hi := minmax(v)
	return fmt.Sprintf(format+" ["+format+" … "+format+"]", median(v), lo, hi)
}

// reran counts the pairs run again, and those kept although disturbed.
func (s *pairStats) reran() string {
	if s.disturbed > 0 {
		return fmt.Sprintf("%d (%d)", s.reruns, s.disturbed)
	}
	return fmt.Sprint(s.reruns)
}

// disturbedNote flags figures from pairs that other processes disturbed.
func (s *pairStats) disturbedNote() string {
	if s.disturbed == 0 {
		return ""
	}
	return fmt.Sprintf("; %d of %d pairs disturbed by other processes", s.disturbed, s.pairs)
}
