package caddymodule

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"golang.org/x/oauth2"

	"github.com/cc-relay/caddy-cc-relay/internal/bedrock"
	"github.com/cc-relay/caddy-cc-relay/internal/modeltable"
	"github.com/cc-relay/caddy-cc-relay/internal/vertex"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// BedrockKey is one set of AWS credentials that reaches Claude on Amazon
// Bedrock. It is a key of the pool like any other: it has limits, a
// priority and an organization, and is chosen by the strategy.
type BedrockKey struct {
	// Name labels the key in headers, logs, metrics and the admin API.
	Name string `json:"name"`
	// Region is the AWS region of the Bedrock runtime, e.g. us-east-1.
	Region string `json:"region"`
	// AccessKeyID is the IAM access key id; {env.*} and {file.*} resolve
	// at provision time.
	AccessKeyID string `json:"access_key_id"`
	// SecretAccessKey is the IAM secret access key; {env.*} and {file.*}
	// resolve at provision time.
	SecretAccessKey string `json:"secret_access_key"`
	// SessionToken is the session token of temporary credentials.
	// Default: none.
	SessionToken string `json:"session_token,omitempty"`
	// Endpoint replaces the region's Bedrock runtime endpoint (a VPC
	// endpoint). Default: https://bedrock-runtime.<region>.amazonaws.com.
	Endpoint string `json:"endpoint,omitempty"`
	// Models map client model names (globs) to Bedrock model ids or
	// inference profiles, before the built-in table. Default: the built-in
	// table, with the inference profile of the region's geography.
	Models []ModelRoute `json:"models,omitempty"`
	// RPM is the account's quota of requests per minute for this key.
	// Bedrock sends no rate-limit headers, so an unset quota stays unknown
	// and only the key's 429s slow it down. Default: 0 (unknown).
	RPM int64 `json:"rpm,omitempty"`
	// ITPM is the account's quota of input tokens per minute for this key.
	// Default: 0 (unknown).
	ITPM int64 `json:"itpm,omitempty"`
	// OTPM is the account's quota of output tokens per minute for this
	// key. Default: 0 (unknown).
	OTPM int64 `json:"otpm,omitempty"`
	// Weight is the key's share under the weighted strategy. Default: 1.
	Weight int `json:"weight,omitempty"`
	// Priority orders keys under the priority strategy; lower numbers
	// are used first. Default: 0.
	Priority int `json:"priority,omitempty"`
	// Org groups keys that share one quota. Default: the key's own.
	Org string `json:"org,omitempty"`
}

// VertexKey is one Google service account that reaches Claude on Vertex AI.
type VertexKey struct {
	// Name labels the key in headers, logs, metrics and the admin API.
	Name string `json:"name"`
	// Project is the Google Cloud project id.
	Project string `json:"project"`
	// Region is the Vertex AI region, e.g. us-east5, or global.
	Region string `json:"region"`
	// Credentials is the service account's JSON key file (a path), or the
	// key itself; {env.*} and {file.*} resolve at provision time. Its
	// token_uri is where access tokens are fetched.
	Credentials string `json:"credentials"`
	// Endpoint replaces the region's Vertex AI endpoint. Default:
	// https://<region>-aiplatform.googleapis.com.
	Endpoint string `json:"endpoint,omitempty"`
	// Models map client model names (globs) to Vertex AI model ids,
	// before the built-in table. Default: the built-in table.
	Models []ModelRoute `json:"models,omitempty"`
	// RPM is the project's quota of requests per minute for this key.
	// Default: 0 (unknown; only the key's 429s slow it down).
	RPM int64 `json:"rpm,omitempty"`
	// ITPM is the project's quota of input tokens per minute for this key.
	// Default: 0 (unknown).
	ITPM int64 `json:"itpm,omitempty"`
	// OTPM is the project's quota of output tokens per minute for this
	// key. Default: 0 (unknown).
	OTPM int64 `json:"otpm,omitempty"`
	// Weight is the key's share under the weighted strategy. Default: 1.
	Weight int `json:"weight,omitempty"`
	// Priority orders keys under the priority strategy. Default: 0.
	Priority int `json:"priority,omitempty"`
	// Org groups keys that share one quota. Default: the key's own.
	Org string `json:"org,omitempty"`
}

// ModelRoute maps client model names matching Pattern (path.Match syntax)
// to a provider's model id.
type ModelRoute struct {
	// Pattern matches the model names clients send, in path.Match syntax
	// (e.g. "claude-sonnet-4-5*"). It is required.
	Pattern string `json:"pattern"`
	// ID is the provider's model id or inference profile that serves
	// them. It is required.
	ID string `json:"id"`
}

// providerKind is the API an upstream key speaks.
type providerKind uint8

const (
	kindAnthropic providerKind = iota
	kindBedrock
	kindVertex
)

// upstream is how one key of the pool reaches its upstream.
type upstream struct {
	kind providerKind
	// dial is {http.cc_relay.upstream}: host:port.
	dial string
	// https is the upstream's scheme.
	https bool
	// basePath prefixes request paths (an Anthropic-compatible endpoint
	// under a path).
	basePath string
	// host is the Host header a provider request is signed for.
	host   string
	models modeltable.Table
	// dateless: models of the 4.6 generation on follow one rule.
	dateless bool

	signer          *bedrock.Signer
	region, project string
	tokens          oauth2.TokenSource
}

const defaultUpstream = "api.anthropic.com:443"

// modelID is the provider's id for a client's model name.
func (u *upstream) modelID(model string) (string, bool) {
	if id, ok := u.models.Lookup(model); ok {
		return id, true
	}
	if u.dateless && modeltable.Dateless(model) {
		if u.kind == kindBedrock {
			return modeltable.BedrockProfile(u.region) + "anthropic." + model, true
		}
		return model, true
	}
	return "", false
}

// parseUpstreamURL splits a base URL into its dial address, scheme and
// base path.
func parseUpstreamURL(raw string) (dial string, https bool, base string, err error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", false, "", fmt.Errorf("%q is not an http:// or https:// URL", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", false, "", fmt.Errorf("%q: a base URL has no query, fragment or user", raw)
	}
	port := u.Port()
	if port == "" {
		port = "443"
		if u.Scheme == "http" {
			port = "80"
		}
	}
	return net.JoinHostPort(u.Hostname(), port), u.Scheme == "https", strings.TrimSuffix(u.Path, "/"), nil
}

// provisionProviders sets up every key's upstream: Anthropic keys with an
// upstream URL, Bedrock and Vertex keys. It appends the provider keys to
// cfg and h.secrets, in the order Bedrock then Vertex, after h.Keys.
func (h *Handler) provisionProviders(repl *caddy.Replacer, cfg *keypool.Config, names map[string]int) error {
	custom := len(h.Bedrock)+len(h.Vertex) > 0
	for _, k := range h.Keys {
		if k.Upstream != "" {
			custom = true
		}
	}
	if !custom {
		return nil
	}
	h.upstreams = make([]upstream, 0, len(h.Keys)+len(h.Bedrock)+len(h.Vertex))
	h.elig = &eligibility{m: map[routeModel][]bool{}}
	for i, k := range h.Keys {
		u := upstream{kind: kindAnthropic, dial: defaultUpstream, https: true}
		if k.Upstream != "" {
			var err error
			if u.dial, u.https, u.basePath, err = parseUpstreamURL(k.Upstream); err != nil {
				return fmt.Errorf("key %d (%s): upstream: %v", i+1, describeKey(&k), err)
			}
		}
		h.upstreams = append(h.upstreams, u)
	}
	addName := func(name string) error {
		if _, dup := names[name]; dup {
			return fmt.Errorf("two keys have the name %q", name)
		}
		names[name] = len(names)
		return nil
	}
	for i := range h.Bedrock {
		b := &h.Bedrock[i]
		if err := addName(b.Name); err != nil {
			return err
		}
		var creds bedrock.Credentials
		var err error
		if creds.AccessKeyID, err = resolveSecret(repl, b.AccessKeyID); err != nil {
			return fmt.Errorf("bedrock %q: access_key_id: %v", b.Name, err)
		}
		if creds.SecretAccessKey, err = resolveSecret(repl, b.SecretAccessKey); err != nil {
			return fmt.Errorf("bedrock %q: secret_access_key: %v", b.Name, err)
		}
		if b.SessionToken != "" {
			if creds.SessionToken, err = resolveSecret(repl, b.SessionToken); err != nil {
				return fmt.Errorf("bedrock %q: session_token: %v", b.Name, err)
			}
		}
		u := upstream{kind: kindBedrock, region: b.Region, dateless: true, signer: bedrock.NewSigner(b.Region, creds)}
		u.signer.Now = h.clk.Now
		endpoint := b.Endpoint
		if endpoint == "" {
			endpoint = "https://" + bedrock.DefaultHost(b.Region)
		}
		if u.dial, u.https, u.basePath, err = parseUpstreamURL(endpoint); err != nil {
			return fmt.Errorf("bedrock %q: endpoint: %v", b.Name, err)
		}
		u.host = u.dial
		for _, m := range b.Models {
			u.models = append(u.models, modeltable.Rule{Pattern: m.Pattern, ID: m.ID})
		}
		u.models = append(u.models, modeltable.Bedrock(b.Region)...)
		h.upstreams = append(h.upstreams, u)
		h.secrets = append(h.secrets, keySecret{provider: true})
		h.providerSecrets = append(h.providerSecrets, creds.SecretAccessKey, creds.AccessKeyID)
		if creds.SessionToken != "" {
			h.providerSecrets = append(h.providerSecrets, creds.SessionToken)
		}
		cfg.Keys = append(cfg.Keys, keypool.KeyConfig{
			Name: b.Name, Org: b.Org,
			Limits: keypool.Limits{RPM: b.RPM, ITPM: b.ITPM, OTPM: b.OTPM},
			Weight: b.Weight, Priority: b.Priority,
		})
	}
	for i := range h.Vertex {
		v := &h.Vertex[i]
		if err := addName(v.Name); err != nil {
			return err
		}
		key, err := readCredentials(repl, v.Credentials)
		if err != nil {
			return fmt.Errorf("vertex %q: %v", v.Name, err)
		}
		u := upstream{kind: kindVertex, region: v.Region, project: v.Project, dateless: true}
		if u.tokens, err = vertex.NewTokenSource(key, &http.Client{Timeout: 30 * time.Second}); err != nil {
			return fmt.Errorf("vertex %q: %v", v.Name, err)
		}
		endpoint := v.Endpoint
		if endpoint == "" {
			endpoint = "https://" + vertex.DefaultHost(v.Region)
		}
		if u.dial, u.https, u.basePath, err = parseUpstreamURL(endpoint); err != nil {
			return fmt.Errorf("vertex %q: endpoint: %v", v.Name, err)
		}
		u.host = u.dial
		for _, m := range v.Models {
			u.models = append(u.models, modeltable.Rule{Pattern: m.Pattern, ID: m.ID})
		}
		u.models = append(u.models, modeltable.Vertex()...)
		h.upstreams = append(h.upstreams, u)
		h.secrets = append(h.secrets, keySecret{provider: true})
		cfg.Keys = append(cfg.Keys, keypool.KeyConfig{
			Name: v.Name, Org: v.Org,
			Limits: keypool.Limits{RPM: v.RPM, ITPM: v.ITPM, OTPM: v.OTPM},
			Weight: v.Weight, Priority: v.Priority,
		})
	}
	// Caddy takes TLS from the transport, not from the upstream address
	// the placeholder gives: one pool, one scheme.
	for _, u := range h.upstreams[1:] {
		if u.https != h.upstreams[0].https {
			return fmt.Errorf("the pool's upstreams mix http:// and https://: reverse_proxy {http.cc_relay.upstream} takes TLS from its transport, so every key's upstream must use the same scheme")
		}
	}
	return nil
}

// readCredentials reads a service account key: the resolved value is the
// key itself when it is JSON, else the path of a file holding it.
func readCredentials(repl *caddy.Replacer, v string) ([]byte, error) {
	s, err := resolveSecret(repl, v)
	if err != nil {
		return nil, fmt.Errorf("credentials: %v", err)
	}
	if strings.HasPrefix(s, "{") {
		return []byte(s), nil
	}
	b, err := os.ReadFile(s)
	if err != nil {
		return nil, fmt.Errorf("credentials: reading the service account key file: %v", err)
	}
	return b, nil
}

// validateProviders checks the provider keys' configuration.
func (h *Handler) validateProviders() error {
	check := func(what, name string, rpm, itpm, otpm int64, weight int, models []ModelRoute) error {
		if name == "" {
			return fmt.Errorf("%s key without a name", what)
		}
		if rpm < 0 || itpm < 0 || otpm < 0 || weight < 0 {
			return fmt.Errorf("%s %q: rpm, itpm, otpm and weight must not be negative", what, name)
		}
		for _, m := range models {
			if _, err := path.Match(m.Pattern, ""); err != nil || m.Pattern == "" || m.ID == "" {
				return fmt.Errorf("%s %q: bad model line %q %q", what, name, m.Pattern, m.ID)
			}
		}
		return nil
	}
	for _, b := range h.Bedrock {
		if err := check("bedrock", b.Name, b.RPM, b.ITPM, b.OTPM, b.Weight, b.Models); err != nil {
			return err
		}
		if b.Region == "" || b.AccessKeyID == "" || b.SecretAccessKey == "" {
			return fmt.Errorf("bedrock %q: region, access_key_id and secret_access_key are required", b.Name)
		}
	}
	for _, v := range h.Vertex {
		if err := check("vertex", v.Name, v.RPM, v.ITPM, v.OTPM, v.Weight, v.Models); err != nil {
			return err
		}
		if v.Project == "" || v.Region == "" || v.Credentials == "" {
			return fmt.Errorf("vertex %q: project, region and credentials are required", v.Name)
		}
	}
	return nil
}

// upstreamOf is the dial address of key idx, {http.cc_relay.upstream}.
func (h *Handler) upstreamOf(idx int) string {
	if h.upstreams == nil || idx < 0 || idx >= len(h.upstreams) {
		return defaultUpstream
	}
	return h.upstreams[idx].dial
}
