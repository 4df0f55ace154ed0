package caddymodule

import (
	"bytes"
	"errors"
	"net/http"
	"strconv"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/cc-relay/caddy-cc-relay/internal/pricing"
	"github.com/cc-relay/caddy-cc-relay/internal/reqscan"
	"github.com/cc-relay/caddy-cc-relay/internal/usage"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

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
