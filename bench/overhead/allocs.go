package main

import (
	"fmt"
	"log"
	"os"
	"path/filepath"
)

// allocResult is an exact per-request allocation breakdown of site B: a
// fresh Caddy with every allocation profiled (GODEBUG=memprofilerate=1).
type allocResult struct {
	label          string
	requests       int
	objects, bytes float64 // all of Caddy, per request
	modObj, modB   float64 // attributed to module frames, per request
	owners         []owned // per request
	siteAObj       float64 // same load through A, per request
	siteAB         float64
}

func runAllocs(o *options, rep *report) error {
	u, err := startUpstream()
	if err != nil {
		return err
	}
	defer u.close()
	ss, err := newSites(o, "caddy-allocs", u, o.conc*2, "GODEBUG=memprofilerate=1")
	if err != nil {
		return err
	}
	p, a, b := ss.p, ss.a, ss.b
	defer p.Stop()
	b4 := makeBodies(4<<10, 8, false)
	s4 := makeBodies(4<<10, 8, true)
	b200 := makeBodies(200<<10, 8, false)
	cases := []struct {
		label string
		n     int
		run   func(t *target, n int) *roundResult
	}{
		{"4 KB JSON", 2000, func(t *target, n int) *roundResult { return closedLoop(t, b4, n, 8) }},
		{"4 KB stream", 1000, func(t *target, n int) *roundResult { return streamLoop(t, s4, n, 8) }},
		{"200 KB JSON", 300, func(t *target, n int) *roundResult { return closedLoop(t, b200, n, 8) }},
	}
	for _, c := range cases {
		for _, t := range []*target{a, b} {
			c.run(t, 200) // warm-up
		}
		res := &allocResult{label: c.label, requests: c.n}
		for _, t := range []*target{a, b} {
			before := filepath.Join(o.out, fmt.Sprintf("allocs-exact-%s-%d-before.pprof", t.name, len(rep.allocs)))
			after := filepath.Join(o.out, fmt.Sprintf("allocs-exact-%s-%d-after.pprof", t.name, len(rep.allocs)))
			if err := saveProfile(p, "/debug/pprof/allocs", before); err != nil {
				return err
			}
			r := c.run(t, c.n)
			if r.errors > 0 {
				return fmt.Errorf("%s through %s: %d errors, first: %s", c.label, t.name, r.errors, r.firstErr)
			}
			if err := saveProfile(p, "/debug/pprof/allocs", after); err != nil {
				return err
			}
			n := float64(c.n)
			outO, err := pprofOut("-traces", "-sample_index=alloc_objects", "-base", before, after)
			if err != nil {
				return err
			}
			outB, err := pprofOut("-traces", "-sample_index=alloc_space", "-base", before, after)
			if err != nil {
				return err
			}
			totB, modB, ownersB := group(parseTraces(outB), nil)
			bytesOf := map[string]float64{}
			for _, ow := range ownersB {
				bytesOf[ow.fn] = ow.value
			}
			totO, modO, owners := group(parseTraces(outO), bytesOf)
			if t == a {
				res.siteAObj, res.siteAB = totO/n, totB/n
				continue
			}
			res.objects, res.bytes, res.modObj, res.modB = totO/n, totB/n, modO/n, modB/n
			for _, ow := range owners {
				ow.value /= n
				ow.bytes /= n
				res.owners = append(res.owners, ow)
			}
		}
		rep.allocs = append(rep.allocs, res)
		log.Printf("  allocations %s: A %.0f objects/req, B %.0f objects/req, module %.1f objects %.0f B/req",
			c.label, res.siteAObj, res.objects, res.modObj, res.modB)
	}
	return nil
}

func saveProfile(p *caddyProc, path, file string) error {
	if err := p.GC(); err != nil {
		return err
	}
	b, err := p.Get(path)
	if err != nil {
		return err
	}
	return os.WriteFile(file, b, 0o644)
}

func (r *report) allocsMarkdown(p func(string, ...any)) {
	if len(r.allocs) == 0 {
		return
	}
	p("## Allocations per request (exact)\n\n")
	p("A separate Caddy process with every allocation profiled (GODEBUG=memprofilerate=1), concurrency 8; the heap profile difference over the load divided by the requests. Allocation counts do not depend on machine noise.\n\n")
	p("| load | A objects/req | B objects/req | B−A | A KB/req | B KB/req | B−A KB | in module frames: objects/req | KB/req |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, a := range r.allocs {
		p("| %s | %.1f | %.1f | %+.1f | %.1f | %.1f | %+.1f | %.1f | %.1f |\n", a.label, a.siteAObj, a.objects, a.objects-a.siteAObj,
			a.siteAB/1024, a.bytes/1024, (a.bytes-a.siteAB)/1024, a.modObj, a.modB/1024)
	}
	p("\n")
	for _, a := range r.allocs {
		p("%s, site B, by module function (the module frame nearest the allocation; runtime/stdlib callees included):\n\n| function | objects/req | B/req |\n|---|---|---|\n", a.label)
		for i, ow := range a.owners {
			if i >= 14 || ow.value < 0.05 {
				break
			}
			p("| %s | %.1f | %.0f |\n", shortFn(ow.fn), ow.value, ow.bytes)
		}
		p("\n")
	}
}
