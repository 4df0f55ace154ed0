// Command quota is the relay's quota benchmark. It runs Caddy with the
// cc_relay handler in-process in front of mock Anthropic upstreams
// (internal/mockanthropic, which enforces per-organization continuous-refill
// RPM / ITPM / OTPM buckets per model family and keeps a per-organization
// prompt cache) and drives Claude-Code-like load through it on real time:
//
//   - quota: 3 keys in 2 organizations at 2x their aggregate limits,
//     least_loaded with configured limits against round_robin with nothing
//     configured (everything learned from response headers);
//   - failover: 3 organizations, one answering 429 to everything for 30 s
//     in the middle of the run (once with a 30 s retry-after, once with
//     1 s retry-afters renewed for 30 s);
//   - affinity: 20 concurrent growing Claude Code sessions over 4 keys in 4
//     organizations with and without session affinity, plus a single-key
//     baseline; then the same with limits oversubscribed 2x;
//   - fairness: one saturated organization with max_wait, a greedy client
//     (16 in flight) and a light one (15% of the pool), weighted fair
//     queueing against first come first served, plus weights 2:1.
//
// Usage:
//
//	cd bench && go run ./quota                      # full run, 60 s per phase (about 5 minutes)
//	cd bench && go run ./quota -duration 10s        # smoke run (about 45 s; targets not judged)
//	cd bench && go run ./quota -scenarios quota     # a subset: quota, failover, affinity, fairness
//	cd bench && go run ./quota -scenarios fairness -quick   # 30 s; fairness targets still judged
//
// docs/perf/quota.md explains every figure.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/cc-relay/caddy-cc-relay/bench/internal/ccload"
	"github.com/cc-relay/caddy-cc-relay/caddymodule"
)

var (
	flagDuration   = flag.Duration("duration", 60*time.Second, "load time of each phase (quota, failover, affinity fit, affinity oversubscribed)")
	flagScenarios  = flag.String("scenarios", "quota,failover,affinity,fairness", "comma-separated scenarios to run: quota, failover, affinity, fairness")
	flagQuick      = flag.Bool("quick", false, "30 s per phase unless -duration is given (quota, failover and affinity targets are then not judged; fairness targets are)")
	flagFactor     = flag.Float64("factor", 2, "quota: offered input tokens / what the limits admit over the run")
	flagFailLoad   = flag.Float64("failover-load", 0.5, "failover: offered input tokens / the three organizations' per-minute limits")
	flagOutMean    = flag.Int("out-mean", 500, "quota: mean output tokens of a main-model request")
	flagSessions   = flag.Int("sessions", 20, "affinity: concurrent sessions")
	flagDeltaDelay = flag.Duration("delta-delay", 100*time.Millisecond, "mock: pause before each of the 8 stream deltas")
	flagSeed       = flag.Uint64("seed", 1, "seed of the generated traffic")
	flagVerbose    = flag.Bool("v", false, "print per-organization and per-key detail")

	flagFairRPM      = flag.Int64("fair-rpm", 600, "fairness: the organization's requests per minute (the binding limit)")
	flagFairLight    = flag.Float64("fair-light", 0.15, "fairness: the light client's paced rate as a share of the pool's RPM")
	flagFairInFlight = flag.Int("fair-in-flight", 16, "fairness: the greedy client's requests in flight (closed loop)")
	flagFairMaxWait  = flag.Duration("fair-max-wait", 30*time.Second, "fairness: the relay's max_wait")
	flagFairWarmup   = flag.Duration("fair-warmup", 10*time.Second, "fairness: time the greedy client runs alone before light starts and the window opens (it drains the buckets' initial burst)")
	flagFairDelta    = flag.Duration("fair-delta-delay", 10*time.Millisecond, "fairness: mock pause before each of the 8 stream deltas")
)

func main() {
	flag.Parse()
	if *flagQuick {
		set := false
		flag.Visit(func(f *flag.Flag) { set = set || f.Name == "duration" })
		if !set {
			*flagDuration = 30 * time.Second
		}
	}
	if *flagDuration < 2*time.Second {
		fmt.Fprintln(os.Stderr, "-duration must be at least 2s")
		os.Exit(2)
	}
	want := map[string]bool{}
	for _, s := range strings.Split(*flagScenarios, ",") {
		s = strings.TrimSpace(s)
		switch s {
		case "quota", "failover", "affinity", "fairness":
			want[s] = true
		case "":
		default:
			fmt.Fprintf(os.Stderr, "unknown scenario %q (want quota, failover, affinity, fairness)\n", s)
			os.Exit(2)
		}
	}
	fmt.Printf("cc_relay quota benchmark: %s, GOMAXPROCS=%d, NumCPU=%d, %s, duration %s per phase, seed %d\n",
		runtime.Version(), runtime.GOMAXPROCS(0), runtime.NumCPU(), time.Now().UTC().Format(time.RFC3339), *flagDuration, *flagSeed)
	start := time.Now()
	// Quota, failover and affinity measure from the start of the run, so
	// their targets are judged only on runs of judgeFrom or more; fairness
	// measures after its own warm-up and is always judged.
	smoke := *flagDuration < judgeFrom
	ok := true
	if want["quota"] {
		ok = scenarioQuota() && ok
	}
	if want["failover"] {
		ok = scenarioFailover() && ok
	}
	if want["affinity"] {
		ok = scenarioAffinity() && ok
	}
	if smoke {
		ok = true
	}
	judged := !smoke && (want["quota"] || want["failover"] || want["affinity"])
	if want["fairness"] {
		ok = scenarioFairness() && ok
		judged = judged || fairJudged
	}
	fmt.Printf("\ntotal wall time %s\n", time.Since(start).Round(time.Second))
	switch {
	case runFailed:
		fmt.Println("RESULT: a scenario could not run (see above)")
		os.Exit(1)
	case !ok:
		fmt.Println("RESULT: some targets missed (see above)")
		os.Exit(1)
	case !judged:
		fmt.Printf("RESULT: smoke run completed; targets are judged only with -duration >= %s, fairness's with twice -fair-warmup (the limits' initial burst dominates shorter runs)\n", judgeFrom)
	case smoke && (want["quota"] || want["failover"] || want["affinity"]) || !fairJudged && want["fairness"]:
		fmt.Printf("RESULT: the targets judged were met; quota, failover and affinity targets are judged only with -duration >= %s, fairness with twice -fair-warmup\n", judgeFrom)
	default:
		fmt.Println("RESULT: all targets met")
	}
}

// judgeFrom is the shortest run whose figures are held against the targets.
const judgeFrom = 60 * time.Second

// runFailed records that a scenario could not run at all.
var runFailed bool

// variant is one relay configuration of a scenario with its own upstream,
// client and pool; a scenario's variants run side by side in one Caddy
// configuration, on the same clock.
type variant struct {
	name string
	spec relaySpec
	cl   *ccload.Client

	// Filled in after the run.
	results []*ccload.Result
	pool    *caddymodule.PoolStatus
	metrics map[string]float64
	use     map[string]*ccload.ClassUse
	span    time.Duration
}

type loadFunc func(ctx context.Context, v *variant, idx int, t0, end time.Time)

var poolSeq int

// run runs the variants' loads side by side for d and collects the results.
// Every loop is bounded by the end of the run; in-flight requests get a
// bounded time to finish, then are cancelled.
func run(scenario string, vs []*variant, d time.Duration, load loadFunc) error {
	var specs []relaySpec
	for _, v := range vs {
		poolSeq++
		v.spec.pool = fmt.Sprintf("bench-%s-%s-%d-%d", scenario, v.name, os.Getpid(), poolSeq)
		v.spec.port = freePort()
		specs = append(specs, v.spec)
	}
	rr, err := startRelays(specs)
	if err != nil {
		return err
	}
	defer rr.stop()
	t0 := time.Now()
	end := t0.Add(d)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i, v := range vs {
		v.cl = ccload.NewClient(v.spec.port, fmt.Sprintf("%s-%s", scenario, v.name), end)
		wg.Add(1)
		go func() {
			defer wg.Done()
			load(ctx, v, i, t0, end)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	ccload.Await(scenario, done, t0, end, cancel)
	for _, v := range vs {
		v.results = v.cl.All()
		v.cl.Close()
		st := v.spec.up.Mock.Stats()
		v.use, v.span = ccload.UpstreamUse(st.Requests, t0)
		v.span = max(v.span, d)
		if p, err := rr.pool(v.spec.pool); err == nil {
			v.pool = p
		} else {
			fmt.Fprintf(os.Stderr, "  admin API: %v\n", err)
		}
		if m, err := rr.metrics(v.spec.pool); err == nil {
			v.metrics = m
		} else {
			fmt.Fprintf(os.Stderr, "  metrics: %v\n", err)
		}
	}
	return nil
}

func check(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}
