package caddymodule

import (
	"fmt"
	"math"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/cc-relay/caddy-cc-relay/selector"
)

// Validate checks the configuration, provisioned or not (0 stands for a
// default everywhere it is allowed), and changes nothing. It is the only
// place the configuration's values are checked; the Caddyfile parser
// checks only what a line says, to name the line.
func (h *Handler) Validate() error {
	if len(h.Keys)+len(h.Bedrock)+len(h.Vertex) == 0 {
		return fmt.Errorf("no upstream keys configured: add at least one 'key', 'bedrock' or 'vertex'")
	}
	if err := h.validateProviders(); err != nil {
		return err
	}
	if err := h.validateKeyNames(); err != nil {
		return err
	}
	if h.Strategy != "" {
		if _, err := selector.Parse(h.Strategy); err != nil {
			return err
		}
	}
	if h.Redis != nil {
		if err := h.Redis.validate(); err != nil {
			return err
		}
	}
	if len(h.ClientTokens) == 0 && !h.DisableClientAuth {
		return fmt.Errorf("no client_token configured: add one, or 'client_auth off' (JSON: disable_client_auth) to let anyone use the relay")
	}
	for i, c := range h.ClientTokens {
		if c.Token == "" {
			return fmt.Errorf("client_token %d is empty", i+1)
		}
	}
	for i, k := range h.Keys {
		if k.Key == "" {
			return fmt.Errorf("key %d is empty", i+1)
		}
		for _, f := range []struct {
			name string
			v    int64
		}{{"rpm", k.RPM}, {"itpm", k.ITPM}, {"otpm", k.OTPM}, {"weight", int64(k.Weight)}, {"priority", int64(k.Priority)}} {
			if f.v < 0 || f.v > maxConfigInt {
				return fmt.Errorf("key %d (%s): %s must be between 0 and %d, got %d", i+1, describeKey(&k), f.name, int64(maxConfigInt), f.v)
			}
		}
		switch k.Auth {
		case "", "x-api-key", "bearer":
		default:
			return fmt.Errorf("key %d (%s): auth must be x-api-key or bearer, got %q", i+1, describeKey(&k), k.Auth)
		}
	}
	return h.validateNumbers()
}

// validateKeyNames refuses two keys (of any kind) with the same configured
// name; names derived from secrets are checked in Provision.
func (h *Handler) validateKeyNames() error {
	seen := map[string]bool{}
	add := func(name string) error {
		if name == "" {
			return nil
		}
		if seen[name] {
			return fmt.Errorf("duplicate key name %q", name)
		}
		seen[name] = true
		return nil
	}
	for _, k := range h.Keys {
		if err := add(k.Name); err != nil {
			return err
		}
	}
	for _, b := range h.Bedrock {
		if err := add(b.Name); err != nil {
			return err
		}
	}
	for _, v := range h.Vertex {
		if err := add(v.Name); err != nil {
			return err
		}
	}
	return nil
}

// Bounds of the configuration's numbers. They are checked in Validate, so
// a JSON config meets the same ones as a Caddyfile (whose parser checks
// only syntax and signs, to name the line). 0 means "the default" for
// every number but retries and priority.
const (
	maxConfigInt   = 1 << 40
	maxRetries     = 1000
	maxTokenRatio  = 1000
	maxConfigDelay = 365 * 24 * time.Hour
)

func (h *Handler) validateNumbers() error {
	if h.MaxBody < 0 || h.MaxBody > maxConfigInt {
		return fmt.Errorf("max_body must be between 1 and %d bytes, got %d", int64(maxConfigInt), h.MaxBody)
	}
	if h.StickyMaxSessions < 0 || h.StickyMaxSessions > maxConfigInt {
		return fmt.Errorf("sticky_max_sessions must be between 1 and %d, got %d", int64(maxConfigInt), h.StickyMaxSessions)
	}
	if h.Retries != nil && (*h.Retries < 0 || *h.Retries > maxRetries) {
		return fmt.Errorf("retries must be between 0 and %d, got %d", maxRetries, *h.Retries)
	}
	if r := h.TokenEstimateRatio; r < 0 || r >= maxTokenRatio || math.IsNaN(r) {
		return fmt.Errorf("token_estimate_ratio must be a positive number of bytes per token below %d, got %v", maxTokenRatio, r)
	}
	for _, d := range []struct {
		name string
		v    caddy.Duration
		off  bool // a negative value means "off"
	}{
		{"max_wait", h.MaxWait, false}, {"sticky_ttl", h.StickyTTL, false},
		{"default_cooldown", h.DefaultCooldown, false}, {"spend_cap_park", h.SpendCapPark, false},
		{"read_body_timeout", h.ReadBodyTimeout, true},
	} {
		if d.v < 0 && !d.off || time.Duration(d.v) > maxConfigDelay {
			return fmt.Errorf("%s must be between 0 and %v, got %v", d.name, maxConfigDelay, time.Duration(d.v))
		}
	}
	return h.validateClients()
}
