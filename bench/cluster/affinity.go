package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/cc-relay/caddy-cc-relay/bench/internal/ccload"
)

// Limits that never bind in the affinity run: it measures the cache alone.
const hiRPM, hiITPM, hiOTPM = 100_000, 50_000_000, 10_000_000

// runAffinity runs the same conversations three times through the balancer:
// against one key (every turn hits the one organization's cache: the
// ceiling), against the two organizations with the pool shared, and with
// the relays independent (each pins a session only on the turns it sees).
func runAffinity(e *env) bool {
	d := *flagDuration
	n := *flagSessions
	fmt.Printf("\n== affinity: %d concurrent Claude Code conversations through a round-robin balancer over %d relays, %s per variant ==\n", n, *flagRelays, d)
	fmt.Println("consecutive turns of a conversation go to different relays; the mock keeps one prompt cache per organization;")
	fmt.Println("conversations as bench/quota's affinity scenario (tools + system prompt with cache_control, a growing history,")
	fmt.Println("0.3-2 s tool time between turns, a Haiku side request on 10% of turns); limits that never bind")
	type variant struct {
		name   string
		orgs   []ccload.Org
		redis  bool
		lr     *loadRun
		starts int
		turns  int
	}
	two := []ccload.Org{
		{ID: "org-a", Keys: 2, RPM: hiRPM, ITPM: hiITPM, OTPM: hiOTPM},
		{ID: "org-b", Keys: 2, RPM: hiRPM, ITPM: hiITPM, OTPM: hiOTPM},
	}
	vs := []*variant{{name: "single key", orgs: []ccload.Org{{ID: "org-s", Keys: 1, RPM: hiRPM, ITPM: hiITPM, OTPM: hiOTPM}}, redis: *flagRedis}}
	if *flagRedis {
		vs = append(vs, &variant{name: "2 orgs x 2 keys, shared", orgs: two, redis: true})
	}
	vs = append(vs, &variant{name: "2 orgs x 2 keys, independent", orgs: two})
	for _, v := range vs {
		run := "affinity"
		c, err := e.startCluster(clusterSpec{run: run, orgs: v.orgs, limits: true, redis: v.redis})
		if err != nil {
			return e.couldNotRun(run+" ("+v.name+")", err)
		}
		st := &ccload.SessionStats{}
		v.lr = drive(c, run, func(ctx context.Context, cl *ccload.Client, _, end time.Time) {
			ccload.Sessions(ctx, cl, n, *flagSeed, end, st)
		})
		c.stop()
		v.starts, v.turns = st.Started, st.Turns
	}
	single := ccload.CacheShare(vs[0].lr.use)
	tw := table()
	fmt.Fprintln(tw, "variant\tconversations\tturns\tturns on another relay\tcache-read share\tvs single key\tcharged input/turn\tsticky new/hit/scope/moved\tfailed\tupstream 429s\t")
	for _, v := range vs {
		share := ccload.CacheShare(v.lr.use)
		son := v.lr.class("sonnet")
		m := v.lr.metrics
		_, ulim := v.lr.upstreamTotals()
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f%%\t%.1f%%\t%.3f\t%.0f\t%.0f/%.0f/%.0f/%.0f\t%d\t%d\t\n", v.name, v.starts, v.turns, 100*moved(v.lr.results), 100*share,
			share/math.Max(single, 1e-9), float64(son.Charged)/math.Max(1, float64(son.Accepted)),
			m["sticky_total{outcome=new}"], m["sticky_total{outcome=hit}"], m["sticky_total{outcome=scope}"], m["sticky_total{outcome=moved}"],
			ccload.Tally(v.lr.results).Errs, ulim)
	}
	tw.Flush()
	fmt.Println("(cache-read share = cache_read / (input + cache_creation + cache_read) over all accepted requests, from the mock;")
	fmt.Println(" charged input/turn = input + cache_creation per accepted main-model request; sticky: the relays' sticky_total, summed;")
	fmt.Println(" turns on another relay: answered main-model turns whose conversation's previous turn another instance answered)")
	if !*flagRedis {
		return true
	}
	shared := ccload.CacheShare(vs[1].lr.use)
	ok := shared >= 0.95*single
	fmt.Printf("target: cache-read share across instances within 5%% of a single key's: %.1f%% vs %.1f%% (ratio %.3f) %s\n",
		100*shared, 100*single, shared/math.Max(single, 1e-9), check(ok))
	return ok
}

// moved is the share of a conversation's answered main-model turns, after
// its first, that another relay answered than its previous turn.
func moved(rs []*ccload.Result) float64 {
	sorted := slices.Clone(rs)
	slices.SortFunc(sorted, func(a, b *ccload.Result) int { return a.Sent.Compare(b.Sent) })
	last := map[string]string{}
	var n, other int
	for _, r := range sorted {
		if !r.OK() || r.Class != "sonnet" {
			continue
		}
		if prev, ok := last[r.Session]; ok {
			n++
			if prev != r.Relay {
				other++
			}
		}
		last[r.Session] = r.Relay
	}
	return float64(other) / math.Max(1, float64(n))
}
