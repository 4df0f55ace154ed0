package main

import (
	"math"
	"slices"
	"sort"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/mockanthropic"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// classUse is what the upstream accepted for one model class.
type classUse struct {
	accepted, limited, other int64
	charged                  int64 // input + cache creation: what ITPM counts
	cacheRead, cacheCreate   int64
	output                   int64
}

// upstreamUse sums the mock's records of /v1/messages requests by model
// class, and returns the span from t0 to the last arrival.
func upstreamUse(recs []mockanthropic.Record, t0 time.Time) (map[string]*classUse, time.Duration) {
	out := map[string]*classUse{}
	var last time.Time
	for _, r := range recs {
		if r.Path != "/v1/messages" {
			continue
		}
		c := keypool.ModelFamily(r.Model)
		u := out[c]
		if u == nil {
			u = &classUse{}
			out[c] = u
		}
		if r.Time.After(last) {
			last = r.Time
		}
		switch r.Status {
		case 200:
			u.accepted++
			u.charged += r.InputTokens + r.CacheCreationInputTokens
			u.cacheRead += r.CacheReadInputTokens
			u.cacheCreate += r.CacheCreationInputTokens
			u.output += r.OutputTokens
		case 429:
			u.limited++
		default:
			u.other++
		}
	}
	return out, last.Sub(t0)
}

// capacity is what organizations with per-minute limit lim can accept over
// d from full buckets: lim/60 * seconds + lim (the initial burst).
func capacity(lim int64, d time.Duration) float64 {
	return float64(lim)/60*d.Seconds() + float64(lim)
}

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

func estErrors(results []*result) map[string]estReport {
	sorted := slices.Clone(results)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].done.Before(sorted[j].done) })
	type state struct {
		n                   int64
		perByte, chargeable float64
		sumF, sumC, sumCh   float64
		nF, nC              int
	}
	st := map[string]*state{}
	for _, r := range sorted {
		if !r.ok() || !r.usage.HaveInput || r.bytes == 0 {
			continue
		}
		u := r.usage
		total := float64(u.InputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens)
		charge := float64(u.InputTokens + u.CacheCreationInputTokens)
		if total <= 0 {
			continue
		}
		s := st[r.class]
		if s == nil {
			s = &state{}
			st[r.class] = s
		}
		b := float64(r.bytes)
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
