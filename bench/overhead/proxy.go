package main

import (
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// sites is one Caddy with sites A (reverse_proxy), A2 (the same again, to
// show the noise floor) and B (cc_relay + reverse_proxy).
type sites struct {
	p        *caddyProc
	a, a2, b *target
}

// newSites starts one Caddy with sites A, A2 and B in front of u.
func newSites(o *options, name string, u *upstream, maxConns int, env ...string) (*sites, error) {
	var ports [4]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	cfg := siteConfig{upstream: u.addr, portA: ports[0], portB: ports[1], portA2: ports[3], admin: fmt.Sprintf("127.0.0.1:%d", ports[2]),
		keys: o.keys, strategy: o.strategy, env: env}
	p, err := startCaddy(o.caddy, o.out, name, cfg)
	if err != nil {
		return nil, err
	}
	return &sites{p: p, a: newTarget("A", cfg.portA, maxConns), a2: newTarget("A2", cfg.portA2, maxConns),
		b: newTarget("B", cfg.portB, maxConns)}, nil
}

// measure runs f and charges it the Caddy CPU time and allocations that
// happened meanwhile.
func measure(p *caddyProc, f func() *roundResult) *roundResult {
	m0, _ := p.MemStats()
	f0 := foreignNS(p)
	c0 := p.CPUNS()
	r := f()
	c1 := p.CPUNS()
	f1 := foreignNS(p)
	m1, _ := p.MemStats()
	r.cpuNS = c1 - c0
	r.foreign = max(0, float64(f1-f0)/float64(r.elapsed))
	r.mallocs = m1.Mallocs - m0.Mallocs
	r.allocB = m1.TotalAlloc - m0.TotalAlloc
	return r
}

// alternate runs -pairs pairs of rounds in the order A B, B A, A B, … and
// returns their statistics. A pair during either round of which other
// processes used more than -max-other cores is run again, both rounds, at
// most -reruns times per measurement: the decision does not look at A or B.
// logf describes a finished pair for the log.
func alternate(o *options, p *caddyProc, a, b *target, label string, conc, n int, run func(t *target) *roundResult,
	logf func(ra, rb *roundResult) string) *pairStats {
	s := &pairStats{label: label, conc: conc, n: n}
	for i := 0; i < o.pairs; {
		var ra, rb *roundResult
		if i%2 == 0 {
			ra = measure(p, func() *roundResult { return run(a) })
			rb = measure(p, func() *roundResult { return run(b) })
		} else {
			rb = measure(p, func() *roundResult { return run(b) })
			ra = measure(p, func() *roundResult { return run(a) })
		}
		other := max(ra.foreign, rb.foreign)
		disturbed := o.maxOther > 0 && other > o.maxOther
		if disturbed && s.reruns < o.reruns {
			s.reruns++
			log.Printf("  %s pair %d/%d: other processes used %.2f/%.2f cores (> %.2f): running the pair again (%d/%d)", label, i+1, o.pairs,
				ra.foreign, rb.foreign, o.maxOther, s.reruns, o.reruns)
			continue
		}
		if disturbed {
			s.disturbed++
		}
		s.add(ra, rb)
		s.other = append(s.other, other)
		log.Printf("  %s pair %d/%d: %s (errors %d/%d, other processes %.2f/%.2f cores)", label, i+1, o.pairs, logf(ra, rb),
			ra.errors, rb.errors, ra.foreign, rb.foreign)
		i++
	}
	return s
}

func logClosed(ra, rb *roundResult) string {
	return fmt.Sprintf("A %.0f req/s p50 %.0fµs | B %.0f req/s p50 %.0fµs", ra.rps(), us(ra.pct(.5)), rb.rps(), us(rb.pct(.5)))
}

func runProxyPhases(o *options, rep *report, phase map[string]bool) error {
	u, err := startUpstream()
	if err != nil {
		return err
	}
	defer u.close()
	ss, err := newSites(o, "caddy-ab", u, max(o.conc, o.streamConc)*2)
	if err != nil {
		return err
	}
	p, a, b := ss.p, ss.a, ss.b
	defer p.Stop()
	log.Printf("caddy pid %d: A %s, B %s, admin %s, upstream %s", p.PID(), a.url, b.url, p.Admin(), u.addr)

	sessions := max(o.conc, o.streamConc)
	b4 := makeBodies(4<<10, sessions, false)
	b200 := makeBodies(200<<10, sessions, false)
	s4 := makeBodies(4<<10, sessions, true)
	rep.bodySizes = [2]int{len(b4.bodies[0]), len(b200.bodies[0])}

	// Warm up both sites: connections, pools, the relay's estimator.
	log.Printf("warm-up")
	for _, t := range []*target{a, b} {
		for _, r := range []*roundResult{
			closedLoop(t, b4, 2000, o.conc), closedLoop(t, b200, 200, o.conc), streamLoop(t, s4, 500, o.streamConc),
		} {
			if r.errors > 0 {
				return fmt.Errorf("warm-up through %s: %d errors, first: %s", t.name, r.errors, r.firstErr)
			}
		}
	}

	if phase["load"] {
		log.Printf("non-streaming rounds")
		rep.load = append(rep.load,
			alternate(o, p, a, b, "4 KB", o.conc, o.n4k, func(t *target) *roundResult { return closedLoop(t, b4, o.n4k, o.conc) }, logClosed),
			alternate(o, p, a, b, "200 KB", o.conc, o.n200k, func(t *target) *roundResult { return closedLoop(t, b200, o.n200k, o.conc) }, logClosed),
		)
		log.Printf("interleaved requests at concurrency 1")
		ts := []*target{a, ss.a2, b}
		rep.serial = append(rep.serial,
			interleaved("4 KB JSON", ts, o.nSerial, jsonOnce(b4)),
			interleaved("200 KB JSON", ts, o.nSerial/2, jsonOnce(b200)),
		)
	}
	if phase["stream"] {
		log.Printf("streaming rounds")
		rep.stream = append(rep.stream,
			alternate(o, p, a, b, "4 KB", o.streamConc, o.streamNLoaded, func(t *target) *roundResult {
				return streamLoop(t, s4, o.streamNLoaded, o.streamConc)
			}, logClosed),
		)
		log.Printf("interleaved streams at concurrency 1")
		rep.serial = append(rep.serial, interleaved("4 KB stream: first event", []*target{a, ss.a2, b}, o.streamN, streamOnce(s4)))
	}
	if phase["paced"] {
		// Site A's closed-loop throughput for each load, from the rounds
		// above (or three short calibration rounds when they did not run).
		sat := func(rounds []*pairStats, label, what string, run func() *roundResult) (float64, string) {
			for _, s := range rounds {
				if s.label == label {
					return median(s.rpsA), fmt.Sprintf("median of %d closed-loop rounds at conc %d", len(s.rpsA), s.conc)
				}
			}
			if o.pacedRates[0] > 0 {
				return 0, ""
			}
			log.Printf("calibrating site A's closed-loop throughput, %s", what)
			return calibrate(run), fmt.Sprintf("median of 3 calibration rounds at conc %d", o.conc)
		}
		s4k, from4k := sat(rep.load, "4 KB", "4 KB JSON", func() *roundResult { return closedLoop(a, b4, o.n4k, o.conc) })
		s200k, from200k := sat(rep.load, "200 KB", "200 KB JSON", func() *roundResult { return closedLoop(a, b200, o.n200k, o.conc) })
		sst, fromst := sat(rep.stream, "4 KB", "4 KB stream", func() *roundResult { return streamLoop(a, s4, o.streamNLoaded, o.streamConc) })
		rep.paced = append(rep.paced,
			runPaced(o, p, a, b, "4 KB JSON", false, o.pacedRates[0], s4k, from4k, jsonOnce(b4)),
			runPaced(o, p, a, b, "200 KB JSON", false, o.pacedRates[1], s200k, from200k, jsonOnce(b200)),
			runPaced(o, p, a, b, "4 KB stream: first event", true, o.pacedRates[2], sst, fromst, streamOnce(s4)),
		)
	}
	if phase["profile"] {
		sets := []*bodySet{b4}
		if o.profile200k {
			sets = append(sets, b200)
		}
		for _, bs := range sets {
			for _, t := range []*target{b, a} {
				pr, err := profileSite(o, p, t, bs)
				if err != nil {
					return fmt.Errorf("profile %s: %v", t.name, err)
				}
				rep.profiles = append(rep.profiles, pr)
			}
		}
	}
	return nil
}

// profileSite loads t with 4 KB requests at -conc while the Caddy process
// takes a CPU profile, and takes allocation profiles before and after.
func profileSite(o *options, p *caddyProc, t *target, bs *bodySet) (*profileResult, error) {
	log.Printf("profiling %s for %ds", t.name, o.profileSec)
	pr := &profileResult{site: t.name, seconds: o.profileSec, bodySize: len(bs.bodies[0]), conc: o.conc}
	tag := fmt.Sprintf("%s-%dk", t.name, bs.size>>10)
	save := func(path, name string) (string, error) {
		if strings.HasPrefix(path, "/debug/pprof/allocs") {
			// Publish every allocation made so far: the allocs profile
			// is as of the last completed GC.
			if err := p.GC(); err != nil {
				return "", err
			}
		}
		b, err := p.Get(path)
		if err != nil {
			return "", err
		}
		f := filepath.Join(o.out, name)
		return f, os.WriteFile(f, b, 0o644)
	}
	var err error
	if pr.allocsBefore, err = save("/debug/pprof/allocs", "allocs-"+tag+"-before.pprof"); err != nil {
		return nil, err
	}
	var stop atomic.Bool
	var reqs atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 100000 && !stop.Load(); i++ {
			r := closedLoop(t, bs, 200, o.conc)
			reqs.Add(int64(r.n - r.errors))
		}
	}()
	time.Sleep(200 * time.Millisecond)
	c0 := p.CPUNS()
	r0 := reqs.Load()
	pr.cpu, err = save(fmt.Sprintf("/debug/pprof/profile?seconds=%d", o.profileSec), "cpu-"+tag+".pprof")
	pr.requests = reqs.Load() - r0
	pr.cpuNS = p.CPUNS() - c0
	stop.Store(true)
	<-done
	pr.allocRequests = reqs.Load()
	if err != nil {
		return nil, err
	}
	if pr.allocsAfter, err = save("/debug/pprof/allocs", "allocs-"+tag+"-after.pprof"); err != nil {
		return nil, err
	}
	pr.analyse()
	return pr, nil
}
