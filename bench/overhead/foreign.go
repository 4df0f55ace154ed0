package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The machine is shared: other processes (builds, tests) can take a core
// for seconds, long enough to decide a round. foreignNS estimates the CPU
// time everything else used: the machine's busy time (user, nice, system,
// steal from /proc/stat; interrupt time is left out, as our own loopback
// traffic lands there) minus this process (load generator and upstream) and
// the Caddy process. It says nothing about A or B, so a pair of rounds can
// be re-run on it without favouring either site.

const clockTick = 10_000_000 // ns per USER_HZ tick (100 Hz on Linux)

func hostBusyNS() int64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system irq softirq steal
		v, _ := strconv.ParseInt(f[i], 10, 64)
		busy += v
	}
	return busy * clockTick
}

// tasksNS is the CPU time of every thread of process pid (schedstat, ns).
func tasksNS(pid string) int64 {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%s/task/*/schedstat", pid))
	var sum int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			sum += n
		}
	}
	return sum
}

// foreignNS is the machine's busy CPU time minus ours and Caddy's, as a
// counter: take it before and after a round and subtract.
func foreignNS(p *caddyProc) int64 {
	return hostBusyNS() - tasksNS("self") - p.CPUNS()
}
