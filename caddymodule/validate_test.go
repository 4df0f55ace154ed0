package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// jsonConfig is a whole Caddy JSON config with one cc_relay handler whose
// fields are base's, overridden by extra (a JSON object's members).
func jsonConfig(pool, extra string) string {
	handler := `{"handler":"cc_relay","pool":"` + pool + `","client_tokens":[{"token":"ct-json"}],"keys":[{"key":"sk-json-1","name":"one"}]`
	if extra != "" {
		handler += "," + extra
	}
	handler += "}"
	return `{"apps":{"http":{"servers":{"s":{"listen":["localhost:0"],"routes":[{"handle":[` + handler + `]}]}}}}}`
}

// validateJSON runs Caddy's own validation (provisioning included) of a
// JSON config, as `caddy validate` and a load through the admin API do.
func validateJSON(t *testing.T, src string) error {
	t.Helper()
	var cfg caddy.Config
	if err := json.Unmarshal([]byte(src), &cfg); err != nil {
		t.Fatalf("config does not decode: %v\n%s", err, src)
	}
	return caddy.Validate(&cfg)
}

// TestJSONNumbersBounded: every number of a JSON config meets the bounds a
// Caddyfile does; a bad one is a config error that names it.
func TestJSONNumbersBounded(t *testing.T) {
	if err := validateJSON(t, jsonConfig("json_ok", `"token_estimate_ratio":3.5,"max_body":1048576,"retries":3,`+
		`"sticky_max_sessions":10,"max_wait":2000000000,"read_body_timeout":-1,`+
		`"keys":[{"key":"sk-json-1","rpm":50,"itpm":40000,"otpm":8000,"weight":2,"priority":1}]`)); err != nil {
		t.Fatalf("a good JSON config was refused: %v", err)
	}
	for _, tc := range []struct{ extra, names string }{
		{`"token_estimate_ratio":1e9`, "token_estimate_ratio"},
		{`"token_estimate_ratio":-1`, "token_estimate_ratio"},
		{`"max_body":-5`, "max_body"},
		{`"max_body":1125899906842624`, "max_body"},
		{`"retries":-1`, "retries"},
		{`"retries":5000`, "retries"},
		{`"sticky_max_sessions":-1`, "sticky_max_sessions"},
		{`"sticky_max_sessions":1125899906842624`, "sticky_max_sessions"},
		{`"max_wait":-1`, "max_wait"},
		{`"max_wait":1000000000000000000`, "max_wait"},
		{`"sticky_ttl":-1`, "sticky_ttl"},
		{`"default_cooldown":1000000000000000000`, "default_cooldown"},
		{`"spend_cap_park":-1000000000`, "spend_cap_park"},
		{`"read_body_timeout":1000000000000000000`, "read_body_timeout"},
		{`"keys":[{"key":"sk-json-1","rpm":-1}]`, "rpm"},
		{`"keys":[{"key":"sk-json-1","itpm":1125899906842624}]`, "itpm"},
		{`"keys":[{"key":"sk-json-1","otpm":-3}]`, "otpm"},
		{`"keys":[{"key":"sk-json-1","weight":-2}]`, "weight"},
		{`"keys":[{"key":"sk-json-1","priority":-1}]`, "priority"},
	} {
		err := validateJSON(t, jsonConfig("json_bad", tc.extra))
		if err == nil {
			t.Errorf("%s: accepted", tc.extra)
			continue
		}
		if !strings.Contains(err.Error(), tc.names) {
			t.Errorf("%s: error does not name %s: %v", tc.extra, tc.names, err)
		}
		if strings.Contains(err.Error(), "sk-json-1") {
			t.Errorf("%s: error reveals the key: %v", tc.extra, err)
		}
	}
}

// TestCaddyfileReadBodyTimeout: the Caddyfile sets and turns off the body
// deadline, and refuses a bad value.
func TestCaddyfileReadBodyTimeout(t *testing.T) {
	h, err := parse("cc_relay {\n client_auth off\n key sk-a\n read_body_timeout 5s\n}")
	if err != nil || h.ReadBodyTimeout != caddy.Duration(5e9) {
		t.Fatalf("read_body_timeout 5s: %v %v", err, h.ReadBodyTimeout)
	}
	h, err = parse("cc_relay {\n client_auth off\n key sk-a\n read_body_timeout off\n}")
	if err != nil || h.ReadBodyTimeout >= 0 {
		t.Fatalf("read_body_timeout off: %v %v", err, h.ReadBodyTimeout)
	}
	for _, bad := range []string{"0s", "-1s", "soon"} {
		if _, err := parse("cc_relay {\n client_auth off\n key sk-a\n read_body_timeout " + bad + "\n}"); err == nil ||
			!strings.Contains(err.Error(), "read_body_timeout") {
			t.Errorf("read_body_timeout %s: %v", bad, err)
		}
	}
}
