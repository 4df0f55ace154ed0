package caddymodule

import (
	"slices"
	"sync"

	"github.com/cc-relay/caddy-cc-relay/internal/redisstate"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// live maps pool names to the pools of provisioned configurations, for the
// admin API and the scrape-time metrics. A name can have several entries at
// once: during a reload the new configuration provisions before the old one
// is cleaned up, and a failed load provisions, then cleans up, a
// configuration that never ran. Entries are kept in provisioning order and
// the newest one still registered is the live one, so cleaning up a failed
// configuration makes the running configuration's pool live again instead
// of leaving the name unregistered.
var live = struct {
	sync.Mutex
	pools map[string][]liveEntry
}{pools: map[string][]liveEntry{}}

type liveEntry struct {
	pool *keypool.Pool
	// store is the pool's shared state on Redis; nil without redis.
	store *redisstate.Store
}

// registerPool makes p, with its store (nil without redis), the live pool
// of name until it is unregistered or a newer configuration registers
// another.
func registerPool(name string, p *keypool.Pool, store *redisstate.Store) {
	live.Lock()
	defer live.Unlock()
	live.pools[name] = append(live.pools[name], liveEntry{pool: p, store: store})
}

// unregisterPool removes p; the previous pool registered under name, if
// any is still registered, becomes live again.
func unregisterPool(name string, p *keypool.Pool) {
	live.Lock()
	defer live.Unlock()
	es := slices.DeleteFunc(live.pools[name], func(e liveEntry) bool { return e.pool == p })
	if len(es) == 0 {
		delete(live.pools, name)
		return
	}
	live.pools[name] = es
}

// lookupPool returns the live pool of name, nil if there is none.
func lookupPool(name string) *keypool.Pool {
	e, ok := lookupEntry(name)
	if !ok {
		return nil
	}
	return e.pool
}

func lookupEntry(name string) (liveEntry, bool) {
	live.Lock()
	defer live.Unlock()
	es := live.pools[name]
	if len(es) == 0 {
		return liveEntry{}, false
	}
	return es[len(es)-1], true
}

// livePoolNames returns the names of all live pools, sorted.
func livePoolNames() []string {
	live.Lock()
	defer live.Unlock()
	names := make([]string, 0, len(live.pools))
	for n := range live.pools {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
