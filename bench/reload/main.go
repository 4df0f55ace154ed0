// Command reload measures what config reloads cost clients: it runs an
// in-process Caddy with the cc_relay module in front of the mock Anthropic
// API, drives concurrent clients (half of them streaming) and meanwhile
// POSTs a changed JSON config to the admin endpoint's /load every second.
// It reports failed client requests and streams cut short; both should be
// zero.
//
//	cd bench && go run ./reload [-duration 30s] [-clients 32] [-reload-every 1s] [-proto h1|h2c] [-retry]
//
// Over HTTP/1.1 a reload closes the old server's idle keep-alive
// connections, and a client that sends on one at that moment sees EOF or a
// reset before any response byte (net/http's graceful shutdown, not the
// relay); rarely, a new connection queued on the old server's
// SO_REUSEPORT socket is reset when that socket closes. -retry makes the
// clients do what the Anthropic SDKs do and retry a connection error
// (twice, with backoff). -proto h2c speaks HTTP/2, where the server
// announces the shutdown with GOAWAY and the client moves on by itself.
// Either way the bench checks that the upstream's 200s equal the clients'
// successes: no request was lost, none retried after it was processed.
//
// The admin endpoint listens on 127.0.0.1:2899 and the relay on a free
// port, so the command never clashes with the caddymodule tests (2999,
// 9080, 9443).
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/cc-relay/caddy-cc-relay/caddymodule"
	"github.com/cc-relay/caddy-cc-relay/internal/mockanthropic"
	"github.com/cc-relay/caddy-cc-relay/internal/relaytest"
)

const (
	clientToken = "ct-bench-reload"
	poolName    = "bench_reload"
)

var (
	proto  string
	retry  bool
	addrRE = regexp.MustCompile(`\d+\.\d+\.\d+\.\d+:\d+`)
)

var upstreamKeys = []string{"sk-bench-reload-1", "sk-bench-reload-2", "sk-bench-reload-3", "sk-bench-reload-4"}

func main() {
	duration := flag.Duration("duration", 30*time.Second, "how long clients send requests")
	clients := flag.Int("clients", 32, "concurrent clients; every other one streams")
	every := flag.Duration("reload-every", time.Second, "interval between config reloads")
	admin := flag.String("admin", "127.0.0.1:2899", "admin endpoint address")
	deltaDelay := flag.Duration("delta-delay", 300*time.Millisecond, "mock upstream pause before each stream delta")
	deltas := flag.Int("deltas", 5, "content_block_delta events per stream")
	flag.StringVar(&proto, "proto", "h1", "client protocol: h1 (HTTP/1.1 keep-alive) or h2c (HTTP/2 without TLS)")
	flag.BoolVar(&retry, "retry", false, "retry (twice, after 0.5s and 1s) a request that failed with a connection error before any response, as the Anthropic SDKs do")
	flag.Parse()
	if proto != "h1" && proto != "h2c" {
		fmt.Fprintln(os.Stderr, "reload bench: -proto must be h1 or h2c")
		os.Exit(2)
	}
	if err := run(*duration, *clients, *every, *admin, *deltaDelay, *deltas); err != nil {
		fmt.Fprintln(os.Stderr, "reload bench:", err)
		os.Exit(1)
	}
}

// config is the JSON config the bench loads; rpm alternates between
// reloads so that every load is a real change of the relay's limits.
func config(admin, listen, upstream string, rpm int) []byte {
	var keys []map[string]any
	for i, k := range upstreamKeys {
		keys = append(keys, map[string]any{"key": k, "name": fmt.Sprintf("bench-%d", i+1), "rpm": rpm})
	}
	cfg := map[string]any{
		"admin":   map[string]any{"listen": admin},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "WARN"}}},
		"apps": map[string]any{"http": map[string]any{"servers": map[string]any{"bench": map[string]any{
			"listen":          []string{listen},
			"protocols":       []string{"h1", "h2c"},
			"automatic_https": map[string]any{"disable": true},
			"routes": []any{map[string]any{"handle": []any{
				map[string]any{
					"handler":       "cc_relay",
					"pool":          poolName,
					"client_tokens": []any{map[string]any{"token": clientToken, "name": "bench"}},
					"keys":          keys,
				},
				map[string]any{
					"handler":        "reverse_proxy",
					"upstreams":      []any{map[string]any{"dial": upstream}},
					"flush_interval": -1,
				},
			}}},
		}}}},
	}
	b, _ := json.Marshal(cfg)
	return b
}

func freePort() (string, error) { return relaytest.FreeAddr() }

// tally counts outcomes; errs keeps a few distinct error messages.
type tally struct {
	requests, ok, failed, streams, streamsOK, cut, retried atomic.Int64
	mu                                                     sync.Mutex
	errs                                                   map[string]int
}

func (t *tally) fail(kind string, err error) {
	t.failed.Add(1)
	t.note(kind, err)
}

func (t *tally) note(kind string, err error) {
	msg := kind
	if err != nil {
		// Ports differ per connection; group the errors without them.
		msg += ": " + addrRE.ReplaceAllString(err.Error(), "ADDR")
	}
	t.mu.Lock()
	t.errs[msg]++
	t.mu.Unlock()
}

func run(duration time.Duration, clients int, every time.Duration, admin string, deltaDelay time.Duration, deltas int) error {
	keyOrgs := map[string]string{}
	for _, k := range upstreamKeys {
		keyOrgs[k] = "org-bench" // no limits: the bench measures reloads, not quotas
	}
	mock := mockanthropic.New(mockanthropic.Config{
		Keys: keyOrgs, DeltaDelay: deltaDelay, StreamDeltas: deltas,
		OutputTokens: func([]byte) int64 { return int64(deltas) * 4 },
		MaxRecords:   1,
	})
	up := httptest.NewServer(mock)
	defer up.Close()
	listen, err := freePort()
	if err != nil {
		return err
	}
	upstream := strings.TrimPrefix(up.URL, "http://")

	rpm := 1_000_000
	if err := caddy.Load(config(admin, listen, upstream, rpm), true); err != nil {
		return fmt.Errorf("starting caddy: %v", err)
	}
	defer func() { _ = caddy.Stop() }()

	// Clients keep connections alive between requests, as SDKs do, so a
	// reload meets both busy and idle connections.
	tr := &http.Transport{MaxIdleConnsPerHost: clients * 2, IdleConnTimeout: 90 * time.Second}
	if proto == "h2c" {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	hc := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	defer tr.CloseIdleConnections()

	var t tally
	t.errs = map[string]int{}
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()

	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			stream := i%2 == 0
			for n := 0; ctx.Err() == nil; n++ {
				one(hc, "http://"+listen, stream, fmt.Sprintf("client %d request %d", i, n), &t)
			}
		}(i)
	}

	// Reloads: the running config with the limit changed, POSTed as JSON.
	var reloads, reloadFailures atomic.Int64
	var reloadTimes []time.Duration
	ac := &http.Client{Timeout: 30 * time.Second}
	tick := time.NewTicker(every)
	defer tick.Stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if rpm == 1_000_000 {
				rpm = 999_999
			} else {
				rpm = 1_000_000
			}
			start := time.Now()
			res, err := ac.Post("http://"+admin+"/load", "application/json", bytes.NewReader(config(admin, listen, upstream, rpm)))
			if err == nil {
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != 200 {
					err = fmt.Errorf("%d %s", res.StatusCode, b)
				}
			}
			reloads.Add(1)
			if err != nil {
				reloadFailures.Add(1)
				t.note("reload", err)
				continue
			}
			reloadTimes = append(reloadTimes, time.Since(start))
		}
	}()
	wg.Wait()
	<-done

	// After the clients finished, nothing may be left in flight.
	var inFlight int
	if res, err := ac.Get("http://" + admin + "/cc_relay/pools/" + poolName); err == nil {
		var ps struct {
			Keys []struct {
				Name     string `json:"name"`
				InFlight int    `json:"in_flight"`
				Totals   struct {
					Requests int64 `json:"requests"`
				} `json:"totals"`
			} `json:"keys"`
		}
		_ = json.NewDecoder(res.Body).Decode(&ps)
		res.Body.Close()
		for _, k := range ps.Keys {
			inFlight += k.InFlight
		}
	}

	slices.Sort(reloadTimes)
	pct := func(p float64) time.Duration {
		if len(reloadTimes) == 0 {
			return 0
		}
		return reloadTimes[min(len(reloadTimes)-1, int(p*float64(len(reloadTimes))))]
	}
	fmt.Printf("machine:        %d CPUs (nproc), %s %s/%s\n", runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Printf("run:            %s, %d clients (%d streaming, stream ~%s), reload every %s, %s, retry %t\n",
		duration, clients, (clients+1)/2, time.Duration(deltas)*deltaDelay, every, proto, retry)
	fmt.Printf("reloads:        %d (%d failed), /load latency p50 %s p99 %s max %s\n",
		reloads.Load(), reloadFailures.Load(), pct(0.5).Round(time.Millisecond), pct(0.99).Round(time.Millisecond), pct(1).Round(time.Millisecond))
	fmt.Printf("requests:       %d (%d ok)\n", t.requests.Load(), t.ok.Load())
	fmt.Printf("streams:        %d (%d complete)\n", t.streams.Load(), t.streamsOK.Load())
	fmt.Printf("retried:        %d (connection errors before any response)\n", t.retried.Load())
	fmt.Printf("failed:         %d\n", t.failed.Load())
	fmt.Printf("streams cut:    %d\n", t.cut.Load())
	fmt.Printf("left in flight: %d\n", inFlight)
	// Every request the upstream answered reached a client: none was lost
	// in a reload, and no retried request had been processed before.
	accepted := mock.Stats().Total.Accepted
	fmt.Printf("upstream 200s:  %d (client successes %d)\n", accepted, t.ok.Load())
	if len(t.errs) > 0 {
		fmt.Println("errors:")
		for msg, n := range t.errs {
			fmt.Printf("  %5d  %s\n", n, msg)
		}
	}
	if t.failed.Load() > 0 || t.cut.Load() > 0 || reloadFailures.Load() > 0 || inFlight > 0 || accepted != t.ok.Load() {
		return errors.New("clients saw failures")
	}
	return nil
}

// one sends a request and checks the answer is complete: a stream must end
// with message_stop after every delta, a message must be whole JSON.
func one(hc *http.Client, base string, stream bool, text string, t *tally) {
	body := fmt.Sprintf(`{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":%t,"messages":[{"role":"user","content":%q}]}`, stream, text)
	t.requests.Add(1)
	if stream {
		t.streams.Add(1)
	}
	var res *http.Response
	for attempt := 0; ; attempt++ {
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/messages", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Api-Key", clientToken)
		var reused bool
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(ci httptrace.GotConnInfo) { reused = ci.Reused },
		}))
		var err error
		res, err = hc.Do(req)
		if err == nil {
			break
		}
		kind := "transport (new connection)"
		if reused {
			kind = "transport (reused connection)"
		}
		if retry && attempt < 2 {
			// The Anthropic SDKs retry connection errors twice, after
			// 0.5s and 1s (less jitter).
			t.retried.Add(1)
			t.note("retried "+kind, err)
			time.Sleep(500 * time.Millisecond << attempt)
			continue
		}
		t.fail(kind, err)
		return
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		t.fail(fmt.Sprintf("status %d", res.StatusCode), errors.New(strings.TrimSpace(string(b))))
		return
	}
	if !stream {
		var m struct {
			Type  string `json:"type"`
			Usage struct {
				OutputTokens int `json:"output_tokens"`
			} `json:"usage"`
		}
		if err := json.NewDecoder(res.Body).Decode(&m); err != nil || m.Type != "message" || m.Usage.OutputTokens == 0 {
			t.fail("bad message", err)
			return
		}
		t.ok.Add(1)
		return
	}
	sc := bufio.NewScanner(res.Body)
	deltas, stopped := 0, false
	for sc.Scan() {
		switch sc.Text() {
		case "event: content_block_delta":
			deltas++
		case "event: message_stop":
			stopped = true
		}
	}
	if err := sc.Err(); err != nil || !stopped || deltas == 0 {
		t.cut.Add(1)
		t.fail("stream cut", err)
		return
	}
	t.ok.Add(1)
	t.streamsOK.Add(1)
}
