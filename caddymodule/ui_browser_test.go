package caddymodule

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// The status page in a real browser: headless Chromium loads it from a
// running relay, runs its script (which polls the JSON), and the test reads
// the DOM it rendered and takes screenshots.
//
// Set CC_RELAY_UPDATE_SCREENSHOTS=1 to copy the screenshots to docs/ for
// README.md.

// chromium finds the browser. A missing browser fails the test: skipping
// would hide that the page was never checked.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CC_RELAY_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("the status page test needs headless Chromium: apt-get install chromium (or set CC_RELAY_CHROMIUM to a Chrome binary)")
	return ""
}

// browser runs headless Chromium with args then url, and returns its
// stdout and stderr (console messages, with --enable-logging=stderr).
func browser(t *testing.T, args []string, url string) (stdout, stderr string) {
	t.Helper()
	bin := chromium(t)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	base := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-default-apps", "--disable-extensions", "--hide-scrollbars", "--mute-audio",
		"--no-default-browser-check", "--user-data-dir=" + t.TempDir(),
		"--enable-logging=stderr", "--v=0",
		// Virtual time runs the page's timers (its 1.5 s poll) without
		// waiting for them; it stops when the budget is spent.
		"--virtual-time-budget=3500",
	}
	cmd := exec.CommandContext(ctx, bin, append(append(base, args...), url)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), "TZ=UTC", "LANG=en_US.UTF-8")
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, errb.String())
	}
	return out.String(), errb.String()
}

// consoleProblems are the lines of Chromium's log that show the page
// misbehaving: a CSP violation or a script error.
var consoleProblems = regexp.MustCompile(`(?i).*(content security policy|refused to|uncaught|syntaxerror|typeerror|referenceerror).*`)

func checkConsole(t *testing.T, stderr string) {
	t.Helper()
	if m := consoleProblems.FindAllString(stderr, 5); len(m) > 0 {
		t.Fatalf("the page logged problems:\n%s", strings.Join(m, "\n"))
	}
}

// screenshot captures url at the given window size into a PNG and returns
// the decoded image.
func screenshot(t *testing.T, url string, width, height int, extra ...string) (string, image.Image) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "shot.png")
	args := append([]string{fmt.Sprintf("--window-size=%d,%d", width, height), "--screenshot=" + file}, extra...)
	_, stderr := browser(t, args, url)
	checkConsole(t, stderr)
	f, err := os.Open(file)
	if err != nil {
		t.Fatalf("no screenshot: %v\n%s", err, stderr)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != width || b.Dy() != height {
		t.Fatalf("screenshot is %v, want %dx%d", b, width, height)
	}
	return file, img
}

// luminance of the pixel at (x, y), 0 (black) to 255 (white).
func luminance(img image.Image, x, y int) int {
	r, g, b, _ := img.At(x, y).RGBA()
	return int((299*r + 587*g + 114*b) / 1000 >> 8)
}

func keepScreenshot(t *testing.T, from, name string) {
	t.Helper()
	if os.Getenv("CC_RELAY_UPDATE_SCREENSHOTS") == "" {
		return
	}
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("..", "docs", name), b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote docs/%s", name)
}

// rowOf returns the HTML of the table row of a key.
func rowOf(t *testing.T, dom, key string) string {
	t.Helper()
	i := strings.Index(dom, `<tr data-key="`+key+`"`)
	if i < 0 {
		t.Fatalf("the rendered page has no row for key %s:\n%s", key, dom)
	}
	j := strings.Index(dom[i:], "</tr>")
	return dom[i : i+j]
}

// TestUIBrowser loads the status page in headless Chromium from a relay
// that has served traffic: one key cooling after an upstream 429 with
// retry-after, one disabled by a 401 that echoed its secret, one parked by
// a spend cap, one with configured limits nearly used up, one with limits
// learned from headers. The rendered DOM must show each key with its state,
// the cooling key's reason and countdown, the budgets, and no secret.
func TestUIBrowser(t *testing.T) {
	const pool = "ui_browser"
	chromium(t) // fail first, and clearly, without a browser
	useFakeClock(t)
	secrets := map[string]string{
		"CC_RELAY_UI_BR_ALPHA":   "sk-ant-api03-uibrAq3Zr8Lw2Mx5Ty",
		"CC_RELAY_UI_BR_BETA":    "sk-ant-api03-uibrBk7Vn4Pc9Qs1Hd",
		"CC_RELAY_UI_BR_GAMMA":   "sk-ant-api03-uibrGj2Fx6Wu8Ne3Rb",
		"CC_RELAY_UI_BR_DELTA":   "sk-ant-api03-uibrDm5Yt1Kh7Cz4Lp",
		"CC_RELAY_UI_BR_EPSILON": "sk-ant-api03-uibrEs9Gq3Bv6Xa2Jn",
		"CC_RELAY_UI_BR_TOKEN":   "ct-uibrTw4Rk8Ud1Hy6Fm",
	}
	setEnvs(t, secrets)
	var betaCalls atomic.Int32
	up := newUpstream(t, func(key string, w http.ResponseWriter, r *http.Request) {
		switch key {
		case secrets["CC_RELAY_UI_BR_BETA"]:
			if betaCalls.Add(1) == 1 {
				upstreamRateLimited(w, "42") // one 429: cooling with its reason
				return
			}
		case secrets["CC_RELAY_UI_BR_GAMMA"]:
			upstreamError(w, http.StatusUnauthorized, "authentication_error", "invalid x-api-key "+key)
			return
		case secrets["CC_RELAY_UI_BR_EPSILON"]:
			upstreamError(w, http.StatusTooManyRequests, "rate_limit_error",
				"You have reached your specified API usage limits. You will regain access on 2026-07-01 at 00:00 UTC.")
			return
		case secrets["CC_RELAY_UI_BR_DELTA"]:
			h := w.Header()
			h.Set("anthropic-ratelimit-requests-limit", "50")
			h.Set("anthropic-ratelimit-requests-remaining", "31")
			h.Set("anthropic-ratelimit-requests-reset", clockT0.Add(20*time.Second).Format(time.RFC3339))
			h.Set("anthropic-ratelimit-input-tokens-limit", "30000")
			h.Set("anthropic-ratelimit-input-tokens-remaining", "12000")
			h.Set("anthropic-ratelimit-input-tokens-reset", clockT0.Add(40*time.Second).Format(time.RFC3339))
			h.Set("anthropic-ratelimit-output-tokens-limit", "8000")
			h.Set("anthropic-ratelimit-output-tokens-remaining", "7000")
			h.Set("anthropic-ratelimit-output-tokens-reset", clockT0.Add(10*time.Second).Format(time.RFC3339))
		}
		okMessage(w)
	})
	startRelay(t, fmt.Sprintf(`http://localhost:9080 {
	@ops path /ops/status /ops/status/*
	cc_relay_ui @ops %[1]s {
		actions on
	}
	cc_relay %[1]s {
		strategy priority
		retries 4
		client_token {env.CC_RELAY_UI_BR_TOKEN} browser-client
		key {env.CC_RELAY_UI_BR_BETA} {
			name beta
		}
		key {env.CC_RELAY_UI_BR_GAMMA} {
			name gamma
			priority 1
		}
		key {env.CC_RELAY_UI_BR_EPSILON} {
			name epsilon
			priority 2
			org billing
		}
		key {env.CC_RELAY_UI_BR_ALPHA} {
			name alpha
			org team
			rpm 6
			itpm 200
			otpm 40
			priority 3
		}
		key {env.CC_RELAY_UI_BR_DELTA} {
			name delta
			priority 4
		}
	}
	reverse_proxy %[2]s
}
`, pool, up.addr()))

	// The first request meets beta's 429, gamma's 401 and epsilon's spend
	// cap before alpha answers; alpha then takes requests up to its rpm
	// and delta the rest.
	c := newRelayClient(t)
	for i := range 8 {
		r := c.mustSend(t, secrets["CC_RELAY_UI_BR_TOKEN"], msgText(fmt.Sprintf("hello %d", i)), "X-Claude-Code-Session-Id", fmt.Sprintf("ui-browser-%d", i%3))
		if r.status != 200 {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
	}
	ps := waitIdle(t, pool)
	for key, state := range map[string]string{"alpha": "ok", "beta": "cooling", "gamma": "disabled", "delta": "ok", "epsilon": "parked"} {
		if k := mustKey(t, ps, key); k.State != state {
			t.Fatalf("setup: %s is %s, want %s: %+v", key, k.State, state, k)
		}
	}

	url := relayAddr + "/ops/status"
	dom, stderr := browser(t, []string{"--dump-dom"}, url)
	checkConsole(t, stderr)
	if !strings.Contains(dom, `data-rendered="1"`) || !strings.Contains(dom, `data-pool="`+pool+`"`) {
		t.Fatalf("the script did not render the pool:\n%s\n%s", dom, stderr)
	}
	for key, state := range map[string]string{"alpha": "ok", "beta": "cooling", "gamma": "disabled", "delta": "ok", "epsilon": "parked"} {
		row := rowOf(t, dom, key)
		if !strings.Contains(row, `data-state="`+state+`"`) || !strings.Contains(row, `class="key-name">`+key+`<`) {
			t.Fatalf("row of %s does not show state %s:\n%s", key, state, row)
		}
		if state == "ok" && strings.Contains(row, `data-enable=`) {
			t.Fatalf("an ok key offers enable: %s", row)
		}
		if state != "ok" && !strings.Contains(row, `data-enable="`+key+`"`) {
			t.Fatalf("%s key %s offers no enable button: %s", state, key, row)
		}
	}
	// The cooling key: its reason and how long it still cools (42 s on the
	// relay's clock, which the page counts against, not the browser's).
	beta := rowOf(t, dom, "beta")
	if !strings.Contains(beta, "sonnet: upstream 429") || !strings.Contains(beta, "(in 42 s)") || !strings.Contains(beta, "until 12:00:42") {
		t.Fatalf("cooling beta lacks its reason or countdown:\n%s", beta)
	}
	if gamma := rowOf(t, dom, "gamma"); !strings.Contains(gamma, "401") || !strings.Contains(gamma, "[redacted]") {
		t.Fatalf("disabled gamma lacks its reason:\n%s", gamma)
	}
	if eps := rowOf(t, dom, "epsilon"); !strings.Contains(eps, "until") || !strings.Contains(eps, "2026") {
		t.Fatalf("parked epsilon lacks its date:\n%s", eps)
	}
	// Budgets: alpha's configured ones (6 requests used of 6), delta's
	// learned from headers.
	alpha := rowOf(t, dom, "alpha")
	for _, want := range []string{`data-class="sonnet"`, `data-budget="req"`, "6 / 6", `<span class="src">configured</span>`, "/ 200", "/ 40", `class="bar full"`} {
		if !strings.Contains(alpha, want) {
			t.Fatalf("alpha's budgets lack %q:\n%s", want, alpha)
		}
	}
	delta := rowOf(t, dom, "delta")
	for _, want := range []string{"/ 50", "/ 30k", "/ 8000", `<span class="src">learned</span>`} {
		if !strings.Contains(delta, want) {
			t.Fatalf("delta's budgets lack %q:\n%s", want, delta)
		}
	}
	for _, want := range []string{"2 of 5 keys ready", "pinned sessions", "waiting", "Totals"} {
		if !strings.Contains(dom, want) {
			t.Fatalf("the page lacks %q", want)
		}
	}
	assertNoSecret(t, "the rendered page", dom, secrets)
	for _, q := range []string{"", "?format=json", "?asset=ui.js", "?asset=ui.css"} {
		_, body := roundTrip(t, relayHTTP, newRequest(t, http.MethodGet, url+q, nil))
		assertNoSecret(t, "GET "+q, body, secrets)
	}

	// Screenshots: wide, phone, dark. The dark one must be dark: the
	// page follows prefers-color-scheme.
	wide, img := screenshot(t, url, 1280, 800)
	if l := luminance(img, 4, 4); l < 200 {
		t.Fatalf("light page background has luminance %d", l)
	}
	keepScreenshot(t, wide, "status-page.png")
	phone, _ := screenshot(t, url, 390, 1800)
	keepScreenshot(t, phone, "status-page-phone.png")
	dark, img := screenshot(t, url, 1280, 800, "--force-dark-mode", "--blink-settings=preferredColorScheme=0")
	if l := luminance(img, 4, 4); l > 60 {
		t.Fatalf("dark page background has luminance %d", l)
	}
	keepScreenshot(t, dark, "status-page-dark.png")

	// A real click on beta's Enable: the page's own POST (same origin,
	// its token in the header, a JSON body) passes the checks that refuse
	// cross-site requests, and the next poll shows the key ok.
	b := startCDP(t)
	b.open(url)
	b.waitFor("the page to render", `!!document.body && document.body.dataset.rendered === "1"`)
	b.eval(`window.confirm = () => true; document.querySelector('button[data-enable="beta"]').click(); true`)
	b.waitFor("the enable answer", `!document.getElementById("notice").hidden`)
	if got := b.eval(`document.getElementById("notice").textContent`); got != "Enabled key beta of pool "+pool+": now ok." {
		t.Fatalf("after clicking Enable the page says %q", got)
	}
	if k := keySnap(t, pool, "beta"); k.State != "ok" {
		t.Fatalf("beta after the click: %+v", k)
	}
	b.waitFor("beta's row to show ok", `document.querySelector('tr[data-key="beta"]').dataset.state === "ok"`)
}

// TestUIBrowserOptionalSections serves the embedded page with a status
// that has what other parts of the relay add to a pool (clients, the
// instances sharing it) and a pool that is not running: the page renders a
// table for each section present.
func TestUIBrowserOptionalSections(t *testing.T) {
	chromium(t)
	// The page comes from the handler; its JSON from a raw document, as
	// the extra sections are fields this package does not define yet.
	u := &UI{}
	raw := `{"now":"2026-06-01T12:00:00Z","actions":false,"pools":[
	 {"name":"shared","strategy":"least_loaded","mode":"local-fallback","instance":"relay-a","instances_alive":3,"sticky_sessions":0,"waiting":2,"keys":[
	  {"name":"k1","org":"o","cache_scope":"o","state":"ok","weight":1,"priority":0,"in_flight":1,"sticky_sessions":0,"budgets":[],"totals":{}}],
	  "clients":[{"name":"alice","limits":{"rpm":60},"in_flight":2,"spend_usd":1.25,"budget_left_usd":8.75,"reset":"2026-06-02T00:00:00Z"},
	             {"name":"bob","limits":{"rpm":30},"in_flight":0,"spend_usd":0,"budget_left_usd":10,"reset":"2026-06-02T00:00:00Z"}],
	  "instances":[{"id":"relay-a","mode":"shared","alive":true},{"id":"relay-b","mode":"local-fallback","alive":true}]},
	 {"name":"missing_pool","missing":true}]}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("format") == "json" {
			w.Header().Set("Content-Security-Policy", uiCSP)
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(raw))
			return
		}
		_ = u.ServeHTTP(w, r, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil }))
	}))
	defer srv.Close()
	dom, stderr := browser(t, []string{"--dump-dom"}, srv.URL+"/")
	checkConsole(t, stderr)
	for _, want := range []string{
		`data-section="clients"`, "clients (2)", `data-col="limits.rpm"`, ">alice<", ">bob<", "8.75",
		`data-section="instances"`, "instances (2)", ">relay-a<", ">local-fallback<",
		`data-mode="local-fallback"`, "redis local-fallback · 3 instances alive",
		`data-pool="missing_pool"`, "Not running", `<span class="v">2</span><span class="k">waiting</span>`, "no traffic yet",
	} {
		if !strings.Contains(dom, want) {
			t.Fatalf("rendered page lacks %q:\n%s", want, dom)
		}
	}
}

// cdp drives headless Chromium over the DevTools protocol on a pipe
// (--remote-debugging-pipe: commands on the browser's fd 3, answers and
// events on its fd 4, each message ending in a NUL byte).
type cdp struct {
	t      *testing.T
	in     *os.File // our end of the browser's fd 3
	out    *bufio.Reader
	id     int
	sessID string
}

func startCDP(t *testing.T) *cdp {
	t.Helper()
	bin := chromium(t)
	toBrowser, browserIn, err := os.Pipe() // browser reads toBrowser as fd 3
	if err != nil {
		t.Fatal(err)
	}
	browserOut, fromBrowser, err := os.Pipe() // browser writes fromBrowser as fd 4
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
		"--no-default-browser-check", "--user-data-dir="+t.TempDir(), "--remote-debugging-pipe", "about:blank")
	cmd.ExtraFiles = []*os.File{toBrowser, fromBrowser}
	cmd.Env = append(os.Environ(), "TZ=UTC")
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	toBrowser.Close()
	fromBrowser.Close()
	t.Cleanup(func() {
		browserIn.Close()
		cancel()
		_ = cmd.Wait()
		browserOut.Close()
	})
	return &cdp{t: t, in: browserIn, out: bufio.NewReader(browserOut)}
}

// call sends a command and returns its result, skipping events.
func (c *cdp) call(method string, params map[string]any) map[string]any {
	c.t.Helper()
	c.id++
	msg := map[string]any{"id": c.id, "method": method, "params": params}
	if c.sessID != "" {
		msg["sessionId"] = c.sessID
	}
	b, _ := json.Marshal(msg)
	if _, err := c.in.Write(append(b, 0)); err != nil {
		c.t.Fatalf("cdp %s: %v", method, err)
	}
	for {
		raw, err := c.out.ReadBytes(0)
		if err != nil {
			c.t.Fatalf("cdp %s: %v", method, err)
		}
		var res struct {
			ID     int            `json:"id"`
			Result map[string]any `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(raw[:len(raw)-1], &res); err != nil {
			c.t.Fatalf("cdp %s: %v: %s", method, err, raw)
		}
		if res.ID != c.id {
			continue // an event, or an answer to nothing we wait for
		}
		if res.Error != nil {
			c.t.Fatalf("cdp %s: %s", method, res.Error.Message)
		}
		return res.Result
	}
}

// eval evaluates a JavaScript expression in the page (awaiting a promise)
// and returns its value.
func (c *cdp) eval(expr string) any {
	c.t.Helper()
	r := c.call("Runtime.evaluate", map[string]any{"expression": expr, "awaitPromise": true, "returnByValue": true})
	if ex, ok := r["exceptionDetails"]; ok {
		c.t.Fatalf("evaluating %s: %v", expr, ex)
	}
	v, _ := r["result"].(map[string]any)
	return v["value"]
}

// open opens url in a new tab and attaches to it.
func (c *cdp) open(url string) {
	c.t.Helper()
	target := c.call("Target.createTarget", map[string]any{"url": url})
	att := c.call("Target.attachToTarget", map[string]any{"targetId": target["targetId"], "flatten": true})
	c.sessID, _ = att["sessionId"].(string)
	c.call("Runtime.enable", nil)
}

// waitFor evaluates cond until it is true, bounded.
func (c *cdp) waitFor(what, cond string) {
	c.t.Helper()
	for range 200 {
		if v, _ := c.eval(cond).(bool); v {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("timed out waiting for %s", what)
}
