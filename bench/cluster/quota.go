package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/cc-relay/caddy-cc-relay/bench/internal/ccload"
	"github.com/cc-relay/caddy-cc-relay/internal/mockanthropic"
)

// quotaOrgs are the two organizations of the quota, learned and outage
// runs: the limits of bench/quota's quota scenario, spread over more keys.
var quotaOrgs = []ccload.Org{
	{ID: "org-a", Keys: 3, RPM: 300, ITPM: 300_000, OTPM: 60_000},
	{ID: "org-b", Keys: 2, RPM: 150, ITPM: 150_000, OTPM: 30_000},
}

// streamShare is the share of ccload.QuotaRequest's main-model requests
// that stream.
const streamShare = 0.8

// closedLoopWorkers is how many clients, each sending its next request as
// soon as the last one is answered, offer -factor times the input tokens
// the organizations admit over d (buckets start full) when nothing is
// refused: a request takes about its stream's 8 deltas.
func closedLoopWorkers(orgs []ccload.Org, d time.Duration) (int, float64) {
	_, itpm, _ := ccload.OrgLimits(orgs)
	sonnetPerSec := ccload.Capacity(itpm, d) / d.Seconds() / ccload.MeanSonnetTokens(*flagSeed, *flagOutMean)
	latency := streamShare*8*flagDeltaDelay.Seconds() + 0.01
	w := *flagFactor * sonnetPerSec / ccload.SonnetShare * latency
	return max(1, int(math.Ceil(w))), sonnetPerSec / ccload.SonnetShare
}

// closedLoop runs workers clients until end, each sending quotaRequests one
// after another (each retried by the client as Claude Code would); a client
// whose request could not be retried before the end stops.
func closedLoop(ctx context.Context, cl *ccload.Client, workers int, end time.Time) {
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bodies := rand.New(rand.NewPCG(*flagSeed, uint64(w)+7))
			jitter := rand.New(rand.NewPCG(*flagSeed, uint64(w)+1000))
			for time.Now().Before(end) && ctx.Err() == nil {
				// Abandoned: its retry would start after the end, and
				// so would the next request's.
				res := cl.Do(ctx, ccload.QuotaRequest(bodies, *flagOutMean), jitter)
				if res.Abandon {
					return
				}
				// A failure came at once: pause, as a user would, rather
				// than fail thousands of requests a second.
				if res.Status != http.StatusOK && res.Status != http.StatusTooManyRequests && !ccload.SleepUntil(ctx, time.Now().Add(250*time.Millisecond)) {
					return
				}
			}
		}()
	}
	wg.Wait()
}

// runQuota is the quota run (limits configured) or the learned run (no
// limits configured).
func runQuota(e *env, limits bool) bool {
	run, what := "quota", "limits configured"
	minUse, max429 := 0.95, 0.01
	if !limits {
		run, what = "learned", "no limits configured: learned from response headers"
		minUse, max429 = 0.90, 0.03
	}
	d := *flagDuration
	orgs := quotaOrgs
	rpm, itpm, otpm := ccload.OrgLimits(orgs)
	workers, admitted := closedLoopWorkers(orgs, d)
	fmt.Printf("\n== %s: %s behind a round-robin balancer, %s, %s ==\n", run, sharing(), what, d)
	fmt.Printf("organizations (limits per model family): org-a %d keys %d RPM / %d ITPM / %d OTPM, org-b %d keys %d / %d / %d; aggregate %d / %d / %d\n",
		orgs[0].Keys, orgs[0].RPM, orgs[0].ITPM, orgs[0].OTPM, orgs[1].Keys, orgs[1].RPM, orgs[1].ITPM, orgs[1].OTPM, rpm, itpm, otpm)
	fmt.Printf("load: %d closed-loop clients (%.1fx the %.2f req/s the input-token limits admit over the run, at ~%.2f s a request unrefused);\n"+
		"      bench/quota's mix: 85%% %s 1-40 KB (80%% streamed), 15%% %s; a 429 is retried after its Retry-After (<= 20 s), 10 attempts at most\n",
		workers, *flagFactor, admitted, streamShare*8*flagDeltaDelay.Seconds(), ccload.ModelSonnet, ccload.ModelHaiku)
	c, err := e.startCluster(clusterSpec{run: run, orgs: orgs, limits: limits, redis: *flagRedis})
	if err != nil {
		return e.couldNotRun(run, err)
	}
	lr := drive(c, run, func(ctx context.Context, cl *ccload.Client, _, end time.Time) {
		closedLoop(ctx, cl, workers, end)
	})
	modes := c.modes()
	c.stop()

	t := ccload.Tally(lr.results)
	ureq, ulim := lr.upstreamTotals()
	s := lr.class("sonnet")
	inUse := float64(s.Charged) / ccload.Capacity(itpm, lr.span)
	outUse := float64(s.Output) / ccload.Capacity(otpm, lr.span)
	reqUse := float64(s.Accepted) / ccload.Capacity(rpm, lr.span)
	limPct := float64(ulim) / math.Max(1, float64(ureq))
	fmt.Printf("\ncapacity over the run = limit/60 x seconds + limit (buckets start full), per model family; span %.1fs\n", lr.span.Seconds())
	tw := table()
	fmt.Fprintln(tw, "relays\tclients\tclient reqs\tok\trelay 429s\tupstream 429s to client\tgave up\tcut at end\tfailed\tupstream reqs\tupstream 429s\tinput used\toutput used\trequests used\t")
	fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.2f%%\t%.1f%%\t%.1f%%\t%.1f%%\t\n", sharing(), workers, t.Reqs, t.OK, t.Relay429, t.Up429,
		t.GaveUp, t.Abandoned, t.Errs, ureq, 100*limPct, 100*inUse, 100*outUse, 100*reqUse)
	tw.Flush()
	fmt.Println("(input/output/requests used: main-model family (sonnet) upstream-accepted input + cache creation, output and requests as % of")
	fmt.Println(" capacity; relay 429s: answers a relay gave itself without contacting the upstream; upstream 429s to client: upstream 429s")
	fmt.Println(" no relay could retry elsewhere; failed: transport errors and answers other than 200/429/529)")
	h := lr.class("haiku")
	fmt.Printf("haiku: %d accepted, %d input, %d output, %d upstream 429s; upstream 429s by the limit they name: %v\n",
		h.Accepted, h.Charged, h.Output, h.Limited, c.up.Limited())
	if at := limitedAt(c.up.Mock.Stats().Requests, lr.t0); at != "" {
		fmt.Printf("upstream 429s at (s from the start): %s\n", at)
	}
	printModes(modes)
	if *flagVerbose {
		fmt.Printf("relay metrics (summed): %v\n", lr.metrics)
	}
	ok := inUse >= minUse && limPct <= max429
	fmt.Printf("target (%s): input-token limit used >= %.0f%%: %.1f%% %s; upstream 429s <= %.0f%%: %.2f%% %s\n", run,
		100*minUse, 100*inUse, check(inUse >= minUse), 100*max429, 100*limPct, check(limPct <= max429))
	if !*flagRedis {
		fmt.Println("(independent relays: not held to the targets; this is the baseline the shared pool improves on)")
		return true
	}
	return ok
}

// printModes prints the relays' shared-state modes where the admin API
// shows them.
func printModes(modes []string) {
	shown := false
	for _, m := range modes {
		shown = shown || m != ""
	}
	if shown {
		fmt.Printf("relay modes at the end (admin API): %v\n", modes)
	}
}

// limitedAt lists when the upstream answered 429, in seconds from t0 (at
// most 40 of them).
func limitedAt(recs []mockanthropic.Record, t0 time.Time) string {
	var b strings.Builder
	n := 0
	for _, r := range recs {
		if r.Status != http.StatusTooManyRequests {
			continue
		}
		if n++; n > 40 {
			b.WriteString(" …")
			break
		}
		fmt.Fprintf(&b, " %.1f", r.Time.Sub(t0).Seconds())
	}
	return strings.TrimSpace(b.String())
}
