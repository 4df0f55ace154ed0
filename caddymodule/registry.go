package caddymodule

import (
	"sync"

	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// live maps pool names to the newest provisioned configuration's pool, for
// the admin API. During a reload the new configuration registers before the
// old one is cleaned up; the old one then leaves the entry alone.
var live = struct {
	sync.Mutex
	pools map[string]*keypool.Pool
}{pools: map[string]*keypool.Pool{}}

func registerPool(name string, p *keypool.Pool) {
	live.Lock()
	defer live.Unlock()
	live.pools[name] = p
}

func unregisterPool(name string, p *keypool.Pool) {
	live.Lock()
	defer live.Unlock()
	if live.pools[name] == p {
		delete(live.pools, name)
	}
}

func lookupPool(name string) *keypool.Pool {
	live.Lock()
	defer live.Unlock()
	return live.pools[name]
}
