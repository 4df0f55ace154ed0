// Package mockvertex is a mock of Google Vertex AI's Anthropic endpoints
// and of Google's OAuth2 token endpoint, for tests. It checks what the real
// services check: the token endpoint verifies the service account's signed
// JWT assertion (RS256, with the test key's public key; issuer, audience =
// the token URI, scope, issue and expiry times) before it issues an access
// token with an expiry; rawPredict, streamRawPredict and count-tokens
// require a live access token as Authorization: Bearer, the configured
// project and region, anthropic_version vertex-2023-10-16 and no model in
// the body. Answers come from an inner mockanthropic server (Anthropic JSON
// and SSE, as Vertex passes them through, without anthropic-ratelimit
// headers); quota errors are Google's RESOURCE_EXHAUSTED.
package mockvertex

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/jsonedit"
	"github.com/cc-relay/caddy-cc-relay/internal/mockanthropic"
	"github.com/cc-relay/caddy-cc-relay/internal/vertex"
)

const innerKey = "mockvertex-inner"

// OrgID is the inner mock's organization: its limits are the project's
// Vertex quotas.
const OrgID = "vertex-project"

// TokenPath is where the mock's token endpoint listens.
const TokenPath = "/token"

// Config configures a Server.
type Config struct {
	Project string
	Region  string
	// ClientEmail is the service account; default
	// relay@<project>.iam.gserviceaccount.com.
	ClientEmail string
	// TokenTTL is the lifetime of issued access tokens; default 1h.
	TokenTTL time.Duration
	// Anthropic configures the inner mock; its Keys are replaced.
	Anthropic mockanthropic.Config
	// Now is the clock for JWTs and token expiry; default time.Now.
	Now func() time.Time
}

// Server is the mock; it implements http.Handler for both the token
// endpoint and the prediction endpoints.
type Server struct {
	cfg   Config
	key   *rsa.PrivateKey
	inner *mockanthropic.Server

	mu        sync.Mutex
	tokens    map[string]time.Time // access token → expiry
	issued    int
	exhausted int
	paths     []string
	bodies    [][]byte
}

// New returns a Server with a fresh RSA key for its service account.
func New(cfg Config) *Server {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = time.Hour
	}
	if cfg.ClientEmail == "" {
		cfg.ClientEmail = "relay@" + cfg.Project + ".iam.gserviceaccount.com"
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	ac := cfg.Anthropic
	ac.Keys = map[string]string{innerKey: OrgID}
	if ac.Now == nil {
		ac.Now = cfg.Now
	}
	return &Server{cfg: cfg, key: key, inner: mockanthropic.New(ac), tokens: map[string]time.Time{}}
}

// Inner is the Anthropic mock that produces the answers.
func (s *Server) Inner() *mockanthropic.Server { return s.inner }

// ServiceAccountJSON is a service-account key file for the mock's account
// whose token_uri is baseURL + TokenPath.
func (s *Server) ServiceAccountJSON(baseURL string) []byte {
	der, _ := x509.MarshalPKCS8PrivateKey(s.key)
	b, _ := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     s.cfg.Project,
		"private_key_id": "mock-key-1",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   s.cfg.ClientEmail,
		"client_id":      "1234567890",
		"token_uri":      baseURL + TokenPath,
	})
	return b
}

// Exhaust makes the next n prediction requests fail with 429
// RESOURCE_EXHAUSTED.
func (s *Server) Exhaust(n int) {
	s.mu.Lock()
	s.exhausted += n
	s.mu.Unlock()
}

// TokensIssued is how many access tokens the token endpoint has issued.
func (s *Server) TokensIssued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issued
}

// Paths returns the paths of the prediction requests received, with their
// bodies.
func (s *Server) Paths() ([]string, [][]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.paths...), append([][]byte(nil), s.bodies...)
}

// ServeHTTP serves the token endpoint and the prediction endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == TokenPath {
		s.token(w, r)
		return
	}
	s.predict(w, r)
}

// token verifies a JWT bearer assertion and issues an access token.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	oauthErr := func(code int, e, desc string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": e, "error_description": desc})
	}
	if err := r.ParseForm(); err != nil || r.Method != http.MethodPost {
		oauthErr(http.StatusBadRequest, "invalid_request", "bad form")
		return
	}
	if r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		oauthErr(http.StatusBadRequest, "unsupported_grant_type", "Invalid grant_type")
		return
	}
	base := "http://" + r.Host
	if err := s.verifyJWT(r.PostForm.Get("assertion"), base+TokenPath); err != nil {
		oauthErr(http.StatusBadRequest, "invalid_grant", err.Error())
		return
	}
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	tok := "ya29.mock-" + hex.EncodeToString(raw[:])
	s.mu.Lock()
	s.tokens[tok] = s.cfg.Now().Add(s.cfg.TokenTTL)
	s.issued++
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"access_token": tok, "token_type": "Bearer", "expires_in": int(s.cfg.TokenTTL.Seconds()),
	})
}

func (s *Server) verifyJWT(assertion, audience string) error {
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 {
		return fmt.Errorf("malformed assertion")
	}
	var hdr struct{ Alg, Typ string }
	if b, err := base64.RawURLEncoding.DecodeString(parts[0]); err != nil || json.Unmarshal(b, &hdr) != nil || hdr.Alg != "RS256" {
		return fmt.Errorf("bad JWT header")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return fmt.Errorf("bad JWT signature encoding")
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(&s.key.PublicKey, crypto.SHA256, sum[:], sig); err != nil {
		return fmt.Errorf("Invalid JWT Signature.")
	}
	var c struct {
		Iss   string `json:"iss"`
		Aud   string `json:"aud"`
		Scope string `json:"scope"`
		Iat   int64  `json:"iat"`
		Exp   int64  `json:"exp"`
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || json.Unmarshal(b, &c) != nil {
		return fmt.Errorf("bad JWT claims")
	}
	now := s.cfg.Now().Unix()
	switch {
	case c.Iss != s.cfg.ClientEmail:
		return fmt.Errorf("Invalid issuer")
	case c.Aud != audience:
		return fmt.Errorf("Invalid JWT: audience %q is not the token URI", c.Aud)
	case !strings.Contains(" "+c.Scope+" ", " "+vertex.Scope+" "):
		return fmt.Errorf("Invalid JWT: scope")
	case c.Exp-c.Iat > 3600 || c.Exp <= now || c.Iat > now+300:
		return fmt.Errorf("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe")
	}
	return nil
}

// googleError writes Google's error body.
func googleError(w http.ResponseWriter, code int, status, msg string) {
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"code": code, "message": msg, "status": status}})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

func (s *Server) predict(w http.ResponseWriter, r *http.Request) {
	prefix := "/v1/projects/" + s.cfg.Project + "/locations/" + s.cfg.Region + "/publishers/anthropic/models/"
	rest, ok := strings.CutPrefix(r.URL.Path, prefix)
	if !ok || r.Method != http.MethodPost {
		googleError(w, http.StatusNotFound, "NOT_FOUND", "The requested URL was not found on this server.")
		return
	}
	model, op, _ := strings.Cut(rest, ":")
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	exp, known := s.tokens[tok]
	s.mu.Unlock()
	if !known || !s.cfg.Now().Before(exp) {
		googleError(w, http.StatusUnauthorized, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access token.")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 32<<20))
	if err != nil {
		googleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "could not read body")
		return
	}
	s.mu.Lock()
	s.paths = append(s.paths, r.URL.Path)
	s.bodies = append(s.bodies, body)
	exhausted := s.exhausted > 0
	if exhausted {
		s.exhausted--
	}
	s.mu.Unlock()
	if exhausted {
		googleError(w, http.StatusTooManyRequests, "RESOURCE_EXHAUSTED", "Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model with base model: anthropic-claude. Please submit a quota increase request.")
		return
	}
	if v, _ := jsonedit.Get(body, "anthropic_version"); string(v) != `"`+vertex.Version+`"` {
		googleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "anthropic_version: required "+vertex.Version)
		return
	}
	innerPath := "/v1/messages"
	switch {
	case model == "count-tokens" && op == "rawPredict":
		innerPath = "/v1/messages/count_tokens"
	case op == "rawPredict" || op == "streamRawPredict":
		if _, has := jsonedit.Get(body, "model"); has {
			googleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "model: not permitted in the body; it is in the URL")
			return
		}
		m, _ := json.Marshal(model)
		body, err = jsonedit.Rewrite(nil, body, nil, append([]byte(`"model":`), m...))
		if err != nil {
			googleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", err.Error())
			return
		}
	default:
		googleError(w, http.StatusNotFound, "NOT_FOUND", "unknown method")
		return
	}
	body, _ = jsonedit.Rewrite(nil, body, []string{"anthropic_version"})
	ir, _ := http.NewRequestWithContext(r.Context(), http.MethodPost, innerPath, bytes.NewReader(body))
	ir.Header.Set("X-Api-Key", innerKey)
	ir.Header.Set("Content-Type", "application/json")
	s.inner.ServeHTTP(&passThrough{w: w}, ir)
}

// passThrough forwards the inner answer without the Anthropic API's
// rate-limit and organization headers, turning its 429 into Google's.
type passThrough struct {
	w      http.ResponseWriter
	hdr    http.Header
	status int
	drop   bool
}

func (p *passThrough) Header() http.Header {
	if p.hdr == nil {
		p.hdr = http.Header{}
	}
	return p.hdr
}

func (p *passThrough) WriteHeader(code int) {
	if p.status != 0 {
		return
	}
	p.status = code
	if code == http.StatusTooManyRequests {
		p.drop = true
		googleError(p.w, code, "RESOURCE_EXHAUSTED", "Quota exceeded for aiplatform.googleapis.com/online_prediction_input_tokens_per_minute_per_base_model with base model: anthropic-claude.")
		return
	}
	dst := p.w.Header()
	for k, v := range p.hdr {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "anthropic-") || lk == "retry-after" || lk == "request-id" {
			continue
		}
		dst[k] = v
	}
	p.w.WriteHeader(code)
}

func (p *passThrough) Write(b []byte) (int, error) {
	if p.status == 0 {
		p.WriteHeader(http.StatusOK)
	}
	if p.drop {
		return len(b), nil
	}
	return p.w.Write(b)
}

func (p *passThrough) Flush() {
	if !p.drop {
		_ = http.NewResponseController(p.w).Flush()
	}
}
