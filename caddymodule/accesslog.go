package caddymodule

import (
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// setLogFields records the request in the access log's fields.
func (h *Handler) setLogFields(rq *relayedRequest, held *heldResponse, extra *caddyhttp.ExtraLogFields, attempts int) {
	if extra == nil {
		return
	}
	o := &rq.writer
	key := o.res.KeyName()
	if key == "" && held != nil {
		key = held.key // a refused retry: the answer replayed is held's
	}
	extra.Set(zap.String("cc_relay_key", key))
	extra.Set(zap.String("cc_relay_client", rq.client))
	extra.Set(zap.String("cc_relay_model", rq.model))
	extra.Set(zap.String("cc_relay_session", rq.session))
	extra.Set(zap.Int("cc_relay_attempts", attempts))
	extra.Set(zap.String("cc_relay_sticky", o.res.Sticky.String()))
	rq.cl.logCost(extra)
	if u := o.usage(); u.HaveInput || u.HaveOutput {
		extra.Set(zap.Int64("cc_relay_input_tokens", u.InputTokens))
		extra.Set(zap.Int64("cc_relay_output_tokens", u.OutputTokens))
		extra.Set(zap.Int64("cc_relay_cache_read_tokens", u.CacheReadInputTokens))
		extra.Set(zap.Int64("cc_relay_cache_creation_tokens", u.CacheCreationInputTokens))
	}
}
