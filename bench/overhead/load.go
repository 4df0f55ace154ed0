package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// target is one site (A or B) with its own tuned client.
type target struct {
	name   string
	url    string
	client *http.Client
	tr     *http.Transport
}

func newTarget(name string, port, maxConns int) *target {
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          maxConns * 2,
		MaxIdleConnsPerHost:   maxConns * 2,
		IdleConnTimeout:       5 * time.Minute,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
		ResponseHeaderTimeout: 60 * time.Second,
		WriteBufferSize:       64 << 10,
		ReadBufferSize:        64 << 10,
	}
	return &target{name: name, url: fmt.Sprintf("http://127.0.0.1:%d/v1/messages", port), client: &http.Client{Transport: tr}, tr: tr}
}

func (t *target) request(ctx context.Context, body []byte, session, mode string) *http.Request {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	h := req.Header
	h["Content-Type"] = []string{"application/json"}
	h["X-Api-Key"] = []string{clientToken}
	h["Anthropic-Version"] = []string{"2023-06-01"}
	h["Anthropic-Beta"] = []string{"claude-code-20250219,interleaved-thinking-2025-05-14"}
	h["User-Agent"] = []string{"claude-cli/2.0.14 (external, cli)"}
	h["X-Claude-Code-Session-Id"] = []string{session}
	h["X-Stainless-Lang"] = []string{"js"}
	h["Accept"] = []string{"application/json"}
	if mode != "" {
		h["X-Bench-Mode"] = []string{mode}
	}
	return req
}

// roundResult is one measured round against one site.
type roundResult struct {
	site     string
	n        int
	errors   int
	elapsed  time.Duration
	lat      []time.Duration // sorted
	cpuNS    int64           // Caddy CPU time during the round
	mallocs  uint64          // Caddy heap objects allocated during the round
	allocB   uint64          // Caddy heap bytes allocated during the round
	lag99    time.Duration   // paced rounds: 99th percentile of send time − scheduled time
	foreign  float64         // cores used by other processes during the round (see foreignNS)
	firstErr string
}

func (r *roundResult) rps() float64 { return float64(r.n-r.errors) / r.elapsed.Seconds() }
func (r *roundResult) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	i := int(p * float64(len(r.lat)-1))
	return r.lat[i]
}
func (r *roundResult) perReq(v float64) float64 { return v / float64(max(r.n, 1)) }

// closedLoop sends n requests with conc workers, each waiting for its
// response (read to the end) before the next. Each worker is one session.
func closedLoop(t *target, bs *bodySet, n, conc int) *roundResult {
	return workerLoop(t, n, conc, jsonOnce(bs))
}

// workerLoop runs n requests, one(t, w) each, on conc workers; worker w
// sends the body and session of index w. The latency is what one returns.
func workerLoop(t *target, n, conc int, one func(t *target, w int) (time.Duration, error)) *roundResult {
	var next atomic.Int64
	lats := make([][]time.Duration, conc)
	var errs atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			l := make([]time.Duration, 0, n/conc+1)
			for next.Add(1) <= int64(n) {
				d, err := one(t, w)
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				l = append(l, d)
			}
			lats[w] = l
		}(w)
	}
	wg.Wait()
	return newRoundResult(t.name, n, int(errs.Load()), time.Since(start), lats, firstErr.Load())
}

// readFirstEvent reads the response body up to the end of the first SSE
// event (a blank line) and returns the reader positioned after it.
func readFirstEvent(resp *http.Response) (*bufio.Reader, error) {
	br := bufio.NewReaderSize(resp.Body, 4096)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return br, err
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			return br, nil
		}
	}
}

// streamLoop sends n streaming requests with conc workers and records the
// time from sending the request to having read the first complete SSE event.
func streamLoop(t *target, bs *bodySet, n, conc int) *roundResult {
	return workerLoop(t, n, conc, streamOnce(bs))
}

// holdStreams opens n streams in hold mode and returns once every one has
// received its first event (or failed). Calling the returned finish after
// the upstream released them waits for all streams to end.
func holdStreams(t *target, bs *bodySet, n int, timeout time.Duration) (opened int, failed int, finish func() int, err error) {
	var got, bad atomic.Int64
	var wg sync.WaitGroup
	var ended atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			resp, err := t.client.Do(t.request(ctx, bs.bodies[i%len(bs.bodies)], bs.sessions[i%len(bs.sessions)], modeHold))
			if err != nil {
				bad.Add(1)
				return
			}
			defer resp.Body.Close()
			br, err := readFirstEvent(resp)
			if err != nil || resp.StatusCode != 200 {
				bad.Add(1)
				return
			}
			got.Add(1)
			if _, err := io.Copy(io.Discard, br); err == nil {
				ended.Add(1)
			}
		}(i)
	}
	deadline := time.Now().Add(timeout)
	for got.Load()+bad.Load() < int64(n) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got.Load()+bad.Load() < int64(n) {
		err = fmt.Errorf("only %d of %d streams opened within %s", got.Load(), n, timeout)
	}
	finish = func() int {
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			cancel()
			<-done
		}
		cancel()
		return int(ended.Load())
	}
	return int(got.Load()), int(bad.Load()), finish, err
}

// newRoundResult merges the workers' latencies of one round, sorted.
func newRoundResult(site string, n, errors int, elapsed time.Duration, lats [][]time.Duration, firstErr any) *roundResult {
	r := &roundResult{site: site, n: n, errors: errors, elapsed: elapsed}
	for _, l := range lats {
		r.lat = append(r.lat, l...)
	}
	sort.Slice(r.lat, func(i, j int) bool { return r.lat[i] < r.lat[j] })
	if v, ok := firstErr.(string); ok {
		r.firstErr = v
	}
	return r
}
