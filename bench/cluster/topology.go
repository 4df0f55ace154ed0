package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/cc-relay/caddy-cc-relay/bench/internal/caddyproc"
	"github.com/cc-relay/caddy-cc-relay/bench/internal/ccload"
	"github.com/cc-relay/caddy-cc-relay/internal/redistest"
	"github.com/cc-relay/caddy-cc-relay/internal/relaytest"
)

// env is what the runs share: the work directory, the command that runs
// Caddy, and one redis-server started on first use.
type env struct {
	dir    string
	caddy  []string
	rdb    *redistest.Server
	seq    int
	failed bool // a run could not run
}

func newEnv() (*env, error) {
	dir := *flagOut
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "cc-relay-cluster-"); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return &env{dir: dir, caddy: []string{exe, caddyArg}}, nil
}

// redis is the run's redis-server, started on first use.
func (e *env) redis() (*redistest.Server, error) {
	if e.rdb != nil {
		return e.rdb, nil
	}
	dir := filepath.Join(e.dir, "redis")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	s, err := redistest.Launch(dir, func(format string, args ...any) {
		fmt.Printf("redis-server: "+format+"\n", args...)
		e.failed = true
	})
	if err != nil {
		return nil, err
	}
	e.rdb = s
	return s, nil
}

func (e *env) close() {
	if e.rdb != nil {
		e.rdb.Kill()
	}
}

// couldNotRun reports a run that could not start and marks the benchmark failed.
func (e *env) couldNotRun(run string, err error) bool {
	fmt.Printf("%s: could not run: %v\n", run, err)
	e.failed = true
	return false
}

// clusterSpec is one run's topology.
type clusterSpec struct {
	run       string
	orgs      []ccload.Org
	limits    bool // configure organizations and limits; else learn them
	redis     bool // share the pool on Redis; else independent relays
	stickyOff bool
}

// cluster is one run's processes: the mock upstream, the relays and the
// load balancer in front of them.
type cluster struct {
	pool   string
	up     *ccload.Upstream
	relays []*caddyproc.Proc
	lb     *caddyproc.Proc
	lbPort int
}

func freePort() (int, error) { return relaytest.FreePort() }

// startCluster starts the upstream, the relays and the balancer.
func (e *env) startCluster(s clusterSpec) (*cluster, error) {
	e.seq++
	c := &cluster{pool: fmt.Sprintf("cluster-%s-%d-%d", s.run, os.Getpid(), e.seq), up: ccload.NewUpstream(s.orgs, *flagDeltaDelay)}
	redisURL := ""
	if s.redis {
		r, err := e.redis()
		if err != nil {
			c.stop()
			return nil, err
		}
		redisURL = r.URL()
	}
	var dials []any
	for i := range *flagRelays {
		h := relayHandler(c.pool, s.orgs, s.limits, redisURL)
		h["disable_sticky"] = s.stickyOff
		// Which instance answered, for the affinity run's count of moves.
		tag := map[string]any{"handler": "headers", "response": map[string]any{"set": map[string][]string{"X-Bench-Relay": {strconv.Itoa(i + 1)}}}}
		p, port, err := e.startCaddy(fmt.Sprintf("%s-%d-relay%d", s.run, e.seq, i+1), tag, h,
			map[string]any{"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": c.up.Addr()}}, "flush_interval": -1})
		if err != nil {
			c.stop()
			return nil, err
		}
		c.relays = append(c.relays, p)
		dials = append(dials, map[string]any{"dial": "127.0.0.1:" + strconv.Itoa(port)})
	}
	lb, port, err := e.startCaddy(fmt.Sprintf("%s-%d-lb", s.run, e.seq), map[string]any{
		"handler":        "reverse_proxy",
		"upstreams":      dials,
		"load_balancing": map[string]any{"selection_policy": map[string]any{"policy": "round_robin"}},
		"flush_interval": -1,
	})
	if err != nil {
		c.stop()
		return nil, err
	}
	c.lb, c.lbPort = lb, port
	return c, nil
}

// relayHandler is the cc_relay handler of every relay of a run; redisURL ""
// leaves Redis out.
func relayHandler(pool string, orgs []ccload.Org, limits bool, redisURL string) map[string]any {
	h := map[string]any{
		"handler":             "cc_relay",
		"pool":                pool,
		"strategy":            "least_loaded",
		"disable_client_auth": true,
		"keys":                ccload.RelayKeys(orgs, limits),
	}
	if redisURL != "" {
		h["redis"] = redisURL
	}
	return h
}

// startCaddy runs one Caddy process serving handlers on a free port and
// returns it with that port.
func (e *env) startCaddy(name string, handlers ...any) (*caddyproc.Proc, int, error) {
	port, err := freePort()
	if err != nil {
		return nil, 0, err
	}
	cfg, admin, err := caddyConfig(map[string][]any{"main": {port, handlers}})
	if err != nil {
		return nil, 0, err
	}
	p, err := caddyproc.Start(e.caddy, e.dir, name, cfg, admin, []int{port}, nil)
	return p, port, err
}

// caddyConfig is a Caddy JSON configuration with one server per entry of
// servers (name → {port, handlers}) and the admin API on a free port.
func caddyConfig(servers map[string][]any) ([]byte, string, error) {
	ap, err := freePort()
	if err != nil {
		return nil, "", err
	}
	admin := "127.0.0.1:" + strconv.Itoa(ap)
	srv := map[string]any{}
	for name, s := range servers {
		srv[name] = map[string]any{
			"listen":          []string{"127.0.0.1:" + strconv.Itoa(s[0].(int))},
			"routes":          []any{map[string]any{"handle": s[1]}},
			"automatic_https": map[string]any{"disable": true},
		}
	}
	cfg := map[string]any{
		"admin": map[string]any{"listen": admin, "config": map[string]any{"persist": false}},
		// WARN: the relays log their Redis mode changes at that level.
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "WARN"}}},
		"apps":    map[string]any{"http": map[string]any{"grace_period": "2s", "servers": srv}},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	return b, admin, err
}

func (c *cluster) stop() {
	c.lb.Stop()
	for _, r := range c.relays {
		r.Stop()
	}
	c.up.Close()
}

// metrics sums the relays' samples for the pool.
func (c *cluster) metrics() map[string]float64 {
	out := map[string]float64{}
	for _, r := range c.relays {
		b, err := r.Get("/metrics")
		if err != nil {
			fmt.Fprintf(os.Stderr, "  metrics: %v\n", err)
			continue
		}
		m, err := ccload.PoolMetrics(b, c.pool)
		if err != nil {
			fmt.Fprintf(os.Stderr, "  metrics: %v\n", err)
			continue
		}
		for k, v := range m {
			out[k] += v
		}
	}
	return out
}

// modes reads each relay's shared-state mode from its admin API (the
// "mode" field of GET /cc_relay/pools/<pool>, wherever it sits); "" where
// the API does not show one.
func (c *cluster) modes() []string {
	var out []string
	for _, r := range c.relays {
		mode := ""
		if b, err := r.Get("/cc_relay/pools/" + c.pool); err == nil {
			var v any
			if json.Unmarshal(b, &v) == nil {
				mode = findString(v, "mode", 4)
			}
		}
		out = append(out, mode)
	}
	return out
}

// findString is the first string value under key in v, at most depth
// objects deep.
func findString(v any, key string, depth int) string {
	m, ok := v.(map[string]any)
	if !ok || depth == 0 {
		return ""
	}
	if s, ok := m[key].(string); ok {
		return s
	}
	for _, x := range m {
		if s := findString(x, key, depth-1); s != "" {
			return s
		}
	}
	return ""
}
