package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cc-relay/caddy-cc-relay/bench/internal/ccload"
)

// ---------------------------------------------------------------- fairness

// The fairness scenario (issue 14, item 2): one organization whose limits
// bind, a relay with max_wait, a greedy client keeping many requests in
// flight and a light one sending paced requests well under half the pool.
// Variants, side by side on the same clock, each with its own upstream:
//
//   - fair: greedy and light are two clients of weight 1;
//   - fifo: the same two tokens under one client name. Tokens that share a
//     name are one client to the relay, so its wait queue sees a single
//     client and serves in arrival order: the first-come-first-served
//     baseline, reached through configuration alone;
//   - weighted: two closed loops of half the greedy's depth each, clients
//     of weight 2 and 1, to show the weights are honoured (a light client
//     never has enough waiting for its weight to show).

// fairRequest is a main-model streaming request of 2-4 KB (about 500-1000
// prompt tokens) with a short answer, so that requests are alike and the
// requests-per-minute limit is the one that binds.
func fairRequest(r *rand.Rand, session string) ccload.Request {
	out := ccload.ExpOut(r, 20, 100, 400)
	b := ccload.Body{
		Model: ccload.ModelSonnet, MaxTokens: 1024, Stream: true,
		System:   []ccload.Block{{Type: "text", Text: ccload.ClaudeCodeIntro}},
		Messages: []ccload.Message{{Role: "user", Content: []ccload.Block{{Type: "text", Text: ccload.Text(r, 2000+r.IntN(2000)) + ccload.Marker(out)}}}},
		Metadata: map[string]string{"user_id": ccload.UserID(r, session)},
	}
	return ccload.Request{Body: ccload.Encode(b), Model: ccload.ModelSonnet, Class: "sonnet", Stream: true, Out: out, Session: session}
}

// fairRole is one load generator of a fairness variant.
type fairRole struct {
	name     string  // the benchmark's name for it (greedy, light, ...)
	client   string  // the client_token name the relay sees
	weight   int     // the client's weight
	inFlight int     // closed loop with this many requests in flight; 0: paced
	rate     float64 // paced: requests per second, from the end of the warm-up
	cl       *ccload.Client
}

func (r *fairRole) token() string { return "bench-fair-token-" + r.name }

// upstreamOK counts the upstream's 200 answers to the role's attempts that
// arrived in [from, to).
func upstreamOK(u *ccload.Upstream, prefix string, from, to time.Time) int {
	n := 0
	for id, as := range u.Attempts() {
		if !strings.HasPrefix(id, prefix+"-") {
			continue
		}
		for _, a := range as {
			if a.Status == http.StatusOK && !a.At.Before(from) && a.At.Before(to) {
				n++
			}
		}
	}
	return n
}

// fairLatency is the time from a request's first attempt to the response
// headers of its last (the wait for admission, plus the upstream's first
// byte) of the ok requests sent in [from, to).
func fairLatency(rs []*ccload.Result, from, to time.Time) []time.Duration {
	var out []time.Duration
	for _, r := range rs {
		if r.OK() && !r.Sent.Before(from) && r.Sent.Before(to) {
			out = append(out, r.Headers.Sub(r.Sent))
		}
	}
	return out
}

// fairJudged says whether the run was long enough (twice the warm-up) for
// the fairness targets to be judged.
var fairJudged bool

func scenarioFairness() bool {
	d := *flagDuration
	warm := *flagFairWarmup
	fairJudged = d >= 2*warm
	if !fairJudged {
		warm = d / 4
	}
	rpm := *flagFairRPM
	interval := time.Minute / time.Duration(rpm)
	tokMean := 3000.0/4 + 60 // mean prompt: ~3000 B of text / 4 + the envelope
	itpm := int64(2 * float64(rpm) * tokMean / 1000 * 1000)
	otpm := int64(rpm * 400)
	orgs := []ccload.Org{{ID: "org-f", Keys: 2, RPM: rpm, ITPM: itpm, OTPM: otpm}}
	lightRate := *flagFairLight * float64(rpm) / 60
	depth := *flagFairInFlight
	fmt.Printf("\n== fairness (issue 14): one saturated organization, max_wait %s, %s (the first %s a warm-up, not measured) ==\n", *flagFairMaxWait, d, warm)
	fmt.Printf("limits: org-f (2 keys, the relay configured with the same) %d RPM / %d ITPM / %d OTPM: the requests limit binds;\n", rpm, itpm, otpm)
	fmt.Printf("admission interval 60s/RPM = %s (token-based: ~%.0f prompt tokens / (ITPM/60) = %s)\n", interval, tokMean,
		time.Duration(tokMean/float64(itpm)*float64(time.Minute)).Round(time.Millisecond))
	fmt.Printf("load: greedy = closed loop, %d in flight from the start; light = one request every %s (%.0f%% of the pool) after the warm-up;\n",
		depth, time.Duration(float64(time.Second)/lightRate).Round(time.Millisecond), 100**flagFairLight)
	fmt.Printf("      2-4 KB main-model streaming requests, output exp. mean 100 tokens, mock stream 8 deltas x %s\n", *flagFairDelta)

	roles := map[string][]*fairRole{
		"fair": {
			{name: "greedy", client: "greedy", weight: 1, inFlight: depth},
			{name: "light", client: "light", weight: 1, rate: lightRate},
		},
		"fifo": {
			{name: "greedy", client: "team", weight: 1, inFlight: depth},
			{name: "light", client: "team", weight: 1, rate: lightRate},
		},
		"weighted": {
			{name: "heavy-w2", client: "heavy-w2", weight: 2, inFlight: depth / 2},
			{name: "heavy-w1", client: "heavy-w1", weight: 1, inFlight: depth / 2},
		},
	}
	mk := func(name string) *variant {
		spec := relaySpec{strategy: "least_loaded", limits: true, maxWait: *flagFairMaxWait, up: ccload.NewUpstream(orgs, *flagFairDelta)}
		for _, r := range roles[name] {
			spec.clients = append(spec.clients, clientTokenSpec{token: r.token(), name: r.client, weight: r.weight})
		}
		return &variant{name: name, spec: spec}
	}
	vs := []*variant{mk("fair"), mk("fifo"), mk("weighted")}
	defer func() {
		for _, v := range vs {
			v.spec.up.Close()
		}
	}()
	var t0Mu sync.Mutex
	var start time.Time
	err := run("fairness", vs, d, func(ctx context.Context, v *variant, idx int, t0, end time.Time) {
		t0Mu.Lock()
		start = t0
		t0Mu.Unlock()
		var wg sync.WaitGroup
		for ri, r := range roles[v.name] {
			r.cl = ccload.NewClient(v.spec.port, fmt.Sprintf("fairness-%s-%s", v.name, r.name), end)
			r.cl.Token = r.token()
			if r.inFlight > 0 {
				for slot := range r.inFlight {
					wg.Go(func() {
						rng := rand.New(rand.NewPCG(*flagSeed, uint64(100*ri+slot)+2000))
						session := ccload.UUID(rng)
						for time.Now().Before(end) && ctx.Err() == nil {
							res := r.cl.Do(ctx, fairRequest(rng, session), rng)
							if !res.OK() && res.Status != http.StatusTooManyRequests && !ccload.SleepUntil(ctx, time.Now().Add(100*time.Millisecond)) {
								return
							}
						}
					})
				}
				continue
			}
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(*flagSeed, uint64(100*ri)+3000))
				session := ccload.UUID(rng)
				period := time.Duration(float64(time.Second) / r.rate)
				var inner sync.WaitGroup
				for i := 0; ; i++ {
					at := t0.Add(warm + time.Duration(i)*period)
					if !at.Before(end) || !ccload.SleepUntil(ctx, at) {
						break
					}
					req := fairRequest(rng, session)
					seed := uint64(i) + 4000
					inner.Go(func() { r.cl.Do(ctx, req, rand.New(rand.NewPCG(*flagSeed, seed))) })
				}
				inner.Wait()
			})
		}
		wg.Wait()
	})
	if err != nil {
		fmt.Println("fairness: ", err)
		runFailed = true
		return false
	}
	for _, v := range vs {
		for _, r := range roles[v.name] {
			r.cl.Close()
		}
	}
	from, to := start.Add(warm), start.Add(d)
	window := to.Sub(from)
	capWin := float64(rpm) * window.Seconds() / 60
	iv := func(x time.Duration) float64 { return float64(x) / float64(interval) }

	fmt.Printf("\nmeasured window: %s after the warm-up; pool capacity in it %.0f requests (RPM/60 x seconds)\n", window, capWin)
	tw := table()
	fmt.Fprintln(tw, "variant\tclient\trelay sees\tweight\tload\trequests\tok\trelay 429s\tupstream 429s to client\tadmitted in window\tper second\tshare of admitted\tlatency p50\tp90\tp99\tmax\tp50 / interval\t")
	ok := true
	var targets []string
	type summary struct {
		use      float64
		up429    int
		lightP50 time.Duration
	}
	sums := map[string]*summary{}
	for _, v := range vs {
		total := 0
		for _, r := range roles[v.name] {
			total += upstreamOK(v.spec.up, r.cl.Prefix(), from, to)
		}
		s := &summary{use: float64(total) / capWin}
		for _, n := range v.spec.up.Limited() {
			s.up429 += n
		}
		sums[v.name] = s
		for _, r := range roles[v.name] {
			rs := r.cl.All()
			t := ccload.Tally(rs)
			adm := upstreamOK(v.spec.up, r.cl.Prefix(), from, to)
			lat := fairLatency(rs, from, to)
			p50 := ccload.Pct(lat, 50)
			load := fmt.Sprintf("%d in flight", r.inFlight)
			if r.inFlight == 0 {
				load = fmt.Sprintf("%.2f req/s", r.rate)
				s.lightP50 = p50
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%.2f\t%.1f%%\t%.0f ms\t%.0f ms\t%.0f ms\t%.0f ms\t%.2f\t\n",
				v.name, r.name, r.client, r.weight, load, t.Reqs, t.OK, t.Relay429, t.Up429, adm, float64(adm)/window.Seconds(),
				100*float64(adm)/math.Max(1, float64(total)), ms(p50), ms(ccload.Pct(lat, 90)), ms(ccload.Pct(lat, 99)), ms(ccload.Pct(lat, 100)), iv(p50))
			if v.name == "fair" && r.name == "light" {
				allOK := t.Reqs > 0 && t.OK == t.Reqs && t.Relay429 == 0 && t.Up429 == 0
				medOK := iv(p50) <= 1.5
				ok = ok && allOK && medOK
				targets = append(targets,
					fmt.Sprintf("target (fair): light's requests all succeed (no 429 on the way): %d of %d ok, %d relay 429s, %d upstream 429s %s", t.OK, t.Reqs, t.Relay429, t.Up429, check(allOK)),
					fmt.Sprintf("target (fair): light's median latency about one admission interval (<= 1.5 x %s): %.0f ms = %.2f intervals %s", interval, ms(p50), iv(p50), check(medOK)))
			}
		}
	}
	tw.Flush()
	fmt.Println("(requests: logical client requests over the whole run, retries folded in; admitted in window: upstream 200s to the client's")
	fmt.Println(" requests arriving in the measured window; latency: first attempt sent to the response headers of the last, of the ok")
	fmt.Println(" requests sent in the window (light sends only then): the wait for admission plus the first byte; interval = 60s / RPM)")
	tw = table()
	fmt.Fprintln(tw, "variant\tpool use in window\tupstream 429s\t")
	for _, v := range vs {
		s := sums[v.name]
		fmt.Fprintf(tw, "%s\t%.1f%%\t%d\t\n", v.name, 100*s.use, s.up429)
	}
	tw.Flush()
	fair, fifo := sums["fair"], sums["fifo"]
	useOK := fair.use >= 0.95
	ok = ok && useOK
	fmt.Printf("light's median latency, fifo / fair: %.1fx (%.0f ms vs %.0f ms)\n", float64(fifo.lightP50)/math.Max(1, float64(fair.lightP50)), ms(fifo.lightP50), ms(fair.lightP50))
	w := roles["weighted"]
	a2 := upstreamOK(vs[2].spec.up, w[0].cl.Prefix(), from, to)
	a1 := upstreamOK(vs[2].spec.up, w[1].cl.Prefix(), from, to)
	ratio := float64(a2) / math.Max(1, float64(a1))
	wOK := ratio >= 1.8 && ratio <= 2.2
	ok = ok && wOK
	for _, t := range targets {
		fmt.Println(t)
	}
	fmt.Printf("target (fair): pool >= 95%% used in the window: %.1f%% %s\n", 100*fair.use, check(useOK))
	fmt.Printf("target (weighted): admitted weight-2 / weight-1 within 2 +- 10%%: %d / %d = %.2f %s\n", a2, a1, ratio, check(wOK))
	for _, v := range vs {
		if l := v.spec.up.Limited(); len(l) > 0 {
			fmt.Printf("upstream 429s of %s by the limit they name: %v; seconds from the start: %s\n", v.name, l, limitedAt(v.spec.up, start))
		}
	}
	if *flagVerbose {
		printKeys(vs)
	}
	if !fairJudged {
		fmt.Printf("(fairness targets not judged: the run is shorter than twice -fair-warmup, %s)\n", 2**flagFairWarmup)
		return true
	}
	return ok
}

// limitedAt lists when the upstream's 429s came, in seconds from t0.
func limitedAt(u *ccload.Upstream, t0 time.Time) string {
	var at []float64
	for _, as := range u.Attempts() {
		for _, a := range as {
			if a.Status == http.StatusTooManyRequests {
				at = append(at, a.At.Sub(t0).Seconds())
			}
		}
	}
	slices.Sort(at)
	var b strings.Builder
	for i, x := range at {
		if i == 20 {
			fmt.Fprintf(&b, " ... (%d)", len(at))
			break
		}
		fmt.Fprintf(&b, " %.2f", x)
	}
	return b.String()
}
