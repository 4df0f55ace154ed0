package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"reflect"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/cc-relay/caddy-cc-relay/internal/pricing"
	"github.com/cc-relay/caddy-cc-relay/internal/reqscan"
	"github.com/cc-relay/caddy-cc-relay/internal/usage"
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

// spendFlushDelay batches spend writes: the first unsaved change is written
// this long after it, with all the changes made meanwhile.
const spendFlushDelay = 10 * time.Second

// clientSet is a handler's view of its pool's clients.
type clientSet struct {
	state    *keypool.ClientState
	clients  *keypool.Clients
	store    keypool.SpendStore // nil: spend is kept in memory only
	budgeted map[string]bool
	logger   *zap.Logger
	metrics  *clientMetrics

	mu     sync.Mutex
	timer  *time.Timer // a flush is scheduled
	closed bool        // cleaned up: the state is released
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
	cs.mu.Unlock()
	if closed {
		return
	}
	if h.pool != nil {
		clientOf.CompareAndDelete(h.pool, cs)
	}
	cs.flush()
	if _, err := clientPools.Delete(h.poolName); err != nil && h.logger != nil {
		h.logger.Error("releasing client state", zap.Error(err))
	}
}

// flush writes changed spend to storage now.
func (cs *clientSet) flush() {
	if cs.store == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cs.clients.Flush(ctx, cs.store); err != nil && cs.logger != nil {
		cs.logger.Error("saving client spend to storage", zap.Error(err))
	}
}

// scheduleFlush makes sure changed spend is written within
// spendFlushDelay, in one batch.
func (cs *clientSet) scheduleFlush() {
	if cs.store == nil {
		return
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.timer != nil || cs.closed {
		// A configuration cleaned up leaves the saving to its successor,
		// which shares the state (or to its own final flush).
		return
	}
	cs.timer = time.AfterFunc(spendFlushDelay, func() {
		cs.mu.Lock()
		cs.timer = nil
		cs.mu.Unlock()
		cs.flush()
	})
}

// storageOf is the configuration's storage, nil when the context has no
// configuration (a handler provisioned outside a running Caddy, in tests).
func storageOf(ctx caddy.Context) (s spendStorage) {
	defer func() {
		if recover() != nil {
			s = nil
		}
	}()
	st := ctx.Storage()
	if st == nil {
		return nil
	}
	return st
}

// spendStorage is the part of certmagic.Storage the spend store uses.
type spendStorage interface {
	Load(ctx context.Context, key string) ([]byte, error)
	Store(ctx context.Context, key string, value []byte) error
}

// storageSpend keeps each client's spend under
// cc_relay/spend/<pool>/<client>.json in Caddy's storage.
type storageSpend struct {
	s    spendStorage
	pool string
}

func (s *storageSpend) key(client string) string {
	return path.Join("cc_relay", "spend", url.PathEscape(s.pool), url.PathEscape(client)+".json")
}

func (s *storageSpend) Load(ctx context.Context, client string) (keypool.SpendRecord, bool, error) {
	var rec keypool.SpendRecord
	b, err := s.s.Load(ctx, s.key(client))
	if errors.Is(err, fs.ErrNotExist) {
		return rec, false, nil
	}
	if err != nil {
		return rec, false, fmt.Errorf("client %q: %v", client, err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, false, fmt.Errorf("client %q: stored spend: %v", client, err)
	}
	return rec, rec.Client == client, nil
}

func (s *storageSpend) Save(ctx context.Context, rec keypool.SpendRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := s.s.Store(ctx, s.key(rec.Client), b); err != nil {
		return fmt.Errorf("client %q: %v", rec.Client, err)
	}
	return nil
}

// clientExchange is one request's dealings with its client's limits.
type clientExchange struct {
	res    keypool.ClientReservation
	cs     *clientSet
	client string
	// final: an answer went to the client and the reservation is settled.
	final bool
	// length and written track an answer of known length (-1: unknown),
	// see writing.
	length, written int64
}

// admitClient checks the request against its client's own limits before
// the pool is touched. A refused request is answered here (429 naming the
// client's limit, or 403 for a model it may not use) and nothing reaches
// the pool or the upstream; it reports false then.
func (h *Handler) admitClient(w http.ResponseWriter, ce *clientExchange, client string, metered bool, info *reqscan.Info, body []byte) bool {
	cs := h.clientSet
	if cs == nil || !metered {
		// Other endpoints (count_tokens, models) cost nothing and are not
		// counted against a client.
		return true
	}
	ce.cs, ce.client = cs, client
	req := keypool.ClientRequest{Client: client, Model: info.Model, Bytes: len(body), MaxTokens: info.MaxTokens}
	if cs.budgeted[client] {
		// 1-hour cache writes cost more than any other prompt token; the
		// worst case counts them only when the request asks for them.
		req.OneHourCache = bytes.Contains(body, []byte(`"1h"`))
	}
	err := cs.clients.Admit(&req, &ce.res)
	if err == nil {
		return true
	}
	var me *keypool.ModelNotAllowedError
	if errors.As(err, &me) {
		cs.metrics.request(client, "model_forbidden")
		h.metrics.answered("client_forbidden")
		writeError(w, http.StatusForbidden, "permission_error", me.Error(), 0)
		return false
	}
	var le *keypool.ClientLimitError
	if errors.As(err, &le) {
		outcome := "rate_limited"
		if le.Limit == "budget" {
			outcome = "budget_exhausted"
		}
		cs.metrics.request(client, outcome)
		h.metrics.answered("client_limited")
		writeError(w, http.StatusTooManyRequests, "rate_limit_error", le.Error(), retryAfterSeconds(le.RetryAfter))
		return false
	}
	h.metrics.answered("client_limited")
	writeError(w, http.StatusTooManyRequests, "rate_limit_error", err.Error(), 1)
	return false
}

// attempt records an attempt's usage; an attempt whose answer goes to the
// client (not held back for a retry) ends the client's reservation before
// the answer is flushed, so that the client's next request sees it ended.
// status is 0 when the upstream did not answer.
func (ce *clientExchange) attempt(status int, held bool, u usage.Usage) {
	if ce == nil || ce.cs == nil || ce.final {
		return
	}
	ce.res.Add(toPricing(u), u.HaveInput, status != 0)
	if !held {
		outcome := "ok"
		if status < 200 || status >= 300 || u.ErrorType != "" {
			outcome = "error"
		}
		ce.settle(outcome)
	}
}

// writing is called before each chunk of an answer goes to the client.
// An answer with a Content-Length is complete for the client as soon as
// its last byte arrives, possibly before the handler returns: the
// reservation ends before that byte is written, so that the client's next
// request (max_concurrent 1, one after the other) finds it ended. The
// body has been read for usage by then. A stream has no length: the client
// sees it end only when the handler returns, after settle.
func (ce *clientExchange) writing(o *attemptWriter, n int) {
	if ce == nil || ce.cs == nil || ce.final {
		return
	}
	if ce.length == 0 {
		ce.length = -1
		// No length is the usual case for a stream: not parsed, since a
		// failed parse allocates its error.
		if cl := o.w.Header().Get("Content-Length"); cl != "" {
			if v, err := strconv.ParseInt(cl, 10, 64); err == nil && v > 0 {
				ce.length = v
			}
		}
	}
	ce.written += int64(n)
	if ce.length > 0 && ce.written >= ce.length {
		ce.attempt(o.status, false, o.usage())
	}
}

// settle ends the client's reservation once: the request is priced and
// charged to the client, and counted in its metrics.
func (ce *clientExchange) settle(outcome string) {
	if ce == nil || ce.cs == nil || ce.final {
		return
	}
	ce.final = true
	ce.res.Settle()
	if ce.res.Client() == "" {
		return // not a configured client: priced for the log only
	}
	cs := ce.cs
	cs.metrics.request(ce.client, outcome)
	cs.metrics.spent(ce.client, ce.res.Usage(), ce.res.Cost())
	if ce.res.Cost() != 0 {
		cs.scheduleFlush()
	}
}

// done ends a reservation no answer of the upstream's ended: the pool
// refused the request, a held-back answer was replayed, or the client
// left.
func (ce *clientExchange) done() { ce.settle("not_served") }

// costUSD is the request's cost in dollars, once known.
func (ce *clientExchange) costUSD() (float64, bool) {
	if ce == nil || ce.cs == nil || !ce.final || !ce.res.Priced() {
		return 0, false
	}
	return ce.res.Cost().USD(), true
}

// logCost adds the request's cost to the access log.
func (ce *clientExchange) logCost(extra *caddyhttp.ExtraLogFields) {
	if v, ok := ce.costUSD(); ok && extra != nil {
		extra.Set(zap.Float64("cc_relay_cost_usd", v))
	}
}

// toPricing is the usage a response reported, as pricing counts it.
func toPricing(u usage.Usage) pricing.Usage {
	return pricing.Usage{
		InputTokens:              u.InputTokens,
		OutputTokens:             u.OutputTokens,
		CacheCreationInputTokens: u.CacheCreationInputTokens,
		CacheReadInputTokens:     u.CacheReadInputTokens,
		// The lifetime breakdown (cache_creation.ephemeral_5m/1h_input_tokens);
		// without it every write is priced at the 5-minute rate.
		CacheCreation5m: u.CacheCreation.Ephemeral5mInputTokens,
		CacheCreation1h: u.CacheCreation.Ephemeral1hInputTokens,
	}
}
