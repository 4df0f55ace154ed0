// Package mockbedrock is a mock of Amazon Bedrock's InvokeModel and
// InvokeModelWithResponseStream for Anthropic models, for tests. It checks
// what the real service checks before it answers: the AWS Signature
// Version 4 of every request, recomputed with the official aws-sdk-go-v2
// signer from the access key's secret (a mismatch, an unknown key, a wrong
// region or service, or a stale date is refused with a 403 in Bedrock's
// shape), and the body (anthropic_version bedrock-2023-05-31 required;
// model and stream are extraneous keys). Answers come from an inner
// mockanthropic server, so tokens, rate limits and text are the Anthropic
// mock's; a streaming answer goes out in AWS event-stream framing, CRCs
// included, encoded by the SDK's encoder, one chunk per Anthropic event
// (no pings, message_stop with amazon-bedrock-invocationMetrics), flushed
// as it is produced. Errors carry x-amzn-ErrorType and {"message":...}.
package mockbedrock

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/cc-relay/caddy-cc-relay/internal/bedrock"
	"github.com/cc-relay/caddy-cc-relay/internal/jsonedit"
	"github.com/cc-relay/caddy-cc-relay/internal/mockanthropic"
)

// innerKey is the inner Anthropic mock's only key.
const innerKey = "mockbedrock-inner"

// OrgID is the inner mock's organization: limits set on it in
// Config.Anthropic.Orgs are the account's Bedrock quotas.
const OrgID = "bedrock-account"

// Config configures a Server.
type Config struct {
	// Region the endpoint serves; signatures must be scoped to it.
	Region string
	// Credentials maps access key ids to their secret access keys.
	Credentials map[string]string
	// SessionTokens maps access key ids of temporary credentials to the
	// session token their requests must carry.
	SessionTokens map[string]string
	// Anthropic configures the inner mock (output tokens, stream deltas,
	// limits of OrgID). Its Keys are replaced.
	Anthropic mockanthropic.Config
	// Now is the clock signatures are checked against; default time.Now.
	Now func() time.Time
}

// Record is one request the mock received.
type Record struct {
	Path     string
	ModelID  string
	Stream   bool
	Body     []byte
	Header   http.Header
	Verified bool
	Status   int
	Error    string // the x-amzn-ErrorType answered, if any
}

// Server is the mock; it implements http.Handler.
type Server struct {
	cfg   Config
	inner *mockanthropic.Server

	mu      sync.Mutex
	records []Record
	fail    []injected
	reqID   atomic.Uint64
}

type injected struct {
	status int
	name   string
	msg    string
	stream bool // mid-stream, after the first event
}

// New returns a Server.
func New(cfg Config) *Server {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	ac := cfg.Anthropic
	ac.Keys = map[string]string{innerKey: OrgID}
	if ac.Now == nil {
		ac.Now = cfg.Now
	}
	return &Server{cfg: cfg, inner: mockanthropic.New(ac)}
}

// Inner is the Anthropic mock that produces the answers: force its 429s
// (Force429(OrgID, ...)), 529s or stream faults to make Bedrock throttle,
// be unavailable or fail mid-stream.
func (s *Server) Inner() *mockanthropic.Server { return s.inner }

// Throttle makes the next n requests fail with 429 ThrottlingException.
func (s *Server) Throttle(n int) {
	for range n {
		s.Fail(http.StatusTooManyRequests, "ThrottlingException", "Too many requests, please wait before trying again.")
	}
}

// Fail makes the next request answer status with the exception name and
// message (e.g. 400 ValidationException).
func (s *Server) Fail(status int, name, msg string) {
	s.mu.Lock()
	s.fail = append(s.fail, injected{status: status, name: name, msg: msg})
	s.mu.Unlock()
}

// FailStream makes the next streaming request end after its first event
// with an exception message (e.g. modelStreamErrorException).
func (s *Server) FailStream(name, msg string) {
	s.mu.Lock()
	s.fail = append(s.fail, injected{name: name, msg: msg, stream: true})
	s.mu.Unlock()
}

// Records returns the requests received so far.
func (s *Server) Records() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Record(nil), s.records...)
}

func (s *Server) record(rec Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.records) >= 10000 {
		s.records = s.records[1:]
	}
	s.records = append(s.records, rec)
}

func (s *Server) takeFault(stream bool) (injected, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.fail {
		if f.stream == stream {
			s.fail = append(s.fail[:i], s.fail[i+1:]...)
			return f, true
		}
	}
	return injected{}, false
}

// ServeHTTP answers POST /model/{modelId}/invoke and
// /model/{modelId}/invoke-with-response-stream.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Amzn-Requestid", "mock-"+strconv.FormatUint(s.reqID.Add(1), 10))
	rec := Record{Path: r.URL.EscapedPath(), Header: r.Header.Clone()}
	defer func() { s.record(rec) }()
	fail := func(status int, name, msg string) {
		rec.Status, rec.Error = status, name
		writeError(w, status, name, msg)
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/model/")
	if !ok || r.Method != http.MethodPost {
		fail(http.StatusNotFound, "UnknownOperationException", "")
		return
	}
	switch {
	case strings.HasSuffix(rest, "/invoke-with-response-stream"):
		rec.ModelID, rec.Stream = strings.TrimSuffix(rest, "/invoke-with-response-stream"), true
	case strings.HasSuffix(rest, "/invoke"):
		rec.ModelID = strings.TrimSuffix(rest, "/invoke")
	default:
		fail(http.StatusNotFound, "UnknownOperationException", "")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 32<<20))
	if err != nil {
		fail(http.StatusBadRequest, "ValidationException", "could not read body")
		return
	}
	rec.Body = body
	if status, name, msg := s.verify(r, body); status != 0 {
		fail(status, name, msg)
		return
	}
	rec.Verified = true
	inner, err := innerBody(body, rec.ModelID, rec.Stream)
	if err != nil {
		fail(http.StatusBadRequest, "ValidationException", err.Error())
		return
	}
	if f, ok := s.takeFault(false); ok {
		fail(f.status, f.name, f.msg)
		return
	}
	var streamFault *injected
	if rec.Stream {
		if f, ok := s.takeFault(true); ok {
			streamFault = &f
		}
	}
	ir, _ := http.NewRequestWithContext(r.Context(), http.MethodPost, "/v1/messages", bytes.NewReader(inner))
	ir.Header.Set("X-Api-Key", innerKey)
	ir.Header.Set("Content-Type", "application/json")
	tw := &translator{w: w, stream: rec.Stream, enc: eventstream.NewEncoder(), fault: streamFault}
	s.inner.ServeHTTP(tw, ir)
	tw.finish()
	rec.Status, rec.Error = tw.status, tw.errName
}

// innerBody checks a Bedrock body and turns it back into a Messages body.
func innerBody(body []byte, modelID string, stream bool) ([]byte, error) {
	var version []byte
	var bad string
	err := jsonedit.Each(body, func(m jsonedit.Member) bool {
		switch string(m.Key) {
		case "anthropic_version":
			version = m.Value
		case "model", "stream":
			bad = string(m.Key)
			return false
		case "anthropic_beta":
			var betas []string
			if json.Unmarshal(m.Value, &betas) != nil {
				bad = "anthropic_beta"
				return false
			}
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("Malformed input request: %v", err)
	}
	if bad != "" {
		return nil, fmt.Errorf("Malformed input request: extraneous key [%s] is not permitted, please reformat your input and try again.", bad)
	}
	if string(version) != `"`+bedrock.Version+`"` {
		return nil, fmt.Errorf("Malformed input request: #: required key [anthropic_version] not found or invalid, please reformat your input and try again.")
	}
	model, _ := json.Marshal(ClaudeName(modelID))
	return jsonedit.Rewrite(nil, body, []string{"anthropic_version", "anthropic_beta"},
		append([]byte(`"model":`), model...), []byte(`"stream":`+strconv.FormatBool(stream)))
}

// ClaudeName is the Claude API name of a Bedrock model id, as Bedrock's
// answers name the model: "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
// is "claude-sonnet-4-5-20250929".
func ClaudeName(id string) string {
	if i := strings.Index(id, "anthropic."); i >= 0 {
		id = id[i+len("anthropic."):]
	}
	if i := strings.LastIndex(id, "-v"); i > 0 {
		id = id[:i]
	}
	return id
}

// verify recomputes the request's SigV4 signature with the official
// signer; it returns a status and exception for a request AWS refuses.
func (s *Server) verify(r *http.Request, body []byte) (int, string, string) {
	const denied = http.StatusForbidden
	auth := r.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(auth, "AWS4-HMAC-SHA256 ")
	if !ok {
		return denied, "MissingAuthenticationTokenException", "Missing Authentication Token"
	}
	fields := map[string]string{}
	for part := range strings.SplitSeq(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		fields[k] = v
	}
	scope := strings.Split(fields["Credential"], "/")
	if len(scope) != 5 || scope[4] != "aws4_request" {
		return denied, "IncompleteSignatureException", "Authorization header requires a valid Credential"
	}
	secret, known := s.cfg.Credentials[scope[0]]
	if !known {
		return denied, "UnrecognizedClientException", "The security token included in the request is invalid."
	}
	if scope[2] != s.cfg.Region || scope[3] != bedrock.Service {
		return denied, "InvalidSignatureException", "Credential should be scoped to a valid region and service"
	}
	t, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil || scope[1] != t.Format("20060102") {
		return denied, "IncompleteSignatureException", "X-Amz-Date is missing or does not match the credential scope"
	}
	if d := s.cfg.Now().Sub(t); d > 5*time.Minute || d < -5*time.Minute {
		return denied, "InvalidSignatureException", "Signature expired"
	}
	token := s.cfg.SessionTokens[scope[0]]
	if r.Header.Get("X-Amz-Security-Token") != token {
		return denied, "UnrecognizedClientException", "The security token included in the request is invalid."
	}
	signed := strings.Split(fields["SignedHeaders"], ";")
	cp := &http.Request{
		Method: r.Method,
		URL:    &url.URL{Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery},
		Host:   r.Host,
		Header: http.Header{},
	}
	hasHost := false
	for _, h := range signed {
		switch h {
		case "host":
			hasHost = true
		case "content-length":
			cp.ContentLength = int64(len(body))
		default:
			if v := r.Header.Values(h); len(v) > 0 {
				cp.Header[http.CanonicalHeaderKey(h)] = v
			}
		}
	}
	if !hasHost {
		return denied, "InvalidSignatureException", "'Host' must be a signed header"
	}
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: scope[0], SecretAccessKey: secret, SessionToken: token}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, cp, hex.EncodeToString(sum[:]), bedrock.Service, s.cfg.Region, t); err != nil {
		return denied, "InvalidSignatureException", err.Error()
	}
	if !hmac.Equal([]byte(cp.Header.Get("Authorization")), []byte(auth)) {
		return denied, "InvalidSignatureException", "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."
	}
	return 0, "", ""
}

func writeError(w http.ResponseWriter, status int, name, msg string) {
	b, _ := json.Marshal(map[string]string{"message": msg})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Amzn-Errortype", name+":http://internal.amazon.com/coral/com.amazon.bedrock/")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
