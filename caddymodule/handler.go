// Package caddymodule is the Caddy HTTP handler http.handlers.cc_relay: it
// authenticates clients, picks an upstream API key from a keypool for each
// Anthropic Messages API request, sets it on the request and hands the
// request to the next handler (normally reverse_proxy), then learns from the
// response and settles the key's budget.
package caddymodule

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
	"github.com/cc-relay/caddy-cc-relay/internal/redisstate"
	"github.com/cc-relay/caddy-cc-relay/keypool"
	"github.com/cc-relay/caddy-cc-relay/selector"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler relays Anthropic Messages API requests through a pool of upstream
// API keys, keeping every key's organization within its rate limits.
//
// It authenticates the client, reads the request body once (bounded by
// MaxBody), picks and reserves a key, sets the key on the request and hands
// it to the next handler, normally reverse_proxy; it replays the body for
// each attempt and watches the response as it streams to learn the key's
// limits and settle its budget.
//
// It answers these itself, without calling the next handler, in Anthropic's
// error shape ({"type":"error","error":{"type":"...","message":"..."}}) so
// that clients such as Claude Code handle them as they would the upstream's:
//
//   - 401 authentication_error: a missing or unknown client token
//   - 400 invalid_request_error: a body that cannot be read or is not a
//     Messages API request object
//   - 413 request_too_large: a body larger than MaxBody
//   - 429 rate_limit_error, with Retry-After: no key can take the request
//     within MaxWait
//   - 503 api_error: every key is disabled, or the upstream rejected the
//     relay's key (401/403) and no other key could take the request
//
// This handler sets the following placeholders, which the access log also
// carries as cc_relay_* fields:
//
//	Placeholder                | Description
//	---------------------------|-------------
//	`{http.cc_relay.client}`   | The client's name (its client_token name)
//	`{http.cc_relay.model}`    | The requested model
//	`{http.cc_relay.session}`  | The conversation's session id, if the request names one
//	`{http.cc_relay.key}`      | The name (never the secret) of the key of the latest attempt
//	`{http.cc_relay.attempts}` | How many keys the request tried
type Handler struct {
	// Pool names the state (budgets, learned limits, cooldowns, pinned
	// sessions) that survives config reloads. Handlers with the same pool
	// name share it. The default is "default".
	Pool string `json:"pool,omitempty"`

	// Strategy picks a key among those with capacity: least_loaded,
	// round_robin, weighted, priority or random. The default is
	// least_loaded.
	Strategy string `json:"strategy,omitempty"`

	// ClientTokens are the credentials clients present as x-api-key or
	// Authorization: Bearer. At least one is required unless
	// DisableClientAuth is set. Secrets may be {env.VAR} or {file./path}
	// placeholders. There is no default.
	ClientTokens []ClientToken `json:"client_tokens,omitempty"`

	// DisableClientAuth lets any client use the relay without a client
	// token, for a relay behind another layer of authentication. The
	// default is false: every request must present a client token.
	DisableClientAuth bool `json:"disable_client_auth,omitempty"`

	// Keys are the upstream API keys. At least one key, bedrock or vertex
	// entry is required; there is no default.
	Keys []Key `json:"keys,omitempty"`

	// MaxWait is how long a request may wait for capacity, in arrival
	// order, before the relay answers 429. The default is 0: answer at
	// once.
	MaxWait caddy.Duration `json:"max_wait,omitempty"`

	// MaxBody bounds the request body in bytes; larger requests get 413.
	// The default is 32 MiB, the upstream's own limit.
	MaxBody int64 `json:"max_body,omitempty"`

	// ReadBodyTimeout is how long a request body may take to arrive; a
	// client that has not sent it all by then gets 408. The server's own
	// read_timeout applies instead when it is shorter. A negative value
	// turns the relay's deadline off. Default: 1m.
	ReadBodyTimeout caddy.Duration `json:"read_body_timeout,omitempty"`

	// Retries is how many more keys a request may try after an upstream
	// 429, 401 or 403 that reached no client byte. The default is 2.
	Retries *int `json:"retries,omitempty"`

	// RetryOverloaded also retries 529 and 5xx answers on another key.
	// They never cost the key quota or a cooldown. The default is false.
	RetryOverloaded bool `json:"retry_overloaded,omitempty"`

	// DisableSticky turns session affinity off, so that every request
	// follows the strategy. The default is false: a conversation stays on
	// the key that holds its prompt cache while that key's organization
	// can take it.
	DisableSticky bool `json:"disable_sticky,omitempty"`

	// StickyTTL is how long a pinned session is remembered after its last
	// request. The default is 1h.
	StickyTTL caddy.Duration `json:"sticky_ttl,omitempty"`

	// StickyMaxSessions bounds the pinned sessions; the least recently
	// used are forgotten first. The default is 100000.
	StickyMaxSessions int `json:"sticky_max_sessions,omitempty"`

	// TokenEstimateRatio is request-body bytes per input token assumed
	// until real usage has calibrated the estimator. The default is 4.
	TokenEstimateRatio float64 `json:"token_estimate_ratio,omitempty"`

	// ModelClasses map model names to budget classes, before the built-in
	// opus / sonnet / haiku families; the first match wins. The default is
	// none: only the built-in families.
	ModelClasses []ModelClass `json:"model_classes,omitempty"`

	// DefaultCooldown is the cooldown after an upstream 429 that names
	// neither retry-after nor a reset time. The default is 10s.
	DefaultCooldown caddy.Duration `json:"default_cooldown,omitempty"`

	// SpendCapPark is how long an organization that reached its spend cap
	// stays out of rotation when the upstream names no date. The default
	// is 1h.
	SpendCapPark caddy.Duration `json:"spend_cap_park,omitempty"`

	// Prices override the built-in price table (USD per million tokens)
	// for the models they match; the first match wins. Spend and budgets
	// are priced with them.
	Prices []Price `json:"prices,omitempty"`

	// Bedrock are keys that reach Claude on Amazon Bedrock. Default: none.
	Bedrock []BedrockKey `json:"bedrock,omitempty"`

	// Vertex are keys that reach Claude on Google Vertex AI. Default: none.
	Vertex []VertexKey `json:"vertex,omitempty"`

	// Redis keeps the pool's state on Redis (or Valkey), so that relay
	// instances with the same pool name, Redis and key prefix act as one
	// pool. In JSON it is the URL ("redis://…", may be {env.*} or
	// {file.*}) or an object with url, timeout and key_prefix. When Redis
	// is unreachable, at start or later, the instance serves from its
	// share of each limit and rejoins when Redis answers. Default: none:
	// the pool's state lives in this process only.
	Redis *Redis `json:"redis,omitempty"`

	logger   *zap.Logger
	state    *keypool.State
	pool     *keypool.Pool
	secrets  []keySecret
	clients  []clientCred
	redactor *redactor
	prober   *prober
	strategy selector.Strategy
	retries  int
	metrics  *metrics
	clk      clock.Clock
	poolName string
	// clientSet is the pool's clients: limits, budgets and spend.
	clientSet *clientSet
	// poolClosed makes Cleanup release the pool once, keeping h.pool.
	poolClosed bool
	// upstreams says how each key reaches its upstream; nil when every
	// key is a plain Anthropic key (see provider.go).
	upstreams       []upstream
	providerSecrets []string
	elig            *eligibility
	// store is the pool's shared state on Redis, held in stores under
	// storeKey; nil without redis.
	store    *redisstate.Store
	storeKey string
}

// ClientToken is one client credential.
type ClientToken struct {
	// Token is the secret the client presents, literal or an {env.VAR} or
	// {file./path} placeholder resolved at provision time. It is required.
	Token string `json:"token"`

	// Name identifies the client in logs and placeholders. The default is
	// "client-" + the first 8 hex digits of the token's SHA-256. Tokens
	// that share a name are one client: they share its limits and budget.
	Name string `json:"name,omitempty"`
	// RPM, ITPM and OTPM are the client's own per-minute limits on
	// requests, input tokens and output tokens, checked before the pool is
	// touched. Default: 0 (no limit of the client's own).
	RPM  int64 `json:"rpm,omitempty"`
	ITPM int64 `json:"itpm,omitempty"`
	OTPM int64 `json:"otpm,omitempty"`
	// MaxConcurrent bounds the client's requests in flight; a stream counts
	// until it ends. Default: 0 (no limit).
	MaxConcurrent int `json:"max_concurrent,omitempty"`
	// Weight is the client's share of the pool under contention. Default: 1.
	Weight int `json:"weight,omitempty"`
	// Budget caps the client's spend per calendar period (UTC). Default:
	// none.
	Budget *ClientBudget `json:"budget,omitempty"`
	// Models are the models the client may use, as path.Match patterns
	// ("claude-sonnet-*"). Default: all.
	Models []string `json:"models,omitempty"`
}

// Key is one upstream API key.
type Key struct {
	// Key is the upstream secret, literal or an {env.VAR} or {file./path}
	// placeholder resolved at provision time, so that the JSON config need
	// not hold it. It is required.
	Key string `json:"key"`

	// Name labels the key in headers, logs, metrics and the admin API. The
	// default is "key-" + the first 8 hex digits of the secret's SHA-256.
	Name string `json:"name,omitempty"`

	// RPM is the organization's limit on requests per minute. The default,
	// 0, learns it from the upstream's anthropic-ratelimit-requests-limit
	// header.
	RPM int64 `json:"rpm,omitempty"`

	// ITPM is the organization's limit on input tokens per minute. The
	// default, 0, learns it from the upstream's
	// anthropic-ratelimit-input-tokens-limit header.
	ITPM int64 `json:"itpm,omitempty"`

	// OTPM is the organization's limit on output tokens per minute. The
	// default, 0, learns it from the upstream's
	// anthropic-ratelimit-output-tokens-limit header.
	OTPM int64 `json:"otpm,omitempty"`

	// Weight is the key's share under the weighted strategy. The default
	// is 1.
	Weight int `json:"weight,omitempty"`

	// Priority orders keys under the priority strategy; lower numbers are
	// used first. The default is 0.
	Priority int `json:"priority,omitempty"`

	// Org groups keys of one upstream organization: they share one budget.
	// The default is the key's own organization, until a response names
	// it (anthropic-organization-id).
	Org string `json:"org,omitempty"`

	// Workspace is the prompt-cache scope a session may move within
	// before leaving its cache behind. The default is the organization.
	Workspace string `json:"workspace,omitempty"`

	// Auth is how the key is sent upstream: "x-api-key" or "bearer"
	// (Authorization: Bearer). The default is "x-api-key".
	Auth string `json:"auth,omitempty"`
	// Upstream is the base URL of this key's Anthropic-compatible
	// endpoint; reverse_proxy reaches it through {http.cc_relay.upstream}.
	// Default: https://api.anthropic.com.
	Upstream string `json:"upstream,omitempty"`
}

// ModelClass maps model names to a budget class, ahead of the built-in
// opus / sonnet / haiku families.
type ModelClass struct {
	// Pattern matches model names in path.Match syntax, e.g.
	// "claude-3-7-*". It is required.
	Pattern string `json:"pattern"`

	// Class is the budget class the matching models share, such as
	// "sonnet" or a class of its own. It is required.
	Class string `json:"class"`
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

// The handler's defaults, set in Provision only (keypool has none of its
// own). Each is stated in its field's doc comment.
const (
	defaultPool              = "default"
	defaultStrategy          = "least_loaded"
	defaultMaxBody           = 32 << 20
	defaultRetries           = 2
	defaultStickyTTL         = time.Hour
	defaultStickyMaxSessions = 100000
	defaultCooldown          = 10 * time.Second
	defaultSpendCapPark      = time.Hour
)

// defaultReadBodyTimeout leaves a 32 MiB body about 4.5 Mbit/s.
const defaultReadBodyTimeout = time.Minute

// Provision sets defaults, resolves secrets and attaches the pool state.
//
// Caddy calls Provision before Validate, so Provision runs Validate's pure
// checks itself, once defaults are set and before it acquires anything (a
// pool, goroutines, metrics) or hands numbers to keypool; Caddy's own call
// of Validate afterwards finds the same answer. The checks that need
// resolved secrets (two keys with the same secret) can only run here.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.setDefaults()
	if err := h.Validate(); err != nil {
		return err
	}
	h.strategy, _ = selector.Parse(h.Strategy) // checked in Validate

	// Secrets resolve here, not at adapt time, so the JSON config can hold
	// {env.*} / {file.*} instead of the secret itself.
	repl := caddy.NewReplacer()
	names := map[string]int{}
	bySecret := map[string]int{}
	h.secrets = make([]keySecret, len(h.Keys))
	cfg := keypool.Config{
		Strategy:           h.strategy,
		Sticky:             !h.DisableSticky,
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
		if j, dup := bySecret[secret]; dup {
			return fmt.Errorf("keys %d and %d have the same secret", j+1, i+1)
		}
		bySecret[secret] = i
		if k.Name == "" {
			k.Name = "key-" + shortHash(secret)
		}
		// Validate saw the configured names; a derived one may still
		// collide with another key's.
		if j, dup := names[k.Name]; dup {
			return fmt.Errorf("keys %d and %d have the same name %q", j+1, i+1, k.Name)
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
	var all []string // every secret, for the redactor
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
		all = append(all, secret)
	}
	for _, s := range h.secrets {
		all = append(all, s.value)
	}
	all = append(all, h.providerSecrets...)
	h.redactor = newRedactor(all)

	if h.Redis != nil {
		if err := h.acquireStore(ctx, repl); err != nil {
			return fmt.Errorf("pool %q: %v", h.Pool, err)
		}
		cfg.Shared = h.store
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
	registerPool(h.Pool, h.pool, h.store)
	if err := h.provisionClients(ctx); err != nil {
		return err
	}
	// Client spend is shared too (nil store: this process counts it).
	h.clientSet.useRedis(h.store)
	h.startProber()
	return nil
}

// redact hides every configured secret, and every fragment of one of 12
// bytes or more, in s, which holds text an upstream sent back (a rejected
// key's reason may echo the key, whole or in part).
func (h *Handler) redact(s string) string { return h.redactor.String(s) }

// setDefaults gives every unset field its documented default. It is the
// only place defaults are set.
func (h *Handler) setDefaults() {
	if h.Pool == "" {
		h.Pool = defaultPool
	}
	if h.Strategy == "" {
		h.Strategy = defaultStrategy
	}
	if h.MaxBody == 0 {
		h.MaxBody = defaultMaxBody
	}
	if h.ReadBodyTimeout == 0 {
		h.ReadBodyTimeout = caddy.Duration(defaultReadBodyTimeout)
	}
	h.retries = defaultRetries
	if h.Retries != nil {
		h.retries = *h.Retries
	}
	if h.StickyTTL == 0 {
		h.StickyTTL = caddy.Duration(defaultStickyTTL)
	}
	if h.StickyMaxSessions == 0 {
		h.StickyMaxSessions = defaultStickyMaxSessions
	}
	if h.TokenEstimateRatio == 0 {
		h.TokenEstimateRatio = keypool.DefaultTokenEstimateRatio
	}
	if h.DefaultCooldown == 0 {
		h.DefaultCooldown = caddy.Duration(defaultCooldown)
	}
	if h.SpendCapPark == 0 {
		h.SpendCapPark = caddy.Duration(defaultSpendCapPark)
	}
	if h.Redis != nil {
		h.Redis.setDefaults()
	}
}

// Cleanup releases exactly what Provision acquired, also after a Provision
// that failed half-way.
func (h *Handler) Cleanup() error {
	// h.pool stays set: Caddy cleans up the old configuration right after
	// starting the new one, while the old server may still hand this
	// handler requests (HTTP/2 streams racing the GOAWAY, connections of a
	// grace period). A closed pool still serves them; a nil one panicked.
	h.prober.stop()
	h.cleanupClients()
	if h.pool != nil && !h.poolClosed {
		h.poolClosed = true
		unregisterPool(h.poolName, h.pool)
		h.pool.Close()
	}
	var err error
	if h.state != nil {
		h.state = nil
		_, err = pools.Delete(h.poolName)
	}
	// After the pool: the store outlives the last pool that uses it.
	return errors.Join(err, h.releaseStore())
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
