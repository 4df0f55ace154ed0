package caddymodule

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// Helpers of the operations tests (reload, admin API, metrics, logs, TLS).
// They talk to the in-process Caddy that caddytest runs on admin
// localhost:2999, http 9080 and https 9443.

const (
	opsAdmin = "http://localhost:2999"
	opsRelay = "http://localhost:9080"
)

// opsNoSkip turns caddytest's "prerequisites missing" skip into a failure:
// a silently skipped end-to-end test proves nothing.
type opsNoSkip struct{ *testing.T }

func (n opsNoSkip) Skipf(format string, args ...any) {
	n.T.Fatalf("caddytest skipped: "+format, args...)
}
func (n opsNoSkip) SkipNow() { n.T.Fatal("caddytest skipped") }

// opsUpstream is an Anthropic stand-in that counts requests per credential
// (x-api-key, else the bearer token) and answers with respond, or with
// opsOK when respond is nil.
type opsUpstream struct {
	*httptest.Server
	mu   sync.Mutex
	seen map[string]int
}

func opsNewUpstream(t *testing.T, respond func(key string, w http.ResponseWriter, r *http.Request)) *opsUpstream {
	u := &opsUpstream{seen: map[string]int{}}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("X-Api-Key")
		if key == "" {
			key = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		}
		_, _ = io.Copy(io.Discard, r.Body)
		u.mu.Lock()
		u.seen[key]++
		u.mu.Unlock()
		if respond != nil {
			respond(key, w, r)
			return
		}
		opsOK(w)
	}))
	t.Cleanup(u.Close)
	return u
}

// count returns the requests seen per credential.
func (u *opsUpstream) count() map[string]int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return maps.Clone(u.seen)
}

func (u *opsUpstream) addr() string { return strings.TrimPrefix(u.URL, "http://") }

// opsOK answers a Messages request: 12 input and 3 output tokens.
func opsOK(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":3}}`)
}

// opsGlobal is the global options block every ops test starts from; extra
// lines (logging) go inside it.
func opsGlobal(extra string) string {
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

// opsStart loads a Caddyfile (a first load, or a reload of the running
// Caddy) and fails the test at once if it does not run.
func opsStart(t *testing.T, globalExtra, site string) *caddytest.Tester {
	t.Helper()
	tc := caddytest.NewTester(opsNoSkip{t})
	tc.InitServer(opsGlobal(globalExtra)+site, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	return tc
}

// opsFakeClock makes pool states created from now on read fake time, so
// budgets neither refill nor cooldowns expire between two observations.
func opsFakeClock(t *testing.T) *clock.Fake {
	fake := clock.NewFake(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	newClock = func() clock.Clock { return fake }
	t.Cleanup(func() { newClock = func() clock.Clock { return clock.Real{} } })
	return fake
}

// opsHTTP opens a connection per request: a reload replaces the admin
// endpoint and closes the relay's idle connections, and a request racing
// that close on a pooled connection would fail for reasons not under test.
var opsHTTP = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// opsDo sends a request and returns the status and the whole body.
func opsDo(t *testing.T, method, url, contentType, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := opsHTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return res.StatusCode, string(b)
}

// opsPool reads one pool through the admin API.
func opsPool(t *testing.T, name string) PoolStatus {
	t.Helper()
	code, body := opsDo(t, http.MethodGet, opsAdmin+"/cc_relay/pools/"+name, "", "")
	if code != http.StatusOK {
		t.Fatalf("GET /cc_relay/pools/%s: %d %s", name, code, body)
	}
	var ps PoolStatus
	if err := json.Unmarshal([]byte(body), &ps); err != nil {
		t.Fatalf("decoding pool %s: %v: %s", name, err, body)
	}
	return ps
}

// opsKey finds a key in a pool status; ok is false when it is absent.
func opsKey(ps PoolStatus, name string) (keypool.KeySnapshot, bool) {
	for _, k := range ps.Keys {
		if k.Name == name {
			return k, true
		}
	}
	return keypool.KeySnapshot{}, false
}

func opsMustKey(t *testing.T, ps PoolStatus, name string) keypool.KeySnapshot {
	t.Helper()
	k, ok := opsKey(ps, name)
	if !ok {
		t.Fatalf("pool %s has no key %s: %+v", ps.Name, name, ps.Keys)
	}
	return k
}

func opsBudget(t *testing.T, k keypool.KeySnapshot, class string) keypool.BudgetSnapshot {
	t.Helper()
	for _, b := range k.Budgets {
		if b.Class == class {
			return b
		}
	}
	t.Fatalf("key %s has no %s budget: %+v", k.Name, class, k.Budgets)
	return keypool.BudgetSnapshot{}
}

// opsWaitIdle polls (bounded) until no key of the pool has an attempt in
// flight: the handler settles after the client has its last byte.
func opsWaitIdle(t *testing.T, pool string) PoolStatus {
	t.Helper()
	var ps PoolStatus
	opsEventually(t, "pool "+pool+" idle", func() bool {
		ps = opsPool(t, pool)
		for _, k := range ps.Keys {
			if k.InFlight != 0 {
				return false
			}
		}
		return ps.Waiting == 0
	})
	return ps
}

// opsEventually polls cond for at most 10s.
func opsEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// opsScrape returns the admin endpoint's /metrics text.
func opsScrape(t *testing.T) string {
	t.Helper()
	code, body := opsDo(t, http.MethodGet, opsAdmin+"/metrics", "", "")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	return body
}

// opsSample is one line of the Prometheus text format.
type opsSample struct {
	name   string
	labels map[string]string
	value  float64
}

// opsParse reads the samples of the text exposition format (enough of it
// for these tests: label values hold no escaped quotes).
func opsParse(t *testing.T, text string) []opsSample {
	t.Helper()
	var out []opsSample
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		s := opsSample{labels: map[string]string{}}
		rest := line
		if i := strings.IndexByte(line, '{'); i >= 0 {
			s.name = line[:i]
			j := strings.LastIndexByte(line, '}')
			for _, kv := range splitLabels(line[i+1 : j]) {
				k, v, _ := strings.Cut(kv, "=")
				s.labels[k] = strings.Trim(v, `"`)
			}
			rest = strings.TrimSpace(line[j+1:])
		} else {
			s.name, rest, _ = strings.Cut(line, " ")
		}
		if f := strings.Fields(rest); len(f) > 0 {
			v, err := strconv.ParseFloat(f[0], 64)
			if err != nil {
				t.Fatalf("bad sample %q: %v", line, err)
			}
			s.value = v
		}
		out = append(out, s)
	}
	return out
}

func splitLabels(s string) []string {
	var out []string
	inQuote, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			inQuote = !inQuote
		case ',':
			if !inQuote {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// opsFind returns the samples named name whose labels include want.
func opsFind(samples []opsSample, name string, want map[string]string) []opsSample {
	var out []opsSample
next:
	for _, s := range samples {
		if s.name != name {
			continue
		}
		for k, v := range want {
			if s.labels[k] != v {
				continue next
			}
		}
		out = append(out, s)
	}
	return out
}

// opsValue is the value of the one sample named name with labels want.
func opsValue(t *testing.T, samples []opsSample, name string, want map[string]string) float64 {
	t.Helper()
	got := opsFind(samples, name, want)
	if len(got) != 1 {
		t.Fatalf("%s%v: %d samples, want 1: %v", name, want, len(got), got)
	}
	return got[0].value
}

// opsPost sends a Messages API request to the relay (token as
// x-api-key, if any) and returns the response with its whole body.
func opsPost(t *testing.T, token, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, opsRelay+"/v1/messages", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("X-Api-Key", token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := opsHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(b)
}

// opsMsg is a Messages request body for model (sonnet by default).
func opsMsg(stream bool) string {
	return fmt.Sprintf(`{"model":"claude-sonnet-4-5","stream":%t,"max_tokens":64,"messages":[{"role":"user","content":"hello"}]}`, stream)
}
