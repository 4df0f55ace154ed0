package ccload

import (
	"math"
	"slices"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/mockanthropic"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// Pct is the p-th percentile (0-100) of d, nearest rank.
func Pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// ClassUse is what the upstream accepted for one model class.
type ClassUse struct {
	Accepted, Limited, Other int64
	Charged                  int64 // input + cache creation: what ITPM counts
	CacheRead, CacheCreate   int64
	Output                   int64
}

// UpstreamUse sums the mock's records of /v1/messages requests by model
// class, and returns the span from t0 to the last arrival.
func UpstreamUse(recs []mockanthropic.Record, t0 time.Time) (map[string]*ClassUse, time.Duration) {
	out := map[string]*ClassUse{}
	var last time.Time
	for _, r := range recs {
		if r.Path != "/v1/messages" {
			continue
		}
		c := keypool.ModelFamily(r.Model)
		u := out[c]
		if u == nil {
			u = &ClassUse{}
			out[c] = u
		}
		if r.Time.After(last) {
			last = r.Time
		}
		switch r.Status {
		case 200:
			u.Accepted++
			u.Charged += r.InputTokens + r.CacheCreationInputTokens
			u.CacheRead += r.CacheReadInputTokens
			u.CacheCreate += r.CacheCreationInputTokens
			u.Output += r.OutputTokens
		case 429:
			u.Limited++
		default:
			u.Other++
		}
	}
	return out, last.Sub(t0)
}

// Capacity is what organizations with per-minute limit lim can accept over
// d from full buckets: lim/60 * seconds + lim (the initial burst).
func Capacity(lim int64, d time.Duration) float64 {
	return float64(lim)/60*d.Seconds() + float64(lim)
}
