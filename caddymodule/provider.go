package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"golang.org/x/oauth2"

	"github.com/cc-relay/caddy-cc-relay/internal/bedrock"
	"github.com/cc-relay/caddy-cc-relay/internal/jsonedit"
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
	// RPM, ITPM and OTPM are the account's per-minute quotas for this
	// key. Bedrock sends no rate-limit headers, so unset limits stay
	// unknown and only its 429s slow the key down. Default: 0.
	RPM  int64 `json:"rpm,omitempty"`
	ITPM int64 `json:"itpm,omitempty"`
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
	// RPM, ITPM and OTPM are the project's per-minute quotas for this
	// key. Default: 0 (unknown; only 429s slow the key down).
	RPM  int64 `json:"rpm,omitempty"`
	ITPM int64 `json:"itpm,omitempty"`
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
	Pattern string `json:"pattern"`
	ID      string `json:"id"`
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
	h.elig = &eligibility{m: map[string][]bool{}}
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

// endpoint classes a request is routed by.
const (
	routeMessages = iota
	routeCountTokens
	routeOther
)

// eligibility caches, per route and model, which keys can serve it.
type eligibility struct {
	mu sync.Mutex
	m  map[string][]bool
}

// maxEligibility bounds the cache: model names come from clients.
const maxEligibility = 1024

// route limits a request to the keys that can serve it. It answers the
// request itself (and returns true) when no key can: /v1/models from the
// model tables, anything else with 404.
func (h *Handler) route(w http.ResponseWriter, r *http.Request, req *keypool.Request, body []byte, model string, metered bool) bool {
	rt := routeOther
	p := strings.TrimSuffix(r.URL.Path, "/")
	switch {
	case metered:
		rt = routeMessages
	case r.Method == http.MethodPost && p == "/v1/messages/count_tokens":
		rt = routeCountTokens
		model = modelOf(body)
	}
	only := h.eligible(rt, model)
	for _, ok := range only {
		if ok {
			req.Only = only
			return false
		}
	}
	if rt == routeOther && r.Method == http.MethodGet && p == "/v1/models" {
		h.metrics.answered("ok")
		h.answerModels(w)
		return true
	}
	h.metrics.answered("bad_request")
	msg := "no upstream of this relay serves " + r.Method + " " + p
	if rt != routeOther {
		msg = "model: no upstream of this relay serves " + strconv.Quote(model)
	}
	writeError(w, http.StatusNotFound, "not_found_error", msg, 0)
	return true
}

func (h *Handler) eligible(rt int, model string) []bool {
	key := strconv.Itoa(rt) + model
	e := h.elig
	e.mu.Lock()
	only, ok := e.m[key]
	e.mu.Unlock()
	if ok {
		return only
	}
	only = make([]bool, len(h.upstreams))
	for i := range h.upstreams {
		u := &h.upstreams[i]
		switch {
		case u.kind == kindAnthropic:
			only[i] = true
		case rt == routeMessages || rt == routeCountTokens && u.kind == kindVertex:
			_, only[i] = u.modelID(model)
		}
	}
	e.mu.Lock()
	if len(e.m) < maxEligibility {
		e.m[key] = only
	}
	e.mu.Unlock()
	return only
}

// answerModels lists the models the pool's provider keys serve, in the
// shape of the API's GET /v1/models.
func (h *Handler) answerModels(w http.ResponseWriter) {
	type model struct {
		Type        string `json:"type"`
		ID          string `json:"id"`
		DisplayName string `json:"display_name"`
		CreatedAt   string `json:"created_at"`
	}
	var data []model
	for _, name := range modeltable.Models {
		for i := range h.upstreams {
			if _, ok := h.upstreams[i].modelID(name); ok {
				data = append(data, model{Type: "model", ID: name, DisplayName: name, CreatedAt: "2025-01-01T00:00:00Z"})
				break
			}
		}
	}
	if data == nil {
		data = []model{}
	}
	out := map[string]any{"data": data, "has_more": false, "first_id": nil, "last_id": nil}
	if len(data) > 0 {
		out["first_id"], out["last_id"] = data[0].ID, data[len(data)-1].ID
	}
	b, _ := json.Marshal(out)
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// modelOf reads the request body's model.
func modelOf(body []byte) string {
	v, ok := jsonedit.Get(body, "model")
	if !ok {
		return ""
	}
	var m string
	_ = json.Unmarshal(v, &m)
	return m
}

// savedRequest is what a provider attempt changes on the request, put
// back after it so that a retry on another key starts from the client's
// request.
type savedRequest struct {
	path, rawPath, rawQuery, host string
	hdr                           [len(providerHeaders)][]string
}

// providerHeaders are the headers a provider attempt may set or remove.
var providerHeaders = [...]string{
	"Anthropic-Beta", "Anthropic-Version", "Content-Type", "Accept", "X-Amzn-Bedrock-Accept",
	"Authorization", "X-Amz-Date", "X-Amz-Security-Token",
}

func saveRequest(r *http.Request) *savedRequest {
	s := &savedRequest{path: r.URL.Path, rawPath: r.URL.RawPath, rawQuery: r.URL.RawQuery, host: r.Host}
	for i, k := range providerHeaders {
		s.hdr[i] = r.Header[k]
	}
	return s
}

func (s *savedRequest) restore(r *http.Request) {
	r.URL.Path, r.URL.RawPath, r.URL.RawQuery, r.Host = s.path, s.rawPath, s.rawQuery, s.host
	for i, k := range providerHeaders {
		if s.hdr[i] == nil {
			delete(r.Header, k)
		} else {
			r.Header[k] = s.hdr[i]
		}
	}
}

// setBody makes b the request's body for this attempt. The prepared copy
// of the client's body is read out so its buffer can go back to the pool.
func setBody(r *http.Request, b []byte) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	r.ContentLength = int64(len(b))
	r.Header.Set("Content-Length", strconv.Itoa(len(b)))
}

// send runs one attempt through next, translating the request for the
// key's upstream and its answer back into the Anthropic API's.
func (h *Handler) send(rw *observer, r *http.Request, next caddyhttp.Handler) error {
	if h.upstreams == nil {
		return next.ServeHTTP(rw, r)
	}
	u := &h.upstreams[rw.res.KeyIndex()]
	if u.kind == kindAnthropic && u.basePath == "" {
		return next.ServeHTTP(rw, r)
	}
	saved := saveRequest(r)
	defer saved.restore(r)
	var body []byte
	if rw.body != nil {
		body = rw.body.b
	}
	switch u.kind {
	case kindAnthropic:
		r.URL.Path = u.basePath + r.URL.Path
		if r.URL.RawPath != "" {
			r.URL.RawPath = u.basePath + r.URL.RawPath
		}
		return next.ServeHTTP(rw, r)
	case kindBedrock:
		return h.sendBedrock(u, rw, r, body, next)
	default:
		return h.sendVertex(u, rw, r, body, next)
	}
}

func (h *Handler) sendBedrock(u *upstream, rw *observer, r *http.Request, body []byte, next caddyhttp.Handler) error {
	model := modelOf(body)
	id, ok := u.modelID(model)
	if !ok {
		writeError(rw, http.StatusNotFound, "not_found_error", "model: this key's upstream does not serve "+strconv.Quote(model), 0)
		return nil
	}
	tb, stream, err := bedrock.TranslateBody(make([]byte, 0, len(body)+96), body, bedrock.Betas(r.Header.Values("Anthropic-Beta")))
	if err != nil {
		writeError(rw, http.StatusBadRequest, "invalid_request_error", err.Error(), 0)
		return nil
	}
	r.Header.Del("X-Api-Key")
	r.Header.Del("Authorization")
	r.Header.Del("Anthropic-Beta")
	r.Header.Del("Anthropic-Version")
	r.Header.Set("Content-Type", "application/json")
	if stream {
		r.Header.Set("Accept", bedrock.ContentType)
		r.Header.Set("X-Amzn-Bedrock-Accept", "application/json")
	} else {
		r.Header.Set("Accept", "application/json")
		r.Header.Del("X-Amzn-Bedrock-Accept")
	}
	r.URL.Path, r.URL.RawPath = bedrock.Path(id, stream)
	r.URL.Path, r.URL.RawPath = u.basePath+r.URL.Path, u.basePath+r.URL.RawPath
	r.URL.RawQuery = ""
	setBody(r, tb)
	// The signature is the last change to the request: everything it
	// covers (path, host, body, content-type, accept) is final here.
	if err := u.signer.Sign(r, u.host, tb); err != nil {
		writeError(rw, http.StatusInternalServerError, "api_error", "signing the Bedrock request failed", 0)
		return nil
	}
	bw := &bedrockWriter{o: rw}
	err = next.ServeHTTP(bw, r)
	bw.finish()
	return err
}

func (h *Handler) sendVertex(u *upstream, rw *observer, r *http.Request, body []byte, next caddyhttp.Handler) error {
	model := modelOf(body)
	count := !rw.metered
	id, ok := u.modelID(model)
	if !ok {
		writeError(rw, http.StatusNotFound, "not_found_error", "model: this key's upstream does not serve "+strconv.Quote(model), 0)
		return nil
	}
	tok, err := u.tokens.Token()
	if err != nil {
		// The token endpoint refusing the service account's key is the
		// key's fault (it is disabled and the request moves on); not
		// reaching it is not.
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode < 500 {
			writeError(rw, http.StatusUnauthorized, "authentication_error", "Vertex AI: the service account's access token was refused: "+re.ErrorCode, 0)
		} else {
			writeError(rw, http.StatusServiceUnavailable, "api_error", "Vertex AI: could not obtain an access token", 0)
		}
		return nil
	}
	var tb []byte
	var p string
	if count {
		tb, err = vertex.TranslateCountTokens(make([]byte, 0, len(body)+64), body, id)
		p = vertex.CountTokensPath(u.project, u.region)
	} else {
		var stream bool
		tb, stream, err = vertex.TranslateBody(make([]byte, 0, len(body)+48), body)
		p = vertex.Path(u.project, u.region, id, stream)
	}
	if err != nil {
		writeError(rw, http.StatusBadRequest, "invalid_request_error", err.Error(), 0)
		return nil
	}
	r.Header.Del("X-Api-Key")
	r.Header.Del("Anthropic-Version")
	r.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	r.Header.Set("Content-Type", "application/json")
	r.URL.Path, r.URL.RawPath, r.URL.RawQuery = u.basePath+p, "", ""
	r.Host = u.host
	setBody(r, tb)
	vw := &vertexWriter{o: rw}
	err = next.ServeHTTP(vw, r)
	vw.finish()
	return err
}

// errorCapture holds back an upstream error answer until it has been read
// whole, so that it can be translated before the observer judges it.
type errorCapture struct {
	status int
	hdr    http.Header
	body   bytes.Buffer
}

func (c *errorCapture) write(p []byte) {
	if room := maxHeld - c.body.Len(); room > 0 {
		c.body.Write(p[:min(len(p), room)])
	}
}

// writeMapped sends the translated error to the observer.
func writeMapped(o *observer, status int, body []byte) {
	hdr := o.Header()
	hdr.Del("Content-Encoding")
	hdr.Del("Transfer-Encoding")
	hdr.Del("X-Amzn-Errortype")
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	o.WriteHeader(status)
	_, _ = o.Write(body)
}

// bedrockWriter turns a Bedrock answer into the Anthropic API's before
// the observer sees it: an event stream into SSE (so usage is read as for
// Anthropic and the client gets the events it expects, flushed as they
// arrive), an error into Anthropic's status and shape (so a throttled key
// cools down and the request is retried elsewhere).
type bedrockWriter struct {
	o      *observer
	mode   uint8 // 0 pass, 1 stream, 2 error
	stream bedrock.Stream
	out    []byte
	err    errorCapture
}

func (b *bedrockWriter) Header() http.Header { return b.o.Header() }

func (b *bedrockWriter) WriteHeader(code int) {
	if code < 200 {
		b.o.WriteHeader(code)
		return
	}
	hdr := b.o.Header()
	switch {
	case code >= 400:
		b.mode = 2
		b.err.status, b.err.hdr = code, hdr.Clone()
		return
	case strings.HasPrefix(hdr.Get("Content-Type"), bedrock.ContentType):
		b.mode = 1
		hdr.Set("Content-Type", "text/event-stream; charset=utf-8")
		hdr.Set("Cache-Control", "no-cache")
		hdr.Del("Content-Length")
		hdr.Del("X-Amzn-Bedrock-Content-Type")
	}
	b.o.WriteHeader(code)
}

func (b *bedrockWriter) Write(p []byte) (int, error) {
	switch b.mode {
	case 1:
		b.out, _ = b.stream.Convert(b.out[:0], p)
		if len(b.out) > 0 {
			if _, err := b.o.Write(b.out); err != nil {
				return 0, err
			}
		}
		return len(p), nil
	case 2:
		b.err.write(p)
		return len(p), nil
	}
	return b.o.Write(p)
}

func (b *bedrockWriter) FlushError() error {
	if b.mode == 2 {
		return nil
	}
	return b.o.FlushError()
}

func (b *bedrockWriter) Flush() { _ = b.FlushError() }

func (b *bedrockWriter) Unwrap() http.ResponseWriter { return b.o }

func (b *bedrockWriter) finish() {
	if b.mode != 2 {
		return
	}
	status, body := bedrock.MapError(b.err.status, b.err.hdr, b.err.body.Bytes())
	writeMapped(b.o, status, body)
}

// vertexWriter translates Vertex AI's own (Google-shaped) errors; its
// successful answers are the Anthropic API's already.
type vertexWriter struct {
	o    *observer
	hold bool
	err  errorCapture
}

func (v *vertexWriter) Header() http.Header { return v.o.Header() }

func (v *vertexWriter) WriteHeader(code int) {
	if code >= 400 {
		v.hold = true
		v.err.status = code
		return
	}
	v.o.WriteHeader(code)
}

func (v *vertexWriter) Write(p []byte) (int, error) {
	if v.hold {
		v.err.write(p)
		return len(p), nil
	}
	return v.o.Write(p)
}

func (v *vertexWriter) FlushError() error {
	if v.hold {
		return nil
	}
	return v.o.FlushError()
}

func (v *vertexWriter) Flush() { _ = v.FlushError() }

func (v *vertexWriter) Unwrap() http.ResponseWriter { return v.o }

func (v *vertexWriter) finish() {
	if !v.hold {
		return
	}
	status, body, _ := vertex.MapError(v.err.status, v.err.body.Bytes())
	writeMapped(v.o, status, body)
}
