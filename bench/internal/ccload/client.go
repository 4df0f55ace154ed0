package ccload

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

// Result is one logical client request (all its attempts).
type Result struct {
	Class    string
	Bytes    int
	Sent     time.Time // first attempt
	Done     time.Time
	Status   int // final status; 0: transport error
	Attempts int // HTTP attempts to the relay
	Relay429 int // the relay's own 429s (no key had capacity; upstream not contacted)
	Up429    int // upstream 429s the relay passed to the client
	Other    int // other non-200 answers seen (5xx, 4xx)
	Abandon  bool
	TTFB     time.Duration // response headers of the final attempt
	Headers  time.Time     // when they came
	ID       string        // X-Bench-Id of the final attempt
	Key      string        // X-Cc-Relay-Key of the final attempt
	Relay    string        // X-Bench-Relay of the final attempt: which instance answered (bench/cluster)
	Session  string        // the request's session id
	Usage    usage.Usage
	ErrText  string
}

// OK says the request was answered 200 without an error event.
func (r *Result) OK() bool { return r.Status == http.StatusOK && r.Usage.ErrorType == "" }

// Client sends requests to one relay and records their results.
type Client struct {
	url    string
	http   *http.Client
	prefix string
	Token  string // the client token it presents as x-api-key
	seq    atomic.Uint64
	end    time.Time // no attempt starts after this

	mu      sync.Mutex
	results []*Result
}

// NewClient sends to 127.0.0.1:port; its attempts are named prefix-<n>
// (X-Bench-Id) and none starts after end.
func NewClient(port int, prefix string, end time.Time) *Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     2 * time.Minute,
		DisableCompression:  true,
	}
	return &Client{
		url:    "http://127.0.0.1:" + strconv.Itoa(port) + "/v1/messages",
		http:   &http.Client{Transport: tr},
		prefix: prefix,
		Token:  "bench-client",
		end:    end,
	}
}

// Prefix starts the X-Bench-Id of every attempt the client makes.
func (c *Client) Prefix() string { return c.prefix }

// Close closes its idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// do sends req until it succeeds, fails for good, or the run ends; rng
// jitters the waits.
func (c *Client) Do(ctx context.Context, req Request, rng *rand.Rand) *Result {
	res := &Result{Class: req.Class, Bytes: len(req.Body), Sent: time.Now(), Session: req.Session}
	defer func() {
		res.Done = time.Now()
		c.mu.Lock()
		c.results = append(c.results, res)
		c.mu.Unlock()
	}()
	for attempt := 1; ; attempt++ {
		res.Attempts = attempt
		res.ID = fmt.Sprintf("%s-%d", c.prefix, c.seq.Add(1))
		start := time.Now()
		status, hdr, u, ttfb, err := c.once(ctx, req, res.ID)
		res.Status, res.TTFB, res.Usage = status, ttfb, u
		res.Headers = start.Add(ttfb)
		res.Key = hdr.Get("X-Cc-Relay-Key")
		res.Relay = hdr.Get("X-Bench-Relay")
		if err != nil {
			res.ErrText = err.Error()
			return res
		}
		if status == http.StatusOK {
			return res
		}
		var wait time.Duration
		switch status {
		case http.StatusTooManyRequests:
			// The relay marks answers that came from an upstream key.
			if res.Key != "" {
				res.Up429++
			} else {
				res.Relay429++
			}
		case 529:
			res.Other++
		default:
			res.Other++
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
			res.Abandon = true
			return res
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			res.Abandon = true
			return res
		}
	}
}

func (c *Client) once(ctx context.Context, req Request, id string) (int, http.Header, usage.Usage, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, attemptLimit)
	defer cancel()
	hr, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(req.Body))
	h := hr.Header
	h.Set("Content-Type", "application/json")
	h.Set("Anthropic-Version", "2023-06-01")
	h.Set("Anthropic-Beta", "claude-code-20250219,interleaved-thinking-2025-05-14")
	h.Set("User-Agent", "claude-cli/2.0.14 (external, cli)")
	h.Set("X-Api-Key", c.Token)
	h.Set("X-Bench-Id", id)
	if req.Session != "" {
		h.Set("X-Claude-Code-Session-Id", req.Session)
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

// All is every result so far.
func (c *Client) All() []*Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Result(nil), c.results...)
}
