package caddymodule

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/cc-relay/caddy-cc-relay/internal/reqscan"
	"github.com/cc-relay/caddy-cc-relay/internal/stablehash"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// ServeHTTP authenticates the client, reserves a key and calls next with it,
// retrying on another key when the upstream refuses the key before any byte
// reached the client, as retryDecision decides.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	client, ok := h.authenticate(r)
	// The client's credential never goes upstream, and neither it (right
	// or wrong: a client may paste a real key by mistake) nor the upstream
	// key set below may linger in the request for the access log.
	r.Header.Del("X-Api-Key")
	r.Header.Del("Authorization")
	defer func() {
		r.Header.Del("X-Api-Key")
		r.Header.Del("Authorization")
	}()
	if !ok {
		h.metrics.answered("unauthorized")
		closeUnread(w, r)
		writeError(w, http.StatusUnauthorized, "authentication_error", "invalid or missing client token for this relay", 0)
		return nil
	}
	// Usage must be readable as it streams: let the transport negotiate
	// (and transparently undo) compression with the upstream.
	r.Header.Del("Accept-Encoding")

	// What the relay would not meter, or cannot read, is refused before
	// the body is read.
	if nonCanonicalMessages(r.URL) {
		closeUnread(w, r)
		h.metrics.answered("bad_request")
		writeError(w, http.StatusNotFound, "not_found_error",
			"the relay serves the Messages API only at the path "+messagesPath+", not "+strconv.Quote(capString(r.URL.EscapedPath())), 0)
		return nil
	}
	if !acceptedEncoding(r.Header.Values("Content-Encoding")) {
		closeUnread(w, r)
		h.metrics.answered("bad_request")
		writeError(w, http.StatusUnsupportedMediaType, "invalid_request_error",
			"request bodies with Content-Encoding "+strconv.Quote(capString(r.Header.Get("Content-Encoding")))+" are not accepted: send the body uncompressed", 0)
		return nil
	}

	// One allocation for what the request needs whatever its attempts.
	rq := &relayedRequest{}
	bb := &rq.body
	status, typ, msg := h.readBody(w, r, bb)
	if status != 0 {
		closeUnread(w, r)
		h.metrics.answered("bad_request")
		writeError(w, status, typ, msg, 0)
		return nil
	}

	defer bb.endRequest()
	h.prober.remember(r, next)
	body := bb.b
	req := &rq.req
	*req = keypool.Request{Bytes: len(body)}
	metered := r.Method == http.MethodPost && r.URL.EscapedPath() == messagesPath
	session := r.Header.Get("X-Claude-Code-Session-Id")
	var info reqscan.Info
	if metered {
		var err error
		info, err = reqscan.Scan(body)
		if err == nil && len(info.Model) > maxClientString {
			err = errors.New("model name is longer than " + strconv.Itoa(maxClientString) + " bytes")
		}
		if err != nil {
			h.metrics.answered("bad_request")
			writeError(w, http.StatusBadRequest, "invalid_request_error", "request body: "+err.Error(), 0)
			return nil
		}
		req.Model = info.Model
		req.Session = sessionHash(client, session, &info)
		req.MaxTokens = int(min(info.MaxTokens, math.MaxInt32))
	} else {
		// Other endpoints (count_tokens, models) get a key but are not
		// charged to the Messages budgets.
		req.Passive = true
	}

	if h.upstreams != nil && h.route(w, r, req, body, info.Model, metered) {
		return nil // no key can serve it: answered from the model tables or 404
	}

	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	extra, _ := r.Context().Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields)
	if srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok && srv.Logs == nil {
		extra = nil // only the access log reads the fields, and this server has none
	}
	if session == "" {
		session = info.SessionID
	}
	// Session ids are the client's to choose: bounded where they land.
	rq.client, rq.model, rq.session = client, info.Model, capString(session)
	if !h.admitClient(w, &rq.cl, client, metered, &info, body) {
		return nil
	}
	defer rq.cl.done()
	// Fair shares under contention are kept per client, by its weight.
	req.Client, req.ClientWeight = client, 1
	if cs := h.clientSet; cs != nil && cs.clients != nil {
		req.ClientWeight = cs.clients.Weight(client)
	}
	if repl != nil {
		repl.Map(rq.placeholder)
	}

	attempts := &rq.tried
	req.Attempts = attempts
	// Each attempt starts from the headers the response had before the
	// relay ran, never from an earlier attempt's.
	rw := &rq.writer
	*rw = attemptWriter{w: w, h: h, ctx: r.Context(), metered: metered, body: bb, cl: &rq.cl}
	rw.base.take(w.Header())
	var held *heldResponse
	// The access log gets the relay's fields however the request ends,
	// also while a panic (reverse_proxy aborting a broken stream) unwinds.
	// Not info: it aliases the body, which a committed stream lets go.
	defer func() { h.setLogFields(rq, held, extra, attempts.N()) }()
	start := h.clk.Now()
	for {
		rw.reset()
		err := h.pool.Acquire(r.Context(), req, &rw.res)
		if attempts.N() <= 1 {
			h.metrics.waited(h.clk.Now().Sub(start))
		}
		if err != nil {
			var nc *keypool.NoCapacityError
			if !errors.As(err, &nc) {
				// The client went away while waiting for capacity.
				h.metrics.answered("client_gone")
				return nil
			}
			h.refuse(w, held, nc)
			return nil
		}
		rw.attempt = attempts.N()
		h.setKeyAndBody(r, bb, rw.res.KeyIndex())
		rq.key, rq.attempts, rq.upstream = rw.res.KeyName(), attempts.N(), h.upstreamOf(rw.res.KeyIndex())
		err = h.attempt(rw, r, next)
		if !rw.action.holds() {
			return err
		}
		held = rw.takeHeld()
		h.learnFromRefusal(&rw.res, held, &rq.disabled)
		// Asked again: the client may have left while the answer was held.
		switch h.retryDecision(r.Context(), held.status, rw.attempt) {
		case answerHeld:
			after := keepRetryAfter
			if held.status == http.StatusTooManyRequests {
				d, _ := h.pool.RetryAfter(req.Model, req.Bytes)
				after = retryAfterSeconds(d)
			}
			h.answerHeld(w, held, after)
			return err
		case clientLeft:
			h.metrics.answered("client_gone")
			return nil
		case retryOtherOrg:
			attempts.ExcludeOrg(&rw.res)
		default:
			attempts.ExcludeKey(&rw.res)
		}
		h.metrics.retry()
	}
}

// errAborted stands for a response that broke off: reverse_proxy panics
// with http.ErrAbortHandler instead of returning an error.
var errAborted = errors.New("response aborted")

// attempt calls next with one key and settles the attempt's reservation
// however next ends. reverse_proxy panics with http.ErrAbortHandler when a
// response breaks off after it began (the upstream connection reset, the
// client went away): the reservation is settled with the usage seen so far
// and the panic goes on, so the server aborts the client's connection and
// the client cannot take the broken stream for a complete one. Only an
// answer being held back (nothing of it reached the client) is kept: it is
// learnt from, then retried or replayed like any other held answer.
func (h *Handler) attempt(rw *attemptWriter, r *http.Request, next caddyhttp.Handler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			rw.settle(errAborted)
			if p == http.ErrAbortHandler && rw.action.holds() {
				err = nil
				return
			}
			panic(p)
		}
	}()
	err = h.send(rw, r, next)
	rw.settle(err)
	return err
}

// learnFromRefusal learns from a response held back: a rejected key is disabled, and
// an organization that reached its spend cap is parked. Which key or
// organization the next attempt avoids is retryDecision's.
//
// One request disables at most one key (*disabled records that it did): a
// transient 401/403 of the upstream (an outage of its auth service) would
// otherwise take retries+1 keys out with one request. A further key
// refused within the same request is only avoided by this request; the
// next request to meet it decides on its own.
func (h *Handler) learnFromRefusal(res *keypool.Reservation, held *heldResponse, disabled *bool) {
	switch code := held.status; {
	case (code == http.StatusUnauthorized || code == http.StatusForbidden) && *disabled:
		if ce := h.logger.Check(zap.DebugLevel, "upstream rejected a second key in one request; avoided, not disabled"); ce != nil {
			ce.Write(zap.String("key", res.KeyName()), zap.Int("status", code))
		}
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		*disabled = true
		// Redacted before it is cut: a cut secret no longer matches itself.
		reason := truncate(h.redact("upstream "+strconv.Itoa(code)+": "+errorMessage(held.body.Bytes())), maxReason)
		res.Disable(reason)
		h.prober.wake()
		h.metrics.disabled(res.KeyName())
		h.logger.Warn("upstream rejected key; disabled until a probe passes, a reload or enable",
			zap.String("key", res.KeyName()), zap.Int("status", code), zap.String("reason", reason))
	case code == http.StatusTooManyRequests:
		if until, ok := spendCap(held.header, held.body.Bytes(), h.clk.Now()); ok {
			res.Park(until, "spend cap reached")
			h.logger.Warn("organization reached its spend cap; parked",
				zap.String("key", res.KeyName()), zap.Time("until", until))
		}
		h.metrics.cooldown(res.KeyName())
	}
}

// refuse answers a request no key can take: with the held-back upstream
// answer of an earlier attempt if there is one, else the relay's own 429
// (or 503 when every key is disabled). Retry-After reflects the whole pool.
func (h *Handler) refuse(w http.ResponseWriter, held *heldResponse, nc *keypool.NoCapacityError) {
	after := retryAfterSeconds(nc.RetryAfter)
	if held != nil {
		if held.status != http.StatusTooManyRequests {
			after = keepRetryAfter
		}
		h.answerHeld(w, held, after)
		return
	}
	if nc.NoKeys {
		h.metrics.answered("no_keys")
		writeError(w, http.StatusServiceUnavailable, "api_error", "no upstream key is available: all keys are disabled", 0)
		return
	}
	h.metrics.shortCircuit()
	h.metrics.answered("rate_limited")
	msg := "all upstream keys of this relay are at their rate limits; retry after " + strconv.Itoa(after) + "s"
	if nc.OverShare {
		msg = "the relay's capacity is short and this client has used more than its share of it lately; retry after " + strconv.Itoa(after) + "s"
	}
	writeError(w, http.StatusTooManyRequests, "rate_limit_error", msg, after)
}

// closeUnread marks an answer given before the request body was read as
// the connection's last. Otherwise net/http drains up to 256 KiB of the body
// before it writes the answer, and with Caddy's read idle timeout wrapping
// the body, a client that sends no more (a huge Content-Length, an endless
// chunked body, Expect: 100-continue) would wait for that timeout. HTTP/2
// needs nothing: the stream is reset instead.
func closeUnread(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 && r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		w.Header().Set("Connection", "close")
	}
}

// answerHeld sends the client the held-back answer of the last attempt.
// An upstream 401/403 is about the relay's key, not the client's token:
// passing it on would make Claude Code ask its user to log in again, so
// the client gets 503 api_error instead (the key is already disabled).
func (h *Handler) answerHeld(w http.ResponseWriter, held *heldResponse, retryAfter int) {
	if held.status == http.StatusUnauthorized || held.status == http.StatusForbidden {
		w.Header().Set("X-Cc-Relay-Key", held.key)
		h.metrics.answered("no_keys")
		writeError(w, http.StatusServiceUnavailable, "api_error",
			"the relay's upstream key was rejected by the upstream and no other key is available", 0)
		return
	}
	held.replay(w, retryAfter, h.redactor)
}

// setKeyAndBody sets the attempt's key and a fresh copy of the body on r.
func (h *Handler) setKeyAndBody(r *http.Request, bb *bodyBuf, idx int) {
	r.Header.Del("X-Api-Key")
	r.Header.Del("Authorization")
	s := h.secrets[idx]
	switch {
	case s.provider:
		// Signed or given a token in send, once the request is final.
	case s.bearer:
		r.Header.Set("Authorization", "Bearer "+s.value)
	default:
		r.Header["X-Api-Key"] = []string{s.value}
	}
	r.Body = bb.reader()
	r.ContentLength = int64(len(bb.b))
	r.TransferEncoding = nil
	r.GetBody = bb.getBody
	if (r.ContentLength > 0 || r.Method == http.MethodPost) && !headerIsInt(r.Header["Content-Length"], len(bb.b)) {
		r.Header.Set("Content-Length", strconv.Itoa(len(bb.b)))
	}
}

// headerIsInt reports whether a header's values are exactly n in decimal,
// as a client that sent the body's length has them: then they need not be
// set again (two allocations per attempt).
func headerIsInt(v []string, n int) bool {
	var buf [20]byte
	return len(v) == 1 && v[0] == string(strconv.AppendInt(buf[:0], int64(n), 10))
}

// bearerPrefix starts an Authorization header that carries a token, in
// any case.
const bearerPrefix = "bearer "

// authenticate returns the client's name. Every configured token is
// compared, in constant time, so timing tells nothing about which matched.
func (h *Handler) authenticate(r *http.Request) (string, bool) {
	if h.DisableClientAuth {
		return "anonymous", true
	}
	tok := r.Header.Get("X-Api-Key")
	if tok == "" {
		if a := r.Header.Get("Authorization"); len(a) > len(bearerPrefix) && strings.EqualFold(a[:len(bearerPrefix)], bearerPrefix) {
			tok = strings.TrimSpace(a[len(bearerPrefix):])
		}
	}
	if tok == "" {
		return "", false
	}
	sum := sha256.Sum256([]byte(tok))
	name, found := "", 0
	for i := range h.clients {
		if subtle.ConstantTimeCompare(sum[:], h.clients[i].sum[:]) == 1 {
			name, found = h.clients[i].name, 1
		}
	}
	return name, found == 1
}

// readBody reads the whole body into bb, refusing more than max_body
// bytes without reading far past it, and answers an error status, type and
// message when it cannot. Memory follows the bytes that arrived, not the
// length declared (bodyBuf.fill), and the body must arrive within
// read_body_timeout: a slow client holds a small buffer for a bounded time,
// and no reservation (none is made before the body is read).
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request, bb *bodyBuf) (int, string, string) {
	bb.class = unpooled
	if r.Body == nil || r.Body == http.NoBody {
		return 0, "", ""
	}
	limit := h.MaxBody
	if r.ContentLength > limit {
		return http.StatusRequestEntityTooLarge, "request_too_large", tooLarge(limit)
	}
	if d := h.bodyDeadline(r); d > 0 {
		// The deadline is the connection's (an HTTP/2 stream's): set
		// through http.ResponseController, which reaches net/http's writer
		// through Caddy's wrappers (they all Unwrap). Cleared after the
		// body, so that it does not cut the answer or the next request of
		// the connection.
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(d)); err == nil {
			defer func() { _ = rc.SetReadDeadline(time.Time{}) }()
		} else if ce := h.logger.Check(zap.DebugLevel, "no read deadline for the request body"); ce != nil {
			ce.Write(zap.Error(err))
		}
	}
	tooBig, err := bb.fill(r.Body, r.ContentLength, limit)
	switch {
	case err != nil && errors.Is(err, os.ErrDeadlineExceeded):
		return http.StatusRequestTimeout, "timeout_error",
			"the request body did not arrive within " + time.Duration(h.ReadBodyTimeout).String()
	case err != nil:
		return http.StatusBadRequest, "invalid_request_error", "could not read request body"
	case tooBig:
		bb.returnToPool()
		return http.StatusRequestEntityTooLarge, "request_too_large", tooLarge(limit)
	}
	return 0, "", ""
}

func tooLarge(limit int64) string {
	return "request body exceeds the relay's limit of " + strconv.FormatInt(limit, 10) + " bytes"
}

// bodyDeadline is how long the body may take to arrive, 0 for no deadline
// of the relay's own: read_body_timeout, unless the server's read_timeout
// (which covers the body too) is already shorter.
func (h *Handler) bodyDeadline(r *http.Request) time.Duration {
	d := time.Duration(h.ReadBodyTimeout)
	if d <= 0 {
		return 0
	}
	if srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok &&
		srv.ReadTimeout > 0 && time.Duration(srv.ReadTimeout) <= d {
		return 0
	}
	return d
}

// relayedRequest is what one request through the relay keeps, whatever its
// attempts.
type relayedRequest struct {
	writer attemptWriter
	body   bodyBuf
	req    keypool.Request
	tried  keypool.Attempts // what Acquire avoids on the next attempt

	// What the placeholders show; key and attempts are the latest
	// attempt's.
	client, model, session, key string
	attempts                    int
	disabled                    bool // this request disabled a key
	cl                          clientExchange
	upstream                    string // the key's dial address
}

// placeholder serves the relay's placeholders from the request's own
// state: one provider per request instead of a boxed value and a locked
// map write per placeholder and attempt. Key and attempts are known once
// an attempt has started.
func (rq *relayedRequest) placeholder(name string) (any, bool) {
	name, ok := strings.CutPrefix(name, "http.cc_relay.")
	if !ok {
		return nil, false
	}
	switch name {
	case "client":
		return rq.client, true
	case "model":
		return rq.model, true
	case "session":
		return rq.session, true
	case "key":
		return rq.key, rq.attempts > 0
	case "attempts":
		return rq.attempts, rq.attempts > 0
	case "cost_usd":
		return rq.cl.costUSD()
	case "upstream":
		return rq.upstream, rq.attempts > 0
	}
	return nil, false
}

// sessionHash scopes a conversation's identity to the client, so one
// client cannot steer another's sessions: the session id header, else the
// session in metadata.user_id, else the conversation's start.
func sessionHash(client, header string, info *reqscan.Info) uint64 {
	var mh stablehash.Hash // every instance names a conversation alike
	mh.Reset()
	mh.WriteString(client)
	mh.WriteByte(0)
	switch {
	case header != "":
		mh.WriteString(header)
	case info.SessionID != "":
		mh.WriteString(info.SessionID)
	default:
		// Ignores whitespace and cache_control markers, which clients
		// move to the newest message every turn. Hashed only here: a
		// request with a session id does not pay for it.
		ph := info.PrefixHash()
		if ph == 0 {
			return 0
		}
		mh.WriteByte(1)
		mh.WriteUint64(ph)
	}
	if s := mh.Sum64(); s != 0 {
		return s
	}
	return 1
}

func retryAfterSeconds(d time.Duration) int {
	s := int(math.Ceil(d.Seconds()))
	return max(s, 1)
}

// maxReason bounds a disabled key's reason, after redaction.
const maxReason = 200
