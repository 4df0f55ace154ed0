package main

import (
	"fmt"
	"log"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The closed-loop rounds at concurrency 32 saturate the machine, so their
// latency is mostly queueing (≈ 32 / throughput). The paced rounds keep 32
// workers (and connections) available but send at a fixed total rate below
// saturation — open loop: arrival i is due at start + i/rate whether or not
// earlier requests have finished, and a free worker takes it — so that the
// latency is that of a busy but unsaturated server.

// pacedLoop sends n requests at rate req/s with conc workers. one sends
// request i and returns its latency (from the moment it is sent). The
// round's lag is how late requests were sent against their schedule: it
// stays small while the client and the server keep up.
func pacedLoop(t *target, n, conc int, rate float64, one func(t *target, i int) (time.Duration, error)) *roundResult {
	due := make(chan int, n)
	lats := make([][]time.Duration, conc)
	lags := make([][]time.Duration, conc)
	var errs atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now().Add(2 * time.Millisecond)
	at := func(i int) time.Time { return start.Add(time.Duration(float64(i) * 1e9 / rate)) }
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			l := make([]time.Duration, 0, n/conc+1)
			g := make([]time.Duration, 0, n/conc+1)
			for i := range due {
				g = append(g, time.Since(at(i)))
				d, err := one(t, i)
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				l = append(l, d)
			}
			lats[w], lags[w] = l, g
		}(w)
	}
	for i := 0; i < n; i++ {
		if d := time.Until(at(i)); d > 0 {
			time.Sleep(d)
		}
		due <- i
	}
	close(due)
	wg.Wait()
	r := newRoundResult(t.name, n, int(errs.Load()), time.Since(start), lats, firstErr.Load())
	var all []time.Duration
	for _, g := range lags {
		all = append(all, g...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	if len(all) > 0 {
		r.lag99 = all[int(0.99*float64(len(all)-1))]
	}
	return r
}

// pacedStats is alternating paced A/B rounds of one load.
type pacedStats struct {
	*pairStats
	rate       float64   // req/s sent to each site during its rounds
	sat        float64   // site A's closed-loop throughput the rate derives from (0: set by -paced-rate)
	satFrom    string    // where sat comes from
	stream     bool      // latency is the time to the first SSE event
	lagA, lagB []float64 // µs, per pair
}

// pacedRates parses -paced-rate: empty (derive from -paced-frac), one rate
// for every load, or three (4 KB JSON, 200 KB JSON, 4 KB stream).
func pacedRates(s string) ([3]float64, error) {
	var r [3]float64
	if strings.TrimSpace(s) == "" {
		return r, nil
	}
	f := strings.Split(s, ",")
	if len(f) != 1 && len(f) != 3 {
		return r, fmt.Errorf("-paced-rate: want one rate or three (4 KB, 200 KB, stream), got %q", s)
	}
	for i := range r {
		v, err := strconv.ParseFloat(strings.TrimSpace(f[min(i, len(f)-1)]), 64)
		if err != nil || v <= 0 {
			return r, fmt.Errorf("-paced-rate: bad rate %q", f[min(i, len(f)-1)])
		}
		r[i] = v
	}
	return r, nil
}

// runPaced runs the paced rounds for one load: rate is fixed, or frac of
// sat (site A's closed-loop throughput for this load, measured in this run).
func runPaced(o *options, p *caddyProc, a, b *target, label string, stream bool, fixed, sat float64, satFrom string,
	one func(t *target, i int) (time.Duration, error)) *pacedStats {
	ps := &pacedStats{stream: stream, rate: fixed}
	if fixed <= 0 {
		ps.rate, ps.sat, ps.satFrom = o.pacedFrac*sat, sat, satFrom
	}
	n := max(50, int(ps.rate*o.pacedSec))
	log.Printf("paced rounds, %s: %.0f req/s, %d requests per round", label, ps.rate, n)
	ps.pairStats = alternate(o, p, a, b, "paced "+label, o.conc, n, func(t *target) *roundResult {
		return pacedLoop(t, n, o.conc, ps.rate, one)
	}, func(ra, rb *roundResult) string {
		ps.lagA, ps.lagB = append(ps.lagA, us(ra.lag99)), append(ps.lagB, us(rb.lag99))
		return fmt.Sprintf("A p50 %.0fµs p99 %.0fµs | B p50 %.0fµs p99 %.0fµs (send lag p99 %.0f/%.0fµs)",
			us(ra.pct(.5)), us(ra.pct(.99)), us(rb.pct(.5)), us(rb.pct(.99)), us(ra.lag99), us(rb.lag99))
	})
	ps.label = label
	return ps
}

// calibrate measures site A's closed-loop throughput when the phase that
// would have measured it did not run: the median of three short rounds.
func calibrate(run func() *roundResult) float64 {
	var v []float64
	for i := 0; i < 3; i++ {
		v = append(v, run().rps())
	}
	return median(v)
}
