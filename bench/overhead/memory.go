package main

import (
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/cc-relay/caddy-cc-relay/bench/internal/caddyproc"
)

// memRound is one fresh Caddy process holding n streams through one site.
type memRound struct {
	site        string
	round       int // rounds with the same index are a pair: A and B back to back
	bodySize    int
	streams     int
	failed      int
	rssKB       [2]int64  // before, with streams open
	live        [2]uint64 // HeapInuse+StackInuse after a forced GC
	heap        [2]uint64
	stack       [2]uint64
	goroutines  [2]int
	heapProf    [2]string // heap profiles (after GC) before and with streams
	retained    []owned   // module-attributed in-use bytes, per stream
	retainedAll float64
	exact       bool // an attribution round: every allocation profiled
}

func (m *memRound) perStreamRSS() float64 {
	return float64(m.rssKB[1]-m.rssKB[0]) * 1024 / float64(max(m.streams, 1))
}
func (m *memRound) perStreamLive() float64 {
	return (float64(m.live[1]) - float64(m.live[0])) / float64(max(m.streams, 1))
}
func (m *memRound) perStreamHeap() float64 {
	return (float64(m.heap[1]) - float64(m.heap[0])) / float64(max(m.streams, 1))
}
func (m *memRound) perStreamStack() float64 {
	return (float64(m.stack[1]) - float64(m.stack[0])) / float64(max(m.streams, 1))
}
func (m *memRound) perStreamG() float64 {
	return float64(m.goroutines[1]-m.goroutines[0]) / float64(max(m.streams, 1))
}

func runMemory(o *options, rep *report) error {
	u, err := startUpstream()
	if err != nil {
		return err
	}
	defer u.close()
	sizes := []int{4 << 10}
	if o.mem200k {
		sizes = append(sizes, 200<<10)
	}
	for _, size := range sizes {
		bs := makeBodies(size, 64, true)
		warm := makeBodies(size, 8, false)
		for r := 0; r < o.memRounds; r++ {
			order := []string{"A", "B"}
			if r%2 == 1 {
				order = []string{"B", "A"}
			}
			for _, site := range order {
				m, err := memoryRound(o, u, site, bs, warm, false)
				if err != nil {
					return err
				}
				m.bodySize, m.round = len(bs.bodies[0]), r
				rep.mem = append(rep.mem, m)
				log.Printf("  memory %s %dB body: %d streams, RSS +%.0f B/stream, heap+stack +%.0f B/stream, +%.2f goroutines/stream",
					site, m.bodySize, m.streams, m.perStreamRSS(), m.perStreamLive(), m.perStreamG())
			}
		}
		// One more B round with every allocation profiled
		// (GODEBUG=memprofilerate=1), for an exact attribution of what the
		// module keeps per stream; its RSS is not used.
		m, err := memoryRound(o, u, "B", bs, warm, true)
		if err != nil {
			return err
		}
		m.bodySize = len(bs.bodies[0])
		rep.memExact = append(rep.memExact, m)
		log.Printf("  memory B %dB body, exact attribution: module keeps %.0f B/stream", m.bodySize, m.retainedAll)
	}
	return nil
}

var memSeq int

func memoryRound(o *options, u *upstream, site string, bs, warm *bodySet, exact bool) (*memRound, error) {
	memSeq++
	seq := memSeq
	var env []string
	if exact {
		env = append(env, "GODEBUG=memprofilerate=1")
	}
	ss, err := newSites(o, "caddy-mem", u, o.streams, env...)
	if err != nil {
		return nil, err
	}
	p, a, b := ss.p, ss.a, ss.b
	defer p.Stop()
	t := a
	if site == "B" {
		t = b
	}
	if r := closedLoop(t, warm, 300, 8); r.errors > 0 {
		return nil, fmt.Errorf("memory warm-up %s: %s", site, r.firstErr)
	}
	if r := streamLoop(t, bs, 100, 8); r.errors > 0 {
		return nil, fmt.Errorf("memory warm-up %s: %s", site, r.firstErr)
	}
	m := &memRound{site: site, exact: exact}
	snap := func(i int) error {
		t.tr.CloseIdleConnections()
		time.Sleep(time.Second)
		var err error
		if m.rssKB[i], err = p.RSSKB(); err != nil {
			return err
		}
		if err := p.GC(); err != nil {
			return err
		}
		m.heapProf[i] = saveHeap(o, p, fmt.Sprintf("heap-%s-%dk-%d-%d.pprof", site, bs.size>>10, seq, i))
		ms, err := p.MemStats()
		if err != nil {
			return err
		}
		m.heap[i], m.stack[i], m.live[i] = ms.HeapInuse, ms.StackInuse, ms.HeapInuse+ms.StackInuse
		m.goroutines[i], _, err = p.Goroutines()
		return err
	}
	if err := snap(0); err != nil {
		return nil, err
	}
	u.arm()
	opened, failed, finish, err := holdStreams(t, bs, o.streams, 90*time.Second)
	m.streams, m.failed = opened, failed
	if err == nil {
		// Idle client connections must not be closed now: they are the
		// open streams. Take the snapshot without closing.
		time.Sleep(time.Second)
		if m.rssKB[1], err = p.RSSKB(); err == nil {
			if err = p.GC(); err == nil {
				m.heapProf[1] = saveHeap(o, p, fmt.Sprintf("heap-%s-%dk-%d-1.pprof", site, bs.size>>10, seq))
				var ms caddyproc.MemStats
				if ms, err = p.MemStats(); err == nil {
					m.heap[1], m.stack[1], m.live[1] = ms.HeapInuse, ms.StackInuse, ms.HeapInuse+ms.StackInuse
					m.goroutines[1], _, err = p.Goroutines()
				}
			}
		}
	}
	u.releaseAll()
	ended := finish()
	if err != nil {
		return nil, err
	}
	if site == "B" && m.heapProf[0] != "" && m.heapProf[1] != "" && opened > 0 {
		if out, err := pprofOut("-traces", "-sample_index=inuse_space", "-base", m.heapProf[0], m.heapProf[1]); err == nil {
			_, mod, owners := group(parseTraces(out), nil)
			m.retainedAll = mod / float64(opened)
			for _, ow := range owners {
				ow.value /= float64(opened)
				m.retained = append(m.retained, ow)
			}
		}
	}
	if failed > 0 || ended < opened {
		log.Printf("  memory %s: %d streams failed to open, %d of %d ended cleanly", site, failed, ended, opened)
	}
	return m, nil
}

func saveHeap(o *options, p *caddyProc, name string) string {
	b, err := p.Get("/debug/pprof/heap")
	if err != nil {
		return ""
	}
	f := filepath.Join(o.out, name)
	if os.WriteFile(f, b, 0o644) != nil {
		return ""
	}
	return f
}
