package main

import (
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Bench modes the load generator asks the zero-latency upstream for, in the
// X-Bench-Mode request header (both sites forward it unchanged).
const (
	modeJSON   = ""       // a fixed message JSON with usage
	modeStream = "stream" // the SSE sequence, written as fast as possible
	modeHold   = "hold"   // the SSE sequence, held open after message_start until released
)

// Limits the upstream reports and the relay is configured with: far above
// anything a benchmark can use, so no request is ever refused.
const (
	benchRPM  = 1_000_000_000
	benchITPM = 1_000_000_000_000
	benchOTPM = 1_000_000_000_000
)

var (
	messageJSON = []byte(`{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929",` +
		`"content":[{"type":"text","text":"I'll read the file first to understand the current implementation, then make the change you asked for."}],` +
		`"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":1203,"cache_creation_input_tokens":0,` +
		`"cache_read_input_tokens":31250,"output_tokens":28,"service_tier":"standard"}}`)

	sseStart = []byte("event: message_start\n" +
		`data: {"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant",` +
		`"model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":1203,` +
		`"cache_creation_input_tokens":0,"cache_read_input_tokens":31250,"output_tokens":1,"service_tier":"standard"}}}` + "\n\n")
	sseRest = buildSSERest(5)
)

func buildSSERest(deltas int) [][]byte {
	ev := [][]byte{
		[]byte("event: content_block_start\n" + `data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}` + "\n\n"),
		[]byte("event: ping\n" + `data: {"type": "ping"}` + "\n\n"),
	}
	words := []string{"I'll ", "read the ", "file first ", "to understand ", "the current implementation."}
	for i := 0; i < deltas; i++ {
		ev = append(ev, []byte("event: content_block_delta\n"+
			`data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"`+words[i%len(words)]+`"}}`+"\n\n"))
	}
	ev = append(ev,
		[]byte("event: content_block_stop\n"+`data: {"type":"content_block_stop","index":0}`+"\n\n"),
		[]byte("event: message_delta\n"+`data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":28}}`+"\n\n"),
		[]byte("event: message_stop\n"+`data: {"type":"message_stop"}`+"\n\n"),
	)
	return ev
}

// upstream is the zero-latency Anthropic stand-in: it answers as soon as it
// has read the body, with realistic headers (request-id, organization,
// anthropic-ratelimit-*), so both sites proxy the same bytes.
type upstream struct {
	srv  *http.Server
	addr string

	hdr     http.Header // fixed rate-limit headers
	release atomic.Pointer[chan struct{}]
	held    atomic.Int64 // streams currently held after message_start
	reqs    atomic.Int64
	bufPool sync.Pool
}

func startUpstream() (*upstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &upstream{addr: ln.Addr().String(), hdr: http.Header{}}
	u.bufPool.New = func() any { b := make([]byte, 32<<10); return &b }
	reset := time.Now().Add(time.Minute).UTC().Format(time.RFC3339)
	for _, k := range []struct {
		kind  string
		limit int64
	}{{"requests", benchRPM}, {"input-tokens", benchITPM}, {"output-tokens", benchOTPM}, {"tokens", benchITPM}} {
		u.hdr.Set("anthropic-ratelimit-"+k.kind+"-limit", strconv.FormatInt(k.limit, 10))
		u.hdr.Set("anthropic-ratelimit-"+k.kind+"-remaining", strconv.FormatInt(k.limit-1000, 10))
		u.hdr.Set("anthropic-ratelimit-"+k.kind+"-reset", reset)
	}
	u.hdr.Set("anthropic-organization-id", "0f3a8c5e-bench-org")
	ch := make(chan struct{})
	u.release.Store(&ch)
	u.srv = &http.Server{Handler: u, ReadHeaderTimeout: 30 * time.Second, MaxHeaderBytes: 1 << 20}
	go func() { _ = u.srv.Serve(ln) }()
	return u, nil
}

func (u *upstream) close() { _ = u.srv.Close() }

// arm returns a fresh release channel for held streams.
func (u *upstream) arm() {
	ch := make(chan struct{})
	u.release.Store(&ch)
}

// releaseAll lets every held stream finish.
func (u *upstream) releaseAll() { close(*u.release.Load()) }

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.reqs.Add(1)
	bp := u.bufPool.Get().(*[]byte)
	for {
		if _, err := r.Body.Read(*bp); err != nil {
			break
		}
	}
	u.bufPool.Put(bp)
	h := w.Header()
	for k, v := range u.hdr {
		h[k] = v
	}
	h["Request-Id"] = []string{"req_011CUbench"}
	mode := r.Header.Get("X-Bench-Mode")
	if mode == modeJSON {
		h["Content-Type"] = []string{"application/json"}
		h["Content-Length"] = []string{strconv.Itoa(len(messageJSON))}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(messageJSON)
		return
	}
	h["Content-Type"] = []string{"text/event-stream; charset=utf-8"}
	h["Cache-Control"] = []string{"no-cache"}
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if _, err := w.Write(sseStart); err != nil {
		return
	}
	if rc.Flush() != nil {
		return
	}
	if mode == modeHold {
		rel := *u.release.Load()
		u.held.Add(1)
		select {
		case <-rel:
		case <-r.Context().Done():
			u.held.Add(-1)
			return
		}
		u.held.Add(-1)
	}
	for _, ev := range sseRest {
		if _, err := w.Write(ev); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
	}
}
