// Command overhead measures what the cc_relay module adds to Caddy's own
// reverse_proxy. It runs one Caddy binary with two sites on the same
// process and upstream — A: bare reverse_proxy, B: cc_relay + reverse_proxy —
// and compares them in alternating rounds (A B B A A B …) so that machine
// drift cancels: throughput and latency of non-streaming requests, time to
// the first SSE event (closed loop at -conc, which saturates the machine;
// paced below saturation at the same concurrency; and one request at a
// time, interleaved A, A2, B), Caddy CPU time and heap allocations per
// request, memory per open stream, a CPU and allocation profile of B, the
// pool and selector micro-benchmarks, and optionally a fault-injecting soak.
//
//	go build -o /tmp/caddy ./cmd/caddy
//	cd bench && go run ./overhead -caddy /tmp/caddy [-quick] [-soak 10m]
//
// bench/run.sh does both. The report (Markdown) goes to stdout and to
// <out>/report.md; profiles and Caddy logs stay in <out>.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

type options struct {
	caddy, root, out    string
	quick               bool
	phases              string
	pairs, conc         int
	n4k, n200k, nSerial int
	streamN, streamConc int
	streamNLoaded       int
	streams, memRounds  int
	mem200k             bool
	profile200k         bool
	profileSec          int
	keys                int
	strategy            string
	benchtime           string
	microCount          int
	microAll            bool
	soak                time.Duration
	soakWorkers         int
	blocks              int
	pacedFrac           float64
	pacedRate           string
	pacedRates          [3]float64
	pacedSec            float64
	maxOther            float64
	reruns              int
}

func main() {
	var o options
	flag.StringVar(&o.caddy, "caddy", "", "path to a Caddy binary built with the cc_relay module (required)")
	flag.StringVar(&o.root, "root", "..", "repository root (for the go test micro-benchmarks; bench/ is its own module, run from bench/)")
	flag.StringVar(&o.out, "out", "", "directory for the report, profiles and Caddy logs (default: a new temp dir)")
	flag.BoolVar(&o.quick, "quick", false, "a ~2 minute run: fewer rounds, shorter profile, default strategy only in micro-benchmarks")
	flag.StringVar(&o.phases, "phases", "load,stream,paced,profile,allocs,mem,micro", "comma-separated phases to run (load, stream, paced, profile, allocs, mem, micro; soak runs when -soak > 0)")
	flag.IntVar(&o.pairs, "pairs", 0, "A/B round pairs per loaded measurement (default 16, quick 5)")
	flag.IntVar(&o.conc, "conc", 32, "concurrency of the non-streaming load")
	flag.IntVar(&o.n4k, "n4k", 0, "requests per round with 4 KB bodies (default 8000, quick 3000: rounds of about 2 s and 0.6 s, long enough to span several GC cycles)")
	flag.IntVar(&o.n200k, "n200k", 0, "requests per round with 200 KB bodies (default 3000, quick 1000)")
	flag.IntVar(&o.nSerial, "nserial", 0, "interleaved steps at concurrency 1 with 4 KB bodies (200 KB: half) (default 3000, quick 800)")
	flag.IntVar(&o.streamN, "streamn", 0, "interleaved streaming steps at concurrency 1 (default 5000, quick 2000)")
	flag.IntVar(&o.blocks, "blocks", 5, "consecutive blocks the interleaved steps are split into for the p99 block estimate")
	flag.Float64Var(&o.pacedFrac, "paced-frac", 0.25, "paced rounds: total rate as a fraction of site A's median closed-loop throughput for the same load, measured in this run (at 0.5 on 2 shared cores queueing already dominates the latency)")
	flag.StringVar(&o.pacedRate, "paced-rate", "", "paced rounds: fixed total rate in req/s instead of -paced-frac; one rate, or three for 4 KB JSON, 200 KB JSON, 4 KB stream")
	flag.Float64Var(&o.maxOther, "max-other", 0.25, "run a pair of A/B rounds again when other processes on the machine used more than this many cores during either round (0: never)")
	flag.IntVar(&o.reruns, "reruns", -1, "at most this many re-run pairs per measurement (default: -pairs)")
	flag.Float64Var(&o.pacedSec, "paced-sec", 0, "paced rounds: seconds per round (requests per round = rate × this) (default 1.5, quick 0.5)")
	flag.IntVar(&o.streamNLoaded, "streamn-loaded", 0, "streams per round at -conc (default 6000, quick 2000)")
	flag.IntVar(&o.streamConc, "stream-conc", 0, "concurrency of the loaded streaming rounds (default -conc)")
	flag.IntVar(&o.streams, "streams", 1000, "concurrent open streams in the memory test")
	flag.IntVar(&o.memRounds, "mem-rounds", 0, "fresh-process rounds per site in the memory test, A and B back to back (default 3, quick too: the B−A check is the median over these pairs)")
	flag.BoolVar(&o.mem200k, "mem-200k", false, "also measure memory per stream with 200 KB bodies (default on unless quick)")
	flag.BoolVar(&o.profile200k, "profile-200k", false, "also profile with 200 KB bodies (default on unless quick)")
	flag.IntVar(&o.profileSec, "profile", 0, "seconds of CPU profile per site (default 15, quick 5)")
	flag.IntVar(&o.keys, "keys", 10, "upstream keys in the relay's pool")
	flag.StringVar(&o.strategy, "strategy", "least_loaded", "the relay's selection strategy")
	flag.StringVar(&o.benchtime, "benchtime", "", "go test -benchtime for micro-benchmarks (default 500ms, quick 100ms)")
	flag.IntVar(&o.microCount, "count", 0, "go test -count for micro-benchmarks (default 3, quick 1)")
	flag.BoolVar(&o.microAll, "micro-own", false, "also run this command's own pool benchmark (bench/overhead/pool_bench_test.go)")
	flag.DurationVar(&o.soak, "soak", 0, "run a fault-injecting soak of this length through B (e.g. 10m); 0: no soak")
	flag.IntVar(&o.soakWorkers, "soak-workers", 48, "concurrent clients in the soak")
	flag.Parse()
	if o.caddy == "" {
		log.Fatal("-caddy is required")
	}
	o.defaults()
	var err error
	if o.pacedRates, err = pacedRates(o.pacedRate); err != nil {
		log.Fatal(err)
	}
	if o.out == "" {
		d, err := os.MkdirTemp("", "cc-relay-bench-")
		if err != nil {
			log.Fatal(err)
		}
		o.out = d
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		log.Fatal(err)
	}
	log.SetFlags(log.Ltime)
	log.SetPrefix("overhead: ")

	rep := &report{o: &o}
	rep.machine()
	phase := map[string]bool{}
	for _, p := range strings.Split(o.phases, ",") {
		phase[strings.TrimSpace(p)] = true
	}
	start := time.Now()
	if phase["load"] || phase["stream"] || phase["paced"] || phase["profile"] {
		if err := runProxyPhases(&o, rep, phase); err != nil {
			log.Printf("proxy phases: %v", err)
			rep.notes = append(rep.notes, "proxy phases failed: "+err.Error())
		}
	}
	if phase["allocs"] {
		log.Printf("exact allocations")
		if err := runAllocs(&o, rep); err != nil {
			log.Printf("allocation phase: %v", err)
			rep.notes = append(rep.notes, "allocation phase failed: "+err.Error())
		}
	}
	if phase["mem"] {
		if err := runMemory(&o, rep); err != nil {
			log.Printf("memory phase: %v", err)
			rep.notes = append(rep.notes, "memory phase failed: "+err.Error())
		}
	}
	if phase["micro"] {
		if err := runMicro(&o, rep); err != nil {
			log.Printf("micro-benchmarks: %v", err)
			rep.notes = append(rep.notes, "micro-benchmarks failed: "+err.Error())
		}
	}
	if o.soak > 0 {
		if err := runSoak(&o, rep); err != nil {
			log.Printf("soak: %v", err)
			rep.notes = append(rep.notes, "soak failed: "+err.Error())
		}
	}
	rep.elapsed = time.Since(start)
	md := rep.markdown()
	_ = os.WriteFile(filepath.Join(o.out, "report.md"), []byte(md), 0o644)
	fmt.Print(md)
	log.Printf("report and artifacts in %s (%s)", o.out, rep.elapsed.Round(time.Second))
}

func (o *options) defaults() {
	pick := func(v *int, full, quick int) {
		if *v == 0 {
			*v = full
			if o.quick {
				*v = quick
			}
		}
	}
	pick(&o.pairs, 16, 5)
	pick(&o.n4k, 8000, 3000)
	pick(&o.n200k, 3000, 1000)
	pick(&o.nSerial, 3000, 800)
	pick(&o.streamN, 5000, 2000)
	pick(&o.streamNLoaded, 6000, 2000)
	pick(&o.streamConc, o.conc, o.conc)
	pick(&o.memRounds, 3, 3)
	if o.reruns < 0 {
		o.reruns = o.pairs
	}
	pick(&o.profileSec, 15, 5)
	pick(&o.microCount, 3, 1)
	if o.pacedSec <= 0 {
		o.pacedSec = 1.5
		if o.quick {
			o.pacedSec = 0.5
		}
	}
	if o.benchtime == "" {
		o.benchtime = "500ms"
		if o.quick {
			o.benchtime = "100ms"
		}
	}
	if !o.quick {
		o.mem200k = true
		o.profile200k = true
	}
}

// machine describes where the figures come from.
func (r *report) machine() {
	r.nproc = runtime.NumCPU()
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				r.cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := exec.Command("go", "version").Output(); err == nil {
		r.goVersion = strings.TrimSpace(string(b))
	}
	if b, err := exec.Command(r.o.caddy, "version").Output(); err == nil {
		r.caddyVersion = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		r.loadBefore = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	r.date = time.Now().UTC().Format("2006-01-02 15:04 UTC")
	if b, err := exec.Command("git", "-C", r.o.root, "rev-parse", "--short", "HEAD").Output(); err == nil {
		r.gitState = strings.TrimSpace(string(b))
		if b, err := exec.Command("git", "-C", r.o.root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil {
			if n := len(strings.Fields(string(b))) / 2; n > 0 {
				r.gitState += fmt.Sprintf(" + %d modified tracked files (working tree)", n)
			}
		}
	}
	r.cmdline = strings.Join(os.Args[1:], " ")
}
