package main

import (
	"context"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/cc-relay/caddy-cc-relay/bench/internal/caddyproc"
	"github.com/cc-relay/caddy-cc-relay/bench/internal/ccload"
)

// loadRun is one run's load through a cluster's balancer, and what the
// upstream and the relays saw of it.
type loadRun struct {
	t0, end time.Time
	results []*ccload.Result
	use     map[string]*ccload.ClassUse
	span    time.Duration
	metrics map[string]float64
}

// drive runs load(ctx, client, end) against c's balancer for -duration
// (in-flight requests get 30 s more, then are cancelled) and collects what
// happened.
func drive(c *cluster, run string, load func(ctx context.Context, cl *ccload.Client, t0, end time.Time)) *loadRun {
	d := *flagDuration
	lr := &loadRun{t0: time.Now()}
	lr.end = lr.t0.Add(d)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cl := ccload.NewClient(c.lbPort, run, lr.end)
	defer cl.Close()
	done := make(chan struct{})
	go func() { load(ctx, cl, lr.t0, lr.end); close(done) }()
	ccload.Await(run, done, lr.t0, lr.end, cancel)
	lr.results = cl.All()
	lr.use, lr.span = ccload.UpstreamUse(c.up.Mock.Stats().Requests, lr.t0)
	lr.span = max(lr.span, d)
	lr.metrics = c.metrics()
	for i, p := range append(append([]*caddyproc.Proc(nil), c.relays...), c.lb) {
		select {
		case <-p.Done():
			name := "the load balancer"
			if i < len(c.relays) {
				name = fmt.Sprintf("relay%d", i+1)
			}
			fmt.Printf("%s: %s exited during the run: %s\n", run, name, p.LastLogLine())
		default:
		}
	}
	return lr
}

// upstreamTotals counts the upstream's requests and 429s.
func (lr *loadRun) upstreamTotals() (reqs, limited int64) {
	for _, u := range lr.use {
		reqs += u.Accepted + u.Limited + u.Other
		limited += u.Limited
	}
	return
}

func (lr *loadRun) class(c string) *ccload.ClassUse {
	if u := lr.use[c]; u != nil {
		return u
	}
	return &ccload.ClassUse{}
}

func table() *tabwriter.Writer {
	return tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
}

func sharing() string {
	if *flagRedis {
		return fmt.Sprintf("%d relays, one Redis", *flagRelays)
	}
	return fmt.Sprintf("%d independent relays", *flagRelays)
}
