package main

import (
	"fmt"
	"os"
	"strings"
	"time"
)

type report struct {
	o                                           *options
	nproc                                       int
	cpu, goVersion, caddyVersion, date, cmdline string
	gitState                                    string
	loadBefore, loadAfter                       string
	bodySizes                                   [2]int
	load, stream                                []*pairStats
	profiles                                    []*profileResult
	mem, memExact                               []*memRound
	allocs                                      []*allocResult
	serial                                      []*interResult
	paced                                       []*pacedStats
	pick, pool, poolOwn                         []*benchLine
	acquire, acquireOwn                         []*benchLine
	poolSource, acquireSource                   string
	soak                                        *soakResult
	notes                                       []string
	elapsed                                     time.Duration
	checks                                      []check
}

type check struct {
	what, target, got string
	ok                bool
	info              bool // shown for reference, not judged
}

func (r *report) check(what, target, got string, ok bool) {
	r.checks = append(r.checks, check{what: what, target: target, got: got, ok: ok})
}

// info adds a row that is shown next to the checks but not judged.
func (r *report) info(what, target, got string) {
	r.checks = append(r.checks, check{what: what, target: target, got: got, info: true})
}

func (c check) mark() string {
	switch {
	case c.info:
		return "info"
	case c.ok:
		return "met"
	}
	return "**missed**"
}

func (r *report) markdown() string {
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		r.loadAfter = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	var w strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&w, format, a...) }
	p("## Run\n\n")
	p("| | |\n|---|---|\n")
	p("| command | `(cd bench && go run ./overhead %s)` |\n", r.cmdline)
	p("| date | %s |\n", r.date)
	p("| machine | %d CPUs (nproc), %s |\n", r.nproc, r.cpu)
	p("| go | %s |\n", r.goVersion)
	p("| caddy | %s |\n", r.caddyVersion)
	p("| code | %s |\n", r.gitState)
	p("| load average before / after | %s / %s |\n", r.loadBefore, r.loadAfter)
	p("| relay (site B) | %d keys, strategy %s, client_token auth, generous limits |\n", r.o.keys, r.o.strategy)
	p("| wall time | %s |\n\n", r.elapsed.Round(time.Second))
	if r.bodySizes[0] > 0 {
		p("Bodies: %d B and %d B Messages requests shaped like Claude Code's (cached system prompt, 4 tools, tool_use/tool_result turns, metadata.user_id, session header). ", r.bodySizes[0], r.bodySizes[1])
		p("Each figure is the median over %d A/B pairs run in the order AB BA AB …; brackets give the range across pairs. ", r.o.pairs)
		if r.o.maxOther > 0 {
			p("A pair is run again, both rounds, when other processes on the machine (other builds and tests: its busy time from /proc/stat minus this process's and Caddy's) used more than %.2f cores during either round, at most %d times per measurement; the \"re-run\" columns count those, with pairs kept although disturbed (re-runs used up) in parentheses. ", r.o.maxOther, r.o.reruns)
		}
		p("CPU/req is the Caddy process's CPU time per request (from /proc/<pid>/task/*/schedstat), allocs/req and bytes/req its heap allocations per request (runtime.MemStats via the admin /debug/vars), both of the whole process: proxying included.\n\n")
	}

	if len(r.load) > 0 {
		p("## Non-streaming requests, closed loop (saturated)\n\n")
		p("Each of the %d workers sends its next request as soon as the previous one has been answered. At concurrency %d this saturates the machine, so the latency here is mostly queueing (≈ concurrency ÷ throughput) and B−A reflects B's extra CPU per request times the queue, not the delay a request sees: the latency columns are informational, throughput B/A is what these rounds are for. The paced rounds below measure latency at the same concurrency below saturation.\n\n", r.o.conc, r.o.conc)
		p("| body | conc | req/round | A req/s | B req/s | B/A | A p50 µs | B p50 µs | B−A p50 µs | A p99 µs | B p99 µs | B−A p99 µs | errors A/B | re-run |\n")
		p("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, s := range r.load {
			p("| %s | %d | %d | %.0f | %.0f | %s | %.0f | %.0f | %s | %.0f | %.0f | %s | %d/%d | %s |\n", s.label, s.conc, s.n,
				median(s.rpsA), median(s.rpsB), rng(s.ratio, "%.3f"), median(s.p50A), median(s.p50B), rng(s.d50, "%+.0f"),
				median(s.p99A), median(s.p99B), rng(s.d99, "%+.0f"), s.errorsA, s.errorsB, s.reran())
		}
		p("\n| body | conc | A CPU µs/req | B CPU µs/req | B−A CPU µs/req | A allocs/req | B allocs/req | B−A allocs/req | A KB/req | B KB/req | B−A KB/req |\n")
		p("|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, s := range r.load {
			p("| %s | %d | %.1f | %.1f | %s | %.0f | %.0f | %s | %.1f | %.1f | %s |\n", s.label, s.conc,
				median(s.cpuA), median(s.cpuB), rng(s.dcpu, "%+.1f"), median(s.allocA), median(s.allocB), rng(s.dalloc, "%+.0f"),
				median(s.bytesA)/1024, median(s.bytesB)/1024, rng(scale(s.dbytes, 1.0/1024), "%+.1f"))
		}
		p("\n")
		for _, s := range r.load {
			if s.firstErr != "" {
				p("First error (%s, conc %d): `%s`\n\n", s.label, s.conc, s.firstErr)
			}
		}
	}
	if len(r.serial) > 0 {
		p("## Unloaded latency: one client, requests interleaved A, A2, B\n\n")
		p("Concurrency 1; each step sends one request to each site in a rotating order, so all three see the same machine state. A2 is a second bare reverse_proxy site: A2−A is the noise floor of the method. \"paired\" is the median over steps of the per-step difference; p99 columns are each site's own 99th percentile. For streams the latency is the time to the first complete SSE event.\n\n")
		p("| load | steps | A p50 µs | A2 p50 µs | B p50 µs | paired B−A µs | paired A2−A µs | A p99 µs | A2 p99 µs | B p99 µs | B−A p99 µs | A2−A p99 µs | errors A/A2/B |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, x := range r.serial {
			p("| %s | %d | %.0f | %.0f | %.0f | %+.0f | %+.0f | %.0f | %.0f | %.0f | %+.0f | %+.0f | %d/%d/%d |\n", x.label, x.n,
				x.p("A", .5), x.p("A2", .5), x.p("B", .5), x.pairedMedian("B", "A"), x.pairedMedian("A2", "A"),
				x.p("A", .99), x.p("A2", .99), x.p("B", .99), x.p("B", .99)-x.p("A", .99), x.p("A2", .99)-x.p("A", .99),
				x.errors["A"], x.errors["A2"], x.errors["B"])
		}
		p("\n")
		p("p99 by block: the steps are split into %d consecutive blocks, each site's p99 is taken per block, and the figure is the median over blocks of the per-block difference, with its range across blocks. A burst of machine noise moves the p99 of one block only, where it can decide the whole run's p99 difference (repeated here for comparison). Rank: which of a block's latencies is its p99.\n\n", r.o.blocks)
		p("| load | blocks × steps | rank | B−A p99 µs, whole run | B−A p99 µs, block median [range] | A2−A p99 µs, whole run | A2−A p99 µs, block median [range] |\n|---|---|---|---|---|---|---|\n")
		for _, x := range r.serial {
			nb := max(1, min(r.o.blocks, x.n))
			k := x.n / nb
			p("| %s | %d × %d | %s | %+.0f | %s | %+.0f | %s |\n", x.label, nb, k, ordinal(k-int(0.99*float64(k-1))),
				x.p("B", .99)-x.p("A", .99), rng(x.blockP99("B", "A", r.o.blocks), "%+.0f"),
				x.p("A2", .99)-x.p("A", .99), rng(x.blockP99("A2", "A", r.o.blocks), "%+.0f"))
		}
		p("\n")
		for _, x := range r.serial {
			if x.first != "" {
				p("First error (%s): `%s`\n\n", x.label, x.first)
			}
		}
	}
	if len(r.stream) > 0 {
		p("## Streaming: time to first SSE event, closed loop (saturated)\n\n")
		p("From sending the request to having read the whole first event (message_start). The upstream then sends content_block_start, ping, 5 content_block_delta, content_block_stop, message_delta, message_stop, each flushed. Closed loop as above: saturated, so the latency is mostly queueing (informational).\n\n")
		p("| body | conc | streams/round | A p50 µs | B p50 µs | B−A p50 µs | A p99 µs | B p99 µs | B−A p99 µs | B−A CPU µs/stream | B−A allocs/stream | errors A/B | re-run |\n")
		p("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, s := range r.stream {
			p("| %s | %d | %d | %.0f | %.0f | %s | %.0f | %.0f | %s | %s | %s | %d/%d | %s |\n", s.label, s.conc, s.n,
				median(s.p50A), median(s.p50B), rng(s.d50, "%+.0f"), median(s.p99A), median(s.p99B), rng(s.d99, "%+.0f"),
				rng(s.dcpu, "%+.1f"), rng(s.dalloc, "%+.0f"), s.errorsA, s.errorsB, s.reran())
		}
		p("\n")
	}
	if len(r.paced) > 0 {
		r.pacedMarkdown(p)
	}
	if len(r.mem) > 0 {
		p("## Memory per open stream\n\n")
		p("A fresh Caddy process per row; %d streams held open after message_start through one site. RSS = VmRSS of the Caddy process; heap+stack = HeapInuse+StackInuse after a forced GC. Per-stream figures are (with streams − before) / streams.\n\n", r.o.streams)
		p("| site | body B | streams | RSS before MB | RSS with streams MB | RSS B/stream | heap B/stream | stack B/stream | goroutines/stream |\n")
		p("|---|---|---|---|---|---|---|---|---|\n")
		for _, m := range r.mem {
			p("| %s | %d | %d | %.1f | %.1f | %.0f | %.0f | %.0f | %.2f |\n", m.site, m.bodySize, m.streams,
				float64(m.rssKB[0])/1024, float64(m.rssKB[1])/1024, m.perStreamRSS(), m.perStreamHeap(), m.perStreamStack(), m.perStreamG())
		}
		for _, m := range r.memExact {
			p("\nSite B, %d B body, a separate round with every allocation profiled (GODEBUG=memprofilerate=1): heap kept by allocations made in module frames while %d streams are open, after GC: **%.0f B/stream**. (The rest of B−A is memory Caddy allocates differently because of the module, e.g. header maps grown by added headers, and allocator rounding.)\n\n| module function (incl. runtime/stdlib callees) | in-use B/stream |\n|---|---|\n", m.bodySize, m.streams, m.retainedAll)
			for i, ow := range m.retained {
				if i >= 12 || ow.value < 1 {
					break
				}
				p("| %s | %.0f |\n", shortFn(ow.fn), ow.value)
			}
		}
		p("\nB−A per stream: rounds with the same index ran back to back (A B, then B A, …) and form a pair; the figure is the median over pairs of B's per-stream figure minus A's, with the range across pairs.\n\n")
		p("| body B | pairs | B−A RSS B/stream | B−A heap+stack B/stream |\n|---|---|---|---|\n")
		for _, size := range memSizes(r.mem) {
			dr, dl := memPairs(r.mem, size)
			p("| %d | %d | %s | %s |\n", size, len(dr), rng(dr, "%+.0f"), rng(dl, "%+.0f"))
		}
		p("\n")
	}
	r.allocsMarkdown(p)
	for _, pr := range r.profiles {
		pr.markdown(p)
	}
	if len(r.pick) > 0 || len(r.pool) > 0 || len(r.acquire) > 0 {
		p("## Selection and accounting micro-benchmarks\n\n")
		p("`go test -bench -benchmem -benchtime %s -count %d`; median ns/op over the runs, allocs/op.\n\n", r.o.benchtime, r.o.microCount)
		r.microMarkdown(p, "selector BenchmarkPick (selection only)", r.pick)
		r.microMarkdown(p, "Selection + reservation, "+r.acquireSource+" (Acquire: what a request pays before it is forwarded; the ≤ 200 ns, 0 allocs target)", r.acquire)
		if r.acquireOwn != nil {
			r.microMarkdown(p, "bench/overhead BenchmarkPoolAcquire (exported API)", r.acquireOwn)
		}
		r.microMarkdown(p, "A request's whole accounting, "+r.poolSource+" (Acquire, then Settle with usage; informational)", r.pool)
		if r.poolOwn != nil {
			r.microMarkdown(p, "bench/overhead BenchmarkPoolAcquireSettle (exported API, sticky sessions on)", r.poolOwn)
		}
	}
	if r.soak != nil {
		r.soak.markdown(p)
	}
	r.loadChecks()
	if len(r.checks) > 0 {
		p("## Targets\n\n| what | target | measured | |\n|---|---|---|---|\n")
		for _, c := range r.checks {
			p("| %s | %s | %s | %s |\n", c.what, c.target, c.got, c.mark())
		}
		p("\n")
	}
	for _, n := range r.notes {
		p("Note: %s\n\n", n)
	}
	return w.String()
}

func scale(v []float64, f float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = x * f
	}
	return out
}

func memSizes(ms []*memRound) []int {
	var sizes []int
	seen := map[int]bool{}
	for _, m := range ms {
		if !seen[m.bodySize] {
			seen[m.bodySize] = true
			sizes = append(sizes, m.bodySize)
		}
	}
	return sizes
}

// memPairs returns, for one body size, B's per-stream RSS and heap+stack
// minus A's, per pair of rounds (same round index).
func memPairs(ms []*memRound, size int) (rss, live []float64) {
	byRound := map[int][2]*memRound{}
	var rounds []int
	for _, m := range ms {
		if m.bodySize != size {
			continue
		}
		x, seen := byRound[m.round]
		if !seen {
			rounds = append(rounds, m.round)
		}
		if m.site == "A" {
			x[0] = m
		} else {
			x[1] = m
		}
		byRound[m.round] = x
	}
	for _, i := range rounds {
		if x := byRound[i]; x[0] != nil && x[1] != nil {
			rss = append(rss, x[1].perStreamRSS()-x[0].perStreamRSS())
			live = append(live, x[1].perStreamLive()-x[0].perStreamLive())
		}
	}
	return rss, live
}

func (r *report) pacedMarkdown(p func(string, ...any)) {
	p("## Concurrency %d, paced (open loop, below saturation)\n\n", r.o.conc)
	p("%d workers share each site's connection pool. Requests arrive at a fixed total rate — request i is due at start + i ÷ rate whatever happened to the earlier ones (open loop) — and a free worker sends it, so the server is busy but not saturated and the latency is not queueing behind the load generator's own backlog. ", r.o.conc)
	if r.o.pacedRate == "" {
		p("The rate is %.0f%% of site A's median closed-loop throughput for the same load measured in this run (-paced-frac), the same for A and B. ", 100*r.o.pacedFrac)
	} else {
		p("The rate is fixed by -paced-rate %s, the same for A and B. ", r.o.pacedRate)
	}
	p("Rounds of %.1f s alternate A B, B A, … (%d pairs). Latency runs from sending the request to having read the whole response (for streams: the first complete SSE event); p50 and p99 are per round, shown as medians over pairs, and B−A is the median [range] of the per-pair differences. Send lag p99: how late the 99th-percentile request left against its schedule (timer jitter, or all workers busy); it is the same for A and B when both keep up.\n\n", r.o.pacedSec, r.o.pairs)
	p("| load | rate req/s | A closed-loop req/s | req/round | A p50 µs | B p50 µs | B−A p50 µs | A p99 µs | B p99 µs | B−A p99 µs | B−A CPU µs/req | send lag p99 µs A/B | errors A/B | re-run |\n")
	p("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range r.paced {
		sat := "–"
		if s.sat > 0 {
			sat = fmt.Sprintf("%.0f", s.sat)
		}
		p("| %s | %.0f | %s | %d | %.0f | %.0f | %s | %.0f | %.0f | %s | %s | %.0f/%.0f | %d/%d | %s |\n", s.label, s.rate, sat, s.n,
			median(s.p50A), median(s.p50B), rng(s.d50, "%+.0f"), median(s.p99A), median(s.p99B), rng(s.d99, "%+.0f"),
			rng(s.dcpu, "%+.1f"), median(s.lagA), median(s.lagB), s.errorsA, s.errorsB, s.reran())
	}
	p("\n")
	var from []string
	for _, s := range r.paced {
		if s.satFrom != "" {
			from = append(from, s.label+": "+s.satFrom)
		}
	}
	if len(from) > 0 {
		p("A closed-loop req/s (the basis of the rate): %s.\n\n", strings.Join(from, "; "))
	}
	for _, s := range r.paced {
		if s.firstErr != "" {
			p("First error (paced %s): `%s`\n\n", s.label, s.firstErr)
		}
	}
}

func (r *report) loadChecks() {
	// Throughput: the one figure the saturated rounds are for.
	for _, s := range r.load {
		if s.conc > 1 && strings.HasPrefix(s.label, "4 KB") {
			v := median(s.ratio)
			r.check(fmt.Sprintf("throughput B/A, 4 KB, conc %d", s.conc), "≥ 0.95", rng(s.ratio, "%.3f")+s.disturbedNote(), v >= 0.95)
		}
	}
	// Added latency at concurrency 1: paired per step.
	for _, x := range r.serial {
		if strings.Contains(x.label, "stream") {
			continue
		}
		lim := 300.0
		if strings.HasPrefix(x.label, "4 KB") {
			lim = 50
		}
		v := x.pairedMedian("B", "A")
		r.check(fmt.Sprintf("added p50, %s, conc 1 (interleaved, paired)", x.label), fmt.Sprintf("≤ %.0f µs", lim),
			fmt.Sprintf("%+.0f µs (noise A2−A %+.0f µs)", v, x.pairedMedian("A2", "A")), v <= lim)
	}
	// Added latency at concurrency 32, paced below saturation.
	for _, s := range r.paced {
		if s.stream {
			v := median(s.d99)
			r.check(fmt.Sprintf("first SSE event B−A p99, conc %d paced at %.0f req/s", s.conc, s.rate), "≤ 1 ms",
				fmt.Sprintf("%s µs (p50 %+.0f µs%s)", rng(s.d99, "%+.0f"), median(s.d50), s.disturbedNote()), v <= 1000)
			continue
		}
		lim := 300.0
		if strings.HasPrefix(s.label, "4 KB") {
			lim = 50
		}
		v := median(s.d50)
		r.check(fmt.Sprintf("added p50, %s, conc %d paced at %.0f req/s", strings.TrimSuffix(s.label, " JSON"), s.conc, s.rate), fmt.Sprintf("≤ %.0f µs", lim),
			rng(s.d50, "%+.0f")+" µs"+s.disturbedNote(), v <= lim)
	}
	// Time to the first SSE event at concurrency 1: p99 as the median over blocks.
	for _, x := range r.serial {
		if !strings.Contains(x.label, "stream") {
			continue
		}
		d := x.blockP99("B", "A", r.o.blocks)
		v := median(d)
		r.check(fmt.Sprintf("time to first SSE event B−A p99, conc 1 (interleaved; median of %d block p99s)", len(d)), "≤ 1 ms",
			fmt.Sprintf("%s µs (whole run %+.0f µs; noise A2−A block median %+.0f µs; p50 paired %+.0f µs)", rng(d, "%+.0f"),
				x.p("B", .99)-x.p("A", .99), median(x.blockP99("A2", "A", r.o.blocks)), x.pairedMedian("B", "A")), v <= 1000)
	}
	// Saturated closed-loop latency: queueing, shown for reference.
	for _, s := range r.load {
		lim := 300.0
		if strings.HasPrefix(s.label, "4 KB") {
			lim = 50
		}
		r.info(fmt.Sprintf("added p50, %s, conc %d closed loop (saturated: queueing)", s.label, s.conc), fmt.Sprintf("(≤ %.0f µs)", lim), rng(s.d50, "%+.0f")+" µs"+s.disturbedNote())
	}
	for _, s := range r.stream {
		r.info(fmt.Sprintf("first SSE event B−A p99, conc %d closed loop (saturated: queueing)", s.conc), "(≤ 1 ms)", rng(s.d99, "%+.0f")+" µs"+s.disturbedNote())
	}
	// Memory per open stream: median of paired rounds.
	for _, size := range memSizes(r.mem) {
		if size >= 10<<10 {
			continue
		}
		dr, dl := memPairs(r.mem, size)
		if len(dr) == 0 {
			continue
		}
		kb := func(v []float64) string {
			if len(v) == 1 {
				return fmt.Sprintf("%+.1f KB (1 pair)", v[0]/1024)
			}
			return rng(scale(v, 1.0/1024), "%+.1f") + fmt.Sprintf(" KB (%d pairs)", len(v))
		}
		r.check(fmt.Sprintf("memory per open stream (%d B body), B−A RSS, median of paired rounds", size), "≤ 8 KB", kb(dr), median(dr) <= 8192)
		r.check(fmt.Sprintf("memory per open stream (%d B body), B−A heap+stack, median of paired rounds", size), "≤ 8 KB", kb(dl), median(dl) <= 8192)
	}
	// Selection + reservation: keypool's BenchmarkAcquire.
	for _, row := range microTable(r.acquire) {
		b := row.byKeys[100]
		if b == nil || row.strategy != r.o.strategy {
			continue
		}
		ns, al := b.medNS(), b.medAlloc()
		r.check(fmt.Sprintf("selection + reservation (Acquire), %s, 100 keys, %s", row.strategy, row.mode), "≤ 200 ns, 0 allocs",
			fmt.Sprintf("%.0f ns, %.0f allocs", ns, al), ns <= 200 && al == 0)
		if b1k := row.byKeys[1000]; b1k != nil {
			g := b1k.medNS() / ns
			r.check(fmt.Sprintf("selection + reservation growth 100 → 1000 keys, %s, %s", row.strategy, row.mode), "sub-linear (< 10×)",
				fmt.Sprintf("%.2f× (%.0f → %.0f ns)", g, ns, b1k.medNS()), g < 10)
		}
	}
	// A request's whole accounting (Acquire + Settle): for reference.
	for _, row := range microTable(r.pool) {
		b := row.byKeys[100]
		if b == nil || row.strategy != r.o.strategy {
			continue
		}
		g := ""
		if b1k := row.byKeys[1000]; b1k != nil {
			g = fmt.Sprintf("; 1000 keys %.0f ns (%.2f×)", b1k.medNS(), b1k.medNS()/b.medNS())
		}
		r.info(fmt.Sprintf("Acquire + Settle (whole accounting), %s, 100 keys, %s", row.strategy, row.mode), "–",
			fmt.Sprintf("%.0f ns, %.0f allocs%s", b.medNS(), b.medAlloc(), g))
	}
}

func (r *report) microMarkdown(p func(string, ...any), title string, lines []*benchLine) {
	rows := microTable(lines)
	if len(rows) == 0 {
		return
	}
	p("%s:\n\n| strategy | mode | 1 key | 10 keys | 100 keys | 1000 keys | allocs/op (1/10/100/1000) | 1000 ÷ 100 |\n|---|---|---|---|---|---|---|---|\n", title)
	for _, row := range rows {
		cell := func(n int) string {
			if b := row.byKeys[n]; b != nil {
				return fmt.Sprintf("%.0f ns", b.medNS())
			}
			return "–"
		}
		al := func(n int) string {
			if b := row.byKeys[n]; b != nil {
				return fmt.Sprintf("%.0f", b.medAlloc())
			}
			return "–"
		}
		g := "–"
		if a, b := row.byKeys[100], row.byKeys[1000]; a != nil && b != nil {
			g = fmt.Sprintf("%.2f×", b.medNS()/a.medNS())
		}
		mode := row.mode
		if mode == "" {
			mode = "serial"
		}
		p("| %s | %s | %s | %s | %s | %s | %s/%s/%s/%s | %s |\n", row.strategy, mode, cell(1), cell(10), cell(100), cell(1000),
			al(1), al(10), al(100), al(1000), g)
	}
	p("\n")
}

func (pr *profileResult) markdown(p func(string, ...any)) {
	p("## CPU profile of site %s (%d s, %d B bodies, conc %d)\n\n", pr.site, pr.seconds, pr.bodySize, pr.conc)
	if pr.err != "" {
		p("Profile analysis error: `%s`\n\n", pr.err)
	}
	if pr.requests > 0 {
		p("%d requests during the profile (%.0f req/s); Caddy CPU %.1f µs/request. ", pr.requests, float64(pr.requests)/float64(pr.seconds),
			float64(pr.cpuNS)/float64(pr.requests)/1000)
	}
	if pr.totalCPU > 0 {
		p("Samples attributed to the module: %.2f s of %.2f s (%.1f%%)", pr.moduleCPU/1e9, pr.totalCPU/1e9, 100*pr.moduleCPU/pr.totalCPU)
		if pr.requests > 0 {
			p(", i.e. %.1f µs/request", pr.moduleCPU/float64(pr.requests)/1000)
		}
		p(". A sample belongs to the module when its nearest module frame (from the leaf) did not merely hand work on to Caddy (next.ServeHTTP, the client ResponseWriter's Write/WriteHeader/Flush); GC background work caused by module allocations is not counted. Profile: `%s`.\n\n", pr.cpu)
	}
	if len(pr.cpuOwners) > 0 {
		p("| module function (incl. runtime/stdlib callees) | CPU s | share of all samples |\n|---|---|---|\n")
		for i, o := range pr.cpuOwners {
			if i >= 15 {
				break
			}
			p("| %s | %.2f | %.1f%% |\n", shortFn(o.fn), o.value/1e9, 100*o.value/pr.totalCPU)
		}
		p("\n")
	}
	if len(pr.topFlat) > 0 {
		p("`go tool pprof -top` (flat), module entries:\n\n```\n      flat  flat%%   sum%%        cum   cum%%\n%s\n```\n\n", strings.Join(pr.topFlat, "\n"))
	}
	if len(pr.topCum) > 0 {
		p("`go tool pprof -top -cum`, module entries:\n\n```\n      flat  flat%%   sum%%        cum   cum%%\n%s\n```\n\n", strings.Join(pr.topCum, "\n"))
	}
	if len(pr.allocOwners) > 0 {
		perReq := func(v float64) string {
			if pr.allocRequests <= 0 {
				return "–"
			}
			return fmt.Sprintf("%.1f", v/float64(pr.allocRequests))
		}
		p("Allocations during the profiled load (heap profile diff, sampled estimate), %d requests: module %.0f objects of %.0f (%s objects/request, %s KB/request attributed to the module).\n\n",
			pr.allocRequests, pr.moduleAlloc, pr.totalAllocs, perReq(pr.moduleAlloc), perReq(pr.moduleBytes/1024))
		p("| module function (incl. callees) | objects/request | bytes/request |\n|---|---|---|\n")
		for i, o := range pr.allocOwners {
			if i >= 12 {
				break
			}
			p("| %s | %s | %s |\n", shortFn(o.fn), perReq(o.value), perReq(o.bytes))
		}
		p("\n")
	}
}

func ordinal(n int) string {
	suf := "th"
	if n%100 < 11 || n%100 > 13 {
		switch n % 10 {
		case 1:
			suf = "st"
		case 2:
			suf = "nd"
		case 3:
			suf = "rd"
		}
	}
	return fmt.Sprintf("%d%s largest", n, suf)
}
