package caddymodule

import (
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"

	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// The metrics of a pool's shared state on Redis. The round trips and
// errors are counted as the store reports them; the mode and the
// instances alive are read from the live pools at scrape time, like the
// pool gauges (metrics.go). The op label is one of the store's fixed
// operation names (reserve, settle, heartbeat, …).
var (
	redisRoundTripSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: metricsNamespace,
		Name:      "redis_round_trip_seconds",
		Help:      "Calls to the pool's Redis by operation, failed ones included, as long as each took.",
		Buckets:   []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1},
	}, []string{"pool", "op"})
	redisErrorsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "redis_errors_total",
		Help:      "Calls to the pool's Redis that failed or timed out, by operation; the first one moves the pool to local-fallback.",
	}, []string{"pool", "op"})

	redisModeDesc = prometheus.NewDesc(metricsNamespace+"_redis_mode",
		"1 for where the pool's shared state lives now (local: no redis configured, shared: on Redis, local-fallback: Redis failed and this instance serves from its share of each limit), 0 for the others.",
		[]string{"pool", "mode"}, nil)
	instancesAliveDesc = prometheus.NewDesc(metricsNamespace+"_instances_alive",
		"Relay instances sharing the pool on Redis that sent a heartbeat lately, this one included; absent without redis.",
		[]string{"pool"}, nil)
)

var sharedModes = [...]keypool.SharedMode{keypool.SharedModeLocal, keypool.SharedModeShared, keypool.SharedModeLocalFallback}

// redisRoundTripObserver is a store's OnRoundTrip for pool: it feeds the
// histogram and counts errors (a missing key, Redis's nil, is an answer,
// not an error).
func redisRoundTripObserver(ctx caddy.Context, pool string) func(op string, d time.Duration, err error) {
	reg := ctx.GetMetricsRegistry()
	rt := registered(reg, redisRoundTripSeconds)
	errs := registered(reg, redisErrorsTotal)
	return func(op string, d time.Duration, err error) {
		rt.WithLabelValues(pool, op).Observe(d.Seconds())
		if err != nil && !rueidis.IsRedisNil(err) {
			errs.WithLabelValues(pool, op).Inc()
		}
	}
}

// redisCollector reports each live pool's mode and instances alive.
type redisCollector struct{}

// Describe sends the descriptors.
func (redisCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- redisModeDesc
	ch <- instancesAliveDesc
}

// Collect reads the live pools' stores now.
func (redisCollector) Collect(ch chan<- prometheus.Metric) {
	for _, name := range livePoolNames() {
		e, ok := lookupEntry(name)
		if !ok {
			continue
		}
		sh := sharedOf(e)
		for _, m := range sharedModes {
			v := 0.0
			if m == sh.Mode {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(redisModeDesc, prometheus.GaugeValue, v, name, m.String())
		}
		if e.store != nil {
			ch <- prometheus.MustNewConstMetric(instancesAliveDesc, prometheus.GaugeValue, float64(sh.InstancesAlive), name)
		}
	}
}

// sharedOf is the live entry's view of its shared state: mode local and no
// instance when the pool has no redis.
func sharedOf(e liveEntry) keypool.SharedView {
	if e.store == nil {
		return keypool.SharedView{Mode: keypool.SharedModeLocal}
	}
	return e.store.View()
}
