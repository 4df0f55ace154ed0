package caddymodule

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// A key the upstream refused is re-checked on its own (keypool/health.go
// keeps when): a cheap authenticated GET /v1/models?limit=1 with the key.
//
// The relay does not know the upstream: it hands requests to the next
// handler (normally reverse_proxy) and that one knows the address, TLS and
// transport the operator configured. So the probe goes the same way: the
// prober remembers the next handler of the first request this handler
// served and sends the probe through it, prepared like a request Caddy
// received (caddyhttp.PrepareRequest). A probe thus reaches exactly the
// upstream real requests reach, with the operator's settings, and needs no
// setting of its own. Until a request has passed through the handler since
// the configuration loaded, there is nothing to probe through and probes
// wait (a key disabled before a reload keeps its state and is probed once
// traffic resumes).

// probeTimeout bounds one probe.
const probeTimeout = 15 * time.Second

// probeRoute is what a probe is sent through: the handler after the
// relay, the server that received the request, and its Host and scheme.
type probeRoute struct {
	next   caddyhttp.Handler
	srv    *caddyhttp.Server
	host   string
	scheme string
}

// prober runs one handler's probes in one goroutine, from Provision to
// Cleanup.
type prober struct {
	h      *Handler
	route  atomic.Pointer[probeRoute]
	kick   chan struct{} // a key was disabled, or the route became known
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// wake makes the prober look at the pool again.
func (pr *prober) wake() {
	if pr == nil {
		return
	}
	select {
	case pr.kick <- struct{}{}:
	default:
	}
}

func (h *Handler) startProber() {
	ctx, cancel := context.WithCancel(context.Background())
	pr := &prober{h: h, kick: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	h.prober = pr
	go pr.run(ctx)
}

// stop ends the prober and waits for it (a probe out is cancelled).
func (pr *prober) stop() {
	if pr == nil {
		return
	}
	pr.once.Do(func() {
		pr.cancel()
		<-pr.done
	})
}

// remember keeps the first request's route; later ones cost one load.
func (pr *prober) remember(r *http.Request, next caddyhttp.Handler) {
	if pr == nil || pr.route.Load() != nil {
		return
	}
	srv, _ := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if srv == nil {
		return // not served by a Caddy server: nothing to prepare a probe for
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if pr.route.CompareAndSwap(nil, &probeRoute{next: next, srv: srv, host: r.Host, scheme: scheme}) {
		pr.wake()
	}
}

func (pr *prober) run(ctx context.Context) {
	defer close(pr.done)
	h := pr.h
	for {
		// Without a route nothing can be probed, and without a disabled
		// key nothing needs to be: the prober then holds no timer and
		// sleeps until woken (a key disabled, the route learned).
		var due <-chan time.Time
		var timer clock.Timer
		if route := pr.route.Load(); route != nil {
			for _, p := range h.pool.DueProbes() {
				outcome, reason := pr.probe(ctx, route, p)
				h.pool.FinishProbe(p, outcome, reason)
				h.logProbe(p, outcome, reason)
			}
			if t, ok := h.pool.NextProbe(); ok {
				timer = h.clk.NewTimer(max(t.Sub(h.clk.Now()), time.Second))
				due = timer.C()
			}
		}
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return
		case <-pr.kick:
			if timer != nil {
				timer.Stop()
			}
		case <-due:
		}
	}
}

func (h *Handler) logProbe(p keypool.Probe, outcome keypool.ProbeOutcome, reason string) {
	switch outcome {
	case keypool.ProbePassed:
		h.logger.Info("disabled key passed its probe; back in rotation", zap.String("key", p.Name))
	case keypool.ProbeRefused:
		h.logger.Warn("disabled key refused again by its probe; stays disabled", zap.String("key", p.Name), zap.String("reason", reason))
	default:
		if ce := h.logger.Check(zap.DebugLevel, "probe of a disabled key was inconclusive"); ce != nil {
			ce.Write(zap.String("key", p.Name), zap.String("reason", reason))
		}
	}
}

// probe sends GET /v1/models?limit=1 with the key through route.
func (pr *prober) probe(ctx context.Context, route *probeRoute, p keypool.Probe) (outcome keypool.ProbeOutcome, reason string) {
	h := pr.h
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, route.scheme+"://"+route.host+"/v1/models?limit=1", nil)
	if err != nil {
		return keypool.ProbeInconclusive, err.Error()
	}
	req.Host = route.host
	req.RemoteAddr = "127.0.0.1:0" // the relay itself
	req.RequestURI = req.URL.RequestURI()
	req.Header.Set("Anthropic-Version", "2023-06-01")
	if s := h.secrets[p.Index]; s.bearer {
		req.Header.Set("Authorization", "Bearer "+s.value)
	} else {
		req.Header["X-Api-Key"] = []string{s.value}
	}
	defer func() {
		// reverse_proxy aborts a broken response by panicking; nothing a
		// probe meets may take the prober down.
		if r := recover(); r != nil {
			outcome, reason = keypool.ProbeInconclusive, "probe aborted"
		}
	}()
	w := &probeWriter{header: http.Header{}}
	req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), w, route.srv)
	err = route.next.ServeHTTP(w, req)
	switch {
	case w.status >= 200 && w.status < 300:
		return keypool.ProbePassed, ""
	case w.status == http.StatusUnauthorized || w.status == http.StatusForbidden:
		return keypool.ProbeRefused, truncate(h.redact("upstream "+strconv.Itoa(w.status)+" (probe): "+errorMessage(w.body.Bytes())), maxReason)
	case err != nil:
		return keypool.ProbeInconclusive, truncate(h.redact(err.Error()), maxReason)
	}
	return keypool.ProbeInconclusive, "upstream " + strconv.Itoa(w.status)
}

// probeWriter keeps a probe's status and the start of its body.
type probeWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *probeWriter) Header() http.Header { return w.header }

func (w *probeWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
}

func (w *probeWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if room := maxHeld - w.body.Len(); room > 0 {
		w.body.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
