package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/cc-relay/caddy-cc-relay/bench/internal/caddyproc"
	"github.com/cc-relay/caddy-cc-relay/internal/relaytest"
)

const clientToken = "bench-client-token-7f3c9a"

// siteConfig describes the two sites of one Caddy process.
type siteConfig struct {
	upstream string // host:port
	portA    int
	portA2   int // a second bare reverse_proxy site: the noise floor
	portB    int
	admin    string // host:port
	keys     int
	strategy string
	// relayExtra is merged into the cc_relay handler (soak settings).
	relayExtra map[string]any
	// keySpecs, when set, are the keys' JSON as is (soak).
	keySpecs []map[string]any
	// env is added to the subprocess's environment.
	env []string
}

func freePort() (int, error) { return relaytest.FreePort() }

func benchKeySecret(i int) string {
	return fmt.Sprintf("sk-ant-api03-bench-%04d-%s", i, strings.Repeat("x", 64))
}

func (c siteConfig) json() []byte {
	proxy := func() map[string]any {
		return map[string]any{"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": c.upstream}}}
	}
	keys := c.keySpecs
	if keys == nil {
		for i := 0; i < c.keys; i++ {
			keys = append(keys, map[string]any{
				"key": benchKeySecret(i), "name": fmt.Sprintf("bench-%02d", i),
				"rpm": benchRPM, "itpm": benchITPM, "otpm": benchOTPM,
			})
		}
	}
	relay := map[string]any{
		"handler":       "cc_relay",
		"pool":          "bench",
		"strategy":      c.strategy,
		"client_tokens": []any{map[string]any{"token": clientToken, "name": "bench"}},
		"keys":          keys,
	}
	for k, v := range c.relayExtra {
		relay[k] = v
	}
	server := func(port int, handlers ...any) map[string]any {
		return map[string]any{
			"listen":          []string{"127.0.0.1:" + strconv.Itoa(port)},
			"routes":          []any{map[string]any{"handle": handlers}},
			"automatic_https": map[string]any{"disable": true},
		}
	}
	servers := map[string]any{"b": server(c.portB, relay, proxy())}
	if c.portA != 0 {
		servers["a"] = server(c.portA, proxy())
	}
	if c.portA2 != 0 {
		servers["a2"] = server(c.portA2, proxy())
	}
	cfg := map[string]any{
		"admin":   map[string]any{"listen": c.admin, "config": map[string]any{"persist": false}},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}},
		"apps":    map[string]any{"http": map[string]any{"servers": servers}},
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	return b
}

// caddyProc is one running Caddy subprocess.
type caddyProc = caddyproc.Proc

// startCaddy runs bin with cfg's sites and returns once they all listen.
func startCaddy(bin, workDir, name string, cfg siteConfig) (*caddyProc, error) {
	ports := []int{cfg.portB}
	for _, p := range []int{cfg.portA, cfg.portA2} {
		if p != 0 {
			ports = append(ports, p)
		}
	}
	return caddyproc.Start([]string{bin}, workDir, name, cfg.json(), cfg.admin, ports, cfg.env)
}
