package caddymodule

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/pricing"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// End-to-end tests of per-client limits, budgets and spend through a real
// Caddy.

// apiErr decodes an Anthropic error body.
func apiErr(t *testing.T, body string) apiErrorBody {
	t.Helper()
	var e apiError
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Type != "error" {
		t.Fatalf("not an Anthropic error body: %q", body)
	}
	return e.Error
}

// usageMessage answers a Messages request with the given usage.
func usageMessage(w http.ResponseWriter, in, out int64) {
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":%d,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":%d}}`, in, out)
}

// clientsOf reads a pool's clients through the admin API.
func clientsOf(t *testing.T, pool string) map[string]keypool.ClientSnapshot {
	t.Helper()
	var cs ClientsStatus
	body := adminGet(t, "/cc_relay/pools/"+pool+"/clients")
	if err := json.Unmarshal([]byte(body), &cs); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	out := map[string]keypool.ClientSnapshot{}
	for _, c := range cs.Clients {
		out[c.Name] = c
	}
	return out
}

// TestClientsOwnLimitsBeforeThePool: a client over its own rpm gets 429
// naming its limit with the Retry-After of that limit, and neither the
// upstream nor the pool sees the request; a model outside its list gets
// 403; another client is not held back.
func TestClientsOwnLimitsBeforeThePool(t *testing.T) {
	fake := useFakeClock(t)
	up := newUpstream(t, nil)
	const alice, bob = "ct-cl-lim-alice-7f3e", "ct-cl-lim-bob-1a2b"
	startRelay(t, relaySite(`cl_limits {
		client_token `+alice+` alice {
			rpm    2
			models claude-sonnet-* claude-haiku-*
		}
		client_token `+bob+` bob
		key sk-cl-lim-1 {
			name k1
		}
	}`, "reverse_proxy "+up.addr()))

	var bodies []string
	for i := 0; i < 5; i++ {
		res, body := post(t, alice, msgBody)
		bodies = append(bodies, body)
		if i < 2 {
			if res.StatusCode != 200 {
				t.Fatalf("request %d: %d %s", i, res.StatusCode, body)
			}
			continue
		}
		e := apiErr(t, body)
		if res.StatusCode != 429 || e.Type != "rate_limit_error" || res.Header.Get("Retry-After") != "30" ||
			!strings.Contains(e.Message, `client "alice" is over its own rpm limit of 2 requests per minute`) {
			t.Fatalf("request %d: %d retry-after %q %+v", i, res.StatusCode, res.Header.Get("Retry-After"), e)
		}
	}
	if n := len(up.all()); n != 2 {
		t.Fatalf("upstream saw %d requests, want 2", n)
	}
	if k := keySnap(t, "cl_limits", "k1"); k.Totals.Requests != 2 {
		t.Fatalf("the pool was charged %d requests, want 2", k.Totals.Requests)
	}

	res, body := post(t, bob, msgBody)
	if res.StatusCode != 200 {
		t.Fatalf("bob: %d %s", res.StatusCode, body)
	}
	fake.Advance(30 * time.Second)
	res, body = post(t, alice, strings.Replace(msgBody, "claude-sonnet-4-5", "claude-opus-4-5", 1))
	bodies = append(bodies, body)
	if e := apiErr(t, body); res.StatusCode != 403 || e.Type != "permission_error" || e.Message != `client "alice" may not use model "claude-opus-4-5"` {
		t.Fatalf("disallowed model: %d %+v", res.StatusCode, e)
	}
	if res, body := post(t, alice, strings.Replace(msgBody, "claude-sonnet-4-5", "claude-haiku-4-5", 1)); res.StatusCode != 200 {
		t.Fatalf("after the refill: %d %s", res.StatusCode, body)
	}
	if n := len(up.all()); n != 4 {
		t.Fatalf("upstream saw %d requests, want 4", n)
	}
	c := clientsOf(t, "cl_limits")["alice"]
	if c.Requests.Configured != 2 || c.Totals.Refused != 4 || c.Totals.Requests != 3 || c.InFlight != 0 {
		t.Fatalf("alice %+v", c)
	}
	for _, b := range bodies {
		if strings.Contains(b, alice) || strings.Contains(b, "ct-cl-lim") {
			t.Fatalf("a client token in an answer: %s", b)
		}
	}
}

// TestClientsMaxConcurrentStream: a stream counts until it ends; the next
// request after an answer sees it ended.
func TestClientsMaxConcurrentStream(t *testing.T) {
	release := make(chan struct{})
	up := newUpstream(t, func(_ string, w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.Header.Get("Accept"), "event-stream") {
			rc := writeEvents(w, sseStart10)
			<-release
			_, _ = io.WriteString(w, sseDelta2+sseStop)
			_ = rc.Flush()
			return
		}
		okMessage(w)
	})
	const alice = "ct-cl-conc-alice-55aa"
	startRelay(t, relaySite(`cl_conc {
		client_token `+alice+` alice {
			max_concurrent 1
		}
		key sk-cl-conc-1
	}`, proxyTo(up, "flush_interval -1")))

	req := newRequest(t, http.MethodPost, relayAddr+"/v1/messages", strings.NewReader(msgStream(true)))
	setRelayHeaders(req.Header, alice, "Accept", "text/event-stream")
	res, br := openStream(t, relayHTTP, req)
	defer res.Body.Close()

	r2, body := post(t, alice, msgBody)
	if e := apiErr(t, body); r2.StatusCode != 429 || r2.Header.Get("Retry-After") != "1" ||
		!strings.Contains(e.Message, `client "alice" already has 1 requests in flight, its max_concurrent limit`) {
		t.Fatalf("second request while streaming: %d %s", r2.StatusCode, body)
	}
	close(release)
	rest, _ := io.ReadAll(br)
	if !strings.Contains(string(rest), "message_stop") {
		t.Fatalf("stream did not finish: %q", rest)
	}
	// Sequential requests never trip max_concurrent: each answer reaches
	// the client after its reservation ended.
	for i := 0; i < 10; i++ {
		if res, body := post(t, alice, msgBody); res.StatusCode != 200 {
			t.Fatalf("sequential request %d: %d %s", i, res.StatusCode, body)
		}
	}
	// The stream was priced from its events (10 in, 2 out: $0.00006) and
	// each answer from its body (12 in, 3 out: $0.000081).
	a := clientsOf(t, "cl_conc")["alice"]
	if a.Totals.InputTokens != 10+10*12 || a.Totals.OutputTokens != 2+10*3 || a.Totals.CostPicoUSD != 60_000_000+10*81_000_000 {
		t.Fatalf("alice %+v", a.Totals)
	}
}

// TestClientsBudgetSixteenConcurrent sends rounds of 16 concurrent
// requests against a small daily budget until the client is refused: spend
// stops within one request's cost of the budget, exact to the token, and
// metrics, the admin API and the access log show it without the token.
func TestClientsBudgetSixteenConcurrent(t *testing.T) {
	fake := useFakeClock(t) // 2026-06-01 12:00 UTC
	_ = fake
	const alice = "ct-cl-budget-alice-c0ffee"
	const in, out = 12, 64
	// Sonnet 4.5: 12 × $3 + 64 × $15 per million = $0.000996.
	const perReq = pricing.PicoUSD((in*3 + out*15) * 1_000_000)
	const budget = 5 * pricing.PerUSD / 1000 // $0.005

	var mu sync.Mutex
	var gate chan struct{}
	var arrived atomic.Int64
	up := newUpstream(t, func(_ string, w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		g := gate
		mu.Unlock()
		arrived.Add(1)
		<-g
		usageMessage(w, in, out)
	})
	dir := t.TempDir()
	accessPath := filepath.Join(dir, "access.log")
	filters := opsFilterBlocks(t)
	startCaddy(t, caddyGlobal("\tstorage file_system "+filepath.Join(dir, "storage"))+fmt.Sprintf(`http://localhost:9080 {
	log {
		output file %s
		%s
	}
	log_append cost {http.cc_relay.cost_usd}
	cc_relay cl_budget {
		client_token %s alice {
			budget 0.005 day
		}
		key sk-cl-budget-1
	}
	reverse_proxy %s
}
`, accessPath, filters[1], alice, up.addr()))

	c := newRelayClient(t)
	var admitted, refused int
	var answers []string
	for round := 0; round < 12; round++ {
		mu.Lock()
		gate = make(chan struct{})
		mu.Unlock()
		arrived.Store(0)
		var refusedRound atomic.Int64
		results := make(chan relayResult, 16)
		for i := 0; i < 16; i++ {
			go func() {
				r := c.send(t.Context(), alice, msgBody)
				if r.status == 429 {
					refusedRound.Add(1)
				}
				results <- r
			}()
		}
		// All 16 are either at the upstream or refused before the
		// upstream answers any: they were truly concurrent.
		pollUntil(t, "16 requests admitted or refused", func() bool { return arrived.Load()+refusedRound.Load() == 16 })
		close(gate)
		ok := 0
		for i := 0; i < 16; i++ {
			r := <-results
			answers = append(answers, r.body)
			switch {
			case r.err != nil:
				t.Fatal(r.err)
			case r.status == 200:
				ok++
			case r.status == 429:
				e := apiErr(t, r.body)
				ra := r.header.Get("Retry-After")
				if e.Type != "rate_limit_error" || !strings.Contains(e.Message, `client "alice"`) ||
					!strings.Contains(e.Message, "of its $0.005 daily budget") || !strings.Contains(e.Message, "resets at 2026-06-02T00:00:00Z") ||
					(ra != "5" && ra != "43200") {
					t.Fatalf("refusal: retry-after %q %+v", ra, e)
				}
			default:
				t.Fatalf("status %d: %s", r.status, r.body)
			}
		}
		admitted += ok
		refused += 16 - ok
		if ok == 0 {
			break
		}
	}
	if got := len(up.all()); got != admitted {
		t.Fatalf("upstream saw %d requests, %d were admitted", got, admitted)
	}
	spent := pricing.PicoUSD(admitted) * perReq
	if spent > budget+perReq || spent <= budget {
		t.Fatalf("%d requests spent %s of %s: not within one request (%s) past the budget", admitted, spent, budget, perReq)
	}

	// The admin API, exact to the picodollar.
	a := clientsOf(t, "cl_budget")["alice"]
	if a.Spend.SpentPicoUSD != int64(spent) || a.Spend.ReservedPicoUSD != 0 || a.Spend.BudgetPicoUSD != int64(budget) ||
		a.Spend.Period != "day" || !a.Spend.Resets.Equal(time.Date(2026, 6, 2, 0, 0, 0, 0, time.UTC)) ||
		a.Totals.OutputTokens != int64(admitted*out) || a.Totals.Refused != int64(refused) || a.InFlight != 0 {
		t.Fatalf("alice %+v", a)
	}
	if ps := adminPool(t, "cl_budget"); len(ps.Clients) != 1 || ps.Clients[0].Spend.SpentPicoUSD != int64(spent) {
		t.Fatalf("pool status clients %+v", ps.Clients)
	}

	// The metrics.
	samples := scrapeMetrics(t)
	lbl := map[string]string{"pool": "cl_budget", "client": "alice"}
	with := func(k, v string) map[string]string {
		m := map[string]string{k: v}
		for a, b := range lbl {
			m[a] = b
		}
		return m
	}
	if v := sampleValue(t, samples, "caddy_cc_relay_client_cost_usd_total", lbl); math.Abs(v-spent.USD()) > 1e-12 {
		t.Errorf("cost metric %v, want %v", v, spent.USD())
	}
	if v := sampleValue(t, samples, "caddy_cc_relay_client_budget_remaining_usd", lbl); math.Abs(v-(budget-spent).USD()) > 1e-12 {
		t.Errorf("remaining metric %v, want %v", v, (budget - spent).USD())
	}
	if v := sampleValue(t, samples, "caddy_cc_relay_client_requests_total", with("outcome", "ok")); v != float64(admitted) {
		t.Errorf("ok requests %v, want %d", v, admitted)
	}
	if v := sampleValue(t, samples, "caddy_cc_relay_client_requests_total", with("outcome", "budget_exhausted")); v != float64(refused) {
		t.Errorf("refused requests %v, want %d", v, refused)
	}
	if v := sampleValue(t, samples, "caddy_cc_relay_client_tokens_total", with("kind", "output")); v != float64(admitted*out) {
		t.Errorf("output tokens %v, want %d", v, admitted*out)
	}

	// The access log: every answered request's cost, in the relay's field
	// and through the placeholder.
	var costs int
	pollUntil(t, "the access log", func() bool { return strings.Count(opsReadLog(accessPath), "\n") >= admitted+refused })
	logText := opsReadLog(accessPath)
	sc := bufio.NewScanner(strings.NewReader(logText))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var entry map[string]any
		if err := json.Unmarshal(sc.Bytes(), &entry); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if entry["status"] != float64(200) {
			continue
		}
		if entry["cc_relay_cost_usd"] != perReq.USD() || entry["cost"] != perReq.USD() {
			t.Fatalf("log entry costs %v / %v, want %v: %s", entry["cc_relay_cost_usd"], entry["cost"], perReq.USD(), sc.Text())
		}
		costs++
	}
	if costs != admitted {
		t.Fatalf("%d log entries with a cost, want %d", costs, admitted)
	}

	// Reset through the admin API: spend starts over.
	code, body := adminDo(t, http.MethodPost, "/cc_relay/pools/cl_budget/clients/alice/reset", "", "")
	if code != 200 || !strings.Contains(body, `"spent_picousd":0`) {
		t.Fatalf("reset: %d %s", code, body)
	}
	if code, _ := adminDo(t, http.MethodPost, "/cc_relay/pools/cl_budget/clients/nobody/reset", "", ""); code != 404 {
		t.Fatalf("reset of an unknown client: %d", code)
	}
	if code, _ := adminDo(t, http.MethodGet, "/cc_relay/pools/cl_budget/clients/alice/reset", "", ""); code != 405 {
		t.Fatalf("GET reset: %d", code)
	}
	if code, _ := adminDo(t, http.MethodGet, "/cc_relay/pools/cl_nowhere/clients", "", ""); code != 404 {
		t.Fatalf("clients of an unknown pool: %d", code)
	}
	mu.Lock()
	gate = make(chan struct{})
	close(gate)
	mu.Unlock()
	if r := c.mustSend(t, alice, msgBody); r.status != 200 {
		t.Fatalf("after reset: %d %s", r.status, r.body)
	}

	// The token appears nowhere.
	all := append([]string{adminGet(t, "/metrics"), logText, adminGet(t, "/cc_relay/pools/cl_budget"), adminGet(t, "/cc_relay/pools/cl_budget/clients")}, answers...)
	for _, s := range all {
		if strings.Contains(s, alice) || strings.Contains(s, "c0ffee") {
			t.Fatalf("the client token leaked: %s", s)
		}
	}
}

// TestClientsSpendSurvivesReloadAndRestart: a reload keeps spend in
// memory; when the pool's last configuration goes (a stop) spend is in
// Caddy's storage, and the next configuration (a start) reads it back.
func TestClientsSpendSurvivesReloadAndRestart(t *testing.T) {
	useFakeClock(t)
	up := newUpstream(t, nil) // 12 in, 3 out: $0.000081 on Sonnet 4.5
	const alice = "ct-cl-persist-alice-9d1e"
	const perReq = 81_000_000
	store := filepath.Join(t.TempDir(), "storage")
	site := func(pool, extra string) string {
		return caddyGlobal("\tstorage file_system "+store) + relaySite(pool+` {
		client_token `+alice+` alice {
			budget 1 day
		}
		`+extra+`
		key sk-cl-persist-1
	}`, "reverse_proxy "+up.addr())
	}
	startCaddy(t, site("cl_persist", ""))
	for i := 0; i < 2; i++ {
		if res, body := post(t, alice, msgBody); res.StatusCode != 200 {
			t.Fatalf("%d %s", res.StatusCode, body)
		}
	}
	if got := clientsOf(t, "cl_persist")["alice"].Spend.SpentPicoUSD; got != 2*perReq {
		t.Fatalf("spent %d", got)
	}

	// Reload (another client added): the spend stays.
	startCaddy(t, site("cl_persist", "client_token ct-cl-persist-bob bob"))
	if got := clientsOf(t, "cl_persist")["alice"].Spend.SpentPicoUSD; got != 2*perReq {
		t.Fatalf("after reload spent %d", got)
	}
	if res, body := post(t, alice, msgBody); res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, body)
	}

	// A configuration without the pool: its state is released, spend
	// saved.
	startCaddy(t, site("cl_persist_elsewhere", ""))
	b, err := os.ReadFile(filepath.Join(store, "cc_relay", "spend", "cl_persist", "alice.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rec keypool.SpendRecord
	if err := json.Unmarshal(b, &rec); err != nil || rec.SpentPicoUSD != 3*perReq || rec.Period != "day" || rec.Client != "alice" {
		t.Fatalf("stored %s (%v)", b, err)
	}
	if strings.Contains(string(b), alice) {
		t.Fatal("the token is in storage")
	}

	// Back again: a fresh state reads the spend.
	startCaddy(t, site("cl_persist", ""))
	if got := clientsOf(t, "cl_persist")["alice"].Spend.SpentPicoUSD; got != 3*perReq {
		t.Fatalf("after restart spent %d, want %d", got, 3*perReq)
	}
	if res, body := post(t, alice, msgBody); res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	if got := clientsOf(t, "cl_persist")["alice"].Spend.SpentPicoUSD; got != 4*perReq {
		t.Fatalf("spent %d", got)
	}
}
