package caddymodule

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
)

func init() {
	caddy.RegisterModule(UI{})
}

// UI is the status page handler http.handlers.cc_relay_ui. It answers
// every request its route hands it; the operator protects that route with
// Caddy's own tools (basic_auth, forward_auth, a remote_ip matcher, an
// internal listener), as with Caddy's metrics handler. On one URL it
// serves:
//
//	GET  <route>                  the page (HTML)
//	GET  <route>?format=json      the pools it shows, which the page polls
//	GET  <route>?asset=ui.js      the page's script and style sheet
//	GET  <route>?asset=ui.css
//	POST <route>?action=enable    enable a key (only with actions on)
//
// Query parameters rather than sub-paths keep the page's URLs relative to
// itself, so it works under any route prefix, with or without a trailing
// slash. Everything is embedded; the Content-Security-Policy admits no
// script, style, font or connection from anywhere else. Keys are shown by
// name, never by secret.
type UI struct {
	// Pools lists the pools the page shows, in this order. Default: every
	// live pool, sorted by name.
	Pools []string `json:"pools,omitempty"`

	// Actions lets the page enable a disabled, cooling or parked key (the
	// admin API's enable), through a POST protected against cross-site
	// requests. Default: false, the page is read-only.
	Actions bool `json:"actions,omitempty"`

	logger *zap.Logger
	clk    clock.Clock
	// status builds what the page shows; tests replace it.
	status func() uiStatus
}

// uiStatus is the JSON the page polls.
type uiStatus struct {
	// Now is the relay's time, so the page counts down cooldowns against
	// the relay's clock and not the browser's.
	Now     time.Time `json:"now"`
	Actions bool      `json:"actions"`
	// CSRF is the token the page sends with an enable request; present
	// only with actions on. A cross-site page cannot read it: the JSON is
	// same-origin only.
	CSRF  string   `json:"csrf,omitempty"`
	Pools []uiPool `json:"pools"`
}

// uiPool is one pool as the admin API shows it, or a configured pool that
// is not running (Missing).
type uiPool struct {
	PoolStatus
	Missing bool `json:"missing,omitempty"`
}

//go:embed ui
var uiFiles embed.FS

// uiAsset is an embedded file with its validator.
type uiAsset struct {
	body        []byte
	contentType string
	etag        string
}

var uiAssets = func() map[string]uiAsset {
	m := map[string]uiAsset{}
	// Types are fixed here, not looked up: the system's mime.types must
	// not decide what nosniff lets a browser run.
	for name, ct := range map[string]string{
		"index.html": "text/html; charset=utf-8",
		"ui.js":      "text/javascript; charset=utf-8",
		"ui.css":     "text/css; charset=utf-8",
	} {
		b, err := uiFiles.ReadFile("ui/" + name)
		if err != nil {
			panic("cc_relay_ui: embedded " + name + " missing: " + err.Error())
		}
		sum := sha256.Sum256(b)
		m[name] = uiAsset{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	return m
}()

// uiCSP admits only the handler's own script, style and JSON.
const uiCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// CaddyModule returns the Caddy module information.
func (UI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.cc_relay_ui",
		New: func() caddy.Module { return new(UI) },
	}
}

// Provision sets up the handler.
func (u *UI) Provision(ctx caddy.Context) error {
	u.logger = ctx.Logger()
	u.clk = newClock()
	u.status = u.liveStatus
	return nil
}

// Validate checks the configuration.
func (u *UI) Validate() error {
	seen := map[string]bool{}
	for _, p := range u.Pools {
		if p == "" {
			return fmt.Errorf("cc_relay_ui: empty pool name")
		}
		if seen[p] {
			return fmt.Errorf("cc_relay_ui: pool %q is listed twice", p)
		}
		seen[p] = true
	}
	return nil
}

// ServeHTTP serves the page, its JSON, its assets and the enable action.
// It never calls next: the page is what the route is for.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", uiCSP)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Cross-Origin-Resource-Policy", "same-origin")

	q := r.URL.Query()
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodPost:
		if !u.Actions {
			writeError(w, http.StatusForbidden, "permission_error",
				"this status page is read-only: add 'actions on' to cc_relay_ui to enable keys from it", 0)
			return nil
		}
		if q.Get("action") != "enable" {
			writeError(w, http.StatusNotFound, "not_found_error", "unknown action; the page knows only action=enable", 0)
			return nil
		}
		u.serveEnable(w, r)
		return nil
	default:
		allow := "GET, HEAD"
		if u.Actions {
			allow += ", POST"
		}
		hdr.Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, "invalid_request_error", "method not allowed; use "+allow, 0)
		return nil
	}

	switch {
	case q.Has("asset"):
		name := q.Get("asset")
		if name != "ui.js" && name != "ui.css" {
			writeError(w, http.StatusNotFound, "not_found_error", "no such asset", 0)
			return nil
		}
		u.serveAsset(w, r, uiAssets[name])
	case q.Get("format") == "json":
		u.serveJSON(w)
	case q.Has("format"):
		writeError(w, http.StatusBadRequest, "invalid_request_error", "unknown format; use format=json", 0)
	default:
		u.serveAsset(w, r, uiAssets["index.html"])
	}
	return nil
}

// serveAsset serves an embedded file. The validator lets a browser keep
// it while it is unchanged and fetch it anew after an upgrade.
func (u *UI) serveAsset(w http.ResponseWriter, r *http.Request, a uiAsset) {
	hdr := w.Header()
	hdr.Set("Content-Type", a.contentType)
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("ETag", a.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

func (u *UI) serveJSON(w http.ResponseWriter) {
	b, err := json.Marshal(u.status())
	if err != nil {
		writeError(w, http.StatusInternalServerError, "api_error", "encoding the status failed", 0)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Content-Length", strconv.Itoa(len(b)+1))
	_, _ = w.Write(append(b, '\n'))
}

// liveStatus snapshots the pools the page shows, through the admin API's
// own view of them: whatever the admin API learns to show (clients,
// instances), the page's JSON carries too.
func (u *UI) liveStatus() uiStatus {
	now := u.clk.Now()
	st := uiStatus{Now: now.UTC(), Actions: u.Actions, Pools: []uiPool{}}
	if u.Actions {
		st.CSRF = newCSRFToken(time.Now())
	}
	for _, name := range u.poolNames() {
		e, ok := lookupEntry(name)
		if !ok {
			st.Pools = append(st.Pools, uiPool{PoolStatus: PoolStatus{Name: name}, Missing: true})
			continue
		}
		st.Pools = append(st.Pools, uiPool{PoolStatus: poolStatus(name, e)})
	}
	return st
}

func (u *UI) poolNames() []string {
	if len(u.Pools) > 0 {
		return u.Pools
	}
	return livePoolNames()
}

// enableRequest is the body of POST ?action=enable.
type enableRequest struct {
	Pool string `json:"pool"`
	Key  string `json:"key"`
}

// uiCSRFHeader carries the page's token on an enable request.
const uiCSRFHeader = "X-CC-Relay-CSRF"

// crossOrigin refuses browser requests from another origin, judged by
// Sec-Fetch-Site, else by Origin against Host.
var crossOrigin = http.NewCrossOriginProtection()

// serveEnable enables a key of a pool the page shows. A browser sends the
// page's credentials (basic_auth, a cookie of forward_auth) with any
// request to this origin, also one a hostile page starts; three checks
// make sure the request comes from the page itself:
//
//   - a browser's Sec-Fetch-Site, or failing that its Origin, must say
//     same origin;
//   - the token of the page's JSON must come in a custom header: a form
//     cannot set a header, and a cross-origin script that sets one needs
//     a CORS preflight this handler never grants;
//   - the body must be JSON, which a form cannot send either.
//
// Errors never echo the key name asked for: it could be a pasted secret.
func (u *UI) serveEnable(w http.ResponseWriter, r *http.Request) {
	if err := crossOrigin.Check(r); err != nil {
		writeError(w, http.StatusForbidden, "permission_error", "cross-origin request refused", 0)
		return
	}
	if !validCSRFToken(r.Header.Get(uiCSRFHeader), time.Now()) {
		writeError(w, http.StatusForbidden, "permission_error", "missing or expired page token: reload the page", 0)
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, "invalid_request_error", "the body must be application/json", 0)
		return
	}
	var req enableRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.Pool == "" || req.Key == "" {
		writeError(w, http.StatusBadRequest, "invalid_request_error", `the body must be {"pool":"<name>","key":"<name>"}`, 0)
		return
	}
	if !slices.Contains(u.poolNames(), req.Pool) {
		writeError(w, http.StatusNotFound, "not_found_error", "this page shows no pool of that name", 0)
		return
	}
	e, ok := lookupEntry(req.Pool)
	if !ok {
		writeError(w, http.StatusNotFound, "not_found_error", fmt.Sprintf("pool %q is not running", req.Pool), 0)
		return
	}
	if !e.pool.Enable(req.Key) {
		writeError(w, http.StatusNotFound, "not_found_error", fmt.Sprintf("pool %q has no key of that name", req.Pool), 0)
		return
	}
	for _, k := range poolStatus(req.Pool, e).Keys {
		if k.Name != req.Key {
			continue
		}
		if u.logger != nil {
			fields := []zap.Field{zap.String("pool", req.Pool), zap.String("key", req.Key), zap.String("remote_ip", remoteIP(r))}
			if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
				if user, ok := repl.GetString("http.auth.user.id"); ok && user != "" {
					fields = append(fields, zap.String("user", user))
				}
			}
			u.logger.Info("key enabled through the status page", fields...)
		}
		b, _ := json.Marshal(EnableResult{Pool: req.Pool, Key: k})
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(append(b, '\n'))
		return
	}
	// A reload removed the key between Enable and the snapshot.
	writeError(w, http.StatusNotFound, "not_found_error", fmt.Sprintf("pool %q has no key of that name", req.Pool), 0)
}

// remoteIP is the client address Caddy determined (trusted proxies
// considered), else the connection's.
func remoteIP(r *http.Request) string {
	if v, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && v != "" {
		return v
	}
	return r.RemoteAddr
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*UI)(nil)
	_ caddy.Validator             = (*UI)(nil)
	_ caddyhttp.MiddlewareHandler = (*UI)(nil)
)
