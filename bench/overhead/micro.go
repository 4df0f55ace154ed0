package main

import (
	"bufio"
	"bytes"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// benchLine is one benchmark's figures, the median over -count runs.
type benchLine struct {
	pkg, name string
	ns, alloc []float64
}

func (b *benchLine) medNS() float64    { return median(b.ns) }
func (b *benchLine) medAlloc() float64 { return median(b.alloc) }

var benchRe = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op(?:\s+([\d.]+) B/op\s+([\d.]+) allocs/op)?`)

func runGoBench(o *options, pkg, bench string) ([]*benchLine, string, error) {
	args := []string{"test", "-run", "^$", "-bench", bench, "-benchmem", "-benchtime", o.benchtime,
		"-count", strconv.Itoa(o.microCount), pkg}
	cmd := exec.Command("go", args...)
	cmd.Dir = pkgDir(o, pkg)
	out, err := cmd.CombinedOutput()
	raw := "go " + strings.Join(args, " ") + "\n" + string(out)
	if err != nil {
		return nil, raw, fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	byName := map[string]*benchLine{}
	var order []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := benchRe.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		b := byName[m[1]]
		if b == nil {
			b = &benchLine{pkg: pkg, name: m[1]}
			byName[m[1]] = b
			order = append(order, m[1])
		}
		ns, _ := strconv.ParseFloat(m[2], 64)
		al, _ := strconv.ParseFloat(m[4], 64)
		b.ns, b.alloc = append(b.ns, ns), append(b.alloc, al)
	}
	var res []*benchLine
	for _, n := range order {
		res = append(res, byName[n])
	}
	return res, raw, nil
}

// pkgDir is where the go command must run for pkg: the repository root for
// the module's own packages, bench/ (a module of its own) for "./overhead".
func pkgDir(o *options, pkg string) string {
	if pkg == ownBenchPkg {
		return filepath.Join(o.root, "bench")
	}
	return o.root
}

// ownBenchPkg is this command's package, relative to bench/.
const ownBenchPkg = "./overhead"

// hasBench reports whether pkg's tests define the benchmark name (exactly).
func hasBench(o *options, pkg, name string) bool {
	cmd := exec.Command("go", "test", "-list", "^"+name+"$", pkg)
	cmd.Dir = pkgDir(o, pkg)
	out, err := cmd.Output()
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.TrimSpace(l) == name {
			return true
		}
	}
	return false
}

// runMicro runs the selector's BenchmarkPick, keypool's BenchmarkAcquire
// (selection + reservation: the target) and BenchmarkAcquireSettle
// (a request's whole accounting). Where keypool lacks one, this command's
// own benchmark written against keypool's exported API stands in.
func runMicro(o *options, rep *report) error {
	strat := ""
	if o.quick {
		strat = "/" + o.strategy
	}
	var raw []string
	bench := func(pkg, name string) ([]*benchLine, error) {
		log.Printf("micro-benchmarks: %s %s", pkg, name)
		lines, r, err := runGoBench(o, pkg, "^"+name+"$"+strat)
		raw = append(raw, r)
		return lines, err
	}
	var err error
	if rep.pick, err = bench("./selector", "BenchmarkPick"); err != nil {
		return err
	}
	for _, x := range []struct {
		keypool, own string
		lines        *[]*benchLine
		source       *string
	}{
		{"BenchmarkAcquire", "BenchmarkPoolAcquire", &rep.acquire, &rep.acquireSource},
		{"BenchmarkAcquireSettle", "BenchmarkPoolAcquireSettle", &rep.pool, &rep.poolSource},
	} {
		if hasBench(o, "./keypool", x.keypool) {
			if *x.lines, err = bench("./keypool", x.keypool); err != nil {
				return err
			}
			*x.source = "keypool/bench_test.go " + x.keypool
		}
		if *x.lines == nil || o.microAll {
			own, err := bench(ownBenchPkg, x.own)
			if err != nil {
				return err
			}
			if *x.lines == nil {
				*x.lines = own
				*x.source = "bench/overhead/pool_bench_test.go " + x.own
			} else if x.own == "BenchmarkPoolAcquireSettle" {
				rep.poolOwn = own
			} else {
				rep.acquireOwn = own
			}
		}
	}
	_ = os.WriteFile(filepath.Join(o.out, "micro.txt"), []byte(strings.Join(raw, "\n")), 0o644)
	return nil
}

// microRe splits "BenchmarkAcquireSettle/least_loaded/keys=100/serial"
// into strategy, keys, mode; a name without a mode
// ("BenchmarkAcquire/least_loaded/keys=100") is serial.
var microRe = regexp.MustCompile(`^Benchmark\w+/(\w+)/keys=(\d+)(?:/(\w+))?$`)

type microRow struct {
	strategy string
	mode     string
	byKeys   map[int]*benchLine
}

func microTable(lines []*benchLine) []*microRow {
	rows := map[string]*microRow{}
	var order []string
	for _, l := range lines {
		m := microRe.FindStringSubmatch(l.name)
		if m == nil {
			continue
		}
		mode := m[3]
		if mode == "" {
			mode = "serial"
		}
		k := m[1] + "/" + mode
		row := rows[k]
		if row == nil {
			row = &microRow{strategy: m[1], mode: mode, byKeys: map[int]*benchLine{}}
			rows[k] = row
			order = append(order, k)
		}
		n, _ := strconv.Atoi(m[2])
		row.byKeys[n] = l
	}
	var res []*microRow
	for _, k := range order {
		res = append(res, rows[k])
	}
	return res
}
