package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/usage"
)

// Client retry policy, like Claude Code's: a 429 or 529 is retried up to
// maxAttempts in all, after the answer's Retry-After (bounded) or an
// exponential backoff, but never past the end of the run.
const (
	maxAttempts   = 10
	maxRetryAfter = 20 * time.Second
	attemptLimit  = 2 * time.Minute // one HTTP attempt, stream included
)

// result is one logical client request (all its attempts).
type result struct {
	class    string
	bytes    int
	sent     time.Time // first attempt
	done     time.Time
	status   int // final status; 0: transport error
	attempts int // HTTP attempts to the relay
	relay429 int // the relay's own 429s (no key had capacity; upstream not contacted)
	up429    int // upstream 429s the relay passed to the client
	other    int // other non-200 answers seen (5xx, 4xx)
	abandon  bool
	ttfb     time.Duration // response headers of the final attempt
	headers  time.Time     // when they came
	id       string        // X-Bench-Id of the final attempt
	key      string        // X-Cc-Relay-Key of the final attempt
	usage    usage.Usage
	errText  string
}

func (r *result) ok() bool { return r.status == http.StatusOK && r.usage.ErrorType == "" }

// client sends requests to one relay and records their results.
type client struct {
	url    string
	http   *http.Client
	prefix string
	token  string // the client token it presents as x-api-key
	seq    atomic.Uint64
	end    time.Time // no attempt starts after this

	mu      sync.Mutex
	results []*result
}

func newClient(port int, prefix string, end time.Time) *client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     2 * time.Minute,
		DisableCompression:  true,
	}
	return &client{
		url:    "http://127.0.0.1:" + strconv.Itoa(port) + "/v1/messages",
		http:   &http.Client{Transport: tr},
		prefix: prefix,
		token:  "bench-client",
		end:    end,
	}
}

func (c *client) close() { c.http.CloseIdleConnections() }

// do sends req until it succeeds, fails for good, or the run ends; rng
// jitters the waits.
func (c *client) do(ctx context.Context, req genReq, rng *rand.Rand) *result {
	res := &result{class: req.class, bytes: len(req.body), sent: time.Now()}
	defer func() {
		res.done = time.Now()
		c.mu.Lock()
		c.results = append(c.results, res)
		c.mu.Unlock()
	}()
	for attempt := 1; ; attempt++ {
		res.attempts = attempt
		res.id = fmt.Sprintf("%s-%d", c.prefix, c.seq.Add(1))
		start := time.Now()
		status, hdr, u, ttfb, err := c.once(ctx, req, res.id)
		res.status, res.ttfb, res.usage = status, ttfb, u
		res.headers = start.Add(ttfb)
		res.key = hdr.Get("X-Cc-Relay-Key")
		if err != nil {
			res.errText = err.Error()
			return res
		}
		if status == http.StatusOK {
			return res
		}
		var wait time.Duration
		switch status {
		case http.StatusTooManyRequests:
			// The relay marks answers that came from an upstream key.
			if res.key != "" {
				res.up429++
			} else {
				res.relay429++
			}
		case 529:
			res.other++
		default:
			res.other++
			return res
		}
		if ra, err := strconv.Atoi(strings.TrimSpace(hdr.Get("Retry-After"))); err == nil && ra > 0 {
			wait = min(time.Duration(ra)*time.Second, maxRetryAfter)
		} else {
			wait = min(500*time.Millisecond<<(attempt-1), 8*time.Second)
		}
		wait += time.Duration(rng.IntN(250)) * time.Millisecond
		if attempt >= maxAttempts {
			return res
		}
		if time.Now().Add(wait).After(c.end) {
			res.abandon = true
			return res
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			res.abandon = true
			return res
		}
	}
}

func (c *client) once(ctx context.Context, req genReq, id string) (int, http.Header, usage.Usage, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, attemptLimit)
	defer cancel()
	hr, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(req.body))
	h := hr.Header
	h.Set("Content-Type", "application/json")
	h.Set("Anthropic-Version", "2023-06-01")
	h.Set("Anthropic-Beta", "claude-code-20250219,interleaved-thinking-2025-05-14")
	h.Set("User-Agent", "claude-cli/2.0.14 (external, cli)")
	h.Set("X-Api-Key", c.token)
	h.Set("X-Bench-Id", id)
	if req.session != "" {
		h.Set("X-Claude-Code-Session-Id", req.session)
	}
	start := time.Now()
	resp, err := c.http.Do(hr)
	if err != nil {
		return 0, http.Header{}, usage.Usage{}, 0, err
	}
	defer resp.Body.Close()
	ttfb := time.Since(start)
	var u usage.Usage
	buf := make([]byte, 32<<10)
	var sse usage.SSEScanner
	var js usage.JSONScanner
	stream := strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if stream {
				sse.Write(buf[:n])
			} else {
				js.Write(buf[:n])
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return resp.StatusCode, resp.Header, u, ttfb, rerr
		}
	}
	if stream {
		u = sse.Usage()
	} else {
		u = js.Usage()
	}
	return resp.StatusCode, resp.Header, u, ttfb, nil
}

func (c *client) all() []*result {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*result(nil), c.results...)
}
