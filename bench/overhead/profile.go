package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os/exec"
	"sort"
	"strconv"
	"strings"
)

const modulePath = "github.com/cc-relay/caddy-cc-relay/"

type profileResult struct {
	site                      string
	seconds                   int
	bodySize, conc            int
	cpu                       string // profile files
	allocsBefore, allocsAfter string
	requests                  int64 // requests during the CPU profile
	allocRequests             int64 // requests between the two allocation profiles
	cpuNS                     int64 // Caddy CPU time during the CPU profile

	totalCPU    float64 // ns of samples
	moduleCPU   float64 // ns attributed to the module
	cpuOwners   []owned
	topFlat     []string // go tool pprof -top lines of module functions
	topCum      []string
	totalAllocs float64 // objects allocated (sampled estimate)
	moduleAlloc float64
	moduleBytes float64
	allocOwners []owned
	err         string
}

// owned is cost attributed to the module function nearest the leaf.
type owned struct {
	fn    string
	value float64
	bytes float64
}

func shortFn(fn string) string { return strings.TrimPrefix(fn, modulePath) }

// passThrough reports whether a module frame calling fn merely forwards
// work that site A does too: calling the next handler, or writing and
// flushing the response to the client.
func passThrough(fn string) bool {
	if strings.HasPrefix(fn, modulePath) {
		return false
	}
	for _, s := range []string{".ServeHTTP", ".Write", ".WriteHeader", ".Flush", ".FlushError"} {
		if strings.HasSuffix(fn, s) {
			return true
		}
	}
	return strings.HasPrefix(fn, "net/http.(*ResponseController)")
}

// trace is one sample's stack, leaf first, and its value.
type trace struct {
	value  float64
	frames []string
}

// parseTraces parses `go tool pprof -traces` output.
func parseTraces(out []byte) []trace {
	var ts []trace
	var cur *trace
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "-----------+") {
			if cur != nil && len(cur.frames) > 0 {
				ts = append(ts, *cur)
			}
			cur = &trace{}
			continue
		}
		if cur == nil {
			continue
		}
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "bytes:") {
			continue // label lines such as "bytes:  256kB"
		}
		if len(cur.frames) == 0 {
			if f := strings.Fields(t); len(f) >= 2 {
				cur.value = parseValue(f[0])
				t = strings.Join(f[1:], " ")
			}
		}
		t = strings.TrimSuffix(t, " (inline)")
		cur.frames = append(cur.frames, t)
	}
	if cur != nil && len(cur.frames) > 0 {
		ts = append(ts, *cur)
	}
	return ts
}

// parseValue reads "10ms", "1.50s", "256kB", "32768", "1.5k".
func parseValue(s string) float64 {
	units := []struct {
		suf string
		mul float64
	}{{"ns", 1}, {"us", 1e3}, {"µs", 1e3}, {"ms", 1e6}, {"hrs", 3600e9}, {"mins", 60e9}, {"s", 1e9},
		{"kB", 1024}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"B", 1}, {"k", 1e3}, {"M", 1e6}, {"G", 1e9}}
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suf); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f * u.mul
			}
		}
	}
	f, _ := strconv.ParseFloat(s, 64)
	return f
}

// attribute returns the module function that owns a sample, or "".
func attribute(frames []string) string {
	for i, f := range frames {
		if strings.HasPrefix(f, modulePath) {
			if i > 0 && passThrough(frames[i-1]) {
				return ""
			}
			return f
		}
	}
	return ""
}

func pprofOut(args ...string) ([]byte, error) {
	cmd := exec.Command("go", append([]string{"tool", "pprof"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("go tool pprof %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

func group(ts []trace, bytesOf map[string]float64) (total, module float64, owners []owned) {
	by := map[string]float64{}
	for _, t := range ts {
		total += t.value
		if o := attribute(t.frames); o != "" {
			module += t.value
			by[o] += t.value
		}
	}
	for fn, v := range by {
		owners = append(owners, owned{fn: fn, value: v, bytes: bytesOf[fn]})
	}
	sort.Slice(owners, func(i, j int) bool { return owners[i].value > owners[j].value })
	return total, module, owners
}

func (pr *profileResult) analyse() {
	var errs []string
	if out, err := pprofOut("-traces", pr.cpu); err != nil {
		errs = append(errs, err.Error())
	} else {
		pr.totalCPU, pr.moduleCPU, pr.cpuOwners = group(parseTraces(out), nil)
	}
	for _, cum := range []bool{false, true} {
		args := []string{"-top", "-nodecount=100000"}
		if cum {
			args = append(args, "-cum")
		}
		out, err := pprofOut(append(args, pr.cpu)...)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		var lines []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, modulePath) && len(lines) < 15 {
				lines = append(lines, strings.ReplaceAll(l, modulePath, ""))
			}
		}
		if cum {
			pr.topCum = lines
		} else {
			pr.topFlat = lines
		}
	}
	// Allocations between the two heap profiles (sampled estimates).
	bytesOf := map[string]float64{}
	if out, err := pprofOut("-traces", "-sample_index=alloc_space", "-base", pr.allocsBefore, pr.allocsAfter); err == nil {
		_, mb, owners := group(parseTraces(out), nil)
		pr.moduleBytes = mb
		for _, o := range owners {
			bytesOf[o.fn] = o.value
		}
	} else {
		errs = append(errs, err.Error())
	}
	if out, err := pprofOut("-traces", "-sample_index=alloc_objects", "-base", pr.allocsBefore, pr.allocsAfter); err == nil {
		pr.totalAllocs, pr.moduleAlloc, pr.allocOwners = group(parseTraces(out), bytesOf)
	} else {
		errs = append(errs, err.Error())
	}
	pr.err = strings.Join(errs, "; ")
}
