package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/cc-relay/caddy-cc-relay/bench/internal/ccload"
	"github.com/cc-relay/caddy-cc-relay/internal/redistest"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// phase is a stretch of the outage run between two events.
type phase struct {
	name     string
	from, to time.Time
}

// runOutage drives the quota run's load (limits configured) through the
// shared cluster while redis-server is killed and restarted empty, then
// stalled with SIGSTOP and continued, and counts per phase what the clients
// and the upstream saw.
func runOutage(e *env) bool {
	const run = "outage"
	d := *flagDuration
	gap := max(3*time.Second, d/12)
	killAt, stopAt := d/4, 3*d/5
	orgs := quotaOrgs
	workers, _ := closedLoopWorkers(orgs, d)
	fmt.Printf("\n== outage: %d relays sharing one Redis behind a round-robin balancer, limits configured, %s ==\n", *flagRelays, d)
	fmt.Printf("redis-server killed at %s and restarted empty %s later; stalled (SIGSTOP) at %s and continued (SIGCONT) %s later;\n",
		killAt, gap, stopAt, gap)
	fmt.Printf("load: the quota run's, %d closed-loop clients (%.1fx what the limits admit)\n", workers, *flagFactor)
	rdb, err := e.redis()
	if err != nil {
		return e.couldNotRun(run, err)
	}
	c, err := e.startCluster(clusterSpec{run: run, orgs: orgs, limits: true, redis: true})
	if err != nil {
		return e.couldNotRun(run, err)
	}
	var phases []phase
	var modeLog []string
	lr := drive(c, run, func(ctx context.Context, cl *ccload.Client, t0, end time.Time) {
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			phases = outageEvents(ctx, rdb, t0, end, killAt, stopAt, gap)
		}()
		go func() {
			defer wg.Done()
			modeLog = watchModes(ctx, c, t0, end)
		}()
		closedLoop(ctx, cl, workers, end)
		wg.Wait()
	})
	c.stop()

	recs := c.up.Mock.Stats().Requests
	tw := table()
	_, itpm, _ := ccload.OrgLimits(orgs)
	fmt.Fprintln(tw, "phase\tfrom s\tto s\tclient reqs\tok\tfailed\trelay 429s\tupstream 429s to client\tupstream reqs\tupstream 429s\tinput admitted / refill\t")
	var failed int
	var allReqs, allLim int
	for _, p := range phases {
		var rs []*ccload.Result
		for _, r := range lr.results {
			if !r.Sent.Before(p.from) && r.Sent.Before(p.to) {
				rs = append(rs, r)
			}
		}
		t := ccload.Tally(rs)
		var ureq, ulim int
		var input int64 // main-model input + cache creation the upstream accepted
		for _, r := range recs {
			if r.Path == "/v1/messages" && !r.Time.Before(p.from) && r.Time.Before(p.to) {
				ureq++
				switch {
				case r.Status == http.StatusTooManyRequests:
					ulim++
				case r.Status == http.StatusOK && keypool.ModelFamily(r.Model) == "sonnet":
					input += r.InputTokens + r.CacheCreationInputTokens
				}
			}
		}
		// What the phase's refill (limit/60 per second) would admit; the
		// first phase also spends the buckets' initial burst.
		to := p.to
		if end := lr.t0.Add(lr.span); end.Before(to) {
			to = end
		}
		refill := float64(itpm) / 60 * to.Sub(p.from).Seconds()
		failed += t.Errs
		allReqs += ureq
		allLim += ulim
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%d\t%d\t%d\t%d\t%d\t%d\t%d (%.2f%%)\t%.0f%%\t\n", p.name, p.from.Sub(lr.t0).Seconds(), p.to.Sub(lr.t0).Seconds(),
			t.Reqs, t.OK, t.Errs, t.Relay429, t.Up429, ureq, ulim, 100*float64(ulim)/math.Max(1, float64(ureq)), 100*float64(input)/math.Max(1, refill))
	}
	t := ccload.Tally(lr.results)
	ureq, ulim := lr.upstreamTotals()
	fmt.Fprintf(tw, "whole run\t0\t%.1f\t%d\t%d\t%d\t%d\t%d\t%d\t%d (%.2f%%)\t%.0f%%\t\n", lr.span.Seconds(), t.Reqs, t.OK, t.Errs, t.Relay429, t.Up429,
		ureq, ulim, 100*float64(ulim)/math.Max(1, float64(ureq)), 100*float64(lr.class("sonnet").Charged)/(float64(itpm)/60*lr.span.Seconds()))
	tw.Flush()
	fmt.Println("(requests by the phase they were sent in, upstream requests by the phase they arrived in; failed: transport errors")
	fmt.Println(" and answers other than 200/429/529 after the client's retries; input admitted / refill: main-model input tokens the")
	fmt.Println(" upstream accepted in the phase over what the input-token limits refill in it (the first phase also has the initial burst))")
	for _, l := range modeLog {
		fmt.Println(l)
	}
	if *flagVerbose {
		fmt.Printf("relay metrics (summed): %v\n", lr.metrics)
	}
	limPct := float64(ulim) / math.Max(1, float64(ureq))
	ok := t.Errs == 0 && limPct <= 0.03
	fmt.Printf("target: no failed request: %d %s; upstream 429s <= 3%% through the outage: %.2f%% %s\n", t.Errs, check(t.Errs == 0), 100*limPct, check(limPct <= 0.03))
	return ok
}

// outageEvents kills, restarts, stalls and continues rdb at their times
// from t0 and returns the phases between the events, up to end.
func outageEvents(ctx context.Context, rdb *redistest.Server, t0, end time.Time, killAt, stopAt, gap time.Duration) []phase {
	events := []struct {
		at   time.Duration
		name string // the phase that starts with it
		do   func()
	}{
		{killAt, "redis killed", rdb.Kill},
		{killAt + gap, "restarted empty", rdb.Restart},
		{stopAt, "redis stalled", rdb.Pause},
		{stopAt + gap, "continued", rdb.Resume},
	}
	ps := []phase{{name: "before", from: t0}}
	for _, ev := range events {
		if !ccload.SleepUntil(ctx, t0.Add(ev.at)) {
			rdb.Resume() // never leave it stalled
			break
		}
		ev.do()
		at := time.Now()
		ps[len(ps)-1].to = at
		ps = append(ps, phase{name: ev.name, from: at})
	}
	ps[len(ps)-1].to = end.Add(30 * time.Second)
	return ps
}

// watchModes polls the relays' modes (when the admin API shows them) and
// returns their changes, timed from t0.
func watchModes(ctx context.Context, c *cluster, t0, end time.Time) []string {
	var log []string
	last := make([]string, len(c.relays))
	for next := time.Now(); next.Before(end) && ctx.Err() == nil; next = next.Add(250 * time.Millisecond) {
		for i, m := range c.modes() {
			if m != last[i] {
				log = append(log, fmt.Sprintf("  %5.1fs relay%d mode %q -> %q", time.Since(t0).Seconds(), i+1, last[i], m))
				last[i] = m
			}
		}
		if !ccload.SleepUntil(ctx, next.Add(250*time.Millisecond)) {
			break
		}
	}
	if len(log) > 0 {
		log = append([]string{"relay modes (admin API, polled every 250 ms):"}, log...)
	}
	return log
}
