package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/cc-relay/caddy-cc-relay/bench/internal/ccload"
)

func table() *tabwriter.Writer {
	return tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
}

// openLoop issues quotaRequests at Poisson arrival times of the given rate
// (requests per second) until end; each is retried by its client as Claude
// Code would. Every variant with the same seed gets the same requests at the
// same offsets from t0.
func openLoop(ctx context.Context, v *variant, rate float64, t0, end time.Time) {
	seed := *flagSeed
	bodies := rand.New(rand.NewPCG(seed, 7))
	arrivals := rand.New(rand.NewPCG(seed, 8))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8192)
	next := t0
	for i := uint64(0); ; i++ {
		next = next.Add(time.Duration(arrivals.ExpFloat64() / rate * float64(time.Second)))
		if !next.Before(end) {
			break
		}
		req := ccload.QuotaRequest(bodies, *flagOutMean)
		if !ccload.SleepUntil(ctx, next) {
			break
		}
		select {
		case sem <- struct{}{}:
		default:
			continue // bounded: cannot happen at these rates
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			v.cl.Do(ctx, req, rand.New(rand.NewPCG(seed, i+1000)))
		}()
	}
	wg.Wait()
}

func upstreamTotals(v *variant) (reqs, limited int64) {
	for _, u := range v.use {
		reqs += u.Accepted + u.Limited + u.Other
		limited += u.Limited
	}
	return
}

func useOf(v *variant, class string) *ccload.ClassUse {
	if u := v.use[class]; u != nil {
		return u
	}
	return &ccload.ClassUse{}
}

func printEstimator(vs []*variant) {
	fmt.Println("\nInput-token estimator: mean absolute relative error of the prompt-token estimate from the body size")
	fmt.Println("(relay: GET /cc_relay/pools/<pool> estimator, an EWMA over its observations; replay: the same rule replayed")
	fmt.Println("by the benchmark over every answered request, 'calibrated' after 10 observations; 'reserve' is the error of")
	fmt.Println("the calibrated chargeable estimate, input + cache creation, that admission reserves)")
	tw := table()
	fmt.Fprintln(tw, "variant\tclass\tobs\ttokens/byte\trelay fixed 4 B/tok\trelay calibrated\treplay fixed\treplay calibrated\treplay reserve\t")
	for _, v := range vs {
		rep := estErrors(v.results)
		classes := []string{}
		for c := range rep {
			classes = append(classes, c)
		}
		sort.Strings(classes)
		for _, c := range classes {
			e := rep[c]
			relF, relC, tpb, obs := "n/a", "n/a", "n/a", fmt.Sprint(e.n)
			if v.pool != nil {
				if es, ok := v.pool.Estimator[c]; ok {
					relF, relC = fmt.Sprintf("%.1f%%", 100*es.ErrorFixedRatio), fmt.Sprintf("%.1f%%", 100*es.ErrorCalibrated)
					tpb, obs = fmt.Sprintf("%.4f", es.TokensPerByte), fmt.Sprint(es.Observations)
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%.1f%%\t%.1f%%\t%.1f%%\t\n", v.name, c, obs, tpb, relF, relC, 100*e.fixed, 100*e.calibrated, 100*e.charg)
		}
	}
	tw.Flush()
}

// ---------------------------------------------------------------- quota

func scenarioQuota() bool {
	d := *flagDuration
	orgs := []ccload.Org{
		{ID: "org-a", Keys: 2, RPM: 300, ITPM: 300_000, OTPM: 60_000},
		{ID: "org-b", Keys: 1, RPM: 150, ITPM: 150_000, OTPM: 30_000},
	}
	rpm, itpm, otpm := ccload.OrgLimits(orgs)
	tok := ccload.MeanSonnetTokens(*flagSeed, *flagOutMean)
	// Offered input tokens = factor x what the limits admit over the run.
	rate := *flagFactor * ccload.Capacity(itpm, d) / tok / d.Seconds() / ccload.SonnetShare
	fmt.Printf("\n== quota (issue 3): 3 keys in 2 organizations, %s, offered %.1fx the input-token capacity ==\n", d, *flagFactor)
	fmt.Printf("limits per model family: org-a (2 keys) %d RPM / %d ITPM / %d OTPM, org-b (1 key) %d / %d / %d; aggregate %d / %d / %d\n",
		orgs[0].RPM, orgs[0].ITPM, orgs[0].OTPM, orgs[1].RPM, orgs[1].ITPM, orgs[1].OTPM, rpm, itpm, otpm)
	fmt.Printf("load: Poisson arrivals at %.2f req/s: 85%% %s (1-40 KB bodies, mean ~%.0f prompt tokens, 80%% streamed, max_tokens 1024/8192/32000,\n"+
		"      output exp. mean %d), 15%% %s side requests (1-4 KB, 30%% streamed); a client retries a 429 after its Retry-After (<= 20 s), 10 attempts at most\n",
		rate, ccload.ModelSonnet, tok, *flagOutMean, ccload.ModelHaiku)
	mk := func(name, strategy string, limits bool) *variant {
		return &variant{name: name, spec: relaySpec{strategy: strategy, limits: limits, up: ccload.NewUpstream(orgs, *flagDeltaDelay)}}
	}
	vs := []*variant{
		mk("least_loaded+limits", "least_loaded", true),
		mk("round_robin,learned", "round_robin", false),
	}
	defer func() {
		for _, v := range vs {
			v.spec.up.Close()
		}
	}()
	err := run("quota", vs, d, func(ctx context.Context, v *variant, _ int, t0, end time.Time) {
		openLoop(ctx, v, rate, t0, end)
	})
	if err != nil {
		fmt.Println("quota: ", err)
		runFailed = true
		return false
	}

	fmt.Printf("\ncapacity over the run = limit/60 x seconds + limit (buckets start full), per model family; spans: ")
	for _, v := range vs {
		fmt.Printf("%s %.1fs  ", v.name, v.span.Seconds())
	}
	fmt.Println()
	tw := table()
	fmt.Fprintln(tw, "variant\tclient reqs\tok\trelay 429s\tupstream 429s to client\tgave up\tcut at end\terrors\tupstream reqs\tupstream 429s\tinput used\toutput used\trequests used\toffered input\t")
	ok := true
	for _, v := range vs {
		t := ccload.Tally(v.results)
		ureq, ulim := upstreamTotals(v)
		s := useOf(v, "sonnet")
		inUse := float64(s.Charged) / ccload.Capacity(itpm, v.span)
		outUse := float64(s.Output) / ccload.Capacity(otpm, v.span)
		reqUse := float64(s.Accepted) / ccload.Capacity(rpm, v.span)
		tpb := 0.25
		if rep := estErrors(v.results)["sonnet"]; rep.n > 0 && v.pool != nil {
			if es, ok := v.pool.Estimator["sonnet"]; ok && es.TokensPerByte > 0 {
				tpb = es.TokensPerByte
			}
		}
		offered := float64(t.SonnetBytes) * tpb / ccload.Capacity(itpm, v.span)
		limPct := 100 * float64(ulim) / math.Max(1, float64(ureq))
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.2f%%\t%.1f%%\t%.1f%%\t%.1f%%\t%.2fx\t\n",
			v.name, t.Reqs, t.OK, t.Relay429, t.Up429, t.GaveUp, t.Abandoned, t.Errs, ureq, limPct, 100*inUse, 100*outUse, 100*reqUse, offered)
		if v.spec.limits {
			ok = ok && inUse >= 0.95 && limPct <= 1
			defer fmt.Printf("target (%s): input-token limit used >= 95%%: %.1f%% %s; upstream 429s <= 1%%: %.2f%% %s\n",
				v.name, 100*inUse, check(inUse >= 0.95), limPct, check(limPct <= 1))
		}
	}
	tw.Flush()
	fmt.Println("(input/output/requests used: main-model family (sonnet) upstream-accepted input + cache creation, output and requests as % of capacity;")
	fmt.Println(" relay 429s: answers the relay gave itself, with Retry-After, without contacting the upstream; upstream 429s to client: upstream")
	fmt.Println(" 429s the relay could not retry elsewhere; gave up: requests still refused after 10 attempts; cut at end: still waiting when the run ended)")
	tw = table()
	fmt.Fprintln(tw, "variant\thaiku reqs accepted\thaiku input\thaiku output\thaiku 429s upstream\t")
	for _, v := range vs {
		h := useOf(v, "haiku")
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t\n", v.name, h.Accepted, h.Charged, h.Output, h.Limited)
	}
	tw.Flush()
	if *flagVerbose {
		printKeys(vs)
	}
	for _, v := range vs {
		fmt.Printf("upstream 429s of %s by the limit they name: %v\n", v.name, v.spec.up.Limited())
	}
	printEstimator(vs)
	return ok
}

func printKeys(vs []*variant) {
	tw := table()
	fmt.Fprintln(tw, "variant\tkey\torg\tstate\treason\trelay requests\trelay saw 429\t")
	for _, v := range vs {
		if v.pool == nil {
			continue
		}
		for _, k := range v.pool.Keys {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t\n", v.name, k.Name, k.Org, k.State, k.Reason, k.Totals.Requests, k.Totals.RateLimited)
		}
	}
	tw.Flush()
}

// ---------------------------------------------------------------- failover

func scenarioFailover() bool {
	d := *flagDuration
	orgs := []ccload.Org{
		{ID: "org-a", Keys: 1, RPM: 600, ITPM: 600_000, OTPM: 120_000},
		{ID: "org-b", Keys: 1, RPM: 600, ITPM: 600_000, OTPM: 120_000},
		{ID: "org-c", Keys: 1, RPM: 600, ITPM: 600_000, OTPM: 120_000},
	}
	_, itpm, _ := ccload.OrgLimits(orgs)
	tok := ccload.MeanSonnetTokens(*flagSeed, *flagOutMean)
	rate := *flagFailLoad * float64(itpm) / 60 / tok / ccload.SonnetShare
	outLen := min(30*time.Second, d/2)
	outStart := (d - outLen) / 2
	fmt.Printf("\n== failover (issue 4): 3 organizations, org-b answers 429 to everything from %s to %s ==\n", outStart, outStart+outLen)
	fmt.Printf("limits per organization and family: 600 RPM / 600000 ITPM / 120000 OTPM; load %.2f req/s (%.0f%% of the input-token limits), same mix as quota\n",
		rate, 100**flagFailLoad)
	fmt.Println("variants: outage = one Force429 with a retry-after counting down the whole outage; flapping = org-b's 429s say")
	fmt.Println("retry-after: 1 all through the outage (renewed every 250 ms), so the relay keeps probing it and retrying elsewhere")
	mk := func(name string) *variant {
		return &variant{name: name, spec: relaySpec{strategy: "least_loaded", limits: true, up: ccload.NewUpstream(orgs, *flagDeltaDelay)}}
	}
	vs := []*variant{mk("outage"), mk("flapping")}
	defer func() {
		for _, v := range vs {
			v.spec.up.Close()
		}
	}()
	err := run("failover", vs, d, func(ctx context.Context, v *variant, idx int, t0, end time.Time) {
		from, until := t0.Add(outStart), t0.Add(outStart+outLen)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !ccload.SleepUntil(ctx, from) {
				return
			}
			if v.name == "outage" {
				v.spec.up.Mock.Force429("org-b", until)
				return
			}
			for now := time.Now(); now.Before(until); now = time.Now() {
				v.spec.up.Mock.Force429("org-b", minTime(now.Add(time.Second), until))
				if !ccload.SleepUntil(ctx, now.Add(250*time.Millisecond)) {
					return
				}
			}
		}()
		openLoop(ctx, v, rate, t0, end)
		wg.Wait()
	})
	if err != nil {
		fmt.Println("failover: ", err)
		runFailed = true
		return false
	}
	tw := table()
	fmt.Fprintln(tw, "variant\tclient reqs\tok\tclient-visible 429s\tupstream reqs\tupstream 429s\trelay retries\tretries/request\tretried reqs\trelay retries_total\t")
	type lat struct{ first, retried, gap []time.Duration }
	lats := map[string]*lat{}
	ok := true
	for _, v := range vs {
		t := ccload.Tally(v.results)
		ureq, ulim := upstreamTotals(v)
		l := &lat{}
		lats[v.name] = l
		retried := 0
		for _, r := range v.results {
			if !r.OK() {
				continue
			}
			atts := v.spec.up.AttemptsOf(r.ID)
			switch {
			case len(atts) == 1:
				l.first = append(l.first, r.TTFB)
			case len(atts) > 1:
				retried++
				l.retried = append(l.retried, r.TTFB)
				l.gap = append(l.gap, atts[len(atts)-1].At.Sub(atts[0].At))
			}
		}
		var seen, ids int
		for _, a := range v.spec.up.Attempts() {
			seen += len(a)
			ids++
		}
		retries := seen - ids
		visible := t.Relay429 + t.Up429
		ok = ok && visible == 0
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%.3f\t%d\t%.0f\t\n", v.name, t.Reqs, t.OK, visible, ureq, ulim, retries,
			float64(retries)/math.Max(1, float64(t.Reqs)), retried, v.metrics["retries_total"])
		defer fmt.Printf("target (%s): 0 client-visible 429s while capacity remains: %d %s\n", v.name, visible, check(visible == 0))
	}
	tw.Flush()
	fmt.Println("(relay retries: upstream requests beyond the first for the same client attempt, counted at the upstream by the")
	fmt.Println(" X-Bench-Id header each client attempt carries; retries_total: the relay's own metric, for comparison)")
	fmt.Println("\nlatency to response headers at the client (ms); gap = from the first to the last upstream request of a retried attempt,")
	fmt.Println("timed at the upstream: the retry's own cost (the 429 round trip and the relay choosing another key)")
	tw = table()
	fmt.Fprintln(tw, "variant\tfirst-time n\tp50\tp99\tretried n\tp50\tp99\tadded p50\tadded p99\tgap p50\tgap p99\t")
	for _, v := range vs {
		l := lats[v.name]
		f50, f99, r50, r99 := ccload.Pct(l.first, 50), ccload.Pct(l.first, 99), ccload.Pct(l.retried, 50), ccload.Pct(l.retried, 99)
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t\n", v.name, len(l.first), ms(f50), ms(f99),
			len(l.retried), ms(r50), ms(r99), ms(r50-f50), ms(r99-f99), ms(ccload.Pct(l.gap, 50)), ms(ccload.Pct(l.gap, 99)))
	}
	tw.Flush()
	if *flagVerbose {
		printKeys(vs)
	}
	return ok
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// ---------------------------------------------------------------- affinity

func cacheShare(v *variant) float64 { return ccload.CacheShare(v.use) }

func scenarioAffinity() bool {
	d := *flagDuration
	n := *flagSessions
	four := func(rpm, itpm, otpm int64) []ccload.Org {
		var o []ccload.Org
		for _, id := range []string{"org-a", "org-b", "org-c", "org-d"} {
			o = append(o, ccload.Org{ID: id, Keys: 1, RPM: rpm, ITPM: itpm, OTPM: otpm})
		}
		return o
	}
	const hiRPM, hiITPM, hiOTPM = 100_000, 50_000_000, 10_000_000
	fmt.Printf("\n== affinity (issue 5): %d concurrent Claude Code sessions, 4 keys in 4 organizations, %s per phase ==\n", n, d)
	fmt.Println("sessions: tools (16 definitions) + system prompt with cache_control (~11 KB), history growing by an assistant turn")
	fmt.Println("(text + tool_use) and a 0.3-5 KB tool_result per request, cache_control on the last message, X-Claude-Code-Session-Id;")
	fmt.Println("0.3-2 s tool time between turns, 15-40 turns per conversation, a Haiku side request on 10% of turns")

	// Phase 1: limits that never bind.
	mk := func(name string, orgs []ccload.Org, stickyOff bool) *variant {
		return &variant{name: name, spec: relaySpec{strategy: "least_loaded", limits: true, stickyOff: stickyOff, up: ccload.NewUpstream(orgs, *flagDeltaDelay)}}
	}
	stats := map[string]*ccload.SessionStats{}
	var statsMu sync.Mutex
	load := func(ctx context.Context, v *variant, _ int, _, end time.Time) {
		s := &ccload.SessionStats{}
		statsMu.Lock()
		stats[v.name] = s
		statsMu.Unlock()
		ccload.Sessions(ctx, v.cl, n, *flagSeed, end, s)
	}
	fit := []*variant{
		mk("single-key", []ccload.Org{{ID: "org-s", Keys: 1, RPM: hiRPM, ITPM: hiITPM, OTPM: hiOTPM}}, false),
		mk("affinity", four(hiRPM, hiITPM, hiOTPM), false),
		mk("no-affinity", four(hiRPM, hiITPM, hiOTPM), true),
	}
	defer func() {
		for _, v := range fit {
			v.spec.up.Close()
		}
	}()
	fmt.Printf("\n-- phase 1: limits that never bind (%d RPM / %d ITPM / %d OTPM per organization) --\n", hiRPM, hiITPM, hiOTPM)
	if err := run("affinity-fit", fit, d, load); err != nil {
		fmt.Println("affinity: ", err)
		runFailed = true
		return false
	}
	single := cacheShare(fit[0])
	printAffinity(fit, stats, single, nil)
	aff := cacheShare(fit[1])
	ok := aff >= 0.9*single
	affinityTarget := fmt.Sprintf("target: cache-read share with affinity >= 90%% of a single key's: %.1f%% vs %.1f%% (ratio %.3f) %s",
		100*aff, 100*single, aff/math.Max(single, 1e-9), check(ok))
	fmt.Println(affinityTarget)

	// Phase 2: limits at half of what the affinity variant used in phase 1
	// over a run (capacity counts the initial burst).
	base := useOf(fit[1], "sonnet")
	scale := 8 * (1 + fit[1].span.Seconds()/60)
	rpm := max(1, int64(float64(base.Accepted)/scale))
	itpm := max(1, int64(float64(base.Charged)/scale))
	otpm := max(1, int64(float64(base.Output)/scale))
	over := []*variant{
		mk("affinity", four(rpm, itpm, otpm), false),
		mk("no-affinity", four(rpm, itpm, otpm), true),
	}
	defer func() {
		for _, v := range over {
			v.spec.up.Close()
		}
	}()
	fmt.Printf("\n-- phase 2: oversubscribed 2x: %d RPM / %d ITPM / %d OTPM per organization (half of what phase 1's affinity variant used) --\n", rpm, itpm, otpm)
	stats = map[string]*ccload.SessionStats{}
	if err := run("affinity-over", over, d, load); err != nil {
		fmt.Println("affinity: ", err)
		runFailed = true
		return false
	}
	orgs := four(rpm, itpm, otpm)
	printAffinity(over, stats, single, orgs)
	for _, v := range over {
		s := useOf(v, "sonnet")
		r, i, o := ccload.OrgLimits(orgs)
		use := max(float64(s.Accepted)/ccload.Capacity(r, v.span), float64(s.Charged)/ccload.Capacity(i, v.span), float64(s.Output)/ccload.Capacity(o, v.span))
		if v.name == "affinity" {
			ok = ok && use >= 0.9
			fmt.Printf("target: quota use (binding limit) with affinity when oversubscribed >= 90%%: %.1f%% %s\n", 100*use, check(use >= 0.9))
		}
	}
	fmt.Println(affinityTarget)
	return ok
}

func printAffinity(vs []*variant, stats map[string]*ccload.SessionStats, single float64, orgs []ccload.Org) {
	tw := table()
	hdr := "variant\tsessions\tturns\tcache-read share\tvs single key\tcharged input/turn\tsticky new/hit/scope/moved\trelay 429s\tupstream 429s\t"
	if orgs != nil {
		hdr += "requests used\tinput used\toutput used\t"
	}
	fmt.Fprintln(tw, hdr)
	for _, v := range vs {
		s := stats[v.name]
		t := ccload.Tally(v.results)
		ureq, ulim := upstreamTotals(v)
		share := cacheShare(v)
		son := useOf(v, "sonnet")
		m := v.metrics
		sticky := fmt.Sprintf("%.0f/%.0f/%.0f/%.0f", m["sticky_total{outcome=new}"], m["sticky_total{outcome=hit}"],
			m["sticky_total{outcome=scope}"], m["sticky_total{outcome=moved}"])
		line := fmt.Sprintf("%s\t%d\t%d\t%.1f%%\t%.3f\t%.0f\t%s\t%d\t%d (%.2f%%)\t", v.name, s.Started, s.Turns, 100*share,
			share/math.Max(single, 1e-9), float64(son.Charged)/math.Max(1, float64(son.Accepted)), sticky, t.Relay429, ulim,
			100*float64(ulim)/math.Max(1, float64(ureq)))
		if orgs != nil {
			r, i, o := ccload.OrgLimits(orgs)
			line += fmt.Sprintf("%.1f%%\t%.1f%%\t%.1f%%\t", 100*float64(son.Accepted)/ccload.Capacity(r, v.span),
				100*float64(son.Charged)/ccload.Capacity(i, v.span), 100*float64(son.Output)/ccload.Capacity(o, v.span))
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
	fmt.Println("(cache-read share = cache_read / (input + cache_creation + cache_read) over all accepted requests, from the mock;")
	fmt.Println(" charged input/turn = input + cache_creation per accepted main-model request; sticky: the relay's sticky_total metric)")
	for _, v := range vs {
		if l := v.spec.up.Limited(); len(l) > 0 {
			fmt.Printf("upstream 429s of %s by the limit they name: %v\n", v.name, l)
		}
	}
	if *flagVerbose {
		printKeys(vs)
		printEstimator(vs)
	}
}
