// Package mockanthropic is a mock of the Anthropic Messages API for tests,
// benchmarks and demos: it authenticates API keys, enforces per-organization
// rate limits the way the real API does, keeps a prompt cache, answers with
// JSON messages or server-sent event streams, and injects faults on demand.
//
// # Endpoints
//
// POST /v1/messages (a query string such as ?beta=true is ignored) and
// POST /v1/messages/count_tokens. The API key is read from x-api-key, else from
// Authorization: Bearer. Any other path gets 404 not_found_error, another
// method 405. Bodies above MaxBodyBytes get 413 request_too_large.
//
// # Rate limits
//
// Each organization has continuous-refill token buckets for requests, input
// tokens and output tokens: capacity = the per-minute limit, refill = limit/60
// per second, computed exactly on the configured clock. As upstream, each model
// family (Opus, Sonnet, Haiku; any other model name is a family of its own) has
// its own set of buckets with the organization's limits. A request is refused
// with 429 rate_limit_error when the request bucket has less than 1, the
// input bucket has less than the request's input charge (for a charge larger
// than the limit: is not full), or the output bucket is at or below 0. A
// refused request costs nothing. An admitted one is charged 1 request and
// input_tokens + cache_creation_input_tokens on arrival (cache reads are free);
// output tokens are charged as they are produced, which may take the output
// bucket below 0.
//
// Every 200, 429 and 529 answer carries anthropic-organization-id and, for
// each limited bucket, anthropic-ratelimit-{requests,input-tokens,
// output-tokens}-{limit,remaining,reset}, plus anthropic-ratelimit-tokens-*
// copied from whichever of the input and output buckets has fewer tokens
// left. Token remaining values are rounded down to a multiple of 1000, as
// upstream; requests-remaining is exact. reset is the RFC 3339 time, rounded up
// to the second, at which the bucket is full again. A 429 also carries
// retry-after: whole seconds, at least 1, until every exhausted bucket admits
// the request. Every answer carries request-id.
//
// # Token counting
//
// The prompt is the sequence of blocks in the order the API assembles it: each
// element of tools, then system (a string is one block, a list one block per
// element), then for each message its content (likewise). A block's size is
// the byte length of its compact JSON encoding, with top-level keys sorted
// (objects), cache_control removed and no HTML escaping; a string block is its
// JSON string literal, quotes included. The input tokens of a prompt prefix of
// B bytes are ceil(B/BytesPerToken). Output tokens are Config.OutputTokens of
// the body (default DefaultOutputTokens), at least 1 and at most max_tokens;
// hitting max_tokens gives stop_reason "max_tokens", else "end_turn". The text
// produced is one word per output token.
//
// # Prompt cache
//
// Each organization has its own cache. A request whose blocks carry
// cache_control (at most 4, else 400) reads the longest cached prefix that
// ends at a breakpoint or at one of the 20 block boundaries before a
// breakpoint; cache_read_input_tokens is that prefix's tokens, and
// cache_creation_input_tokens the rest up to the last breakpoint, whose
// prefixes are then stored (the one read is refreshed). input_tokens is what
// follows the last breakpoint. A prefix is keyed by the model and the blocks'
// content, so moving cache_control does not change it; entries expire
// Config.CacheTTL after their last use.
package mockanthropic

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults and fixed limits.
const (
	// DefaultOutputTokens is the output length of every request when
	// Config.OutputTokens is nil, before the max_tokens cap.
	DefaultOutputTokens = 200
	// DefaultCacheTTL is the prompt cache TTL when Config.CacheTTL is 0.
	DefaultCacheTTL = 5 * time.Minute
	// DefaultCacheEntries bounds each organization's prompt cache when
	// Config.CacheEntries is 0.
	DefaultCacheEntries = 100_000
	// DefaultStreamDeltas is the number of content_block_delta events when
	// Config.StreamDeltas is 0.
	DefaultStreamDeltas = 5
	// DefaultMaxRecords bounds Stats.Requests when Config.MaxRecords is 0.
	DefaultMaxRecords = 100_000
	// MaxBodyBytes is the largest request body accepted, as upstream (32 MB).
	MaxBodyBytes = 32 << 20
)

// maxClasses bounds the model families tracked per organization, so that
// arbitrary model names cannot grow the limit table without bound.
const maxClasses = 64

// Org is an organization: what the upstream rate-limits and caches by.
type Org struct {
	// ID is returned as the anthropic-organization-id header.
	ID string
	// RPM, ITPM and OTPM are the per-minute limits on requests, input tokens
	// and output tokens of each model family; 0 means unlimited. Limits above
	// MaxLimit are treated as MaxLimit.
	RPM, ITPM, OTPM int64
}

// Config configures a Server. The zero value serves a server with no keys.
type Config struct {
	// Orgs are the organizations and their limits.
	Orgs []Org
	// Keys maps an API key secret to its organization's ID. A key whose
	// organization is not in Orgs belongs to an organization without limits.
	Keys map[string]string
	// Now is the clock for rate limits, cache expiry and fault deadlines;
	// default time.Now.
	Now func() time.Time
	// OutputTokens returns how many output tokens a request body produces;
	// the result is raised to 1 and capped at max_tokens. Default: every
	// request produces DefaultOutputTokens.
	OutputTokens func(body []byte) int64
	// CacheTTL is how long a cached prompt prefix lives after its last use;
	// default DefaultCacheTTL (5 minutes).
	CacheTTL time.Duration
	// CacheEntries bounds each organization's prompt cache; when full, the
	// least recently used prefix is dropped. Default DefaultCacheEntries.
	CacheEntries int
	// StreamDeltas is the number of content_block_delta events in a stream
	// (fewer if the output has fewer tokens); default DefaultStreamDeltas.
	StreamDeltas int
	// DeltaDelay is a pause before each content_block_delta, timed on the
	// real clock since it models generation speed for load tests; default 0.
	DeltaDelay time.Duration
	// Gate, if set, is called for every admitted /v1/messages request. A
	// non-nil channel it returns holds the response until the channel is
	// closed or the client goes away: a stream just after its first event
	// (message_start), a non-streaming response before anything is written.
	Gate func(r *http.Request) <-chan struct{}
	// Log, if set, is called once per finished request, from the request's
	// goroutine, so possibly concurrently.
	Log func(Record)
	// MaxRecords bounds Stats.Requests, dropping the oldest first; default
	// DefaultMaxRecords.
	MaxRecords int
}

// StreamFault is a failure injected into streaming responses.
type StreamFault int

const (
	// StreamOK is a normal stream.
	StreamOK StreamFault = iota
	// StreamCut closes the connection after the first event, without ending
	// the chunked body: the client reads message_start, then an unexpected EOF.
	StreamCut
	// StreamReset resets the TCP connection (RST) after the first event. The
	// client may lose message_start if it had not read it yet; use a Gate to
	// be sure it has.
	StreamReset
	// StreamErrorEvent sends an SSE error event (overloaded_error) after the
	// first event and ends the stream, as upstream does when it fails
	// mid-stream.
	StreamErrorEvent
)

// String returns the fault's name as used in logs.
func (f StreamFault) String() string {
	switch f {
	case StreamOK:
		return "ok"
	case StreamCut:
		return "cut"
	case StreamReset:
		return "reset"
	case StreamErrorEvent:
		return "error-event"
	}
	return "fault(" + strconv.Itoa(int(f)) + ")"
}

// Server is the mock API; it implements http.Handler. All its methods are
// safe for concurrent use.
type Server struct {
	cfg Config
	seq atomic.Uint64 // for request and message IDs

	mu      sync.Mutex
	orgs    map[string]*orgState
	keys    map[string]*keyState
	total   Counters
	records recordRing

	inFlight, peakInFlight int

	overloadN     int       // next n requests get 529
	overloadUntil time.Time // every request before then gets 529
	faultKind     StreamFault
	faultN        int // streams left to fault; < 0: all
}

type orgState struct {
	id       string
	org      Org
	limits   map[string]*limits // by model family
	cache    *promptCache
	forced   time.Time // Force429 deadline
	counters Counters
}

type keyState struct {
	org      *orgState
	revoked  bool
	counters Counters
}

// limits are one model family's buckets; nil buckets are unlimited.
type limits struct{ rpm, itpm, otpm *bucket }

// New returns a Server for cfg, filling in the documented defaults.
func New(cfg Config) *Server {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.CacheEntries <= 0 {
		cfg.CacheEntries = DefaultCacheEntries
	}
	if cfg.StreamDeltas <= 0 {
		cfg.StreamDeltas = DefaultStreamDeltas
	}
	if cfg.MaxRecords <= 0 {
		cfg.MaxRecords = DefaultMaxRecords
	}
	s := &Server{
		cfg:     cfg,
		orgs:    make(map[string]*orgState),
		keys:    make(map[string]*keyState),
		records: recordRing{max: cfg.MaxRecords},
	}
	for _, o := range cfg.Orgs {
		s.orgs[o.ID] = s.newOrg(o)
	}
	for key, orgID := range cfg.Keys {
		o, ok := s.orgs[orgID]
		if !ok {
			o = s.newOrg(Org{ID: orgID})
			s.orgs[orgID] = o
		}
		s.keys[key] = &keyState{org: o}
	}
	return s
}

func (s *Server) newOrg(o Org) *orgState {
	return &orgState{
		id:     o.ID,
		org:    o,
		limits: make(map[string]*limits),
		cache:  newPromptCache(s.cfg.CacheTTL, s.cfg.CacheEntries),
	}
}

// limitsFor returns the model family's buckets, brought up to date at now.
// Families are created full on first use.
func (o *orgState) limitsFor(model string, now time.Time) *limits {
	class := modelClass(model)
	l, ok := o.limits[class]
	if !ok {
		if len(o.limits) >= maxClasses {
			class = ""
			l, ok = o.limits[class]
		}
		if !ok {
			l = &limits{
				rpm:  newBucket(o.org.RPM, now),
				itpm: newBucket(o.org.ITPM, now),
				otpm: newBucket(o.org.OTPM, now),
			}
			o.limits[class] = l
		}
	}
	for _, b := range []*bucket{l.rpm, l.itpm, l.otpm} {
		if b != nil {
			b.advance(now)
		}
	}
	return l
}

// admit reports how long until the buckets admit a request charging input
// tokens, and which limit is exhausted; 0 and "" when it is admitted now.
func (l *limits) admit(input int64) (wait time.Duration, exceeded string) {
	check := func(b *bucket, units int64, what string) {
		if b == nil || b.level >= units {
			return
		}
		if d := b.until(units); d > wait || exceeded == "" {
			wait = max(wait, d)
			exceeded = fmt.Sprintf("%d %s per minute", b.limit, what)
		}
	}
	check(l.rpm, unitsPerToken, "requests")
	if l.itpm != nil {
		check(l.itpm, min(input, l.itpm.limit)*unitsPerToken, "input tokens")
	}
	// The output bucket admits while it is above 0: one unit is enough.
	check(l.otpm, 1, "output tokens")
	return wait, exceeded
}

// setHeaders writes the anthropic-ratelimit-* headers for the buckets' state.
func (l *limits) setHeaders(h http.Header, now time.Time) {
	set := func(name string, b *bucket, round bool) {
		remaining := b.tokens()
		if round {
			remaining -= remaining % 1000
		}
		h.Set("anthropic-ratelimit-"+name+"-limit", strconv.FormatInt(b.limit, 10))
		h.Set("anthropic-ratelimit-"+name+"-remaining", strconv.FormatInt(remaining, 10))
		h.Set("anthropic-ratelimit-"+name+"-reset", resetTime(now, b.untilFull()))
	}
	if l.rpm != nil {
		set("requests", l.rpm, false)
	}
	if l.itpm != nil {
		set("input-tokens", l.itpm, true)
	}
	if l.otpm != nil {
		set("output-tokens", l.otpm, true)
	}
	tightest := l.itpm
	if tightest == nil || (l.otpm != nil && l.otpm.tokens() < l.itpm.tokens()) {
		tightest = l.otpm
	}
	if tightest != nil {
		set("tokens", tightest, true)
	}
}

// resetTime formats now+d in RFC 3339, rounded up to the second so that it
// never promises a full bucket early.
func resetTime(now time.Time, d time.Duration) string {
	t := now.Add(d).UTC()
	if tr := t.Truncate(time.Second); tr.Before(t) {
		t = tr.Add(time.Second)
	}
	return t.Format(time.RFC3339)
}

// retryAfter is d in whole seconds, rounded up, at least 1.
func retryAfter(d time.Duration) string {
	return strconv.FormatInt(max(1, ceilDiv(int64(d), int64(time.Second))), 10)
}

// Force429 makes every request of the organization get 429 rate_limit_error,
// with retry-after counting down to until, until then on the configured clock.
// An unknown organization is ignored.
func (s *Server) Force429(orgID string, until time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o, ok := s.orgs[orgID]; ok {
		o.forced = until
	}
}

// Revoke makes key answer 401 authentication_error from now on.
func (s *Server) Revoke(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := s.keys[key]; ok {
		k.revoked = true
	}
}

// SetOverloaded makes the next n authenticated, valid /v1/messages requests
// get 529 overloaded_error, whatever their organization; n <= 0 cancels.
func (s *Server) SetOverloaded(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.overloadN = max(n, 0)
}

// Force529 makes every authenticated, valid /v1/messages request get 529
// overloaded_error until then, on the configured clock.
func (s *Server) Force529(until time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.overloadUntil = until
}

// SetStreamFault injects f into the next n admitted streaming requests, or
// into all of them from now on for n < 0. StreamOK or n == 0 cancels.
func (s *Server) SetStreamFault(f StreamFault, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f == StreamOK || n == 0 {
		s.faultKind, s.faultN = StreamOK, 0
		return
	}
	s.faultKind, s.faultN = f, n
}

// takeStreamFault returns the fault for a stream being admitted; s.mu is held.
func (s *Server) takeStreamFault() StreamFault {
	if s.faultN == 0 {
		return StreamOK
	}
	if s.faultN > 0 {
		s.faultN--
	}
	return s.faultKind
}

// Stats returns a snapshot of the counters and recent requests.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{
		Total:        s.total,
		Orgs:         make(map[string]Counters, len(s.orgs)),
		Keys:         make(map[string]Counters, len(s.keys)),
		InFlight:     s.inFlight,
		PeakInFlight: s.peakInFlight,
		Requests:     s.records.all(),
	}
	for id, o := range s.orgs {
		st.Orgs[id] = o.counters
	}
	for key, k := range s.keys {
		st.Keys[key] = k.counters
	}
	return st
}

// count applies f to the total, organization and key counters; s.mu is held.
// o and k may be nil.
func (s *Server) count(o *orgState, k *keyState, f func(*Counters)) {
	f(&s.total)
	if o != nil {
		f(&o.counters)
	}
	if k != nil {
		f(&k.counters)
	}
}

func (s *Server) newID(prefix string) string {
	return fmt.Sprintf("%smock%016x", prefix, s.seq.Add(1))
}

// requestKey returns the API key presented by r.
func requestKey(r *http.Request) string {
	if k := r.Header.Get("x-api-key"); k != "" {
		return k
	}
	const bearer = "Bearer "
	if a := r.Header.Get("Authorization"); len(a) > len(bearer) && equalFoldASCII(a[:len(bearer)], bearer) {
		return a[len(bearer):]
	}
	return ""
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		ca, cb := a[i]|0x20, b[i]|0x20
		if ca != cb {
			return false
		}
	}
	return true
}

// ServeHTTP answers one API request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := s.cfg.Now()
	rec := Record{Time: now, RequestID: s.newID("req_"), Key: requestKey(r), Path: r.URL.Path}
	w.Header().Set("request-id", rec.RequestID)
	defer s.finish(&rec)

	if r.URL.Path != "/v1/messages" && r.URL.Path != "/v1/messages/count_tokens" {
		s.writeError(w, &rec, http.StatusNotFound, "not_found_error", "Not Found")
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		s.writeError(w, &rec, http.StatusMethodNotAllowed, "invalid_request_error", "Method Not Allowed")
		return
	}

	s.mu.Lock()
	k, known := s.keys[rec.Key]
	revoked := known && k.revoked
	if known {
		rec.Org = k.org.id
	}
	if !known {
		s.count(nil, nil, func(c *Counters) { c.Unauthorized++ })
	} else if revoked {
		s.count(k.org, k, func(c *Counters) { c.Unauthorized++ })
	}
	s.mu.Unlock()
	if !known || revoked {
		msg := "invalid x-api-key"
		if rec.Key == "" {
			msg = "x-api-key header is required"
		}
		s.writeError(w, &rec, http.StatusUnauthorized, "authentication_error", msg)
		return
	}
	o := k.org
	w.Header().Set("anthropic-organization-id", o.id)

	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var q *request
	if err == nil {
		q, err = parseRequest(body, r.URL.Path == "/v1/messages")
	}
	if err != nil {
		s.mu.Lock()
		s.count(o, k, func(c *Counters) { c.Invalid++ })
		s.mu.Unlock()
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			s.writeError(w, &rec, http.StatusRequestEntityTooLarge, "request_too_large",
				"Request exceeds the maximum allowed number of bytes.")
		case errors.As(err, new(*badRequest)):
			s.writeError(w, &rec, http.StatusBadRequest, "invalid_request_error", err.Error())
		default:
			s.writeError(w, &rec, http.StatusBadRequest, "invalid_request_error", "cannot read request body: "+err.Error())
		}
		return
	}
	rec.Model, rec.Stream = q.model, q.stream

	if r.URL.Path == "/v1/messages/count_tokens" {
		// Token counting is free upstream: no buckets, no cache.
		rec.Status = http.StatusOK
		writeJSON(w, http.StatusOK, map[string]int64{"input_tokens": q.totalTokens()})
		return
	}
	s.messages(w, r, k, q, body, &rec, now)
}

// messages admits or refuses a valid Messages request and answers it.
func (s *Server) messages(w http.ResponseWriter, r *http.Request, k *keyState, q *request, body []byte, rec *Record, now time.Time) {
	o := k.org
	// Work out the output outside the lock: OutputTokens is the caller's code.
	output, stop := s.outputTokens(body, q.maxTokens)

	s.mu.Lock()
	lim := o.limitsFor(q.model, now)
	h := w.Header()
	lim.setHeaders(h, now)
	if s.overloadN > 0 || now.Before(s.overloadUntil) {
		if s.overloadN > 0 {
			s.overloadN--
		}
		s.count(o, k, func(c *Counters) { c.Overloaded++ })
		s.mu.Unlock()
		s.writeError(w, rec, 529, "overloaded_error", "Overloaded")
		return
	}
	if now.Before(o.forced) {
		s.count(o, k, func(c *Counters) { c.RateLimited++ })
		s.mu.Unlock()
		h.Set("retry-after", retryAfter(o.forced.Sub(now)))
		s.writeError(w, rec, http.StatusTooManyRequests, "rate_limit_error",
			"This request would exceed your organization's rate limit. Please try again later.")
		return
	}
	use := o.cache.lookup(q, now)
	if wait, exceeded := lim.admit(use.charge()); exceeded != "" {
		s.count(o, k, func(c *Counters) { c.RateLimited++ })
		s.mu.Unlock()
		h.Set("retry-after", retryAfter(wait))
		s.writeError(w, rec, http.StatusTooManyRequests, "rate_limit_error", fmt.Sprintf(
			"This request would exceed the rate limit for your organization (%s) of %s. "+
				"Please reduce the prompt length or the maximum tokens requested, or try again later.", o.id, exceeded))
		return
	}
	if lim.rpm != nil {
		lim.rpm.take(1)
	}
	if lim.itpm != nil {
		lim.itpm.take(use.charge())
	}
	o.cache.commit(q, use, now)
	s.count(o, k, func(c *Counters) {
		c.Accepted++
		c.InputTokens += use.charge()
		c.CacheReadTokens += use.read
		c.CacheCreationTokens += use.created
	})
	s.inFlight++
	s.peakInFlight = max(s.peakInFlight, s.inFlight)
	fault := StreamOK
	if q.stream {
		fault = s.takeStreamFault()
	}
	lim.setHeaders(h, now) // after the charge, as upstream reports it
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}()

	rec.Status = http.StatusOK
	rec.InputTokens, rec.CacheCreationInputTokens, rec.CacheReadInputTokens = use.input, use.created, use.read
	rec.Fault = fault
	u := usage{InputTokens: use.input, CacheCreationInputTokens: use.created, CacheReadInputTokens: use.read}
	out := &outputMeter{s: s, k: k, model: q.model, rec: rec}
	if q.stream {
		s.stream(w, r, u, output, stop, fault, out)
		return
	}
	if !s.wait(r) {
		rec.Aborted = true
		return
	}
	out.charge(output)
	u.OutputTokens = output
	writeJSON(w, http.StatusOK, message{
		ID: s.newID("msg_"), Type: "message", Role: "assistant", Model: q.model,
		Content:    []contentBlock{{Type: "text", Text: words(0, output)}},
		StopReason: &stop, Usage: u,
	})
}

// outputTokens returns the request's output length and stop reason.
func (s *Server) outputTokens(body []byte, maxTokens int64) (int64, string) {
	n := int64(DefaultOutputTokens)
	if s.cfg.OutputTokens != nil {
		n = s.cfg.OutputTokens(body)
	}
	n = max(n, 1)
	if n >= maxTokens {
		return maxTokens, "max_tokens"
	}
	return n, "end_turn"
}

// outputMeter charges output tokens to the request's organization as they
// are produced.
type outputMeter struct {
	s     *Server
	k     *keyState
	model string
	rec   *Record
}

func (o *outputMeter) charge(n int64) {
	if n <= 0 {
		return
	}
	s, org := o.s, o.k.org
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := org.limitsFor(o.model, now).otpm; b != nil {
		b.take(n)
	}
	s.count(org, o.k, func(c *Counters) { c.OutputTokens += n })
	o.rec.OutputTokens += n
}

// wait holds an admitted request at the Gate; false if the client went away.
func (s *Server) wait(r *http.Request) bool {
	if s.cfg.Gate == nil {
		return true
	}
	ch := s.cfg.Gate(r)
	if ch == nil {
		return true
	}
	select {
	case <-ch:
		return true
	case <-r.Context().Done():
		return false
	}
}

// finish records a finished request and logs it.
func (s *Server) finish(rec *Record) {
	s.mu.Lock()
	s.records.add(*rec)
	s.mu.Unlock()
	if s.cfg.Log != nil {
		s.cfg.Log(*rec)
	}
}

// apiError is the API's error JSON.
type apiError struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
	RequestID string `json:"request_id,omitempty"`
}

func (s *Server) writeError(w http.ResponseWriter, rec *Record, status int, typ, msg string) {
	rec.Status, rec.ErrorType = status, typ
	e := apiError{Type: "error", RequestID: rec.RequestID}
	e.Error.Type, e.Error.Message = typ, msg
	writeJSON(w, status, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		// Only the mock's own types are encoded here; this cannot happen.
		status = http.StatusInternalServerError
		data = []byte(`{"type":"error","error":{"type":"api_error","message":"internal error"}}`)
	}
	w.Header().Set("content-type", "application/json")
	w.Header().Set("content-length", strconv.Itoa(len(data)))
	w.WriteHeader(status)
	_, _ = w.Write(data) // a client that went away is not the server's error
}
