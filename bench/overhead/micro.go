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
	cmd.Dir = o.root
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

func hasBench(o *options, pkg, name string) bool {
	cmd := exec.Command("go", "test", "-list", name, pkg)
	cmd.Dir = o.root
	out, err := cmd.Output()
	return err == nil && bytes.Contains(out, []byte(name))
}

func runMicro(o *options, rep *report) error {
	strat := ""
	if o.quick {
		strat = "/" + o.strategy
	}
	var raw []string
	log.Printf("micro-benchmarks: selector BenchmarkPick")
	sel, r, err := runGoBench(o, "./selector", "^BenchmarkPick$"+strat)
	raw = append(raw, r)
	if err != nil {
		return err
	}
	rep.pick = sel
	if hasBench(o, "./keypool", "BenchmarkAcquireSettle") {
		log.Printf("micro-benchmarks: keypool BenchmarkAcquireSettle")
		pool, r, err := runGoBench(o, "./keypool", "^BenchmarkAcquireSettle$"+strat)
		raw = append(raw, r)
		if err != nil {
			return err
		}
		rep.pool = pool
		rep.poolSource = "keypool/bench_test.go BenchmarkAcquireSettle"
	}
	if rep.pool == nil || o.microAll {
		log.Printf("micro-benchmarks: bench/overhead BenchmarkPoolAcquireSettle")
		pool, r, err := runGoBench(o, "./bench/overhead", "^BenchmarkPoolAcquireSettle$"+strat)
		raw = append(raw, r)
		if err != nil {
			return err
		}
		if rep.pool == nil {
			rep.pool = pool
			rep.poolSource = "bench/overhead/pool_bench_test.go BenchmarkPoolAcquireSettle"
		} else {
			rep.poolOwn = pool
		}
	}
	_ = os.WriteFile(filepath.Join(o.out, "micro.txt"), []byte(strings.Join(raw, "\n")), 0o644)
	return nil
}

// microKey splits "BenchmarkAcquireSettle/least_loaded/keys=100/serial"
// into strategy, keys, mode.
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
		k := m[1] + "/" + m[3]
		row := rows[k]
		if row == nil {
			row = &microRow{strategy: m[1], mode: m[3], byKeys: map[int]*benchLine{}}
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
