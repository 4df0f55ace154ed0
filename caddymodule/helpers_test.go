package caddymodule

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"go.uber.org/goleak"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
	"github.com/cc-relay/caddy-cc-relay/internal/mockanthropic"
	"github.com/cc-relay/caddy-cc-relay/internal/relaytest"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// Helpers shared by the end-to-end tests (e2e, Claude Code, fault, sticky
// and operations tests).
//
// caddytest runs one in-process Caddy per test binary (admin on
// localhost:2999, http 9080, https 9443): no t.Parallel, and every test
// uses its own pool name so state from one test never leaks into the next.

const (
	adminAddr = "http://localhost:2999"
	relayAddr = "http://localhost:9080"
)

// --- the in-process Caddy ---

// noSkip turns caddytest's "prerequisites missing" skip into a failure: a
// silently skipped end-to-end test proves nothing.
type noSkip struct{ *testing.T }

func (n noSkip) Skipf(format string, args ...any) { n.T.Fatalf("caddytest skipped: "+format, args...) }
func (n noSkip) SkipNow()                         { n.T.Fatal("caddytest skipped") }

// caddyGlobal is the global options block every test starts from; extra
// lines (logging, storage) go inside it.
func caddyGlobal(extra string) string {
	return `{
	admin localhost:2999
	http_port 9080
	https_port 9443
	grace_period 1ns
	skip_install_trust
` + extra + `
}
`
}

// startCaddy loads a whole Caddyfile (a first load, or a reload of the
// running Caddy) and fails the test at once if it does not run.
func startCaddy(t *testing.T, caddyfile string) *caddytest.Tester {
	t.Helper()
	tc := caddytest.NewTester(noSkip{t})
	tc.InitServer(caddyfile, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	return tc
}

// startRelay loads site under the default global options.
func startRelay(t *testing.T, site string) *caddytest.Tester {
	t.Helper()
	return startCaddy(t, caddyGlobal("")+site)
}

// relaySite is a site block for cc_relay with the given body lines in
// front of proxy.
func relaySite(body, proxy string) string {
	return "http://localhost:9080 {\n\tcc_relay " + body + "\n\t" + proxy + "\n}"
}

// proxyTo is the reverse_proxy block of the fault and sticky tests.
// Without keep-alive, an upstream connection ends with its request, so a
// goroutine still alive after a test is a leak and not an idle connection.
func proxyTo(u *recUpstream, extra ...string) string {
	return fmt.Sprintf(`reverse_proxy %s {
		transport http {
			keepalive off
		}
		%s
	}`, u.addr(), strings.Join(extra, "\n\t\t"))
}

// keyBlocks renders cc_relay key lines "key sk-ops-<n> { name <n> ... }",
// with extra[n] inside the block of n.
func keyBlocks(names string, extra map[string]string) string {
	var b strings.Builder
	for _, n := range strings.Fields(names) {
		fmt.Fprintf(&b, "\t\tkey sk-ops-%s {\n\t\t\tname %s\n%s\t\t}\n", n, n, extra[n])
	}
	return b.String()
}

// setEnvs sets environment variables for the test's duration.
func setEnvs(t *testing.T, env map[string]string) {
	for k, v := range env {
		t.Setenv(k, v)
	}
}

// --- time ---

// clockT0 is before the spend-cap date the fault tests use, so that date
// lies ahead.
var clockT0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// useFakeClock makes pools created from now on read a fake clock, so
// budgets neither refill nor cooldowns expire unless the test advances it.
func useFakeClock(t *testing.T) *clock.Fake {
	t.Helper()
	fake := clock.NewFake(clockT0)
	newClock = func() clock.Clock { return fake }
	t.Cleanup(func() { newClock = func() clock.Clock { return clock.Real{} } })
	return fake
}

// --- the upstream ---

// seenReq is one request as the upstream received it.
type seenReq struct {
	key    string
	body   []byte
	header http.Header
	query  string
	resp   *lockedBuffer // the bytes the upstream handler wrote back
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// recUpstream is an httptest Anthropic stand-in: it records every request
// (credential, body, headers, query) and the bytes written back, then
// hands the request to its handler.
type recUpstream struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []seenReq
}

// teeWriter copies what the upstream writes; Unwrap keeps Flush and Hijack
// (used by the mock's stream faults) reachable.
type teeWriter struct {
	http.ResponseWriter
	out io.Writer
}

func (w teeWriter) Write(p []byte) (int, error) {
	_, _ = w.out.Write(p)
	return w.ResponseWriter.Write(p)
}

func (w teeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// requestKey is a request's credential: x-api-key, else the bearer token.
func requestKey(r *http.Request) string {
	if key := r.Header.Get("X-Api-Key"); key != "" {
		return key
	}
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
}

func newRecUpstream(t *testing.T, h http.Handler) *recUpstream {
	t.Helper()
	u := &recUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		resp := &lockedBuffer{}
		u.mu.Lock()
		u.reqs = append(u.reqs, seenReq{key: requestKey(r), body: body, header: r.Header.Clone(), query: r.URL.RawQuery, resp: resp})
		u.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		h.ServeHTTP(teeWriter{w, resp}, r)
	}))
	t.Cleanup(u.Close)
	return u
}

// newUpstream is a recUpstream that answers with respond, given the
// request's credential, or with okMessage when respond is nil.
func newUpstream(t *testing.T, respond func(key string, w http.ResponseWriter, r *http.Request)) *recUpstream {
	t.Helper()
	return newRecUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if respond == nil {
			okMessage(w)
			return
		}
		respond(requestKey(r), w, r)
	}))
}

// newRateLimitingUpstream answers the requests of the key limited with a
// 429 carrying retryAfter, and all others with okMessage.
func newRateLimitingUpstream(t *testing.T, limited, retryAfter string) *recUpstream {
	t.Helper()
	return newUpstream(t, func(key string, w http.ResponseWriter, r *http.Request) {
		if key == limited {
			upstreamRateLimited(w, retryAfter)
			return
		}
		okMessage(w)
	})
}

func (u *recUpstream) all() []seenReq {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seenReq(nil), u.reqs...)
}

// keys returns the credential of every request, in order.
func (u *recUpstream) keys() []string {
	var ks []string
	for _, r := range u.all() {
		ks = append(ks, r.key)
	}
	return ks
}

// count returns the requests seen per credential.
func (u *recUpstream) count() map[string]int {
	m := map[string]int{}
	for _, r := range u.all() {
		m[r.key]++
	}
	return m
}

func (u *recUpstream) addr() string { return strings.TrimPrefix(u.URL, "http://") }

// okMessage answers a Messages request: 12 input and 3 output tokens.
func okMessage(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":3}}`)
}

// upstreamError answers with an Anthropic error of the given type.
func upstreamError(w http.ResponseWriter, status int, errType, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"type":"error","error":{"type":%q,"message":%q}}`, errType, message)
}

// upstreamRateLimited answers 429 rate_limit_error with a Retry-After.
func upstreamRateLimited(w http.ResponseWriter, retryAfter string) {
	w.Header().Set("Retry-After", retryAfter)
	upstreamError(w, http.StatusTooManyRequests, "rate_limit_error", "slow down")
}

// SSE events of the streams the upstreams send.
const (
	sseStart10 = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n"
	sseStart4  = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":4,\"output_tokens\":1}}}\n\n"
	sseDelta2  = "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":2}}\n\n"
	sseStop    = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
)

// writeEvents answers 200 with an event stream, flushing after each event,
// and returns the controller for further flushes.
func writeEvents(w http.ResponseWriter, events ...string) *http.ResponseController {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	for _, ev := range events {
		_, _ = io.WriteString(w, ev)
		_ = rc.Flush()
	}
	return rc
}

// mockOn returns a mock upstream whose rate limits run on fake's time.
func mockOn(fake *clock.Fake, orgs []mockanthropic.Org, keys map[string]string) *mockanthropic.Server {
	return mockanthropic.New(mockanthropic.Config{Orgs: orgs, Keys: keys, Now: fake.Now, OutputTokens: func([]byte) int64 { return 20 }})
}

// gatedGate returns a Gate that holds every admitted request until release is
// closed, and a channel that receives once per request reaching the gate.
func gatedGate() (gate func(*http.Request) <-chan struct{}, release chan struct{}, arrived chan struct{}) {
	release = make(chan struct{})
	arrived = make(chan struct{}, 1000)
	return func(*http.Request) <-chan struct{} {
		arrived <- struct{}{}
		return release
	}, release, arrived
}

// --- request bodies ---

const msgBody = `{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hello"}]}`

// msgText is a Messages request body whose one message says text.
func msgText(text string) string {
	return fmt.Sprintf(`{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":%q}]}`, text)
}

// msgStream is a Messages request body with an explicit stream field.
func msgStream(stream bool) string {
	return fmt.Sprintf(`{"model":"claude-sonnet-4-5","stream":%t,"max_tokens":64,"messages":[{"role":"user","content":"hello"}]}`, stream)
}

// ccBody is a Claude Code-like Messages request: a cached system prompt,
// a cached conversation and metadata.user_id (omitted when userID is "").
func ccBody(userID, prompt string, stream bool, history ...string) string {
	type block map[string]any
	cache := map[string]string{"type": "ephemeral"}
	msgs := []map[string]any{}
	turns := append(append([]string(nil), history...), prompt)
	for i, text := range turns {
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		b := block{"type": "text", "text": text}
		if i == len(turns)-1 {
			b["cache_control"] = cache
		}
		msgs = append(msgs, map[string]any{"role": role, "content": []block{b}})
	}
	req := map[string]any{
		"model":      "claude-sonnet-4-5-20250929",
		"max_tokens": 32000,
		"system": []block{
			{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.", "cache_control": cache},
			{"type": "text", "text": "You are an interactive CLI tool that helps users with software engineering tasks.", "cache_control": cache},
		},
		"messages": msgs,
	}
	if stream {
		req["stream"] = true
	}
	if userID != "" {
		req["metadata"] = map[string]string{"user_id": userID}
	}
	b, _ := json.Marshal(req)
	return string(b)
}

func legacyUserID(session string) string {
	return "user_" + strings.Repeat("ab12", 16) + "_account_6f1c2a4e-3b7d-4c1e-9a2f-0d8e5b7c9a10_session_" + session
}

func jsonUserID(session string) string {
	b, _ := json.Marshal(map[string]string{
		"device_id": strings.Repeat("cd34", 16), "account_uuid": "6f1c2a4e-3b7d-4c1e-9a2f-0d8e5b7c9a10", "session_id": session,
	})
	return string(b)
}

func sessionUUID(n int) string { return fmt.Sprintf("5e55a0%02d-1111-4222-8333-%012d", n%100, n) }

// --- clients ---

// relayHTTP opens a connection per request: a reload replaces the admin
// endpoint and closes the relay's idle connections, and a request racing
// that close on a pooled connection would fail for reasons not under test.
var relayHTTP = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// setRelayHeaders gives a Messages request its JSON content type, the
// client token as x-api-key (if any) and the extra header pairs.
func setRelayHeaders(h http.Header, token string, hdr ...string) {
	h.Set("Content-Type", "application/json")
	if token != "" {
		h.Set("X-Api-Key", token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		h.Set(hdr[i], hdr[i+1])
	}
}

// roundTrip sends req with c and returns the response with its whole body.
func roundTrip(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	return res, string(b)
}

// newRequest is http.NewRequest for a test: an error fails it.
func newRequest(t *testing.T, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// post sends a Messages API request to the relay (token as x-api-key, if
// any, and the extra header pairs) and returns the response with its
// whole body.
func post(t *testing.T, token, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req := newRequest(t, http.MethodPost, relayAddr+"/v1/messages", strings.NewReader(body))
	setRelayHeaders(req.Header, token, hdr...)
	return roundTrip(t, relayHTTP, req)
}

// adminDo sends a request to the admin endpoint and returns the status and
// the whole body.
func adminDo(t *testing.T, method, path, contentType, body string) (int, string) {
	t.Helper()
	req := newRequest(t, method, adminAddr+path, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, b := roundTrip(t, relayHTTP, req)
	return res.StatusCode, b
}

// adminGet returns the body of a GET on the admin endpoint that must
// answer 200.
func adminGet(t *testing.T, path string) string {
	t.Helper()
	code, body := adminDo(t, http.MethodGet, path, "", "")
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	return body
}

// openStream sends req with c and reads the answer's first line, which
// must open the message_start event. The rest is left in the reader; the
// caller closes the body.
func openStream(t *testing.T, c *http.Client, req *http.Request) (*http.Response, *bufio.Reader) {
	t.Helper()
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(res.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "event: message_start\n" {
		res.Body.Close()
		t.Fatalf("first line %q, %v", line, err)
	}
	return res, br
}

// relayClient is a client of its own so its idle connections can be closed.
type relayClient struct {
	*http.Client
	tr *http.Transport
}

func newRelayClient(t *testing.T) *relayClient {
	tr := &http.Transport{MaxIdleConnsPerHost: 100, DisableCompression: true}
	c := &relayClient{Client: &http.Client{Transport: tr, Timeout: 20 * time.Second}, tr: tr}
	t.Cleanup(tr.CloseIdleConnections)
	return c
}

type relayResult struct {
	status int
	header http.Header
	body   string
	err    error
}

// via is the name of the key that answered.
func (r relayResult) via() string { return r.header.Get("X-Cc-Relay-Key") }

// send posts body to the relay the way Claude Code does (?beta=true,
// anthropic-version, anthropic-beta) with the given client token and extra
// header pairs, and reads the whole answer.
func (c *relayClient) send(ctx context.Context, token, body string, hdr ...string) relayResult {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, relayAddr+"/v1/messages?beta=true", strings.NewReader(body))
	if err != nil {
		return relayResult{err: err}
	}
	req.Header.Set("Anthropic-Version", "2023-06-01")
	req.Header.Set("Anthropic-Beta", "claude-code-20250219,prompt-caching-2024-07-31")
	req.Header.Set("User-Agent", "claude-cli/2.0.0 (external, cli)")
	setRelayHeaders(req.Header, token, hdr...)
	res, err := c.Do(req)
	if err != nil {
		return relayResult{err: err}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return relayResult{status: res.StatusCode, header: res.Header, body: string(b), err: err}
}

func (c *relayClient) mustSend(t *testing.T, token, body string, hdr ...string) relayResult {
	t.Helper()
	r := c.send(context.Background(), token, body, hdr...)
	if r.err != nil {
		t.Fatalf("request failed: %v", r.err)
	}
	return r
}

// --- pool state ---

// poolSnap returns the named pool's snapshot, read from the registry.
func poolSnap(t *testing.T, pool string) PoolStatus {
	t.Helper()
	p := lookupPool(pool)
	if p == nil {
		t.Fatalf("pool %q is not registered", pool)
	}
	return PoolStatus{Name: pool, Snapshot: p.Snapshot()}
}

// adminPool reads one pool through the admin API.
func adminPool(t *testing.T, name string) PoolStatus {
	t.Helper()
	body := adminGet(t, "/cc_relay/pools/"+name)
	var ps PoolStatus
	if err := json.Unmarshal([]byte(body), &ps); err != nil {
		t.Fatalf("decoding pool %s: %v: %s", name, err, body)
	}
	return ps
}

// findKey finds a key in a pool status; ok is false when it is absent.
func findKey(ps PoolStatus, name string) (keypool.KeySnapshot, bool) {
	for _, k := range ps.Keys {
		if k.Name == name {
			return k, true
		}
	}
	return keypool.KeySnapshot{}, false
}

func mustKey(t *testing.T, ps PoolStatus, name string) keypool.KeySnapshot {
	t.Helper()
	k, ok := findKey(ps, name)
	if !ok {
		t.Fatalf("pool %s has no key %s: %+v", ps.Name, name, ps.Keys)
	}
	return k
}

// keySnap returns a key's snapshot, read from the registry.
func keySnap(t *testing.T, pool, name string) keypool.KeySnapshot {
	t.Helper()
	return mustKey(t, poolSnap(t, pool), name)
}

func budgetOf(t *testing.T, k keypool.KeySnapshot, class string) keypool.BudgetSnapshot {
	t.Helper()
	for _, b := range k.Budgets {
		if b.Class == class {
			return b
		}
	}
	t.Fatalf("key %s has no %s budget: %+v", k.Name, class, k.Budgets)
	return keypool.BudgetSnapshot{}
}

// idle reports that no key of the pool has a request in flight or waiting.
func idle(ps PoolStatus) bool {
	if ps.Waiting != 0 {
		return false
	}
	for _, k := range ps.Keys {
		if k.InFlight != 0 {
			return false
		}
	}
	return true
}

// poolIdle is the condition that the pool (read from the registry) is idle.
func poolIdle(t *testing.T, pool string) func() bool {
	return func() bool { return idle(poolSnap(t, pool)) }
}

// waitIdle polls the admin API (bounded) until no key of the pool has an
// attempt in flight, and returns that status: the handler settles after
// the client has its last byte.
func waitIdle(t *testing.T, pool string) PoolStatus {
	t.Helper()
	var ps PoolStatus
	pollUntil(t, "pool "+pool+" idle", func() bool {
		ps = adminPool(t, pool)
		return idle(ps)
	})
	return ps
}

// --- waiting ---

// poll calls cond until it holds, for at most 10s, and reports whether it
// held.
func poll(cond func() bool) bool {
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// pollUntil polls cond (bounded) for effects that complete on another
// goroutine after the client has its answer, such as a handler unwinding.
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !poll(cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// --- goroutine leaks ---

// leakCheck remembers the goroutines alive now (the in-process Caddy, the
// upstream's listener, earlier tests' leftovers); verify then fails the test
// if any other goroutine outlives it, after closing the clients' idle
// connections.
type leakCheck struct{ ignore goleak.Option }

func startLeakCheck() leakCheck { return leakCheck{goleak.IgnoreCurrent()} }

// notOurs are goroutines Caddy starts lazily and keeps for the life of a
// configuration: the access log file's rotation worker (begun on its first
// write).
var notOurs = goleak.IgnoreTopFunction("github.com/DeRuina/timberjack.(*Logger).millRun")

func (l leakCheck) verify(t *testing.T, clients ...*relayClient) {
	t.Helper()
	for _, c := range clients {
		c.tr.CloseIdleConnections()
	}
	// goleak's own retries span about half a second; under -race on a
	// busy machine a finished connection's goroutines can take longer to
	// go. A leaked goroutine stays: keep looking, bounded.
	var err error
	if !poll(func() bool { err = goleak.Find(l.ignore, notOurs); return err == nil }) {
		t.Fatal(err)
	}
}

// checkLeaks starts a leakCheck now and verifies it when the test ends,
// before the cleanups registered until now (the upstream's and the
// clients' own) run.
func checkLeaks(t *testing.T, clients ...*relayClient) {
	lc := startLeakCheck()
	t.Cleanup(func() { lc.verify(t, clients...) })
}

// --- metrics ---

// metricSample is one sample of Caddy's /metrics.
type metricSample = relaytest.Sample

// scrapeMetrics reads the samples of the admin endpoint's /metrics.
func scrapeMetrics(t *testing.T) []metricSample {
	t.Helper()
	s, err := relaytest.ParseMetrics(strings.NewReader(adminGet(t, "/metrics")))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return s
}

// findSamples returns the samples named name whose labels include want.
func findSamples(samples []metricSample, name string, want map[string]string) []metricSample {
	return relaytest.FindSamples(samples, name, want)
}

// sampleValue is the value of the one sample named name with labels want.
func sampleValue(t *testing.T, samples []metricSample, name string, want map[string]string) float64 {
	t.Helper()
	got := findSamples(samples, name, want)
	if len(got) != 1 {
		t.Fatalf("%s%v: %d samples, want 1: %v", name, want, len(got), got)
	}
	return got[0].Value
}
