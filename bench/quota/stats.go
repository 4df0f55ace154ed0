package main

import (
	"math"
	"slices"
	"sort"
	"time"

	"github.com/cc-relay/caddy-cc-relay/bench/internal/ccload"
)

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// estErrors replays the relay's estimator rule (keypool/estimate.go) over
// the answered requests in the order they finished: tokens of a prompt are
// estimated from its body size, first with the fixed ratio of 4 bytes per
// token, then with the observed tokens per byte (an average of the first
// observations, then an exponential moving average with weight 0.05). It
// returns mean absolute relative errors of the prompt-token estimate with
// the fixed ratio and with calibration (after 10 observations per class),
// and of the chargeable-token estimate (input + cache creation) the
// calibrated estimator reserves.
type estReport struct {
	n                        int
	fixed, calibrated, charg float64
}

func estErrors(results []*ccload.Result) map[string]estReport {
	sorted := slices.Clone(results)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Done.Before(sorted[j].Done) })
	type state struct {
		n                   int64
		perByte, chargeable float64
		sumF, sumC, sumCh   float64
		nF, nC              int
	}
	st := map[string]*state{}
	for _, r := range sorted {
		if !r.OK() || !r.Usage.HaveInput || r.Bytes == 0 {
			continue
		}
		u := r.Usage
		total := float64(u.InputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens)
		charge := float64(u.InputTokens + u.CacheCreationInputTokens)
		if total <= 0 {
			continue
		}
		s := st[r.Class]
		if s == nil {
			s = &state{}
			st[r.Class] = s
		}
		b := float64(r.Bytes)
		s.sumF += math.Abs(b/4-total) / total
		s.nF++
		if s.n >= 10 {
			s.sumC += math.Abs(b*s.perByte-total) / total
			if charge > 0 {
				s.sumCh += math.Abs(b*s.perByte*s.chargeable-charge) / charge
			}
			s.nC++
		}
		a := math.Max(0.05, 1/float64(s.n+1))
		s.n++
		s.perByte += a * (total/b - s.perByte)
		s.chargeable += a * (charge/total - s.chargeable)
	}
	out := map[string]estReport{}
	for c, s := range st {
		e := estReport{n: s.nF, fixed: s.sumF / float64(max(s.nF, 1))}
		if s.nC > 0 {
			e.calibrated = s.sumC / float64(s.nC)
			e.charg = s.sumCh / float64(s.nC)
		} else {
			e.calibrated, e.charg = math.NaN(), math.NaN()
		}
		out[c] = e
	}
	return out
}
