// Command cluster measures issue 13's figures: several relay instances
// sharing one pool on Redis. It starts one redis-server on a free 127.0.0.1
// port (internal/redistest), the mock Anthropic upstream with two
// organizations of several keys each (bench/internal/ccload over
// internal/mockanthropic), three relay processes with the same pool and
// Redis, and a Caddy load balancer in front of them (reverse_proxy,
// round_robin), then drives Claude-Code-like load through the balancer:
//
//   - quota: configured limits, closed-loop clients offering twice what the
//     limits admit: quota used and upstream 429s (targets >= 95%, <= 1%);
//   - learned: the same with no limits configured, everything learned from
//     the upstream's headers (targets >= 90%, <= 3%);
//   - affinity: growing Claude Code conversations whose consecutive turns go
//     to different instances (round robin): cache-read share against a
//     single key's (target: within 5%);
//   - outage: the quota load while redis-server is killed and restarted
//     empty, then stalled (SIGSTOP) and continued: failed requests (target
//     none) and upstream 429s (target <= 3%);
//   - overhead: one relay directly (no balancer), with Redis against the
//     same relay without it, in one process and one run: added p50 at one
//     request in flight (target <= 0.2 ms) and throughput at 32 in flight
//     (target >= 0.85x).
//
// -redis=false runs quota, learned and affinity on three independent relays
// (no Redis): the baseline of what a pool not shared does.
//
// The relays and the balancer are this binary run as Caddy (it is built
// with the cc_relay module and Caddy's standard modules): `cluster caddy run
// --config <file>`, as bench/overhead runs a Caddy binary.
//
// Usage:
//
//	cd bench && go run ./cluster                      # every run, 60 s each
//	cd bench && go run ./cluster -quick               # CI-sized: 20 s each
//	cd bench && go run ./cluster -runs quota,outage   # a subset
//	cd bench && go run ./cluster -redis=false -runs quota,learned,affinity
//
// docs/perf/cluster.md records the figures.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/cc-relay/caddy-cc-relay/caddymodule"
)

var (
	flagRuns       = flag.String("runs", "quota,learned,affinity,outage,overhead", "comma-separated runs: quota, learned, affinity, outage, overhead")
	flagQuick      = flag.Bool("quick", false, "CI-sized runs: 20 s of load each unless -duration is given, a shorter overhead run")
	flagDuration   = flag.Duration("duration", 60*time.Second, "load time of the quota, learned, affinity and outage runs")
	flagRedis      = flag.Bool("redis", true, "share the pool on Redis; false: three independent relays (quota, learned, affinity)")
	flagRelays     = flag.Int("relays", 3, "relay instances behind the load balancer")
	flagFactor     = flag.Float64("factor", 2, "quota, learned, outage: closed-loop clients enough to offer this many times what the limits admit")
	flagOutMean    = flag.Int("out-mean", 500, "mean output tokens of a main-model request")
	flagSessions   = flag.Int("sessions", 20, "affinity: concurrent conversations")
	flagDeltaDelay = flag.Duration("delta-delay", 100*time.Millisecond, "mock: pause before each of the 8 stream deltas")
	flagSeed       = flag.Uint64("seed", 1, "seed of the generated traffic")
	flagOut        = flag.String("out", "", "directory for the configurations and Caddy and Redis logs (default: a new temp dir)")
	flagVerbose    = flag.Bool("v", false, "print the relays' metrics for the pool, summed")

	flagSerial = flag.Int("serial", 0, "overhead: interleaved steps at one request in flight (default 3000, quick 1000)")
	flagPairs  = flag.Int("pairs", 0, "overhead: pairs of rounds at 32 in flight (default 10, quick 5)")
	flagRound  = flag.Int("round", 0, "overhead: requests per round at 32 in flight (default 8000, quick 3000)")
	flagConc   = flag.Int("conc", 32, "overhead: requests in flight of the throughput rounds")
)

func main() {
	// The relays and the balancer: this binary acting as Caddy.
	if len(os.Args) > 1 && os.Args[1] == caddyArg {
		os.Args = os.Args[1:]
		caddycmd.Main()
		return
	}
	flag.Parse()
	if *flagQuick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["duration"] {
			*flagDuration = 20 * time.Second
		}
		if !set["sessions"] {
			*flagSessions = 12
		}
	}
	if *flagDuration < 10*time.Second {
		fail("-duration must be at least 10s")
	}
	if *flagRelays < 1 {
		fail("-relays must be at least 1")
	}
	var runs []string
	for _, r := range strings.Split(*flagRuns, ",") {
		switch r = strings.TrimSpace(r); r {
		case "quota", "learned", "affinity", "outage", "overhead":
			runs = append(runs, r)
		case "":
		default:
			fail(fmt.Sprintf("unknown run %q (want quota, learned, affinity, outage, overhead)", r))
		}
	}
	env, err := newEnv()
	if err != nil {
		fail(err.Error())
	}
	defer env.close()
	// redis-server is no child that dies with us: stop it on ^C too.
	interrupted := make(chan os.Signal, 1)
	signal.Notify(interrupted, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-interrupted
		env.close()
		os.Exit(130)
	}()
	shared := "three relays sharing one pool on Redis"
	if !*flagRedis {
		shared = "three independent relays (no Redis)"
	}
	shared = strings.Replace(shared, "three", fmt.Sprint(*flagRelays), 1)
	fmt.Printf("cc_relay cluster benchmark: %s, GOMAXPROCS=%d, NumCPU=%d, %s, %s, %s of load per run, seed %d\n",
		runtime.Version(), runtime.GOMAXPROCS(0), runtime.NumCPU(), time.Now().UTC().Format(time.RFC3339), shared, *flagDuration, *flagSeed)
	fmt.Printf("load average at start: %s; work dir %s\n", loadAvg(), env.dir)
	start := time.Now()
	ok := true
	for _, r := range runs {
		var met bool
		switch r {
		case "quota":
			met = runQuota(env, true)
		case "learned":
			met = runQuota(env, false)
		case "affinity":
			met = runAffinity(env)
		case "outage":
			met = runOutage(env)
		case "overhead":
			met = runOverhead(env)
		}
		ok = ok && met
		fmt.Printf("load average after %s: %s\n", r, loadAvg())
	}
	fmt.Printf("\ntotal wall time %s\n", time.Since(start).Round(time.Second))
	code := 0
	switch {
	case env.failed:
		fmt.Println("RESULT: a run could not run (see above)")
		code = 1
	case *flagDuration < judgeFrom:
		fmt.Printf("RESULT: runs completed; targets printed, not judged: runs shorter than %s are dominated by the buckets' initial burst and, learned, by the first responses before any limit is known\n", judgeFrom)
	case !ok:
		fmt.Println("RESULT: some targets missed (see above)")
		code = 1
	default:
		fmt.Println("RESULT: all targets met")
	}
	env.close() // os.Exit skips deferred calls, and redis-server is no child that dies with us
	os.Exit(code)
}

// judgeFrom is the shortest run whose figures are held against the targets
// (as bench/quota's).
const judgeFrom = 60 * time.Second

// caddyArg as the first argument makes this binary act as Caddy.
const caddyArg = "caddy"

func fail(msg string) {
	fmt.Fprintln(os.Stderr, msg)
	os.Exit(2)
}

// loadAvg is /proc/loadavg's 1, 5 and 15 minute figures.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func check(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}
