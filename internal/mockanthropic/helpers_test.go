package mockanthropic

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// t0 is a whole second, so reset headers are easy to predict.
var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// clock is a manually advanced clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// harness is a Server behind an httptest server on 127.0.0.1.
type harness struct {
	t     *testing.T
	s     *Server
	ts    *httptest.Server
	clock *clock
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	c := &clock{t: t0}
	cfg.Now = c.Now
	s := New(cfg)
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return &harness{t: t, s: s, ts: ts, clock: c}
}

// response is a finished non-streaming response.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) error() (typ, msg string) {
	var e apiError
	_ = json.Unmarshal(r.body, &e)
	return e.Error.Type, e.Error.Message
}

func (r response) message(t *testing.T) message {
	t.Helper()
	var m message
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("decode message %q: %v", r.body, err)
	}
	return m
}

// open sends body to path with key as x-api-key and returns the live response.
func (h *harness) open(path, key string, body any) *http.Response {
	h.t.Helper()
	var data []byte
	switch b := body.(type) {
	case string:
		data = []byte(b)
	default:
		var err error
		if data, err = json.Marshal(b); err != nil {
			h.t.Fatal(err)
		}
	}
	req, err := http.NewRequest(http.MethodPost, h.ts.URL+path, bytes.NewReader(data))
	if err != nil {
		h.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("x-api-key", key)
	}
	req.Header.Set("anthropic-version", "2023-06-01")
	resp, err := h.ts.Client().Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp
}

// post sends body and reads the whole response.
func (h *harness) post(key string, body any) response {
	h.t.Helper()
	return h.postPath("/v1/messages", key, body)
}

func (h *harness) postPath(path, key string, body any) response {
	h.t.Helper()
	resp := h.open(path, key, body)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}
}

// expect posts and fails unless the status is want.
func (h *harness) expect(want int, key string, body any) response {
	h.t.Helper()
	r := h.post(key, body)
	if r.status != want {
		h.t.Fatalf("status %d, want %d; body %s", r.status, want, r.body)
	}
	return r
}

// text returns a string whose JSON literal is exactly tokens×4 bytes, so as
// the content of a message it counts as exactly that many tokens.
func text(tokens int) string { return strings.Repeat("a", tokens*BytesPerToken-2) }

// msg is a request body with one user message of the given token count.
func msg(model string, tokens int) map[string]any {
	return map[string]any{
		"model": model, "max_tokens": 8192,
		"messages": []any{map[string]any{"role": "user", "content": text(tokens)}},
	}
}

// block is a text block of exactly tokens tokens; with cache it carries a
// cache_control breakpoint, which does not count.
func block(tokens int, cache bool) map[string]any {
	// {"text":"…","type":"text"} is 25 bytes plus the text.
	b := map[string]any{"type": "text", "text": strings.Repeat("b", tokens*BytesPerToken-25)}
	if cache {
		b["cache_control"] = map[string]any{"type": "ephemeral"}
	}
	return b
}

// sseEvent is one server-sent event.
type sseEvent struct {
	name string
	data json.RawMessage
}

// readEvent reads the next event; io.EOF at a clean end of stream.
func readEvent(br *bufio.Reader) (sseEvent, error) {
	var ev sseEvent
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if err == io.EOF && (line != "" || ev.name != "") {
				err = io.ErrUnexpectedEOF
			}
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if ev.name != "" {
				return ev, nil
			}
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = json.RawMessage(strings.TrimPrefix(line, "data: "))
		}
	}
}

// readEvents reads events until the stream ends, returning the error that
// ended it (nil for a clean end).
func readEvents(r io.Reader) ([]sseEvent, error) {
	br := bufio.NewReader(r)
	var evs []sseEvent
	for {
		ev, err := readEvent(br)
		if err == io.EOF {
			return evs, nil
		}
		if err != nil {
			return evs, err
		}
		evs = append(evs, ev)
	}
}

func names(evs []sseEvent) string {
	var n []string
	for _, ev := range evs {
		n = append(n, ev.name)
	}
	return strings.Join(n, ",")
}
