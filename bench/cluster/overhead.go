package main

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cc-relay/caddy-cc-relay/bench/internal/caddyproc"
	"github.com/cc-relay/caddy-cc-relay/bench/internal/ccload"
	"github.com/cc-relay/caddy-cc-relay/internal/redistest"
)

// site is one relay of the overhead run, reached directly.
type site struct {
	name   string
	url    string
	client *http.Client
}

func newSite(name string, port, conns int) *site {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        2 * conns,
		MaxIdleConnsPerHost: 2 * conns,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	return &site{name: name, url: "http://127.0.0.1:" + strconv.Itoa(port) + "/v1/messages", client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// send posts body and reads the answer to its end; the latency is to the
// end of the body.
func (s *site) send(body []byte) (time.Duration, error) {
	t0 := time.Now()
	req, _ := http.NewRequest(http.MethodPost, s.url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Anthropic-Version", "2023-06-01")
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return time.Since(t0), err
}

// overheadBodies are small non-streaming main-model requests (about 4 KB,
// 20 output tokens): the relay's own cost, not the upstream's, dominates.
func overheadBodies(n int) [][]byte {
	r := rand.New(rand.NewPCG(*flagSeed, 77))
	out := make([][]byte, n)
	for i := range out {
		out[i] = ccload.Encode(ccload.Body{
			Model: ccload.ModelSonnet, MaxTokens: 1024,
			System:   []ccload.Block{{Type: "text", Text: ccload.ClaudeCodeIntro}},
			Messages: []ccload.Message{{Role: "user", Content: []ccload.Block{{Type: "text", Text: ccload.Text(r, 4000) + ccload.Marker(20)}}}},
		})
	}
	return out
}

// runOverhead compares one relay with Redis against the same relay without
// it: two sites of one Caddy process (so both share its runtime and the
// machine's state), with their own pools over the same keys and upstream,
// reached directly on loopback. One request in flight: steps that send one
// request to each site in alternating order. 32 in flight: pairs of
// closed-loop rounds in alternating order (local, redis; redis, local; …).
func runOverhead(e *env) bool {
	const run = "overhead"
	serial, pairs, round := *flagSerial, *flagPairs, *flagRound
	if serial == 0 {
		serial = map[bool]int{false: 3000, true: 1000}[*flagQuick]
	}
	if pairs == 0 {
		pairs = map[bool]int{false: 10, true: 5}[*flagQuick]
	}
	if round == 0 {
		round = map[bool]int{false: 8000, true: 3000}[*flagQuick]
	}
	conc := *flagConc
	pairs = max(1, pairs)
	fmt.Printf("\n== overhead: one relay with Redis against the same relay without, one Caddy process, loopback, no balancer ==\n")
	fmt.Printf("~4 KB non-streaming requests, limits configured (2 organizations, 5 keys; never binding), mock upstream without delays;\n")
	fmt.Printf("1 in flight: %d steps, each one request to each site in alternating order; %d in flight: %d pairs of %d-request rounds\n", serial, conc, pairs, round)
	rdb, err := e.redis()
	if err != nil {
		return e.couldNotRun(run, err)
	}
	orgs := []ccload.Org{
		{ID: "org-a", Keys: 3, RPM: 1_000_000_000, ITPM: 1_000_000_000_000, OTPM: 1_000_000_000_000},
		{ID: "org-b", Keys: 2, RPM: 1_000_000_000, ITPM: 1_000_000_000_000, OTPM: 1_000_000_000_000},
	}
	up := ccload.NewUpstream(orgs, 0)
	defer up.Close()
	e.seq++
	proxy := map[string]any{"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": up.Addr()}}}
	var ports [2]int
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return e.couldNotRun(run, err)
		}
	}
	pool := fmt.Sprintf("cluster-overhead-%d-%d", e.seq, time.Now().UnixNano())
	cfg, admin, err := caddyConfig(map[string][]any{
		"local": {ports[0], []any{relayHandler(pool+"-local", orgs, true, ""), proxy}},
		"redis": {ports[1], []any{relayHandler(pool+"-redis", orgs, true, rdb.URL()), proxy}},
	})
	if err != nil {
		return e.couldNotRun(run, err)
	}
	p, err := caddyproc.Start(e.caddy, e.dir, fmt.Sprintf("%s-%d", run, e.seq), cfg, admin, ports[:], nil)
	if err != nil {
		return e.couldNotRun(run, err)
	}
	defer p.Stop()
	local, shared := newSite("local", ports[0], conc), newSite("redis", ports[1], conc)
	bodies := overheadBodies(64)
	// Warm both: connections, the estimator, Redis's scripts.
	for i := range 200 {
		_, _ = local.send(bodies[i%len(bodies)])
		_, _ = shared.send(bodies[i%len(bodies)])
	}

	// One in flight.
	lat := map[string][]time.Duration{}
	var paired []time.Duration
	errs := map[string]int{}
	for i := range serial {
		order := []*site{local, shared}
		if i%2 == 1 {
			order = []*site{shared, local}
		}
		got := map[string]time.Duration{}
		for _, s := range order {
			d, err := s.send(bodies[i%len(bodies)])
			if err != nil {
				errs[s.name]++
				continue
			}
			got[s.name] = d
			lat[s.name] = append(lat[s.name], d)
		}
		if a, ok := got["local"]; ok {
			if b, ok := got["redis"]; ok {
				paired = append(paired, b-a)
			}
		}
	}
	p50l, p50r := ccload.Pct(lat["local"], 50), ccload.Pct(lat["redis"], 50)
	p99l, p99r := ccload.Pct(lat["local"], 99), ccload.Pct(lat["redis"], 99)
	added := p50r - p50l
	pairedMed := ccload.Pct(paired, 50)

	// Many in flight.
	stats0, _ := readRedisStats(rdb)
	var sentR int
	var ratios, rpsL, rpsR []float64
	for i := range pairs {
		order := []*site{local, shared}
		if i%2 == 1 {
			order = []*site{shared, local}
		}
		rps := map[string]float64{}
		for _, s := range order {
			r, n := closedRound(s, bodies, round, conc)
			errs[s.name] += n
			rps[s.name] = r
			if s == shared {
				sentR += round
			}
		}
		rpsL, rpsR = append(rpsL, rps["local"]), append(rpsR, rps["redis"])
		ratios = append(ratios, rps["redis"]/rps["local"])
	}
	tw := table()
	fmt.Fprintln(tw, "in flight\tmeasure\twithout Redis\twith Redis\tdifference\t")
	fmt.Fprintf(tw, "1\tp50 ms\t%.3f\t%.3f\t%+.3f (paired median %+.3f)\t\n", ms(p50l), ms(p50r), ms(added), ms(pairedMed))
	fmt.Fprintf(tw, "1\tp99 ms\t%.3f\t%.3f\t%+.3f\t\n", ms(p99l), ms(p99r), ms(p99r-p99l))
	lo, hi := slices.Min(ratios), slices.Max(ratios)
	fmt.Fprintf(tw, "%d\treq/s (median of %d rounds)\t%.0f\t%.0f\t%.3fx [%.3f … %.3f]\t\n", conc, pairs, median(rpsL), median(rpsR), median(ratios), lo, hi)
	tw.Flush()
	if stats1, err := readRedisStats(rdb); err == nil {
		calls0, usec0 := stats0.scripts()
		calls1, usec1 := stats1.scripts()
		fmt.Printf("Redis during the %d-in-flight rounds: %.2f scripts (EVALSHA/EVAL) run, %.0f µs of redis-server time in them, per request\n"+
			"with Redis (INFO commandstats; the relay's heartbeat included)\n", conc, float64(calls1-calls0)/float64(max(sentR, 1)), float64(usec1-usec0)/float64(max(sentR, 1)))
		perRequest(stats0, stats1, sentR)
	}
	fmt.Printf("errors: without Redis %d, with Redis %d\n", errs["local"], errs["redis"])
	ok := added <= 200*time.Microsecond && median(ratios) >= 0.85 && errs["local"]+errs["redis"] == 0
	fmt.Printf("target: added p50 at 1 in flight <= 0.2 ms: %+.3f ms %s; throughput at %d in flight >= 0.85x: %.3fx %s\n",
		ms(added), check(added <= 200*time.Microsecond), conc, median(ratios), check(median(ratios) >= 0.85))
	return ok
}

// closedRound sends n requests to s from conc workers, each sending its next
// as soon as the last is answered; it returns answered requests per second
// and the errors.
func closedRound(s *site, bodies [][]byte, n, conc int) (float64, int) {
	var next, errs atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				if _, err := s.send(bodies[i%int64(len(bodies))]); err != nil {
					errs.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return float64(n-int(errs.Load())) / time.Since(t0).Seconds(), int(errs.Load())
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// redisStats is what redis-server reports of its work: per command the
// calls and microseconds (INFO commandstats; the commands a script calls
// count there too), and the CPU time of the whole process (INFO cpu: user +
// system, which includes reading and writing the connections).
type redisStats struct {
	calls, usec map[string]int64
	cpu         float64 // seconds
}

func readRedisStats(rdb *redistest.Server) (redisStats, error) {
	st := redisStats{calls: map[string]int64{}, usec: map[string]int64{}}
	info, err := rdb.Do("INFO", "commandstats")
	if err != nil {
		return st, err
	}
	for _, line := range strings.Split(info, "\n") {
		name, fields, ok := strings.Cut(strings.TrimSpace(line), ":")
		cmd, isCmd := strings.CutPrefix(name, "cmdstat_")
		if !ok || !isCmd {
			continue
		}
		for _, f := range strings.Split(fields, ",") {
			k, v, _ := strings.Cut(f, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "calls":
				st.calls[cmd] += n
			case "usec":
				st.usec[cmd] += n
			}
		}
	}
	info, err = rdb.Do("INFO", "cpu")
	if err != nil {
		return st, err
	}
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, _ := strconv.ParseFloat(v, 64)
			st.cpu += f
		}
	}
	return st, nil
}

// scripts is the scripts run (EVALSHA and EVAL) and their microseconds.
func (st redisStats) scripts() (calls, usec int64) {
	return st.calls["evalsha"] + st.calls["eval"], st.usec["evalsha"] + st.usec["eval"]
}

// perRequest prints, per request sent, what redis-server did between a
// and b: its CPU, and every command's calls and microseconds.
func perRequest(a, b redisStats, n int) {
	d := float64(max(n, 1))
	fmt.Printf("redis-server CPU (INFO cpu, user + sys): %.0f µs per request; per command, calls / µs per request:", (b.cpu-a.cpu)*1e6/d)
	cmds := make([]string, 0, len(b.calls))
	for c := range b.calls {
		if b.calls[c] > a.calls[c] {
			cmds = append(cmds, c)
		}
	}
	slices.Sort(cmds)
	for _, c := range cmds {
		fmt.Printf(" %s %.2f / %.1f", c, float64(b.calls[c]-a.calls[c])/d, float64(b.usec[c]-a.usec[c])/d)
	}
	fmt.Println()
}
