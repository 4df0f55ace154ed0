package caddymodule

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// benchWriter is a ResponseWriter that keeps nothing and allocates nothing
// once its header map has grown: what the benchmark counts is the relay's.
type benchWriter struct {
	hdr    http.Header
	status int
	n      int
}

func (w *benchWriter) Header() http.Header { return w.hdr }
func (w *benchWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *benchWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.n += len(p)
	return len(p), nil
}
func (w *benchWriter) Flush() {}

// SetReadDeadline is there because net/http's writer has it: the relay
// sets a deadline for the body through http.ResponseController.
func (w *benchWriter) SetReadDeadline(time.Time) error { return nil }

// benchUpstream is what reverse_proxy passes on from the benchmark
// upstream of bench/overhead: the same headers and bodies, written the
// same way (a JSON message in one write; an SSE stream one event a write,
// each flushed).
type benchUpstream struct {
	hdr    http.Header
	json   []byte
	events [][]byte
}

func newBenchUpstream() *benchUpstream {
	u := &benchUpstream{hdr: http.Header{}}
	for _, kind := range []string{"requests", "input-tokens", "output-tokens", "tokens"} {
		u.hdr.Set("anthropic-ratelimit-"+kind+"-limit", "1000000000")
		u.hdr.Set("anthropic-ratelimit-"+kind+"-remaining", "999999000")
		u.hdr.Set("anthropic-ratelimit-"+kind+"-reset", "2026-12-02T22:00:00Z")
	}
	u.hdr.Set("anthropic-organization-id", "0f3a8c5e-bench-org")
	u.hdr.Set("Request-Id", "req_011CUbench")
	u.json = []byte(`{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929",` +
		`"content":[{"type":"text","text":"I'll read the file first to understand the current implementation, then make the change you asked for."}],` +
		`"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":1203,"cache_creation_input_tokens":0,` +
		`"cache_read_input_tokens":31250,"output_tokens":28,"service_tier":"standard"}}`)
	u.events = append(u.events, []byte("event: message_start\n"+
		`data: {"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant",`+
		`"model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":1203,`+
		`"cache_creation_input_tokens":0,"cache_read_input_tokens":31250,"output_tokens":1,"service_tier":"standard"}}}`+"\n\n"),
		[]byte("event: content_block_start\n"+`data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`+"\n\n"),
		[]byte("event: ping\n"+`data: {"type": "ping"}`+"\n\n"))
	for _, w := range []string{"I'll ", "read the ", "file first ", "to understand ", "the current implementation."} {
		u.events = append(u.events, []byte("event: content_block_delta\n"+
			`data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"`+w+`"}}`+"\n\n"))
	}
	u.events = append(u.events,
		[]byte("event: content_block_stop\n"+`data: {"type":"content_block_stop","index":0}`+"\n\n"),
		[]byte("event: message_delta\n"+`data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":28}}`+"\n\n"),
		[]byte("event: message_stop\n"+`data: {"type":"message_stop"}`+"\n\n"))
	return u
}

// ServeHTTP stands in for reverse_proxy: it reads the body and copies the
// upstream's answer to w.
func (u *benchUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	_, _ = io.Copy(io.Discard, r.Body)
	h := w.Header()
	for k, v := range u.hdr {
		h[k] = v
	}
	if r.Header.Get("X-Bench-Mode") == "" {
		h["Content-Type"] = []string{"application/json"}
		h["Content-Length"] = []string{strconv.Itoa(len(u.json))}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(u.json)
		return nil
	}
	h["Content-Type"] = []string{"text/event-stream; charset=utf-8"}
	h["Cache-Control"] = []string{"no-cache"}
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	for _, ev := range u.events {
		_, _ = w.Write(ev)
		_ = rc.Flush()
	}
	return nil
}

// BenchmarkServe is one 4 KB Claude Code request through the handler the
// way bench/overhead's site B is configured (client_token auth without
// client limits, 10 keys, least_loaded), a JSON answer and a streamed one,
// beside the same request handed to next alone ("bare", site A). next
// stands in for reverse_proxy with the bench upstream's answer, and the
// writer allocates nothing, so relay allocs/op − bare allocs/op, reported
// as added-allocs/op, is what the relay adds to a request: the figure
// docs/perf/overhead.md tracks (9 for either answer in session 4; 21 for
// JSON and 32 for a stream before).
func BenchmarkServe(b *testing.B) {
	const token = "bench-client-token-0123456789"
	h := &Handler{Pool: "bench_serve", ClientTokens: []ClientToken{{Token: token, Name: "bench"}}}
	for i := range 10 {
		h.Keys = append(h.Keys, Key{Key: "sk-ant-api03-bench-" + strconv.Itoa(i) + strings.Repeat("x", 64),
			Name: "bench-" + strconv.Itoa(i), RPM: 1_000_000_000, ITPM: 1_000_000_000_000, OTPM: 1_000_000_000_000})
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := h.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	defer h.Cleanup()
	h.logger = zap.NewNop() // the bench site logs at ERROR: no debug entry is built
	up := newBenchUpstream()
	srv := &caddyhttp.Server{}
	for _, mode := range []string{"json", "stream"} {
		body := []byte(ccBody(legacyUserID(sessionUUID(1)), strings.Repeat("please look at this code ", 150), mode == "stream"))
		hdr := http.Header{}
		hdr.Set("Content-Type", "application/json")
		hdr.Set("Content-Length", strconv.Itoa(len(body)))
		hdr.Set("Anthropic-Version", "2023-06-01")
		hdr.Set("Anthropic-Beta", "claude-code-20250219,interleaved-thinking-2025-05-14")
		hdr.Set("X-Claude-Code-Session-Id", sessionUUID(1))
		hdr.Set("X-Api-Key", token)
		if mode == "stream" {
			hdr.Set("X-Bench-Mode", "stream")
		}
		w := &benchWriter{hdr: http.Header{}}
		br := bytes.NewReader(body)
		r, err := http.NewRequest(http.MethodPost, "http://127.0.0.1/v1/messages?beta=true", nil)
		if err != nil {
			b.Fatal(err)
		}
		base := context.WithValue(context.Background(), caddyhttp.ServerCtxKey, srv)
		// serve sends the request to the relay or, bare, to next alone.
		serve := func(b *testing.B, relay bool) {
			// What Caddy gives every request: a replacer and log fields
			// in its context, a fresh header map.
			rctx := context.WithValue(base, caddy.ReplacerCtxKey, caddy.NewReplacer())
			rctx = context.WithValue(rctx, caddyhttp.ExtraLogFieldsCtxKey, new(caddyhttp.ExtraLogFields))
			rr := r.WithContext(rctx)
			rr.Header = hdr.Clone()
			br.Reset(body)
			rr.Body, rr.ContentLength = io.NopCloser(br), int64(len(body))
			clear(w.hdr)
			w.status, w.n = 0, 0
			var err error
			if relay {
				err = h.ServeHTTP(w, rr, up)
			} else {
				err = up.ServeHTTP(w, rr)
			}
			if err != nil || w.status != http.StatusOK || w.n == 0 {
				b.Fatalf("%v %d, %d bytes", err, w.status, w.n)
			}
		}
		for _, site := range []string{"bare", "relay"} {
			b.Run(mode+"/"+site, func(b *testing.B) {
				relay := site == "relay"
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				for b.Loop() {
					serve(b, relay)
				}
				if relay {
					// The figure to watch: what the relay adds to a
					// request (reported after the loop, which would
					// reset it).
					bare := testing.AllocsPerRun(100, func() { serve(b, false) })
					with := testing.AllocsPerRun(100, func() { serve(b, true) })
					b.ReportMetric(with-bare, "added-allocs/op")
				}
			})
		}
	}
}
