package caddymodule

import (
	"errors"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/cc-relay/caddy-cc-relay/internal/usage"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// The relay's Prometheus metrics, exposed with Caddy's own at the admin
// endpoint's /metrics (and by the metrics handler, if configured).
//
// Caddy gives every configuration a fresh registry, so the collectors are
// package-level and registered into each registry: counters and histograms
// keep counting across reloads. Gauges of pool state are not stored at all:
// poolCollector reads them from the live pools at scrape time, so a key
// removed by a reload leaves no stale series behind. Labels are bounded by
// the configuration (pool and key names, model classes) or by small fixed
// sets (outcomes, token kinds, budgets).
const metricsNamespace = "caddy_cc_relay"

var (
	requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "requests_total",
		Help:      "Attempts sent upstream by key and outcome, and requests the relay answered itself (key \"\"): unauthorized, bad_request, rate_limited, no_keys, client_gone, client_limited (a client's own limit or budget), client_forbidden (a model the client may not use).",
	}, []string{"pool", "key", "outcome"})
	tokensTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "tokens_total",
		Help:      "Tokens the upstream reported as used, by kind: input, output, cache_read, cache_creation.",
	}, []string{"pool", "key", "kind"})
	cooldownsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "cooldowns_total",
		Help:      "Upstream 429 answers that cooled a key's organization down.",
	}, []string{"pool", "key"})
	disablesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "disables_total",
		Help:      "Upstream 401/403 answers that disabled a key.",
	}, []string{"pool", "key"})
	shortCircuitsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "short_circuits_total",
		Help:      "Requests answered 429 by the relay without contacting the upstream, because no key had capacity.",
	}, []string{"pool"})
	retriesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "retries_total",
		Help:      "Attempts retried on another key after the upstream refused one.",
	}, []string{"pool"})
	stickyTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "sticky_total",
		Help:      "Session affinity outcomes: new (first request of a session), hit (stayed on its key), scope (moved within its cache scope), moved (left its cache scope).",
	}, []string{"pool", "outcome"})
	waitSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: metricsNamespace,
		Name:      "wait_seconds",
		Help:      "Time requests waited for a key with capacity (max_wait).",
		Buckets:   []float64{0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"pool"})

	collectors = []prometheus.Collector{
		requestsTotal, tokensTotal, cooldownsTotal, disablesTotal,
		shortCircuitsTotal, retriesTotal, stickyTotal, waitSeconds, poolCollector{},
		redisRoundTripSeconds, redisErrorsTotal, redisCollector{}, // redis_metrics.go
	}
)

// metrics records the relay's Prometheus metrics. A nil *metrics records
// nothing.
type metrics struct {
	requestsVec      *prometheus.CounterVec
	tokensVec        *prometheus.CounterVec
	cooldownsVec     *prometheus.CounterVec
	disablesVec      *prometheus.CounterVec
	shortCircuitsVec *prometheus.CounterVec
	retriesVec       *prometheus.CounterVec
	stickyVec        *prometheus.CounterVec
	waitVec          *prometheus.HistogramVec

	// The series every request touches, resolved once: a label lookup
	// hashes the values and takes the vector's lock, several times per
	// request otherwise.
	pool         string
	keys         []keySeries // by key index
	stickySeries [len(stickyOutcomes)]prometheus.Counter
	wait         prometheus.Observer
}

// keySeries are one key's per-request series.
type keySeries struct {
	ok                                      prometheus.Counter
	input, output, cacheRead, cacheCreation prometheus.Counter
}

var stickyOutcomes = [...]keypool.StickyOutcome{keypool.StickyNone, keypool.StickyNew, keypool.StickyHit, keypool.StickyScope, keypool.StickyMoved}

// provisionMetrics registers the collectors into the configuration's
// registry. Metrics never fail a configuration: a registry that refuses
// them only costs the metrics, which is logged.
func provisionMetrics(ctx caddy.Context, h *Handler) *metrics {
	reg := ctx.GetMetricsRegistry()
	registerCollectors(reg, h.logger)
	m := &metrics{
		requestsVec:      registered(reg, requestsTotal),
		tokensVec:        registered(reg, tokensTotal),
		cooldownsVec:     registered(reg, cooldownsTotal),
		disablesVec:      registered(reg, disablesTotal),
		shortCircuitsVec: registered(reg, shortCircuitsTotal),
		retriesVec:       registered(reg, retriesTotal),
		stickyVec:        registered(reg, stickyTotal),
		waitVec:          registered(reg, waitSeconds),
		pool:             h.poolName,
	}
	// Every key of the pool, Bedrock and Vertex keys included.
	m.keys = make([]keySeries, h.pool.Len())
	for i := range m.keys {
		name := h.pool.Name(i)
		m.keys[i] = keySeries{
			ok:            m.requestsVec.WithLabelValues(m.pool, name, "ok"),
			input:         m.tokensVec.WithLabelValues(m.pool, name, "input"),
			output:        m.tokensVec.WithLabelValues(m.pool, name, "output"),
			cacheRead:     m.tokensVec.WithLabelValues(m.pool, name, "cache_read"),
			cacheCreation: m.tokensVec.WithLabelValues(m.pool, name, "cache_creation"),
		}
	}
	// StickyNone is never counted: its series stays nil.
	for _, so := range stickyOutcomes[1:] {
		m.stickySeries[so] = m.stickyVec.WithLabelValues(m.pool, so.String())
	}
	m.wait = m.waitVec.WithLabelValues(m.pool)
	return m
}

// registerCollectors registers every collector into reg. Several handlers
// (and the admin router) provision into one registry, so
// AlreadyRegisteredError is expected, not an error.
func registerCollectors(reg *prometheus.Registry, logger *zap.Logger) {
	if reg == nil {
		return
	}
	for _, c := range collectors {
		err := reg.Register(c)
		var are prometheus.AlreadyRegisteredError
		if err == nil || errors.As(err, &are) {
			continue
		}
		if logger != nil {
			logger.Error("registering metrics", zap.Error(err))
		}
	}
}

// registered returns the collector reg exposes for c's metric: c itself,
// or an equal one registered earlier (by another copy of this module),
// whose series must then be the ones that count.
func registered[T prometheus.Collector](reg *prometheus.Registry, c T) T {
	if reg == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if err := reg.Register(c); errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(T); ok {
			return existing
		}
	}
	return c
}

// answered counts a request the relay answered itself (key "").
func (m *metrics) answered(outcome string) {
	if m == nil {
		return
	}
	m.requestsVec.WithLabelValues(m.pool, "", outcome).Inc()
}

// attempt counts an attempt on the key at index idx, whose name is key.
func (m *metrics) attempt(idx int, key, outcome string) {
	if m == nil {
		return
	}
	if outcome == "ok" && key != "" && idx >= 0 && idx < len(m.keys) {
		m.keys[idx].ok.Inc()
		return
	}
	m.requestsVec.WithLabelValues(m.pool, key, outcome).Inc()
}

// tokens counts the usage of an attempt on the key at index idx, named
// key ("" when no key was reserved).
func (m *metrics) tokens(idx int, key string, u usage.Usage) {
	if m == nil || key == "" || idx < 0 || idx >= len(m.keys) {
		return
	}
	k := &m.keys[idx]
	if u.HaveInput {
		k.input.Add(float64(max(u.InputTokens, 0)))
		k.cacheRead.Add(float64(max(u.CacheReadInputTokens, 0)))
		k.cacheCreation.Add(float64(max(u.CacheCreationInputTokens, 0)))
	}
	if u.HaveOutput {
		k.output.Add(float64(max(u.OutputTokens, 0)))
	}
}

func (m *metrics) sticky(s keypool.StickyOutcome) {
	if m == nil || int(s) >= len(m.stickySeries) || m.stickySeries[s] == nil {
		return
	}
	m.stickySeries[s].Inc()
}

func (m *metrics) waited(d time.Duration) {
	if m == nil {
		return
	}
	m.wait.Observe(max(d, 0).Seconds())
}

func (m *metrics) retry() {
	if m == nil {
		return
	}
	m.retriesVec.WithLabelValues(m.pool).Inc()
}

func (m *metrics) shortCircuit() {
	if m == nil {
		return
	}
	m.shortCircuitsVec.WithLabelValues(m.pool).Inc()
}

func (m *metrics) cooldown(key string) {
	if m == nil {
		return
	}
	m.cooldownsVec.WithLabelValues(m.pool, key).Inc()
}

func (m *metrics) disabled(key string) {
	if m == nil {
		return
	}
	m.disablesVec.WithLabelValues(m.pool, key).Inc()
}

// poolCollector reports the state of the live pools at scrape time.
type poolCollector struct{}

var (
	remainingDesc = prometheus.NewDesc(metricsNamespace+"_remaining",
		"What is left now of a key's organization's per-minute budget (requests, input_tokens, output_tokens) for a model class; absent while no limit is known.",
		[]string{"pool", "key", "class", "budget"}, nil)
	limitDesc = prometheus.NewDesc(metricsNamespace+"_limit",
		"The per-minute limit in force: the configured one, else the one the upstream's headers reported; absent while none is known.",
		[]string{"pool", "key", "class", "budget"}, nil)
	inFlightDesc = prometheus.NewDesc(metricsNamespace+"_in_flight",
		"Attempts in flight on a key.",
		[]string{"pool", "key"}, nil)
	keyStateDesc = prometheus.NewDesc(metricsNamespace+"_key_state",
		"1 for a key's current state (ok, cooling, parked, disabled), 0 for the others.",
		[]string{"pool", "key", "state"}, nil)
	stickySessionsDesc = prometheus.NewDesc(metricsNamespace+"_sticky_sessions",
		"Sessions pinned to a key.",
		[]string{"pool", "key"}, nil)
	waitingDesc = prometheus.NewDesc(metricsNamespace+"_waiting",
		"Requests waiting for capacity.",
		[]string{"pool"}, nil)
)

var keyStates = [...]string{"ok", "cooling", "parked", "disabled"}

// Describe sends the descriptors; describing them (rather than leaving the
// collector unchecked) lets a registry reject a second registration.
func (poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{remainingDesc, limitDesc, inFlightDesc, keyStateDesc, stickySessionsDesc, waitingDesc} {
		ch <- d
	}
}

// Collect snapshots each live pool. It reads the pool registered under each
// name now, not one captured at provisioning, so a scrape after a reload
// sees the new configuration's keys.
func (poolCollector) Collect(ch chan<- prometheus.Metric) {
	for _, name := range livePoolNames() {
		p := lookupPool(name)
		if p == nil {
			continue
		}
		s := p.Snapshot()
		ch <- prometheus.MustNewConstMetric(waitingDesc, prometheus.GaugeValue, float64(s.Waiting), name)
		for _, k := range s.Keys {
			ch <- prometheus.MustNewConstMetric(inFlightDesc, prometheus.GaugeValue, float64(k.InFlight), name, k.Name)
			ch <- prometheus.MustNewConstMetric(stickySessionsDesc, prometheus.GaugeValue, float64(k.Sticky), name, k.Name)
			for _, st := range keyStates {
				v := 0.0
				if k.State == st {
					v = 1
				}
				ch <- prometheus.MustNewConstMetric(keyStateDesc, prometheus.GaugeValue, v, name, k.Name, st)
			}
			for _, b := range k.Budgets {
				for _, x := range []struct {
					budget string
					bs     keypool.BucketSnapshot
				}{{"requests", b.Requests}, {"input_tokens", b.InputTokens}, {"output_tokens", b.OutputTokens}} {
					limit := x.bs.Configured
					if limit == 0 {
						limit = x.bs.Learned
					}
					if limit <= 0 {
						continue // nothing known: no budget to report
					}
					ch <- prometheus.MustNewConstMetric(limitDesc, prometheus.GaugeValue, float64(limit), name, k.Name, b.Class, x.budget)
					// Remaining goes negative when usage overran the
					// estimate: that debt is worth seeing.
					ch <- prometheus.MustNewConstMetric(remainingDesc, prometheus.GaugeValue, float64(x.bs.Remaining), name, k.Name, b.Class, x.budget)
				}
			}
		}
	}
}
