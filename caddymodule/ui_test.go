package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// secretTail is the distinctive part of a secret: what follows its last
// dash ("sk-ant-api03-" is shared by every key and proves nothing).
func secretTail(secret string) string {
	return secret[strings.LastIndexByte(secret, '-')+1:]
}

// assertNoSecret fails the test if text holds any secret, whole or any
// eight characters in a row of its distinctive tail.
func assertNoSecret(t *testing.T, what, text string, secrets map[string]string) {
	t.Helper()
	for name, secret := range secrets {
		if strings.Contains(text, secret) {
			t.Fatalf("%s holds the secret of %s", what, name)
		}
		tail := secretTail(secret)
		for i := 0; i+8 <= len(tail); i++ {
			if strings.Contains(text, tail[i:i+8]) {
				t.Fatalf("%s holds part (%q) of the secret of %s", what, tail[i:i+8], name)
			}
		}
	}
}

func parseUI(src string) (*UI, error) {
	u := new(UI)
	err := u.UnmarshalCaddyfile(caddyfile.NewTestDispenser(src))
	return u, err
}

func TestUICaddyfile(t *testing.T) {
	u, err := parseUI("cc_relay_ui")
	if err != nil || len(u.Pools) != 0 || u.Actions {
		t.Fatalf("bare directive: %+v %v", u, err)
	}
	u, err = parseUI("cc_relay_ui prod staging {\n actions on\n}")
	if err != nil || strings.Join(u.Pools, ",") != "prod,staging" || !u.Actions {
		t.Fatalf("pools and actions: %+v %v", u, err)
	}
	u, err = parseUI("cc_relay_ui {\n actions off\n}")
	if err != nil || u.Actions {
		t.Fatalf("actions off: %+v %v", u, err)
	}
	for src, want := range map[string]string{
		"cc_relay_ui {\n actions maybe\n}":  `actions: want on or off, got "maybe"`,
		"cc_relay_ui {\n actions\n}":        "wrong argument count",
		"cc_relay_ui {\n actions on on\n}":  "wrong argument count",
		"cc_relay_ui {\n refresh 1s\n}":     `unknown cc_relay_ui subdirective "refresh"`,
		"cc_relay_ui prod prod":             `pool "prod" is listed twice`,
		"cc_relay_ui prod {\n pool x\n}":    `unknown cc_relay_ui subdirective "pool"`,
		"cc_relay_ui {\n actions on\n x\n}": `unknown cc_relay_ui subdirective "x"`,
	} {
		_, err := parseUI(src)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "Testfile:") {
			t.Errorf("%q: error %v, want one naming the line and %q", src, err, want)
		}
	}
	if err := (&UI{Pools: []string{"a", "a"}}).Validate(); err == nil {
		t.Error("JSON config listing a pool twice was accepted")
	}
	if err := (&UI{Pools: []string{""}}).Validate(); err == nil {
		t.Error("JSON config with an empty pool name was accepted")
	}
}

// The directive orders itself: no global order line, and it lands before
// reverse_proxy whatever the file's order, with its matcher and options.
func TestUIAdaptNeedsNoOrderLine(t *testing.T) {
	out, err := adapt(t, `:9180 {
	reverse_proxy 127.0.0.1:1
	cc_relay_ui /ops/* prod {
		actions on
	}
}`)
	if err != nil {
		t.Fatal(err)
	}
	i, j := strings.Index(out, `"handler":"cc_relay_ui"`), strings.Index(out, `"handler":"reverse_proxy"`)
	if i < 0 || j < 0 || i > j {
		t.Fatalf("cc_relay_ui not ordered before reverse_proxy: %s", out)
	}
	for _, want := range []string{`"actions":true`, `"pools":["prod"]`, `"/ops/*"`} {
		if !strings.Contains(out, want) {
			t.Fatalf("adapted config lacks %s: %s", want, out)
		}
	}
}

func TestUICSRFToken(t *testing.T) {
	t0 := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	tok := newCSRFToken(t0)
	if !validCSRFToken(tok, t0) || !validCSRFToken(tok, t0.Add(csrfLifetime)) {
		t.Fatal("a fresh token is refused")
	}
	if validCSRFToken(tok, t0.Add(csrfLifetime+time.Second)) {
		t.Fatal("an expired token is accepted")
	}
	// Any changed byte (expiry or MAC) fails.
	raw := []byte(tok)
	for i := range raw {
		bad := append([]byte(nil), raw...)
		if bad[i] == 'A' {
			bad[i] = 'B'
		} else {
			bad[i] = 'A'
		}
		if validCSRFToken(string(bad), t0) {
			t.Fatalf("token changed at %d accepted", i)
		}
	}
	for _, bad := range []string{"", "x", "not base64 !", tok + "A", tok[:len(tok)-2]} {
		if validCSRFToken(bad, t0) {
			t.Fatalf("%q accepted", bad)
		}
	}
}

// uiResp is one answer of the status page, kept for the secret scan.
type uiResp struct {
	code   int
	header http.Header
	body   string
}

// TestUIHandler drives cc_relay_ui through a real Caddy: the page, its
// assets and JSON under route prefixes, read-only refusal, methods, the
// enable action with every cross-site check, and a scan of every answer
// (headers included) for secrets.
func TestUIHandler(t *testing.T) {
	const pool = "ui_http"
	useFakeClock(t)
	secrets := map[string]string{
		"CC_RELAY_UI_HTTP_ALPHA": "sk-ant-api03-uihttpQ7vLx3Nf9Kc2Wd",
		"CC_RELAY_UI_HTTP_BETA":  "sk-ant-api03-uihttpZp4Ty8Rb1Gm6Hs",
		"CC_RELAY_UI_HTTP_TOKEN": "ct-uihttpVn5Jq2Xe7Ua3Lk",
	}
	setEnvs(t, secrets)
	up := newUpstream(t, func(key string, w http.ResponseWriter, r *http.Request) {
		if key == secrets["CC_RELAY_UI_HTTP_BETA"] {
			upstreamError(w, http.StatusUnauthorized, "authentication_error", "invalid x-api-key "+key)
			return
		}
		okMessage(w)
	})
	startRelay(t, fmt.Sprintf(`http://localhost:9080 {
	cc_relay_ui /ops/ro/* %[1]s
	@rw path /ops/rw /ops/rw/*
	cc_relay_ui @rw %[1]s ui_http_absent {
		actions on
	}
	route /ops/all {
		cc_relay_ui
	}
	cc_relay %[1]s {
		strategy priority
		client_token {env.CC_RELAY_UI_HTTP_TOKEN} ui-client
		retries 2
		key {env.CC_RELAY_UI_HTTP_BETA} {
			name beta
		}
		key {env.CC_RELAY_UI_HTTP_ALPHA} {
			name alpha
			rpm 10
			priority 1
		}
	}
	reverse_proxy %[2]s
}
`, pool, up.addr()))
	if res, body := post(t, secrets["CC_RELAY_UI_HTTP_TOKEN"], msgBody); res.StatusCode != 200 || res.Header.Get("X-CC-Relay-Key") != "alpha" {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	waitIdle(t, pool)

	var seen []uiResp
	do := func(method, path string, body string, hdr ...string) uiResp {
		t.Helper()
		req := newRequest(t, method, relayAddr+path, strings.NewReader(body))
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		res, b := roundTrip(t, relayHTTP, req)
		r := uiResp{res.StatusCode, res.Header, b}
		seen = append(seen, r)
		// Every answer, errors included, carries the strict policy.
		if got := res.Header.Get("Content-Security-Policy"); got != uiCSP {
			t.Fatalf("%s %s: CSP %q", method, path, got)
		}
		if res.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("%s %s: no nosniff", method, path)
		}
		return r
	}
	wantErr := func(r uiResp, code int, errType, msg string) {
		t.Helper()
		var e apiError
		if r.code != code || json.Unmarshal([]byte(r.body), &e) != nil || e.Type != "error" || e.Error.Type != errType || !strings.Contains(e.Error.Message, msg) {
			t.Fatalf("got %d %s, want %d %s mentioning %q", r.code, r.body, code, errType, msg)
		}
	}

	// The page: static HTML whose script and style are separate files
	// addressed relative to the page, so any prefix works.
	for _, path := range []string{"/ops/ro/", "/ops/ro/deeper/page", "/ops/rw", "/ops/all"} {
		r := do(http.MethodGet, path, "")
		if r.code != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
			t.Fatalf("GET %s: %d %s", path, r.code, r.header.Get("Content-Type"))
		}
		if !strings.Contains(r.body, `<script src="?asset=ui.js" defer></script>`) || !strings.Contains(r.body, `href="?asset=ui.css"`) {
			t.Fatalf("GET %s: page does not load its assets relatively:\n%s", path, r.body)
		}
		if regexp.MustCompile(`<script>|<style|\sstyle=|\son[a-z]+=|https?://`).MatchString(r.body) {
			t.Fatalf("GET %s: page has inline script/style or an outside URL:\n%s", path, r.body)
		}
	}
	js := do(http.MethodGet, "/ops/ro/?asset=ui.js", "")
	css := do(http.MethodGet, "/ops/ro/?asset=ui.css", "")
	if js.code != 200 || js.header.Get("Content-Type") != "text/javascript; charset=utf-8" || !strings.Contains(js.body, "?format=json") {
		t.Fatalf("ui.js: %d %s", js.code, js.header.Get("Content-Type"))
	}
	if css.code != 200 || css.header.Get("Content-Type") != "text/css; charset=utf-8" || !strings.Contains(css.body, "prefers-color-scheme: dark") {
		t.Fatalf("ui.css: %d %s", css.code, css.header.Get("Content-Type"))
	}
	if strings.Contains(js.body, "http://") || strings.Contains(js.body, "https://") || strings.Contains(css.body, "url(") || strings.Contains(css.body, "@import") {
		t.Fatal("an asset refers to something outside the handler")
	}
	if r := do(http.MethodGet, "/ops/ro/?asset=ui.js", "", "If-None-Match", js.header.Get("ETag")); r.code != http.StatusNotModified {
		t.Fatalf("revalidating ui.js: %d", r.code)
	}
	wantErr(do(http.MethodGet, "/ops/ro/?asset=../ui.go", ""), 404, "not_found_error", "no such asset")
	wantErr(do(http.MethodGet, "/ops/ro/?format=xml", ""), 400, "invalid_request_error", "format=json")

	// The JSON: the admin API's view of the pools shown.
	var st struct {
		Now     time.Time `json:"now"`
		Actions bool      `json:"actions"`
		CSRF    string    `json:"csrf"`
		Pools   []struct {
			PoolStatus
			Missing bool `json:"missing"`
		} `json:"pools"`
	}
	decode := func(r uiResp) {
		t.Helper()
		st.CSRF, st.Actions = "", false
		if r.code != 200 || r.header.Get("Content-Type") != "application/json" || r.header.Get("Cache-Control") != "no-store" {
			t.Fatalf("JSON: %d %v", r.code, r.header)
		}
		if err := json.Unmarshal([]byte(r.body), &st); err != nil {
			t.Fatal(err)
		}
	}
	decode(do(http.MethodGet, "/ops/ro/?format=json", ""))
	if st.Actions || st.CSRF != "" || len(st.Pools) != 1 || st.Pools[0].Name != pool || !st.Now.Equal(clockT0) {
		t.Fatalf("read-only JSON: %+v", st)
	}
	if beta := mustKey(t, st.Pools[0].PoolStatus, "beta"); beta.State != "disabled" || !strings.Contains(beta.Reason, "[redacted]") {
		t.Fatalf("beta %+v", beta)
	}
	if alpha := mustKey(t, st.Pools[0].PoolStatus, "alpha"); alpha.State != "ok" || budgetOf(t, alpha, "sonnet").Requests.Configured != 10 {
		t.Fatalf("alpha %+v", alpha)
	}
	decode(do(http.MethodGet, "/ops/all?format=json", ""))
	if len(st.Pools) != 1 || st.Pools[0].Name != pool {
		t.Fatalf("default pools: %+v", st.Pools)
	}
	decode(do(http.MethodGet, "/ops/rw?format=json", ""))
	if !st.Actions || st.CSRF == "" || len(st.Pools) != 2 || st.Pools[1].Name != "ui_http_absent" || !st.Pools[1].Missing || st.Pools[0].Missing {
		t.Fatalf("actions JSON: %+v", st)
	}
	token := st.CSRF

	// Read-only refuses every POST; other methods are not allowed.
	wantErr(do(http.MethodPost, "/ops/ro/?action=enable", `{"pool":"ui_http","key":"beta"}`, "Content-Type", "application/json", uiCSRFHeader, token),
		403, "permission_error", "read-only")
	r := do(http.MethodDelete, "/ops/ro/", "")
	wantErr(r, 405, "invalid_request_error", "not allowed")
	if r.header.Get("Allow") != "GET, HEAD" {
		t.Fatalf("Allow %q", r.header.Get("Allow"))
	}
	if r := do(http.MethodPut, "/ops/rw", ""); r.code != 405 || r.header.Get("Allow") != "GET, HEAD, POST" {
		t.Fatalf("PUT with actions: %d Allow %q", r.code, r.header.Get("Allow"))
	}

	// Enable: each protection on its own refuses.
	body := `{"pool":"ui_http","key":"beta"}`
	sameOrigin := []string{"Content-Type", "application/json", "Sec-Fetch-Site", "same-origin", "Origin", "http://localhost:9080"}
	with := func(extra ...string) []string { return append(append([]string(nil), sameOrigin...), extra...) }
	wantErr(do(http.MethodPost, "/ops/rw?action=enable", body, sameOrigin...), 403, "permission_error", "page token")
	wantErr(do(http.MethodPost, "/ops/rw?action=enable", body, with(uiCSRFHeader, token+"x")...), 403, "permission_error", "page token")
	wantErr(do(http.MethodPost, "/ops/rw?action=enable", body, with(uiCSRFHeader, token, "Sec-Fetch-Site", "cross-site")...), 403, "permission_error", "cross-origin")
	wantErr(do(http.MethodPost, "/ops/rw?action=enable", body, uiCSRFHeader, token, "Content-Type", "application/json", "Origin", "http://evil.example"), 403, "permission_error", "cross-origin")
	wantErr(do(http.MethodPost, "/ops/rw?action=enable", body, with(uiCSRFHeader, token, "Content-Type", "text/plain")...), 415, "invalid_request_error", "application/json")
	wantErr(do(http.MethodPost, "/ops/rw?action=enable", `pool=ui_http&key=beta`, with(uiCSRFHeader, token)...), 400, "invalid_request_error", "must be")
	wantErr(do(http.MethodPost, "/ops/rw?action=drop", body, with(uiCSRFHeader, token)...), 404, "not_found_error", "unknown action")
	wantErr(do(http.MethodPost, "/ops/rw?action=enable", `{"pool":"ops_admin","key":"beta"}`, with(uiCSRFHeader, token)...), 404, "not_found_error", "no pool of that name")
	wantErr(do(http.MethodPost, "/ops/rw?action=enable", `{"pool":"ui_http_absent","key":"beta"}`, with(uiCSRFHeader, token)...), 404, "not_found_error", "not running")
	// A secret pasted as a key name is not echoed.
	wantErr(do(http.MethodPost, "/ops/rw?action=enable", `{"pool":"ui_http","key":"`+secrets["CC_RELAY_UI_HTTP_ALPHA"]+`"}`, with(uiCSRFHeader, token)...),
		404, "not_found_error", "no key of that name")
	if k := keySnap(t, pool, "beta"); k.State != "disabled" {
		t.Fatalf("a refused request changed beta: %+v", k)
	}

	// The page's own request (a browser's same-origin fetch) enables.
	r = do(http.MethodPost, "/ops/rw?action=enable", body, with(uiCSRFHeader, token)...)
	var er EnableResult
	if r.code != 200 || json.Unmarshal([]byte(r.body), &er) != nil || er.Pool != pool || er.Key.Name != "beta" || er.Key.State != "ok" {
		t.Fatalf("enable: %d %s", r.code, r.body)
	}
	if k := keySnap(t, pool, "beta"); k.State != "ok" || k.Reason != "" {
		t.Fatalf("beta after enable: %+v", k)
	}
	// A client without Sec-Fetch-Site or Origin (curl with the token) too.
	if r := do(http.MethodPost, "/ops/rw/?action=enable", `{"pool":"ui_http","key":"alpha"}`, "Content-Type", "application/json", uiCSRFHeader, token); r.code != 200 {
		t.Fatalf("enable without browser headers: %d %s", r.code, r.body)
	}

	for i, r := range seen {
		var hdr strings.Builder
		_ = r.header.Write(&hdr)
		assertNoSecret(t, fmt.Sprintf("answer %d", i), hdr.String()+"\n"+r.body, secrets)
	}
}
