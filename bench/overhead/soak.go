package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cc-relay/caddy-cc-relay/caddymodule"
	"github.com/cc-relay/caddy-cc-relay/internal/mockanthropic"
)

type soakSnap struct {
	at         time.Duration
	goroutines int
	connG      int // goroutines of client or upstream connections
	moduleG    int // goroutines with a cc-relay frame on their stack
	rssKB      int64
	heapAlloc  uint64 // after a forced GC (for baseline/after), else live
	heapInuse  uint64
	stackInuse uint64
	requests   int64
	inFlight   int // sum of in_flight over the relay's admin /cc_relay/pools; -1 unknown
}

type soakResult struct {
	duration               time.Duration
	workers                int
	requests               int64
	outcomes               map[string]int64
	faults                 map[string]int
	baseline, early, after soakSnap
	samples                []soakSnap
	settleTime             time.Duration
	upstreamInFlight       int
	upstream               mockanthropic.Counters
	crashed                bool
	leakStacks             string
}

// classifyGoroutines counts connection goroutines and module goroutines in
// a debug=1 goroutine dump.
func classifyGoroutines(dump string) (conn, module int, moduleStacks string) {
	var sb strings.Builder
	for _, rec := range strings.Split(dump, "\n\n") {
		var n int
		if _, err := fmt.Sscanf(rec, "%d @", &n); err != nil {
			continue
		}
		switch {
		case strings.Contains(rec, modulePath):
			module += n
			sb.WriteString(rec + "\n\n")
		case strings.Contains(rec, "net/http.(*persistConn)") || strings.Contains(rec, "net/http.(*conn).serve") ||
			strings.Contains(rec, "net/http.(*connReader).backgroundRead"):
			conn += n
		}
	}
	return conn, module, sb.String()
}

func runSoak(o *options, rep *report) error {
	orgs := []mockanthropic.Org{
		{ID: "org-tight", RPM: 300, ITPM: 2_000_000, OTPM: 40_000},
		{ID: "org-mid", RPM: 3000, ITPM: 20_000_000, OTPM: 400_000},
		{ID: "org-big", RPM: 100_000, ITPM: 400_000_000, OTPM: 8_000_000},
		{ID: "org-free"},
	}
	keys := map[string]string{}
	var specs []map[string]any
	for i := 0; i < 8; i++ {
		org := orgs[i/2]
		secret := benchKeySecret(100 + i)
		keys[secret] = org.ID
		spec := map[string]any{"key": secret, "name": fmt.Sprintf("soak-%d-%s", i, org.ID)}
		if i%2 == 0 && org.RPM > 0 { // half the keys configured, half learned from headers
			spec["rpm"], spec["itpm"], spec["otpm"], spec["org"] = org.RPM, org.ITPM, org.OTPM, org.ID
		}
		specs = append(specs, spec)
	}
	mock := mockanthropic.New(mockanthropic.Config{Orgs: orgs, Keys: keys, StreamDeltas: 8, DeltaDelay: 2 * time.Millisecond, MaxRecords: 1000})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	usrv := &http.Server{Handler: mock}
	go func() { _ = usrv.Serve(ln) }()
	defer usrv.Close()

	var ports [2]int
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return err
		}
	}
	cfg := siteConfig{upstream: ln.Addr().String(), portB: ports[0], admin: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		strategy: o.strategy, keySpecs: specs,
		relayExtra: map[string]any{"pool": "soak", "max_wait": "300ms", "retry_overloaded": true}}
	p, err := startCaddy(o.caddy, o.out, "caddy-soak", cfg)
	if err != nil {
		return err
	}
	defer p.Stop()
	t := newTarget("B", cfg.portB, o.soakWorkers*2)
	sizes := []*bodySet{makeBodies(4<<10, 64, false), makeBodies(24<<10, 64, false), makeBodies(200<<10, 16, false)}
	streams := []*bodySet{makeBodies(4<<10, 64, true), makeBodies(24<<10, 64, true)}
	res := &soakResult{duration: o.soak, workers: o.soakWorkers, outcomes: map[string]int64{}, faults: map[string]int{}}
	var mu sync.Mutex
	count := func(k string) { mu.Lock(); res.outcomes[k]++; mu.Unlock() }

	one := func(rng *rand.Rand) {
		x := rng.Float64()
		var bs *bodySet
		stream, cut := false, time.Duration(0)
		switch {
		case x < 0.40:
			bs = sizes[0]
		case x < 0.50:
			bs = sizes[1]
		case x < 0.53:
			bs = sizes[2]
		default:
			stream = true
			bs = streams[rng.IntN(2)]
		}
		firstOnly := stream && rng.Float64() < 0.15 // disconnect right after the first event
		if rng.Float64() < 0.05 {
			cut = time.Duration(rng.IntN(20_000)) * time.Microsecond // disconnect at a random moment
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if cut > 0 {
			tm := time.AfterFunc(cut, cancel)
			defer tm.Stop()
		}
		i := rng.IntN(len(bs.bodies))
		req := t.request(ctx, bs.bodies[i], bs.sessions[i], "")
		resp, err := t.client.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				count("client disconnected before headers")
			} else {
				count("transport error")
			}
			return
		}
		defer resp.Body.Close()
		key := fmt.Sprintf("status %d", resp.StatusCode)
		if resp.StatusCode == 200 && stream {
			br := bufio.NewReader(resp.Body)
			_, err := readFirstEvent(&http.Response{Body: io.NopCloser(br)})
			if err == nil && firstOnly {
				cancel()
				count("stream: client left after first event")
				return
			}
			if err == nil {
				var body []byte
				body, err = io.ReadAll(br)
				if err == nil && strings.Contains(string(body), "event: error") {
					count("stream: upstream error event")
					return
				}
			}
			switch {
			case err == nil:
				count("stream: complete")
			case ctx.Err() != nil:
				count("stream: client disconnected mid-stream")
			case errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "reset") || strings.Contains(err.Error(), "EOF"):
				count("stream: cut upstream (truncated to client)")
			default:
				count("stream: read error")
			}
			return
		}
		_, err = io.Copy(io.Discard, resp.Body)
		if err != nil && ctx.Err() != nil {
			key += " (client left mid-body)"
		}
		count(key)
	}

	// Warm up, then the baseline.
	log.Printf("soak: warm-up")
	{
		rng := rand.New(rand.NewPCG(1, 2))
		for i := 0; i < 300; i++ {
			one(rng)
		}
	}
	snap := func(gc bool, start time.Time) soakSnap {
		s := soakSnap{at: time.Since(start)}
		if gc {
			_ = p.GC()
		}
		s.rssKB, _ = p.RSSKB()
		if ms, err := p.MemStats(); err == nil {
			s.heapAlloc, s.heapInuse, s.stackInuse = ms.HeapAlloc, ms.HeapInuse, ms.StackInuse
		}
		var dump string
		s.goroutines, dump, _ = p.Goroutines()
		s.connG, s.moduleG, _ = classifyGoroutines(dump)
		s.inFlight = poolInFlight(p)
		return s
	}
	t.tr.CloseIdleConnections()
	time.Sleep(2 * time.Second)
	res.baseline = snap(true, time.Now())
	res.outcomes = map[string]int64{}

	log.Printf("soak: %s with %d clients, faults every 5s", o.soak, o.soakWorkers)
	start := time.Now()
	deadline := start.Add(o.soak)
	var total atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < o.soakWorkers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			for i := 0; i < 100_000_000 && time.Now().Before(deadline); i++ {
				one(rng)
				total.Add(1)
			}
		}(w)
	}
	faultsDone := make(chan struct{})
	go func() {
		defer close(faultsDone)
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		sample := time.NewTicker(max(o.soak/20, 5*time.Second))
		defer sample.Stop()
		revoked := false
		for i := 0; ; {
			select {
			case <-p.Done():
				res.crashed = true
				return
			case <-sample.C:
				s := snap(false, start)
				s.requests = total.Load()
				res.samples = append(res.samples, s)
				continue
			case <-tick.C:
			}
			if time.Now().After(deadline) {
				return
			}
			now := time.Now()
			switch i % 6 {
			case 0:
				mock.Force429("org-mid", now.Add(3*time.Second))
				res.faults["Force429 org-mid 3s"]++
			case 1:
				mock.SetOverloaded(15)
				res.faults["SetOverloaded(15)"]++
			case 2:
				mock.SetStreamFault(mockanthropic.StreamCut, 10)
				res.faults["SetStreamFault(StreamCut, 10)"]++
			case 3:
				mock.SetStreamFault(mockanthropic.StreamReset, 10)
				res.faults["SetStreamFault(StreamReset, 10)"]++
			case 4:
				mock.SetStreamFault(mockanthropic.StreamErrorEvent, 10)
				res.faults["SetStreamFault(StreamErrorEvent, 10)"]++
			case 5:
				mock.Force529(now.Add(time.Second))
				res.faults["Force529 1s"]++
			}
			i++
			if !revoked && time.Since(start) > o.soak/4 {
				revoked = true
				mock.Revoke(benchKeySecret(107))
				res.faults["Revoke one key (→ 401, relay disables it)"]++
			}
		}
	}()
	wg.Wait()
	<-faultsDone
	res.requests = total.Load()
	mock.SetStreamFault(mockanthropic.StreamOK, 0)
	mock.SetOverloaded(0)
	log.Printf("soak: load done (%d requests); waiting for goroutines to return to baseline", res.requests)

	t.tr.CloseIdleConnections()
	settleStart := time.Now()
	for i := 0; i < 90; i++ {
		time.Sleep(2 * time.Second)
		res.after = snap(true, settleStart)
		if i == 0 {
			res.early = res.after
		}
		// Caddy keeps idle upstream connections up to 2 minutes; wait for
		// them too, so the totals can be compared with the baseline.
		if res.after.goroutines <= res.baseline.goroutines+2 && res.after.moduleG == 0 {
			break
		}
	}
	res.settleTime = time.Since(settleStart)
	_, dump, _ := p.Goroutines()
	_, _, res.leakStacks = classifyGoroutines(dump)
	st := mock.Stats()
	res.upstreamInFlight, res.upstream = st.InFlight, st.Total
	select {
	case <-p.Done():
		res.crashed = true
	default:
	}
	rep.soak = res
	return nil
}

func (s *soakResult) markdown(p func(string, ...any)) {
	p("## Soak (%s, %d clients, through B with internal/mockanthropic as upstream)\n\n", s.duration, s.workers)
	p("Mixed load: 40%% 4 KB, 10%% 24 KB, 3%% 200 KB non-streaming; 47%% streams (8 deltas, 2 ms apart), 15%% of which leave right after the first event; 5%% of all requests are cancelled at a random moment (0–20 ms). Keys: 8 in 4 organizations (one tight: 300 RPM / 40k OTPM), half with configured limits, half learning from headers; max_wait 300ms, retry_overloaded on. Faults every 5 s in turn: ")
	var fs []string
	for k, v := range s.faults {
		fs = append(fs, fmt.Sprintf("%s ×%d", k, v))
	}
	p("%s.\n\n", strings.Join(sortedStrings(fs), ", "))
	if s.crashed {
		p("**Caddy exited during the soak.**\n\n")
	}
	p("%d requests. Outcomes at the client:\n\n| outcome | count |\n|---|---|\n", s.requests)
	var ks []string
	for k := range s.outcomes {
		ks = append(ks, k)
	}
	for _, k := range sortedStrings(ks) {
		p("| %s | %d |\n", k, s.outcomes[k])
	}
	p("\nUpstream (mock) counters: accepted %d, 429 %d, 401 %d, 529 %d, invalid %d; in flight at the end: %d.\n\n",
		s.upstream.Accepted, s.upstream.RateLimited, s.upstream.Unauthorized, s.upstream.Overloaded, s.upstream.Invalid, s.upstreamInFlight)
	p("| when | goroutines | of which connections | with cc-relay frames | pool in_flight | RSS MB | heap alloc MB | heap inuse MB | stack inuse MB |\n|---|---|---|---|---|---|---|---|---|\n")
	row := func(name string, x soakSnap) {
		inf := "n/a"
		if x.inFlight >= 0 {
			inf = fmt.Sprint(x.inFlight)
		}
		p("| %s | %d | %d | %d | %s | %.1f | %.1f | %.1f | %.1f |\n", name, x.goroutines, x.connG, x.moduleG, inf, float64(x.rssKB)/1024,
			float64(x.heapAlloc)/(1<<20), float64(x.heapInuse)/(1<<20), float64(x.stackInuse)/(1<<20))
	}
	row("baseline (idle, after GC)", s.baseline)
	for _, x := range s.samples {
		row(fmt.Sprintf("during, t=%s (%d req)", x.at.Round(time.Second), x.requests), x)
	}
	row("after, idle 2s, after GC", s.early)
	row(fmt.Sprintf("after, idle %s, after GC", s.settleTime.Round(time.Second)), s.after)
	p("\n")
	if s.leakStacks != "" {
		p("Goroutines still holding cc-relay frames after the soak:\n\n```\n%s\n```\n\n", truncate(s.leakStacks, 4000))
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "\n…"
	}
	return s
}

func sortedStrings(v []string) []string {
	out := append([]string(nil), v...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// poolInFlight sums in_flight over the relay's admin API answer; -1 when
// the API is not there.
func poolInFlight(p *caddyProc) int {
	b, err := p.Get("/cc_relay/pools")
	if err != nil {
		return -1
	}
	var pools []caddymodule.PoolStatus
	if json.Unmarshal(b, &pools) != nil {
		return -1
	}
	sum := 0
	for _, ps := range pools {
		for _, k := range ps.Keys {
			sum += k.InFlight
		}
	}
	return sum
}
