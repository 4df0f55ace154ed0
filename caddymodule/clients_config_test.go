package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// The configuration, verbatim in form.
const teamCaddyfile = `cc_relay prod {
	client_token tok-alice alice {
		rpm            10
		itpm           20000
		otpm           4000
		max_concurrent 2
		weight         3
		budget         25.50 week
		models         claude-sonnet-* claude-haiku-*
	}
	client_token tok-bob bob
	client_token tok-carol carol {
	}
	client_token tok-dave {
		budget $5 day
	}
	key sk-1
	price claude-sonnet-4-5* 3 15
	price my-model* 1 2 1.5 2.5 0.2
}`

func TestCaddyfileClients(t *testing.T) {
	h, err := parse(teamCaddyfile)
	if err != nil {
		t.Fatal(err)
	}
	a := h.ClientTokens[0]
	if a.Token != "tok-alice" || a.Name != "alice" || a.RPM != 10 || a.ITPM != 20000 || a.OTPM != 4000 ||
		a.MaxConcurrent != 2 || a.Weight != 3 || a.Budget == nil || a.Budget.USD != "25.50" || a.Budget.Period != "week" ||
		strings.Join(a.Models, ",") != "claude-sonnet-*,claude-haiku-*" {
		t.Fatalf("alice %+v budget %+v", a, a.Budget)
	}
	if b := h.ClientTokens[1]; b.Name != "bob" || b.Budget != nil || b.RPM != 0 || b.Models != nil {
		t.Fatalf("bob %+v", b)
	}
	if d := h.ClientTokens[3]; d.Name != "" || d.Budget.USD != "5.00" || d.Budget.Period != "day" {
		t.Fatalf("dave %+v %+v", d, d.Budget)
	}
	if len(h.Prices) != 2 || h.Prices[0].Model != "claude-sonnet-4-5*" || h.Prices[0].Input != "3.00" || h.Prices[0].Output != "15.00" ||
		h.Prices[0].CacheWrite5m != "" || h.Prices[1].CacheWrite5m != "1.50" || h.Prices[1].CacheWrite1h != "2.50" || h.Prices[1].CacheRead != "0.20" {
		t.Fatalf("prices %+v", h.Prices)
	}
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}

	// The adapted JSON mirrors it.
	out, err := adapt(t, "http://localhost:9080 {\n"+teamCaddyfile+"\nreverse_proxy localhost:1\n}")
	if err != nil {
		t.Fatal(err)
	}
	// (The adapter re-encodes the JSON: keys sorted, numbers shortest.)
	for _, want := range []string{
		`"budget":{"period":"week","usd":25.5},"itpm":20000,"max_concurrent":2,"models":["claude-sonnet-*","claude-haiku-*"],"name":"alice","otpm":4000,"rpm":10`,
		`"weight":3`, `"budget":{"period":"day","usd":5},"token":"tok-dave"`,
		`"prices":[{"input":3,"model":"claude-sonnet-4-5*","output":15},{"cache_read":0.2,"cache_write_1h":2.5,"cache_write_5m":1.5,"input":1,"model":"my-model*","output":2}]`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("adapted JSON lacks %s:\n%s", want, out)
		}
	}
}

func TestCaddyfileClientErrorsNameTheProblem(t *testing.T) {
	wrap := func(s string) string { return "cc_relay {\nkey k\n" + s + "\n}" }
	for src, want := range map[string]string{
		wrap("client_token t a {\nbudget 10 year\n}"):  "budget period must be day, week or month",
		wrap("client_token t a {\nbudget -1 day\n}"):   "bad dollar amount",
		wrap("client_token t a {\nbudget abc day\n}"):  "bad dollar amount",
		wrap("client_token t a {\nbudget 0 day\n}"):    "budget must be more than $0",
		wrap("client_token t a {\nbudget 10\n}"):       "budget: want <usd> day|week|month",
		wrap("client_token t a {\nrpm -1\n}"):          "rpm must not be negative",
		wrap("client_token t a {\nweight 0\n}"):        "weight must be at least 1",
		wrap("client_token t a {\nmodels\n}"):          "wrong argument count",
		wrap("client_token t a {\nmodels claude-[\n}"): `models: bad pattern "claude-["`,
		wrap("client_token t a {\nspeed 1\n}"):         `unknown client_token subdirective "speed"`,
		wrap("client_token t a b"):                     "wrong argument count",
		wrap("client_token t\nprice x 1"):              "price: want <model glob> <input> <output>",
		wrap("client_token t\nprice x 1 two"):          "bad price \"two\"",
		wrap("client_token t\nprice x[ 1 2"):           `price: bad model pattern "x["`,
		wrap("client_token t\nprice x 1 2 3 4 5 6"):    "price: want",
	} {
		_, err := parse(src)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", src, err, want)
		}
	}
}

func TestJSONClientsValidate(t *testing.T) {
	base := `{"keys":[{"key":"k"}],"client_tokens":[{"token":"t","name":"alice",%s}]%s}`
	for _, c := range []struct{ client, extra, want string }{
		{`"budget":{"usd":10.5,"period":"day"}`, `,"prices":[{"model":"x*","input":1,"output":2}]`, ""},
		{`"budget":{"usd":10.5,"period":"fortnight"}`, ``, `client_token 1 (alice): budget period must be day, week or month, got "fortnight"`},
		{`"budget":{"usd":-1,"period":"day"}`, ``, "bad dollar amount"},
		{`"max_concurrent":-2`, ``, "client_token 1 (alice): rpm, itpm, otpm, max_concurrent and weight must not be negative"},
		{`"models":["["]`, ``, `bad model pattern "["`},
		{`"rpm":1`, `,"prices":[{"model":"x*","input":1}]`, "price 1 (x*): input and output prices are required"},
		{`"rpm":1`, `,"prices":[{"model":"x*","input":1,"output":0.0000001}]`, "price 1 (x*): bad price"},
	} {
		var h Handler
		src := strings.Replace(strings.Replace(base, "%s", c.client, 1), "%s", c.extra, 1)
		if err := json.Unmarshal([]byte(src), &h); err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		err := h.Validate()
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: %v, want %q", src, err, c.want)
		}
	}
}

// TestProvisionClientsSharingAName: tokens of one client must agree on its
// settings.
func TestProvisionClientsSharingAName(t *testing.T) {
	h, err := parse(`cc_relay cfg_clients_share {
		client_token t1 alice {
			rpm 5
		}
		client_token t2 alice {
			rpm 6
		}
		key k
	}`)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	defer cancel()
	err = h.Provision(ctx)
	defer h.Cleanup()
	if err == nil || !strings.Contains(err.Error(), `client_token 1 and 2 are both client "alice" with different limits`) {
		t.Fatalf("provision: %v", err)
	}
	h2, _ := parse("cc_relay cfg_clients_share2 {\nclient_token t1 alice {\nrpm 5\n}\nclient_token t2 alice {\nrpm 5\n}\nkey k\n}")
	if err := h2.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	h2.Cleanup()
}
