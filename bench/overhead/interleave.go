package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"time"
)

// interResult is one client sending to several sites in turn, one request
// at a time, so that every site sees the same machine state: drift and
// noise cancel request by request. lat[site][i] is the i-th step's
// latency, or -1 if that request failed.
type interResult struct {
	label  string
	n      int
	sites  []string
	lat    map[string][]time.Duration
	errors map[string]int
	first  string
}

// interleaved runs n steps; step i sends one request to each site, in an
// order rotated by i (A A2 B, A2 B A, B A A2, …).
func interleaved(label string, ts []*target, n int, one func(t *target, i int) (time.Duration, error)) *interResult {
	r := &interResult{label: label, n: n, lat: map[string][]time.Duration{}, errors: map[string]int{}}
	for _, t := range ts {
		r.sites = append(r.sites, t.name)
		r.lat[t.name] = make([]time.Duration, n)
	}
	for i := 0; i < n; i++ {
		for k := range ts {
			t := ts[(i+k)%len(ts)]
			d, err := one(t, i)
			if err != nil {
				d = -1
				r.errors[t.name]++
				if r.first == "" {
					r.first = t.name + ": " + err.Error()
				}
			}
			r.lat[t.name][i] = d
		}
	}
	return r
}

func jsonOnce(bs *bodySet) func(t *target, i int) (time.Duration, error) {
	return func(t *target, i int) (time.Duration, error) {
		t0 := time.Now()
		resp, err := t.client.Do(t.request(context.Background(), bs.bodies[i%len(bs.bodies)], bs.sessions[i%len(bs.sessions)], modeJSON))
		if err != nil {
			return 0, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != 200 {
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		return time.Since(t0), err
	}
}

// streamOnce measures the time to the first complete SSE event, then reads
// the stream to its end.
func streamOnce(bs *bodySet) func(t *target, i int) (time.Duration, error) {
	return func(t *target, i int) (time.Duration, error) {
		t0 := time.Now()
		resp, err := t.client.Do(t.request(context.Background(), bs.bodies[i%len(bs.bodies)], bs.sessions[i%len(bs.sessions)], modeStream))
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		br, err := readFirstEvent(resp)
		d := time.Since(t0)
		if err == nil {
			_, err = io.Copy(io.Discard, br)
		}
		if err == nil && resp.StatusCode != 200 {
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		return d, err
	}
}

func (r *interResult) sorted(site string) []time.Duration {
	var v []time.Duration
	for _, d := range r.lat[site] {
		if d >= 0 {
			v = append(v, d)
		}
	}
	sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
	return v
}

func pctOf(v []time.Duration, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	return us(v[int(p*float64(len(v)-1))])
}

// pairedMedian is the median over steps of site x's latency minus site y's.
func (r *interResult) pairedMedian(x, y string) float64 {
	var d []float64
	for i := 0; i < r.n; i++ {
		a, b := r.lat[x][i], r.lat[y][i]
		if a >= 0 && b >= 0 {
			d = append(d, us(a)-us(b))
		}
	}
	return median(d)
}

func (r *interResult) p(site string, q float64) float64 { return pctOf(r.sorted(site), q) }

// blockP99 splits the steps into nb consecutive blocks and returns, per
// block, site x's 99th percentile minus site y's (µs), each taken over that
// block's successful requests. A burst of machine noise lands in one block
// and moves that block's figure only; the median over blocks is robust to it
// where the whole run's p99 is not.
func (r *interResult) blockP99(x, y string, nb int) []float64 {
	nb = max(1, min(nb, r.n))
	var d []float64
	for k := 0; k < nb; k++ {
		lo, hi := k*r.n/nb, (k+1)*r.n/nb
		p := func(site string) float64 {
			var v []time.Duration
			for _, l := range r.lat[site][lo:hi] {
				if l >= 0 {
					v = append(v, l)
				}
			}
			sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
			return pctOf(v, 0.99)
		}
		d = append(d, p(x)-p(y))
	}
	return d
}
