package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/cc-relay/caddy-cc-relay/caddymodule"
	"github.com/cc-relay/caddy-cc-relay/internal/mockanthropic"
	"github.com/cc-relay/caddy-cc-relay/internal/relaytest"
)

// orgSpec is one upstream organization and its keys.
type orgSpec struct {
	id              string
	keys            int
	rpm, itpm, otpm int64
}

// keySecret is the upstream secret of key i of an organization.
func keySecret(org string, i int) string { return fmt.Sprintf("sk-ant-bench-%s-%d", org, i) }

func keyName(org string, i int) string {
	return fmt.Sprintf("%s-k%d", strings.TrimPrefix(org, "org-"), i+1)
}

// upAttempt is one request the upstream saw.
type upAttempt struct {
	at     time.Time
	status int
	org    string
	why    string // the limit a 429 names
}

// upstream is a mock Anthropic API on 127.0.0.1 that also remembers, per
// client attempt (the X-Bench-Id header the relay passes through), every
// upstream request the relay made for it: the way to count the relay's
// retries and to time them.
type upstream struct {
	mock *mockanthropic.Server
	srv  *httptest.Server
	orgs []orgSpec

	mu       sync.Mutex
	attempts map[string][]upAttempt
}

func newUpstream(orgs []orgSpec, deltaDelay time.Duration) *upstream {
	cfg := mockanthropic.Config{
		Keys:         map[string]string{},
		OutputTokens: outputTokens,
		StreamDeltas: 8,
		DeltaDelay:   deltaDelay,
		MaxRecords:   1 << 20,
	}
	for _, o := range orgs {
		cfg.Orgs = append(cfg.Orgs, mockanthropic.Org{ID: o.id, RPM: o.rpm, ITPM: o.itpm, OTPM: o.otpm})
		for i := 0; i < o.keys; i++ {
			cfg.Keys[keySecret(o.id, i)] = o.id
		}
	}
	u := &upstream{mock: mockanthropic.New(cfg), orgs: orgs, attempts: map[string][]upAttempt{}}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	return u
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("X-Bench-Id")
	at := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	u.mock.ServeHTTP(sw, r)
	if id == "" {
		return
	}
	u.mu.Lock()
	why := ""
	if sw.status == http.StatusTooManyRequests {
		why = limitNamed(sw.body.String())
	}
	u.attempts[id] = append(u.attempts[id], upAttempt{at: at, status: sw.status, org: w.Header().Get("anthropic-organization-id"), why: why})
	u.mu.Unlock()
}

func (u *upstream) attemptsOf(id string) []upAttempt {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.attempts[id]
}

// limited counts the upstream's 429s by the limit they name.
func (u *upstream) limited() map[string]int {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := map[string]int{}
	for _, as := range u.attempts {
		for _, a := range as {
			if a.status == http.StatusTooManyRequests {
				out[a.why]++
			}
		}
	}
	return out
}

func (u *upstream) addr() string { return strings.TrimPrefix(u.srv.URL, "http://") }

func (u *upstream) close() { u.srv.Close() }

// limitNamed is the limit a mock 429 message names, e.g. "input tokens".
func limitNamed(msg string) string {
	for _, k := range []string{"input tokens", "output tokens", "requests"} {
		if strings.Contains(msg, k+" per minute") {
			return k
		}
	}
	return "forced"
}

// statusWriter records the status and the start of an error body; Unwrap
// keeps the mock's flushes working.
type statusWriter struct {
	http.ResponseWriter
	status int
	body   strings.Builder
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	if s.status >= 400 && s.body.Len() < 4096 {
		s.body.Write(p)
	}
	return s.ResponseWriter.Write(p)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// relaySpec is one cc_relay site in front of one upstream.
type relaySpec struct {
	pool      string
	port      int
	strategy  string
	limits    bool // configure org labels and limits; else learn everything
	stickyOff bool
	up        *upstream
	// clients are client tokens to configure; none: client auth off.
	clients []clientTokenSpec
	maxWait time.Duration
}

// clientTokenSpec is one client_token of a relay.
type clientTokenSpec struct {
	token, name string
	weight      int
}

// freePort is a free port on 127.0.0.1 outside caddytest's fixed ports.
func freePort() int {
	p, err := relaytest.FreePort()
	if err != nil {
		panic(err)
	}
	return p
}

func (s relaySpec) handler() map[string]any {
	var keys []any
	for _, o := range s.up.orgs {
		for i := 0; i < o.keys; i++ {
			k := map[string]any{"key": keySecret(o.id, i), "name": keyName(o.id, i)}
			if s.limits {
				k["org"] = o.id
				k["rpm"], k["itpm"], k["otpm"] = o.rpm, o.itpm, o.otpm
			}
			keys = append(keys, k)
		}
	}
	h := map[string]any{
		"handler":             "cc_relay",
		"pool":                s.pool,
		"strategy":            s.strategy,
		"disable_client_auth": len(s.clients) == 0,
		"keys":                keys,
		"disable_sticky":      s.stickyOff,
	}
	if len(s.clients) > 0 {
		var cts []any
		for _, c := range s.clients {
			cts = append(cts, map[string]any{"token": c.token, "name": c.name, "weight": c.weight})
		}
		h["client_tokens"] = cts
	}
	if s.maxWait > 0 {
		h["max_wait"] = s.maxWait.String()
	}
	return h
}

// caddyConfig is one Caddy configuration serving every relay of a scenario
// on its own port, with the admin endpoint on adminAddr.
func caddyConfig(adminAddr string, relays []relaySpec) []byte {
	servers := map[string]any{}
	for i, s := range relays {
		servers[fmt.Sprintf("relay%d", i)] = map[string]any{
			"listen": []string{"127.0.0.1:" + strconv.Itoa(s.port)},
			"routes": []any{map[string]any{"handle": []any{
				s.handler(),
				map[string]any{
					"handler":        "reverse_proxy",
					"upstreams":      []any{map[string]any{"dial": s.up.addr()}},
					"flush_interval": -1,
				},
			}}},
			"automatic_https": map[string]any{"disable": true},
		}
	}
	cfg := map[string]any{
		"admin":   map[string]any{"listen": adminAddr, "config": map[string]any{"persist": false}},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}},
		"apps": map[string]any{"http": map[string]any{
			"grace_period": "2s",
			"servers":      servers,
		}},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		panic(err)
	}
	return b
}

// relayRun is Caddy running one scenario's relays in-process.
type relayRun struct {
	admin string
}

func startRelays(relays []relaySpec) (*relayRun, error) {
	admin := "127.0.0.1:" + strconv.Itoa(freePort())
	if err := caddy.Load(caddyConfig(admin, relays), true); err != nil {
		return nil, err
	}
	// Wait until every site accepts connections.
	deadline := time.Now().Add(10 * time.Second)
	for _, s := range relays {
		for {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(s.port), time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				_ = caddy.Stop()
				return nil, fmt.Errorf("relay on port %d did not come up: %v", s.port, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return &relayRun{admin: admin}, nil
}

func (rr *relayRun) stop() { _ = caddy.Stop() }

var adminClient = &http.Client{Timeout: 10 * time.Second}

func (rr *relayRun) get(path string) ([]byte, error) {
	resp, err := adminClient.Get("http://" + rr.admin + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	return b, err
}

// pool reads GET /cc_relay/pools/<name> of the relay's admin API.
func (rr *relayRun) pool(name string) (*caddymodule.PoolStatus, error) {
	b, err := rr.get("/cc_relay/pools/" + name)
	if err != nil {
		return nil, err
	}
	var ps caddymodule.PoolStatus
	if err := json.Unmarshal(b, &ps); err != nil {
		return nil, err
	}
	return &ps, nil
}

// metrics returns the relay's counters for pool from the admin /metrics
// endpoint, keyed by metric name (without the caddy_cc_relay_ prefix) and
// its labels other than pool, e.g. "sticky_total{outcome=hit}".
func (rr *relayRun) metrics(pool string) (map[string]float64, error) {
	b, err := rr.get("/metrics")
	if err != nil {
		return nil, err
	}
	samples, err := relaytest.ParseMetrics(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, sm := range samples {
		name, ok := strings.CutPrefix(sm.Name, "caddy_cc_relay_")
		if !ok || sm.Labels["pool"] != pool {
			continue
		}
		var keep []string
		for k, v := range sm.Labels {
			if k != "pool" {
				keep = append(keep, k+"="+v)
			}
		}
		slices.Sort(keep)
		key := name
		if len(keep) > 0 {
			key += "{" + strings.Join(keep, ",") + "}"
		}
		out[key] += sm.Value
	}
	return out, nil
}
