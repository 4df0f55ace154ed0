package caddymodule

import (
	"encoding/json"
	"fmt"
	"path"
	"reflect"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/cc-relay/caddy-cc-relay/internal/pricing"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// ClientBudget caps a client's spend per calendar period.
type ClientBudget struct {
	// USD is the most the client may spend per period, in dollars (a
	// decimal number with up to twelve digits after the point).
	USD json.Number `json:"usd"`
	// Period is day, week (from Monday) or month, in UTC.
	Period string `json:"period"`
}

// Price overrides the built-in price of the models it matches.
type Price struct {
	// Model is a path.Match pattern of model names ("claude-sonnet-4-*").
	Model string `json:"model"`
	// Input is USD per million input tokens.
	Input json.Number `json:"input"`
	// Output is USD per million output tokens.
	Output json.Number `json:"output"`
	// CacheWrite5m is USD per million cache-write tokens of the 5-minute
	// lifetime. Default: 1.25 × Input.
	CacheWrite5m json.Number `json:"cache_write_5m,omitempty"`
	// CacheWrite1h is USD per million cache-write tokens of the 1-hour
	// lifetime. Default: 2 × Input.
	CacheWrite1h json.Number `json:"cache_write_1h,omitempty"`
	// CacheRead is USD per million cache-read tokens. Default: 0.1 × Input.
	CacheRead json.Number `json:"cache_read,omitempty"`
}

// clientPools holds one keypool.ClientState per pool name across config
// reloads, beside pools.
var clientPools = caddy.NewUsagePool()

// clientSet is a handler's view of its pool's clients.
type clientSet struct {
	state    *keypool.ClientState
	clients  *keypool.Clients
	store    keypool.SpendStore // nil: spend is kept in memory only
	budgeted map[string]bool
	logger   *zap.Logger
	metrics  *clientMetrics

	mu     sync.Mutex
	timer  *time.Timer   // a flush is scheduled
	closed bool          // cleaned up: the state is released
	share  chan struct{} // closed to stop the shared-spend exchanges
}

// clientOf maps a live pool to its handler's clients, for the admin API
// and the scrape-time metrics.
var clientOf sync.Map // *keypool.Pool → *clientSet

// lookupClients returns the clients of the live pool of name, nil if none.
func lookupClients(name string) *clientSet {
	p := lookupPool(name)
	if p == nil {
		return nil
	}
	v, _ := clientOf.Load(p)
	cs, _ := v.(*clientSet)
	return cs
}

// validateClients checks the per-client settings and the price lines.
func (h *Handler) validateClients() error {
	for i, c := range h.ClientTokens {
		what := fmt.Sprintf("client_token %d", i+1)
		if c.Name != "" {
			what += fmt.Sprintf(" (%s)", c.Name)
		}
		if c.RPM < 0 || c.ITPM < 0 || c.OTPM < 0 || c.MaxConcurrent < 0 || c.Weight < 0 {
			return fmt.Errorf("%s: rpm, itpm, otpm, max_concurrent and weight must not be negative", what)
		}
		if _, _, err := clientBudget(c.Budget); err != nil {
			return fmt.Errorf("%s: %v", what, err)
		}
		for _, m := range c.Models {
			if _, err := path.Match(m, ""); err != nil || m == "" {
				return fmt.Errorf("%s: bad model pattern %q", what, m)
			}
		}
	}
	_, err := priceTable(h.Prices)
	return err
}

// clientBudget reads a budget; a nil one is none.
func clientBudget(b *ClientBudget) (pricing.PicoUSD, keypool.Period, error) {
	if b == nil {
		return 0, keypool.PeriodMonth, nil
	}
	usd, err := pricing.ParseUSD(b.USD.String())
	if err != nil {
		return 0, 0, fmt.Errorf("budget: %v", err)
	}
	if usd <= 0 {
		return 0, 0, fmt.Errorf("budget must be more than $0 (leave it out for no budget)")
	}
	p, err := keypool.ParsePeriod(b.Period)
	if err != nil {
		return 0, 0, err
	}
	return usd, p, nil
}

// priceTable builds the price table: the configured prices in front of
// the built-in ones.
func priceTable(prices []Price) (*pricing.Table, error) {
	var rules []pricing.Rule
	for i, p := range prices {
		if p.Model == "" {
			return nil, fmt.Errorf("price %d: no model pattern", i+1)
		}
		var r [5]pricing.Rate
		var have [5]bool
		for j, s := range []json.Number{p.Input, p.Output, p.CacheWrite5m, p.CacheWrite1h, p.CacheRead} {
			if s == "" {
				if j < 2 {
					return nil, fmt.Errorf("price %d (%s): input and output prices are required", i+1, p.Model)
				}
				continue
			}
			v, err := pricing.ParseRate(s.String())
			if err != nil {
				return nil, fmt.Errorf("price %d (%s): %v", i+1, p.Model, err)
			}
			r[j], have[j] = v, true
		}
		pr := pricing.Price{Input: r[0], Output: r[1], CacheWrite5m: r[2], CacheWrite1h: r[3], CacheRead: r[4]}
		rules = append(rules, pricing.Rule{Pattern: p.Model, Price: pr.WithDefaults(have[2], have[3], have[4])})
	}
	t, err := pricing.NewTable(rules)
	if err != nil {
		return nil, fmt.Errorf("price: %v", err)
	}
	return t, nil
}

// clientSettings are the per-client lines of a client_token, compared to
// make sure tokens sharing a name agree.
type clientSettings struct {
	rpm, itpm, otpm int64
	maxConcurrent   int
	weight          int
	budget          *ClientBudget
	models          []string
}

func settingsOf(c *ClientToken) clientSettings {
	return clientSettings{c.RPM, c.ITPM, c.OTPM, c.MaxConcurrent, c.Weight, c.Budget, c.Models}
}

// provisionClients builds the pool's clients from the client tokens (by
// name: tokens that share a name are one client and must agree on its
// settings), attaches the state that survives reloads and reads spend
// from Caddy's storage for clients not seen since the state was created.
func (h *Handler) provisionClients(ctx caddy.Context) error {
	prices, err := priceTable(h.Prices)
	if err != nil {
		return err
	}
	cfg := keypool.ClientsConfig{Prices: prices, TokenEstimateRatio: h.TokenEstimateRatio}
	first := map[string]int{}
	budgeted := map[string]bool{}
	for i := range h.ClientTokens {
		c := &h.ClientTokens[i]
		name := h.clients[i].name
		if j, dup := first[name]; dup {
			if !reflect.DeepEqual(settingsOf(c), settingsOf(&h.ClientTokens[j])) {
				return fmt.Errorf("client_token %d and %d are both client %q with different limits: tokens that share a name share one client", j+1, i+1, name)
			}
			continue
		}
		first[name] = i
		budget, period, err := clientBudget(c.Budget)
		if err != nil {
			return fmt.Errorf("client_token %d (%s): %v", i+1, name, err)
		}
		budgeted[name] = budget > 0
		cfg.Clients = append(cfg.Clients, keypool.ClientConfig{
			Name:          name,
			Limits:        keypool.Limits{RPM: c.RPM, ITPM: c.ITPM, OTPM: c.OTPM},
			MaxConcurrent: c.MaxConcurrent,
			Weight:        c.Weight,
			Budget:        budget,
			Period:        period,
			Models:        c.Models,
		})
	}
	val, _, err := clientPools.LoadOrNew(h.poolName, func() (caddy.Destructor, error) {
		return keypool.NewClientState(h.clk), nil
	})
	if err != nil {
		return err
	}
	cs := &clientSet{state: val.(*keypool.ClientState), budgeted: budgeted, logger: h.logger}
	h.clientSet = cs
	cs.clients, err = cs.state.NewClients(cfg)
	if err != nil {
		return fmt.Errorf("pool %q: %v", h.poolName, err)
	}
	if st := storageOf(ctx); st != nil {
		cs.store = &storageSpend{s: st, pool: h.poolName}
	}
	if err := cs.clients.Load(ctx, cs.store); err != nil {
		// Spend starts from what this process counts; the next
		// configuration tries again.
		h.logger.Error("reading client spend from storage", zap.String("pool", h.poolName), zap.Error(err))
	}
	cs.metrics = provisionClientMetrics(ctx, h.poolName, cfg.Clients, h.logger)
	clientOf.Store(h.pool, cs)
	return nil
}

// cleanupClients saves unsaved spend and releases the client state.
func (h *Handler) cleanupClients() {
	// h.clientSet stays set, like h.pool: the old configuration may still
	// be handed requests after its clean-up, and they keep their limits.
	cs := h.clientSet
	if cs == nil {
		return
	}
	cs.mu.Lock()
	closed := cs.closed
	cs.closed = true
	if cs.timer != nil {
		cs.timer.Stop()
		cs.timer = nil
	}
	if cs.share != nil {
		close(cs.share)
		cs.share = nil
	}
	cs.mu.Unlock()
	if closed {
		return
	}
	if h.pool != nil {
		clientOf.CompareAndDelete(h.pool, cs)
	}
	cs.exchangeSpend()
	cs.flush()
	if _, err := clientPools.Delete(h.poolName); err != nil && h.logger != nil {
		h.logger.Error("releasing client state", zap.Error(err))
	}
}
