package caddymodule

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/cc-relay/caddy-cc-relay/internal/pricing"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// Per-client metrics. Their client label only takes the names of
// configured clients (a request of an unconfigured client, with client
// auth off, is not counted here), so the series are bounded by the
// configuration like the key series.
var (
	clientRequestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "client_requests_total",
		Help:      "Messages requests by client and outcome: ok, error (the upstream's answer was an error), not_served (the pool refused it or the client left), rate_limited (the client's own rpm/itpm/otpm/max_concurrent), budget_exhausted, model_forbidden.",
	}, []string{"pool", "client", "outcome"})
	clientTokensTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "client_tokens_total",
		Help:      "Tokens the upstream reported for a client's requests, by kind: input, output, cache_read, cache_creation.",
	}, []string{"pool", "client", "kind"})
	clientCostTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "client_cost_usd_total",
		Help:      "What a client's requests cost, in USD, at the prices in force when each was admitted.",
	}, []string{"pool", "client"})
	clientBudgetRemainingDesc = prometheus.NewDesc(metricsNamespace+"_client_budget_remaining_usd",
		"What is left of a client's budget this period (budget minus spend; requests in flight hold part of it); absent without a budget. Negative when the last request overran it.",
		[]string{"pool", "client"}, nil)
)

func init() {
	collectors = append(collectors, clientRequestsTotal, clientTokensTotal, clientCostTotal, clientCollector{})
}

// clientMetrics records one handler's per-client series. A nil
// *clientMetrics records nothing.
type clientMetrics struct {
	pool     string
	requests *prometheus.CounterVec
	byName   map[string]*clientSeries
}

type clientSeries struct {
	input, output, cacheRead, cacheCreation, cost prometheus.Counter
}

func provisionClientMetrics(ctx caddy.Context, pool string, clients []keypool.ClientConfig, logger *zap.Logger) *clientMetrics {
	reg := ctx.GetMetricsRegistry()
	registerCollectors(reg, logger)
	m := &clientMetrics{pool: pool, requests: registered(reg, clientRequestsTotal), byName: map[string]*clientSeries{}}
	tokens, cost := registered(reg, clientTokensTotal), registered(reg, clientCostTotal)
	for _, c := range clients {
		m.byName[c.Name] = &clientSeries{
			input:         tokens.WithLabelValues(pool, c.Name, "input"),
			output:        tokens.WithLabelValues(pool, c.Name, "output"),
			cacheRead:     tokens.WithLabelValues(pool, c.Name, "cache_read"),
			cacheCreation: tokens.WithLabelValues(pool, c.Name, "cache_creation"),
			cost:          cost.WithLabelValues(pool, c.Name),
		}
	}
	return m
}

// request counts a configured client's request by outcome.
func (m *clientMetrics) request(client, outcome string) {
	if m == nil || m.byName[client] == nil {
		return
	}
	m.requests.WithLabelValues(m.pool, client, outcome).Inc()
}

// spent counts a settled request's tokens and cost.
func (m *clientMetrics) spent(client string, u pricing.Usage, cost pricing.PicoUSD) {
	if m == nil {
		return
	}
	s := m.byName[client]
	if s == nil {
		return
	}
	s.input.Add(float64(u.InputTokens))
	s.output.Add(float64(u.OutputTokens))
	s.cacheRead.Add(float64(u.CacheReadInputTokens))
	s.cacheCreation.Add(float64(max(u.CacheCreationInputTokens, u.CacheCreation5m+u.CacheCreation1h)))
	if cost > 0 {
		s.cost.Add(cost.USD())
	}
}

// clientCollector reports the live pools' client budgets at scrape time.
type clientCollector struct{}

// Describe sends the descriptor.
func (clientCollector) Describe(ch chan<- *prometheus.Desc) { ch <- clientBudgetRemainingDesc }

// Collect reads each live pool's clients now.
func (clientCollector) Collect(ch chan<- prometheus.Metric) {
	for _, name := range livePoolNames() {
		cs := lookupClients(name)
		if cs == nil {
			continue
		}
		for _, c := range cs.clients.Snapshot() {
			if c.Spend.RemainingUSD == nil {
				continue
			}
			ch <- prometheus.MustNewConstMetric(clientBudgetRemainingDesc, prometheus.GaugeValue, *c.Spend.RemainingUSD, name, c.Name)
		}
	}
}
