// Package caddymodule is the Caddy HTTP handler http.handlers.cc_relay: it
// authenticates clients, picks an upstream API key from a keypool for each
// Anthropic Messages API request, sets it on the request and hands the
// request to the next handler (normally reverse_proxy), then learns from the
// response and settles the key's budget.
package caddymodule

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
	"github.com/cc-relay/caddy-cc-relay/keypool"
	"github.com/cc-relay/caddy-cc-relay/selector"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler relays Anthropic Messages API requests through a pool of upstream
// API keys, keeping every key's organization within its rate limits.
type Handler struct {
	// Pool names the state (budgets, learned limits, cooldowns, pinned
	// sessions) that survives config reloads. Handlers with the same pool
	// name share it. Default: "default".
	Pool string `json:"pool,omitempty"`

	// Strategy picks a key among those with capacity: least_loaded,
	// round_robin, weighted, priority or random. Default: least_loaded.
	Strategy string `json:"strategy,omitempty"`

	// ClientTokens are the credentials clients present as x-api-key or
	// Authorization: Bearer. At least one is required unless ClientAuth is
	// "off". Secrets may be {env.VAR} or {file./path} placeholders.
	ClientTokens []ClientToken `json:"client_tokens,omitempty"`

	// ClientAuth "off" lets any client use the relay. Default: on.
	ClientAuth string `json:"client_auth,omitempty"`

	// Keys are the upstream API keys. At least one key, bedrock or vertex
	// entry is required.
	Keys []Key `json:"keys,omitempty"`

	// MaxWait is how long a request may wait for capacity, in arrival
	// order, before the relay answers 429. Default: 0 (answer at once).
	MaxWait caddy.Duration `json:"max_wait,omitempty"`

	// MaxBody bounds the request body in bytes; larger requests get 413.
	// Default: 32 MiB, the upstream's own limit.
	MaxBody int64 `json:"max_body,omitempty"`

	// Retries is how many more keys a request may try after an upstream
	// 429, 401 or 403 that reached no client byte. Default: 2.
	Retries *int `json:"retries,omitempty"`

	// RetryOverloaded also retries 529 and 5xx answers on another key.
	// They never cost the key quota or a cooldown. Default: false.
	RetryOverloaded bool `json:"retry_overloaded,omitempty"`

	// StickyOff disables session affinity. By default a conversation stays
	// on the key that holds its prompt cache while that key's organization
	// can take it.
	StickyOff bool `json:"sticky_off,omitempty"`

	// StickyTTL is how long a pinned session is remembered after its last
	// request. Default: 1h.
	StickyTTL caddy.Duration `json:"sticky_ttl,omitempty"`

	// StickyMaxSessions bounds the pinned sessions; the least recently
	// used are forgotten first. Default: 100000.
	StickyMaxSessions int `json:"sticky_max_sessions,omitempty"`

	// TokenEstimateRatio is request-body bytes per input token assumed
	// until real usage has calibrated the estimator. Default: 4.
	TokenEstimateRatio float64 `json:"token_estimate_ratio,omitempty"`

	// ModelClasses map model names to budget classes, before the built-in
	// opus / sonnet / haiku families. First match wins.
	ModelClasses []ModelClass `json:"model_classes,omitempty"`

	// DefaultCooldown applies to an upstream 429 that names neither
	// retry-after nor a reset time. Default: 10s.
	DefaultCooldown caddy.Duration `json:"default_cooldown,omitempty"`

	// SpendCapPark is how long an organization that reached its spend cap
	// stays out of rotation when the upstream names no date. Default: 1h.
	SpendCapPark caddy.Duration `json:"spend_cap_park,omitempty"`

	// Bedrock are keys that reach Claude on Amazon Bedrock. Default: none.
	Bedrock []BedrockKey `json:"bedrock,omitempty"`

	// Vertex are keys that reach Claude on Google Vertex AI. Default: none.
	Vertex []VertexKey `json:"vertex,omitempty"`

	logger   *zap.Logger
	state    *keypool.State
	pool     *keypool.Pool
	secrets  []keySecret
	clients  []clientCred
	strategy selector.Strategy
	retries  int
	metrics  *metrics
	clk      clock.Clock
	poolName string
	// poolClosed makes Cleanup release the pool once, keeping h.pool.
	poolClosed bool
	// upstreams says how each key reaches its upstream; nil when every
	// key is a plain Anthropic key (see provider.go).
	upstreams       []upstream
	providerSecrets []string
	elig            *eligibility
}

// ClientToken is one client credential.
type ClientToken struct {
	// Token is the secret the client presents.
	Token string `json:"token"`
	// Name identifies the client in logs and placeholders. Default:
	// "client-" + the first 8 hex digits of the token's SHA-256.
	Name string `json:"name,omitempty"`
}

// Key is one upstream API key.
type Key struct {
	// Key is the upstream secret; {env.VAR} and {file./path} resolve at
	// provision time so the JSON config need not hold it.
	Key string `json:"key"`
	// Name labels the key in headers, logs, metrics and the admin API.
	// Default: "key-" + the first 8 hex digits of the secret's SHA-256.
	Name string `json:"name,omitempty"`
	// RPM, ITPM and OTPM are the organization's per-minute limits on
	// requests, input tokens and output tokens. 0 (default): learn them
	// from the upstream's anthropic-ratelimit-* headers.
	RPM  int64 `json:"rpm,omitempty"`
	ITPM int64 `json:"itpm,omitempty"`
	OTPM int64 `json:"otpm,omitempty"`
	// Weight is the key's share under the weighted strategy. Default: 1.
	Weight int `json:"weight,omitempty"`
	// Priority orders keys under the priority strategy; lower numbers are
	// used first. Default: 0.
	Priority int `json:"priority,omitempty"`
	// Org groups keys of one upstream organization: they share one budget.
	// Default: the key's own, until a response names its organization.
	Org string `json:"org,omitempty"`
	// Workspace is the prompt-cache scope a session may move within
	// before leaving its cache behind. Default: the organization.
	Workspace string `json:"workspace,omitempty"`
	// Auth is how the key is sent upstream: "x-api-key" (default) or
	// "bearer" (Authorization: Bearer).
	Auth string `json:"auth,omitempty"`
	// Upstream is the base URL of this key's Anthropic-compatible
	// endpoint; reverse_proxy reaches it through {http.cc_relay.upstream}.
	// Default: https://api.anthropic.com.
	Upstream string `json:"upstream,omitempty"`
}

// ModelClass maps model names matching Pattern (path.Match syntax, e.g.
// "claude-3-7-*") to the budget class Class.
type ModelClass struct {
	Pattern string `json:"pattern"`
	Class   string `json:"class"`
}

type keySecret struct {
	value  string
	bearer bool
	// provider: a Bedrock or Vertex key, whose credentials provider.go
	// puts on the request.
	provider bool
}

type clientCred struct {
	sum  [sha256.Size]byte
	name string
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.cc_relay",
		New: func() caddy.Module { return new(Handler) },
	}
}

// pools holds one keypool.State per pool name across config reloads.
var pools = caddy.NewUsagePool()

// newClock is the clock new pool states read; tests replace it.
var newClock = func() clock.Clock { return clock.Real{} }

const defaultMaxBody = 32 << 20

// Provision sets defaults, resolves secrets and attaches the pool state.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.Pool == "" {
		h.Pool = "default"
	}
	if h.Strategy == "" {
		h.Strategy = "least_loaded"
	}
	if h.MaxBody == 0 {
		h.MaxBody = defaultMaxBody
	}
	h.retries = 2
	if h.Retries != nil {
		h.retries = *h.Retries
	}
	if h.StickyTTL == 0 {
		h.StickyTTL = caddy.Duration(time.Hour)
	}
	if h.StickyMaxSessions == 0 {
		h.StickyMaxSessions = 100000
	}
	if h.TokenEstimateRatio == 0 {
		h.TokenEstimateRatio = keypool.DefaultTokenEstimateRatio
	}
	if err := h.validate(); err != nil {
		return err
	}
	h.strategy, _ = selector.Parse(h.Strategy)

	// Secrets resolve here, not at adapt time, so the JSON config can hold
	// {env.*} / {file.*} instead of the secret itself.
	repl := caddy.NewReplacer()
	names := map[string]int{}
	h.secrets = make([]keySecret, len(h.Keys))
	cfg := keypool.Config{
		Strategy:           h.strategy,
		Sticky:             !h.StickyOff,
		StickyTTL:          time.Duration(h.StickyTTL),
		StickyMaxSessions:  h.StickyMaxSessions,
		MaxWait:            time.Duration(h.MaxWait),
		TokenEstimateRatio: h.TokenEstimateRatio,
		DefaultCooldown:    time.Duration(h.DefaultCooldown),
		SpendCapPark:       time.Duration(h.SpendCapPark),
		Seed:               uint64(time.Now().UnixNano()),
	}
	for _, mc := range h.ModelClasses {
		cfg.ModelClasses = append(cfg.ModelClasses, keypool.ClassRule{Pattern: mc.Pattern, Class: mc.Class})
	}
	for i := range h.Keys {
		k := &h.Keys[i]
		secret, err := resolveSecret(repl, k.Key)
		if err != nil {
			return fmt.Errorf("key %d (%s): %v", i+1, describeKey(k), err)
		}
		if k.Name == "" {
			k.Name = "key-" + shortHash(secret)
		}
		if j, dup := names[k.Name]; dup {
			return fmt.Errorf("keys %d and %d have the same name %q (or the same secret)", j+1, i+1, k.Name)
		}
		names[k.Name] = i
		h.secrets[i] = keySecret{value: secret, bearer: k.Auth == "bearer"}
		cfg.Keys = append(cfg.Keys, keypool.KeyConfig{
			Name: k.Name, Org: k.Org, Workspace: k.Workspace,
			Limits: keypool.Limits{RPM: k.RPM, ITPM: k.ITPM, OTPM: k.OTPM},
			Weight: k.Weight, Priority: k.Priority,
		})
	}
	h.clk = newClock()
	if err := h.provisionProviders(repl, &cfg, names); err != nil {
		return err
	}
	for i, c := range h.ClientTokens {
		secret, err := resolveSecret(repl, c.Token)
		if err != nil {
			return fmt.Errorf("client_token %d: %v", i+1, err)
		}
		name := c.Name
		if name == "" {
			name = "client-" + shortHash(secret)
		}
		h.clients = append(h.clients, clientCred{sum: sha256.Sum256([]byte(secret)), name: name})
	}

	val, _, err := pools.LoadOrNew(h.Pool, func() (caddy.Destructor, error) {
		return keypool.NewState(h.clk), nil
	})
	if err != nil {
		return err
	}
	h.state = val.(*keypool.State)
	h.poolName = h.Pool
	h.pool, err = h.state.NewPool(cfg)
	if err != nil {
		return fmt.Errorf("pool %q: %v", h.Pool, err)
	}
	h.metrics = provisionMetrics(ctx, h)
	registerPool(h.Pool, h.pool)
	return nil
}

// redact replaces every upstream secret in s, which holds text an upstream
// sent back (a rejected key's reason may echo the key).
func (h *Handler) redact(s string) string {
	for _, sec := range h.secrets {
		if sec.value != "" {
			s = strings.ReplaceAll(s, sec.value, "[redacted]")
		}
	}
	for _, v := range h.providerSecrets {
		s = strings.ReplaceAll(s, v, "[redacted]")
	}
	return s
}

// Validate checks the configuration for errors.
func (h *Handler) Validate() error { return h.validate() }

func (h *Handler) validate() error {
	if len(h.Keys)+len(h.Bedrock)+len(h.Vertex) == 0 {
		return fmt.Errorf("no upstream keys configured: add at least one 'key', 'bedrock' or 'vertex'")
	}
	if err := h.validateProviders(); err != nil {
		return err
	}
	if h.Strategy != "" {
		if _, err := selector.Parse(h.Strategy); err != nil {
			return err
		}
	}
	switch h.ClientAuth {
	case "", "on":
		if len(h.ClientTokens) == 0 {
			return fmt.Errorf("no client_token configured: add one, or 'client_auth off' to let anyone use the relay")
		}
	case "off":
	default:
		return fmt.Errorf("client_auth must be 'off' or absent, got %q", h.ClientAuth)
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
		if k.RPM < 0 || k.ITPM < 0 || k.OTPM < 0 || k.Weight < 0 {
			return fmt.Errorf("key %d (%s): rpm, itpm, otpm and weight must not be negative", i+1, describeKey(&k))
		}
		switch k.Auth {
		case "", "x-api-key", "bearer":
		default:
			return fmt.Errorf("key %d (%s): auth must be x-api-key or bearer, got %q", i+1, describeKey(&k), k.Auth)
		}
	}
	if h.MaxBody < 0 || h.StickyMaxSessions < 0 || h.MaxWait < 0 || h.StickyTTL < 0 {
		return fmt.Errorf("max_body, max_wait, sticky ttl and sticky_max_sessions must not be negative")
	}
	if h.Retries != nil && *h.Retries < 0 {
		return fmt.Errorf("retries must not be negative")
	}
	if h.TokenEstimateRatio < 0 || math.IsNaN(h.TokenEstimateRatio) || math.IsInf(h.TokenEstimateRatio, 0) {
		return fmt.Errorf("token_estimate_ratio must be a positive number")
	}
	return nil
}

// Cleanup releases exactly what Provision acquired, also after a Provision
// that failed half-way.
func (h *Handler) Cleanup() error {
	// h.pool stays set: Caddy cleans up the old configuration right after
	// starting the new one, while the old server may still hand this
	// handler requests (HTTP/2 streams racing the GOAWAY, connections of a
	// grace period). A closed pool still serves them; a nil one panicked.
	if h.pool != nil && !h.poolClosed {
		h.poolClosed = true
		unregisterPool(h.poolName, h.pool)
		h.pool.Close()
	}
	if h.state != nil {
		h.state = nil
		if _, err := pools.Delete(h.poolName); err != nil {
			return err
		}
	}
	return nil
}

// resolveSecret expands {env.*} and {file.*}; an empty result is an error
// so that an unset variable never silently means "no key".
func resolveSecret(repl *caddy.Replacer, s string) (string, error) {
	v, err := repl.ReplaceOrErr(s, true, true)
	if err != nil {
		return "", fmt.Errorf("resolving secret: %v", err)
	}
	v = strings.TrimSpace(v)
	if v == "" {
		return "", fmt.Errorf("secret is empty")
	}
	return v, nil
}

// describeKey names a key in errors without revealing its secret.
func describeKey(k *Key) string {
	if k.Name != "" {
		return fmt.Sprintf("name %q", k.Name)
	}
	if strings.HasPrefix(k.Key, "{") {
		return k.Key // a placeholder, not the secret
	}
	return "unnamed"
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
