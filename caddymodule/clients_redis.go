package caddymodule

import (
	"context"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/redisstate"
)

// spendShareInterval is how often an instance exchanges client spend with
// the others through Redis: its spend since goes up, their totals come
// down. Admission reads the totals held here, with no round trip.
const spendShareInterval = time.Second

// useRedis makes the pool's clients share spend on s, the pool's Redis
// store (nil: this instance alone, also after a reload that removed
// redis), exchanging it every spendShareInterval until the configuration
// is cleaned up.
func (cs *clientSet) useRedis(s *redisstate.Store) {
	if s == nil {
		cs.clients.UseShared(nil)
		return
	}
	cs.clients.UseShared(s.Spend())
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closed || cs.share != nil {
		return
	}
	stop := make(chan struct{})
	cs.share = stop
	go func() {
		t := time.NewTicker(spendShareInterval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				cs.exchangeSpend()
			}
		}
	}()
}

// exchangeSpend exchanges client spend with the other instances now, when
// spend is shared. A failure needs no log line of its own: the store logs
// its change of mode, and spend keeps counting here until the next
// exchange succeeds.
func (cs *clientSet) exchangeSpend() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = cs.clients.ShareSpend(ctx)
}
