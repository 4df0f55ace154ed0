package caddymodule

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/cc-relay/caddy-cc-relay/internal/usage"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// maxHeld bounds a held-back error body; upstream error bodies are small.
const maxHeld = 64 << 10

// attemptWriter is the ResponseWriter of one attempt. It learns from the
// response headers at WriteHeader, reads usage from the body as it passes
// through (never buffering a stream or delaying a flush), holds back an
// answer that retryDecision may retry or the relay answers for (replayed
// later by heldResponse.replay), and at the attempt's end settles the
// reservation and flushes a complete answer (settle).
type attemptWriter struct {
	w       http.ResponseWriter
	h       *Handler
	ctx     context.Context // the client's request: no retry once it ended
	metered bool
	res     keypool.Reservation
	attempt int             // the request's attempts, this one included
	cl      *clientExchange // the request's client limits, settled with the attempt that answers

	body     *bodyBuf       // the request body, let go once a stream is committed (endReplays)
	base     headerSnapshot // the writer's headers before the relay ran
	status   int
	phase    attemptPhase
	action   retryAction // retryDecision's, at WriteHeader
	held     *heldResponse
	writeErr bool // a write to the client failed

	format bodyFormat // how usage is read from the answer's body
	sse    usage.SSEScanner
	js     usage.JSONScanner
}

// attemptPhase is where an attempt stands:
//
//	sent ─WriteHeader─▶ answered ─settle─▶ settled
//	  └──────────settle (no answer)───────▶ settled
type attemptPhase uint8

const (
	attemptSent     attemptPhase = iota // the request is upstream; no answer yet
	attemptAnswered                     // the upstream's status and headers arrived
	attemptSettled                      // its reservation is settled
)

// bodyFormat is how an answer's body carries its usage.
type bodyFormat uint8

const (
	bodyUnread bodyFormat = iota // not metered, compressed or of another type: usage is not read
	bodySSE                      // text/event-stream: read by usage.SSEScanner
	bodyJSON                     // application/json: read by usage.JSONScanner
)

type heldResponse struct {
	status int
	header http.Header
	body   bytes.Buffer
	key    string
}

func (o *attemptWriter) reset() {
	*o = attemptWriter{w: o.w, h: o.h, ctx: o.ctx, metered: o.metered, body: o.body, base: o.base, cl: o.cl}
}

// Header is the writer's own map: an attempt's headers go straight to the
// client unless the answer is held back, and then restoreBase puts the map
// back as it was before the relay ran, so the next attempt starts clean and
// nothing is copied on the path of an answer that is passed on. A held
// answer's trailers land in its own copy.
func (o *attemptWriter) Header() http.Header {
	if o.action.holds() {
		return o.held.header
	}
	return o.w.Header()
}

// setHeaders makes dst exactly hdr.
func setHeaders(dst, hdr http.Header) {
	clear(dst)
	for k, v := range hdr {
		dst[k] = v
	}
}

// headerSnapshot remembers the writer's headers from before the relay ran
// (a server sets one or two, such as Server and Alt-Svc), without
// allocating for the usual few.
type headerSnapshot struct {
	n    int
	kv   [inlineHeaders]headerField
	more http.Header // all of them, when there are more than fit in kv
}

// inlineHeaders is how many headers a snapshot keeps without allocating.
const inlineHeaders = 4

type headerField struct {
	k string
	v []string
}

func (s *headerSnapshot) take(h http.Header) {
	*s = headerSnapshot{}
	if len(h) > len(s.kv) {
		s.more = h.Clone()
		return
	}
	for k, v := range h {
		s.kv[s.n] = headerField{k, v[:len(v):len(v)]}
		s.n++
	}
}

// restore makes h what it was at take. Values are shared, capped so that
// an append (reverse_proxy appends to Via) cannot write into them.
func (s *headerSnapshot) restore(h http.Header) {
	clear(h)
	if s.more != nil {
		for k, v := range s.more {
			h[k] = v[:len(v):len(v)]
		}
		return
	}
	for _, f := range s.kv[:s.n] {
		h[f.k] = f.v
	}
}

func (o *attemptWriter) WriteHeader(code int) {
	if o.phase != attemptSent {
		return
	}
	if code >= 100 && code < 200 {
		// Informational responses pass through; they say nothing of limits,
		// and reverse_proxy takes their headers out of the map again.
		o.w.WriteHeader(code)
		return
	}
	o.phase = attemptAnswered
	o.status = code
	hdr := o.w.Header()
	o.res.ObserveHeaders(code, rateLimits(hdr, o.h.clk.Now()))
	o.action = o.h.retryDecision(o.ctx, code, o.attempt)
	if o.action.holds() {
		// Nothing of a held answer reaches the client: it keeps its own
		// copy of the headers and the writer's map is put back.
		o.held = &heldResponse{status: code, header: hdr.Clone(), key: o.res.KeyName()}
		o.base.restore(hdr)
		return
	}
	ct := hdr.Get("Content-Type")
	if o.metered && hdr.Get("Content-Encoding") == "" {
		switch {
		case strings.HasPrefix(ct, "text/event-stream"):
			o.format = bodySSE
		case strings.HasPrefix(ct, "application/json"):
			o.format = bodyJSON
		}
	}
	if o.format == bodySSE && o.body != nil {
		// A stream is committed: no retry will replay the body, and the
		// stream may last minutes.
		o.body.endReplays()
	}
	hdr.Set("X-Cc-Relay-Key", o.res.KeyName())
	o.w.WriteHeader(code)
}

func (o *attemptWriter) Write(p []byte) (int, error) {
	if o.phase == attemptSent {
		o.WriteHeader(http.StatusOK)
	}
	if o.action.holds() {
		if room := maxHeld - o.held.body.Len(); room > 0 {
			o.held.body.Write(p[:min(len(p), room)])
		}
		return len(p), nil
	}
	switch o.format {
	case bodySSE:
		if o.sse.Write(p) {
			o.res.Charge(toPool(o.sse.Usage()))
		}
	case bodyJSON:
		o.js.Write(p)
	}
	o.cl.writing(o, len(p))
	n, err := o.w.Write(p)
	if err != nil {
		o.writeErr = true
	}
	return n, err
}

// FlushError flushes through to the client, except for a held response:
// nothing of it may reach the client.
func (o *attemptWriter) FlushError() error {
	if o.action.holds() {
		return nil
	}
	if o.phase == attemptSent {
		o.WriteHeader(http.StatusOK)
		if o.action.holds() {
			return nil
		}
	}
	return http.NewResponseController(o.w).Flush()
}

// Flush is FlushError for code that asserts http.Flusher.
func (o *attemptWriter) Flush() { _ = o.FlushError() }

// Unwrap lets http.ResponseController reach the underlying writer.
func (o *attemptWriter) Unwrap() http.ResponseWriter { return o.w }

func (o *attemptWriter) usage() usage.Usage {
	switch o.format {
	case bodySSE:
		return o.sse.Usage()
	case bodyJSON:
		return o.js.Usage()
	}
	return usage.Usage{}
}

// settle ends the attempt's reservation: usage read so far, or a refund
// when the upstream never answered; then it flushes a complete answer and
// records the attempt's metrics.
func (o *attemptWriter) settle(err error) {
	if o.phase == attemptSettled {
		return
	}
	answered := o.phase == attemptAnswered
	o.phase = attemptSettled
	u := o.usage()
	status := o.status
	if !answered {
		status = 0 // reverse_proxy returned an error: no upstream answer
	}
	o.res.Settle(keypool.Result{Status: status, Usage: toPool(u)})
	o.cl.attempt(status, o.action.holds(), u)
	if err == nil && answered && !o.action.holds() {
		// The answer is complete and accounted for (a client's next
		// request sees this one settled): let it reach the client now
		// rather than after the metrics, the log fields and the
		// request's clean-up, which it need not wait for.
		_ = o.FlushError()
	}
	outcome := "ok"
	switch {
	case o.action.holds():
		outcome = "upstream_" + strconv.Itoa(o.status)
	case status == 0:
		outcome = "upstream_error"
	case u.ErrorType != "":
		outcome = "stream_error"
	case status >= 400:
		outcome = "upstream_" + strconv.Itoa(status)
	case err != nil || o.writeErr:
		outcome = "interrupted"
	}
	h := o.h
	h.metrics.attempt(o.res.KeyIndex(), o.res.KeyName(), outcome)
	h.metrics.tokens(o.res.KeyIndex(), o.res.KeyName(), u)
	h.metrics.sticky(o.res.Sticky)
	if ce := h.logger.Check(zap.DebugLevel, "attempt settled"); ce != nil {
		ce.Write(zap.String("key", o.res.KeyName()), zap.Int("status", status), zap.String("outcome", outcome),
			zap.Int64("input_tokens", u.InputTokens), zap.Int64("output_tokens", u.OutputTokens),
			zap.Int64("estimate", o.res.Estimate()), zap.String("error", errText(h, err)))
	}
}

func (o *attemptWriter) takeHeld() *heldResponse {
	h := o.held
	o.held = nil
	return h
}

// keepRetryAfter has replay pass on the upstream's own Retry-After.
const keepRetryAfter = -1

// replay sends a held-back answer to the client; retryAfter >= 1 replaces
// the upstream's Retry-After with the pool's, keepRetryAfter keeps it. The relay held it and chose to
// pass it on, so what it says is the relay's to answer for: every secret
// and fragment of one is hidden in its body and header values (an upstream
// that echoes the key it was sent would otherwise show it to the client).
func (hr *heldResponse) replay(w http.ResponseWriter, retryAfter int, red *redactor) {
	dst := w.Header()
	setHeaders(dst, hr.header)
	for _, vs := range dst {
		for i, v := range vs {
			vs[i] = red.String(v)
		}
	}
	body := red.Bytes(hr.body.Bytes())
	// The body may have been cut at maxHeld: the upstream's framing
	// describes what it sent, not what is replayed.
	dst.Del("Transfer-Encoding")
	dst.Set("Content-Length", strconv.Itoa(len(body)))
	dst.Set("X-Cc-Relay-Key", hr.key)
	if retryAfter >= 1 {
		dst.Set("Retry-After", strconv.Itoa(retryAfter))
	}
	w.WriteHeader(hr.status)
	_, _ = w.Write(body)
}

func toPool(u usage.Usage) keypool.Usage {
	return keypool.Usage{
		InputTokens:              u.InputTokens,
		CacheCreationInputTokens: u.CacheCreationInputTokens,
		CacheReadInputTokens:     u.CacheReadInputTokens,
		OutputTokens:             u.OutputTokens,
		HaveInput:                u.HaveInput,
		HaveOutput:               u.HaveOutput,
	}
}

// errText is err's text for a log field, redacted: the next handler's error
// may quote what the upstream sent.
func errText(h *Handler, err error) string {
	if err == nil {
		return ""
	}
	return h.redact(err.Error())
}
