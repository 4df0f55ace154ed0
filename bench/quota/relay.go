package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/cc-relay/caddy-cc-relay/bench/internal/ccload"
	"github.com/cc-relay/caddy-cc-relay/caddymodule"
	"github.com/cc-relay/caddy-cc-relay/internal/relaytest"
)

// relaySpec is one cc_relay site in front of one upstream.
type relaySpec struct {
	pool      string
	port      int
	strategy  string
	limits    bool // configure org labels and limits; else learn everything
	stickyOff bool
	up        *ccload.Upstream
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
	h := map[string]any{
		"handler":             "cc_relay",
		"pool":                s.pool,
		"strategy":            s.strategy,
		"disable_client_auth": len(s.clients) == 0,
		"keys":                ccload.RelayKeys(s.up.Orgs, s.limits),
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
					"upstreams":      []any{map[string]any{"dial": s.up.Addr()}},
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
	return ccload.PoolMetrics(b, pool)
}
