package ccload

import (
	"bytes"
	"math"
	"slices"
	"strings"

	"github.com/cc-relay/caddy-cc-relay/internal/relaytest"
)

// PoolMetrics returns the relay's samples for pool from the Prometheus text
// of Caddy's admin /metrics, keyed by metric name (without the
// caddy_cc_relay_ prefix) and its labels other than pool, e.g.
// "sticky_total{outcome=hit}"; samples with the same key are summed.
func PoolMetrics(text []byte, pool string) (map[string]float64, error) {
	samples, err := relaytest.ParseMetrics(bytes.NewReader(text))
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, sm := range samples {
		name, ok := strings.CutPrefix(sm.Name, "caddy_cc_relay_")
		if !ok || sm.Labels["pool"] != pool {
			continue
		}
		var keep []string
		for k, v := range sm.Labels {
			if k != "pool" {
				keep = append(keep, k+"="+v)
			}
		}
		slices.Sort(keep)
		key := name
		if len(keep) > 0 {
			key += "{" + strings.Join(keep, ",") + "}"
		}
		out[key] += sm.Value
	}
	return out, nil
}

// CacheShare is cache_read / (input + cache_creation + cache_read) over
// every request the upstream accepted.
func CacheShare(use map[string]*ClassUse) float64 {
	var read, charged int64
	for _, u := range use {
		read += u.CacheRead
		charged += u.Charged
	}
	return float64(read) / math.Max(1, float64(read+charged))
}
