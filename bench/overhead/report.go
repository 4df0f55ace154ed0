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
	pick, pool, poolOwn                         []*benchLine
	poolSource                                  string
	soak                                        *soakResult
	notes                                       []string
	elapsed                                     time.Duration
	checks                                      []check
}

type check struct {
	what, target, got string
	ok                bool
}

func (r *report) check(what, target, got string, ok bool) {
	r.checks = append(r.checks, check{what, target, got, ok})
}

func mark(ok bool) string {
	if ok {
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
	p("| command | `go run ./bench/overhead %s` |\n", r.cmdline)
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
		p("CPU/req is the Caddy process's CPU time per request (from /proc/<pid>/task/*/schedstat), allocs/req and bytes/req its heap allocations per request (runtime.MemStats via the admin /debug/vars), both of the whole process: proxying included.\n\n")
	}

	if len(r.load) > 0 {
		p("## Non-streaming requests\n\n")
		p("| body | conc | req/round | A req/s | B req/s | B/A | A p50 µs | B p50 µs | B−A p50 µs | A p99 µs | B p99 µs | B−A p99 µs | errors A/B |\n")
		p("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, s := range r.load {
			p("| %s | %d | %d | %.0f | %.0f | %s | %.0f | %.0f | %s | %.0f | %.0f | %s | %d/%d |\n", s.label, s.conc, s.n,
				median(s.rpsA), median(s.rpsB), rng(s.ratio, "%.3f"), median(s.p50A), median(s.p50B), rng(s.d50, "%+.0f"),
				median(s.p99A), median(s.p99B), rng(s.d99, "%+.0f"), s.errorsA, s.errorsB)
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
		for _, x := range r.serial {
			if x.first != "" {
				p("First error (%s): `%s`\n\n", x.label, x.first)
			}
		}
	}
	if len(r.stream) > 0 {
		p("## Streaming: time to first SSE event\n\n")
		p("From sending the request to having read the whole first event (message_start). The upstream then sends content_block_start, ping, 5 content_block_delta, content_block_stop, message_delta, message_stop, each flushed.\n\n")
		p("| body | conc | streams/round | A p50 µs | B p50 µs | B−A p50 µs | A p99 µs | B p99 µs | B−A p99 µs | B−A CPU µs/stream | B−A allocs/stream | errors A/B |\n")
		p("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, s := range r.stream {
			p("| %s | %d | %d | %.0f | %.0f | %s | %.0f | %.0f | %s | %s | %s | %d/%d |\n", s.label, s.conc, s.n,
				median(s.p50A), median(s.p50B), rng(s.d50, "%+.0f"), median(s.p99A), median(s.p99B), rng(s.d99, "%+.0f"),
				rng(s.dcpu, "%+.1f"), rng(s.dalloc, "%+.0f"), s.errorsA, s.errorsB)
		}
		p("\n")
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
		p("\n| body B | B−A RSS B/stream (median) | B−A heap+stack B/stream (median) |\n|---|---|---|\n")
		for _, size := range memSizes(r.mem) {
			var ra, rb, la, lb []float64
			for _, m := range r.mem {
				if m.bodySize != size {
					continue
				}
				if m.site == "A" {
					ra, la = append(ra, m.perStreamRSS()), append(la, m.perStreamLive())
				} else {
					rb, lb = append(rb, m.perStreamRSS()), append(lb, m.perStreamLive())
				}
			}
			dr, dl := median(rb)-median(ra), median(lb)-median(la)
			p("| %d | %+.0f | %+.0f |\n", size, dr, dl)
			if size < 10<<10 {
				r.check(fmt.Sprintf("memory per open stream (%d B body), B−A", size), "≤ 8 KB", fmt.Sprintf("RSS %+.1f KB, heap+stack %+.1f KB", dr/1024, dl/1024), dr <= 8192)
			}
		}
		p("\n")
	}
	r.allocsMarkdown(p)
	for _, pr := range r.profiles {
		pr.markdown(p)
	}
	if len(r.pick) > 0 || len(r.pool) > 0 {
		p("## Selection and accounting micro-benchmarks\n\n")
		p("`go test -bench -benchmem -benchtime %s -count %d`; median ns/op over the runs, allocs/op.\n\n", r.o.benchtime, r.o.microCount)
		r.microMarkdown(p, "selector BenchmarkPick (selection only)", r.pick)
		r.microMarkdown(p, r.poolSource+" (Acquire = select + reserve, then Settle)", r.pool)
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
			p("| %s | %s | %s | %s |\n", c.what, c.target, c.got, mark(c.ok))
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

func (r *report) loadChecks() {
	for _, s := range r.load {
		small := strings.HasPrefix(s.label, "4 KB")
		if s.conc > 1 && small {
			v := median(s.ratio)
			r.check(fmt.Sprintf("throughput B/A, 4 KB, conc %d", s.conc), "≥ 0.95", fmt.Sprintf("%.3f", v), v >= 0.95)
		}
		lim := 300.0
		if small {
			lim = 50
		}
		v := median(s.d50)
		r.check(fmt.Sprintf("added p50, %s, conc %d (rounds, saturated)", s.label, s.conc), fmt.Sprintf("≤ %.0f µs", lim), fmt.Sprintf("%+.0f µs", v), v <= lim)
	}
	for _, x := range r.serial {
		if strings.Contains(x.label, "stream") {
			v := x.p("B", .99) - x.p("A", .99)
			r.check("time to first SSE event B−A p99, conc 1 (interleaved)", "≤ 1 ms",
				fmt.Sprintf("%+.0f µs (p50 paired %+.0f µs; noise A2−A p99 %+.0f µs)", v, x.pairedMedian("B", "A"), x.p("A2", .99)-x.p("A", .99)), v <= 1000)
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
	for _, s := range r.stream {
		v := median(s.d99)
		r.check(fmt.Sprintf("time to first SSE event B−A p99, conc %d (rounds)", s.conc), "≤ 1 ms", fmt.Sprintf("%+.0f µs", v), v <= 1000)
	}
	for _, rows := range [][]*microRow{microTable(r.pool)} {
		for _, row := range rows {
			b := row.byKeys[100]
			if b == nil || row.strategy != r.o.strategy {
				continue
			}
			ns, al := b.medNS(), b.medAlloc()
			r.check(fmt.Sprintf("Acquire+Settle, %s, 100 keys, %s", row.strategy, row.mode), "≤ 200 ns, 0 allocs",
				fmt.Sprintf("%.0f ns, %.0f allocs", ns, al), ns <= 200 && al == 0)
			if b1k := row.byKeys[1000]; b1k != nil {
				g := b1k.medNS() / ns
				r.check(fmt.Sprintf("growth 100 → 1000 keys, %s, %s", row.strategy, row.mode), "sub-linear (< 10×)",
					fmt.Sprintf("%.2f×", g), g < 10)
			}
		}
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
