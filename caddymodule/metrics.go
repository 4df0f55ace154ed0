package caddymodule

import (
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/cc-relay/caddy-cc-relay/internal/usage"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// metrics records the relay's Prometheus metrics. A nil *metrics records
// nothing.
type metrics struct{}

func provisionMetrics(ctx caddy.Context, h *Handler) *metrics { return nil }

func (m *metrics) request(pool, key, outcome string)           {}
func (m *metrics) tokens(pool, key string, u usage.Usage)      {}
func (m *metrics) sticky(pool string, s keypool.StickyOutcome) {}
func (m *metrics) waited(pool string, d time.Duration)         {}
func (m *metrics) retry(pool string)                           {}
func (m *metrics) shortCircuit(pool string)                    {}
func (m *metrics) cooldown(pool, key string)                   {}
func (m *metrics) disabled(pool, key string)                   {}
