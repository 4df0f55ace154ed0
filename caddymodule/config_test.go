package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func adapt(t *testing.T, src string) (string, error) {
	t.Helper()
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), nil)
	return string(out), err
}

func parse(src string) (*Handler, error) {
	h := new(Handler)
	err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(src))
	return h, err
}

func TestCaddyfileFullDirective(t *testing.T) {
	h, err := parse(`cc_relay team {
		strategy weighted
		client_token tok-1 alice
		client_token tok-2
		key sk-one {
			name one
			rpm 50
			itpm 40000
			otpm 8000
			weight 3
			priority 2
			org acme
			auth bearer
		}
		key sk-two
		max_wait 5s
		max_body 1MiB
		retries 1
		retry_overloaded
		sticky 30m
		sticky_max_sessions 500
		token_estimate_ratio 3.5
		model_class claude-3-7-* sonnet
		default_cooldown 20s
		spend_cap_park 2h
	}`)
	if err != nil {
		t.Fatal(err)
	}
	k := h.Keys[0]
	if h.Pool != "team" || h.Strategy != "weighted" || len(h.ClientTokens) != 2 || h.ClientTokens[0].Name != "alice" ||
		len(h.Keys) != 2 || k.Name != "one" || k.RPM != 50 || k.ITPM != 40000 || k.OTPM != 8000 || k.Weight != 3 ||
		k.Priority != 2 || k.Org != "acme" || k.Auth != "bearer" || h.MaxWait != caddy.Duration(5e9) ||
		h.MaxBody != 1<<20 || *h.Retries != 1 || !h.RetryOverloaded || h.StickyTTL != caddy.Duration(30*60e9) ||
		h.StickyMaxSessions != 500 || h.TokenEstimateRatio != 3.5 || h.ModelClasses[0].Class != "sonnet" ||
		h.DefaultCooldown != caddy.Duration(20e9) || h.SpendCapPark != caddy.Duration(2*3600e9) {
		t.Fatalf("parsed %+v", h)
	}
	h, err = parse("cc_relay {\nclient_auth off\nkey k\nsticky off\n}")
	if err != nil || !h.DisableSticky || !h.DisableClientAuth || h.Pool != "" {
		t.Fatalf("sticky off: %+v %v", h, err)
	}
	// The Caddyfile's "off" words become booleans named as Caddy names
	// them in JSON.
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"disable_client_auth":true`)) || !bytes.Contains(b, []byte(`"disable_sticky":true`)) {
		t.Fatalf("JSON of client_auth off, sticky off: %s", b)
	}
}

func TestCaddyfileErrorsNameTheProblem(t *testing.T) {
	cases := map[string]string{
		"cc_relay {\nclient_auth off\nkey k\nbogus 1\n}":         "unknown cc_relay subdirective \"bogus\"",
		"cc_relay {\nclient_auth off\nkey k {\nfoo 1\n}\n}":      "unknown key subdirective \"foo\"",
		"cc_relay {\nclient_auth off\nkey k {\nrpm -5\n}\n}":     "must not be negative",
		"cc_relay {\nclient_auth off\nkey k {\nrpm many\n}\n}":   "not a whole number",
		"cc_relay {\nclient_auth maybe\nkey k\n}":                "client_auth",
		"cc_relay {\nclient_auth off\nkey k {\nauth basic\n}\n}": "auth: want x-api-key or bearer",
		"cc_relay {\nclient_auth off\nkey k\nmax_wait soon\n}":   "bad duration",
	}
	for src, want := range cases {
		_, err := parse(src)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want it to mention %q", src, err, want)
			continue
		}
		if !strings.Contains(err.Error(), "Testfile:") {
			t.Errorf("%q: error %q does not name the line", src, err)
		}
	}
	// What concerns the whole configuration parses, and is refused by
	// Validate (or, for a secret listed twice, by Provision, which alone
	// sees resolved secrets), for a Caddyfile as for JSON.
	for src, want := range map[string]string{
		"cc_relay {\nclient_auth off\n}": "no upstream keys",
		"cc_relay {\nkey k\n}":           "no client_token",
		"cc_relay {\nclient_auth off\nkey a {\nname x\n}\nkey b {\nname x\n}\n}": "duplicate key name \"x\"",
		"cc_relay {\nclient_auth off\nkey k\nkey k\n}":                           "keys 1 and 2 have the same secret",
	} {
		h, err := parse(src)
		if err != nil {
			t.Errorf("%q: the parser refused a well-formed block: %v", src, err)
			continue
		}
		h.Pool = "errors_name_problem"
		if err := provision(t, h); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want it to mention %q", src, err, want)
		}
	}
}

func TestAdaptOrdersBeforeReverseProxyAndKeepsSecretsOut(t *testing.T) {
	t.Setenv("CC_TEST_SECRET_KEY", "sk-ant-very-secret-1")
	dir := t.TempDir()
	file := filepath.Join(dir, "key")
	if err := os.WriteFile(file, []byte("sk-ant-file-secret-2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// reverse_proxy first in the file: the directive order must still put
	// cc_relay before it.
	out, err := adapt(t, `:8080 {
	reverse_proxy 127.0.0.1:1
	cc_relay {
		client_token {env.CC_TEST_CLIENT}
		key {env.CC_TEST_SECRET_KEY}
		key {file.`+file+`}
	}
}`)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "sk-ant-very-secret-1") || strings.Contains(out, "sk-ant-file-secret-2") {
		t.Fatalf("adapted config holds a secret: %s", out)
	}
	i, j := strings.Index(out, `"handler":"cc_relay"`), strings.Index(out, `"handler":"reverse_proxy"`)
	if i < 0 || j < 0 || i > j {
		t.Fatalf("cc_relay not ordered before reverse_proxy: %s", out)
	}
}

// provision runs a handler's Provision in a throwaway Caddy context.
func provision(t *testing.T, h *Handler) error {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	defer cancel()
	err := h.Provision(ctx)
	if err == nil {
		err = h.Validate()
	}
	_ = h.Cleanup()
	return err
}

func TestProvisionResolvesSecretsAndRejectsUnset(t *testing.T) {
	t.Setenv("CC_TEST_KEY_OK", "sk-ant-resolved")
	h := &Handler{Pool: "prov_ok", DisableClientAuth: true, Keys: []Key{{Key: "{env.CC_TEST_KEY_OK}"}}}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	defer cancel()
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if h.secrets[0].value != "sk-ant-resolved" || !strings.HasPrefix(h.Keys[0].Name, "key-") {
		t.Fatalf("secret not resolved or name not derived: %q", h.Keys[0].Name)
	}
	// Provision is the one place defaults are set (keypool has none), and
	// the provisioned handler still passes Validate, as Caddy then calls it.
	if h.DefaultCooldown != caddy.Duration(defaultCooldown) || h.SpendCapPark != caddy.Duration(defaultSpendCapPark) ||
		h.StickyTTL != caddy.Duration(defaultStickyTTL) || h.TokenEstimateRatio != 4 || h.Pool != "prov_ok" {
		t.Fatalf("defaults not set by Provision: cooldown %v, park %v, ttl %v, ratio %v", h.DefaultCooldown, h.SpendCapPark, h.StickyTTL, h.TokenEstimateRatio)
	}
	if err := h.Validate(); err != nil {
		t.Fatalf("a provisioned handler fails Validate: %v", err)
	}
	_ = h.Cleanup()

	for name, h := range map[string]*Handler{
		"unset env": {Pool: "prov_bad1", DisableClientAuth: true, Keys: []Key{{Key: "sk-a"}, {Key: "{env.CC_TEST_SURELY_UNSET}"}}},
		"no keys":   {Pool: "prov_bad2", DisableClientAuth: true},
		"no client": {Pool: "prov_bad3", Keys: []Key{{Key: "sk-a"}}},
		"bad strat": {Pool: "prov_bad4", DisableClientAuth: true, Strategy: "fastest", Keys: []Key{{Key: "sk-a"}}},
		"org conflict": {Pool: "prov_bad5", DisableClientAuth: true, Keys: []Key{
			{Key: "sk-a", Org: "o", RPM: 5}, {Key: "sk-b", Org: "o", RPM: 6}}},
		"dup secret": {Pool: "prov_bad6", DisableClientAuth: true, Keys: []Key{{Key: "sk-a"}, {Key: "sk-a"}}},
	} {
		err := provision(t, h)
		if err == nil {
			t.Errorf("%s: provisioned without error", name)
			continue
		}
		if strings.Contains(err.Error(), "sk-a") || strings.Contains(err.Error(), "sk-b") {
			t.Errorf("%s: error reveals a secret: %v", name, err)
		}
	}
}

func TestJSONConfigMirrorsCaddyfile(t *testing.T) {
	out, err := adapt(t, `:8080 {
	cc_relay p {
		client_token ct
		key sk-x {
			name x
			rpm 7
			org o
			auth bearer
		}
		max_wait 2s
	}
	reverse_proxy 127.0.0.1:1
}`)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"handler":"cc_relay"`, `"pool":"p"`, `"client_tokens":[{"token":"ct"}]`,
		`"keys":[{"auth":"bearer","key":"sk-x","name":"x","org":"o","rpm":7}]`, `"max_wait":2000000000`} {
		if !strings.Contains(out, want) {
			t.Errorf("adapted JSON lacks %s: %s", want, out)
		}
	}
	var h Handler
	i := strings.Index(out, `{"client_tokens"`)
	if i < 0 {
		t.Fatalf("no handler object in %s", out)
	}
	dec := json.NewDecoder(strings.NewReader(out[i:]))
	if err := dec.Decode(&h); err != nil || h.Keys[0].RPM != 7 {
		t.Fatalf("JSON does not decode into Handler: %v %+v", err, h)
	}
}

// TestJSONOldSwitchNamesRejected checks that a JSON config still using the
// names before disable_client_auth / disable_sticky fails to load, naming
// the field, instead of silently turning client auth or affinity back on.
func TestJSONOldSwitchNamesRejected(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	for _, old := range []string{`"client_auth":"off"`, `"sticky_off":true`} {
		_, err := ctx.LoadModuleByID("http.handlers.cc_relay", json.RawMessage(`{"pool":"json_old_names",`+old+`,"client_tokens":[{"token":"t"}],"keys":[{"key":"sk-json-old"}]}`))
		if err == nil || !strings.Contains(err.Error(), strings.Split(old, `"`)[1]) {
			t.Errorf("config with %s: error %v, want one naming the field", old, err)
		}
	}
}

// 'caddy adapt' refuses a cc_relay block that is wrong as a whole (no
// keys, no client token, a name used twice) and names the directive's
// line, as the Caddyfile contract promises; Validate holds the checks.
func TestAdaptNamesTheLineOfAWholeBlockError(t *testing.T) {
	for src, want := range map[string]string{
		":8080\n\ncc_relay nokeys {\n\tclient_token t\n}\n":                                                      "Caddyfile:3",
		":8080\n\ncc_relay notok {\n\tkey k\n}\n":                                                                "client_token",
		":8080\n\ncc_relay dup {\n\tclient_token t\n\tkey a {\n\t\tname x\n\t}\n\tkey b {\n\t\tname x\n\t}\n}\n": "Caddyfile:3",
	} {
		_, err := adapt(t, src)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("adapt %q: %v, want an error naming %q", src, err, want)
		}
	}
}
