package caddymodule

import (
	"crypto/sha256"
	"encoding/hex"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/cc-relay/caddy-cc-relay/internal/redisstate"
)

// The defaults of a redis block, set in Provision and stated in Redis's
// field comments.
const (
	defaultRedisTimeout   = 100 * time.Millisecond
	defaultRedisKeyPrefix = "cc_relay"
)

// stores holds one Redis store per pool name, resolved URL, key prefix and
// timeout across config reloads, as pools holds the pool state: a reload
// that keeps the redis line keeps the connection, the instance id and the
// breaker; one that changes or removes it gets a new store or none, and
// the old store closes when the old configuration is cleaned up.
var stores = caddy.NewUsagePool()

// sharedStore is a pooled store; the pool closes it when its last
// configuration lets go.
type sharedStore struct {
	*redisstate.Store
	// logger is the logger of the newest configuration that acquired the
	// store: a reload that keeps the store logs its mode changes to the
	// new configuration's logs, not to the old one's, which may be closed.
	logger *atomic.Pointer[zap.Logger]
}

// Destruct closes the store: it leaves the instance registry.
func (s sharedStore) Destruct() error { return s.Close() }

// storeKey names a store in stores. It is a digest, so that the password in
// the URL is not kept in yet another readable place.
func storeKey(cfg redisstate.Config) string {
	sum := sha256.Sum256([]byte(cfg.Pool + "\x00" + cfg.URL + "\x00" + cfg.Prefix + "\x00" + cfg.Timeout.String()))
	return hex.EncodeToString(sum[:])
}

// setDefaults gives the redis block its documented defaults.
func (r *Redis) setDefaults() {
	if r.Timeout == 0 {
		r.Timeout = caddy.Duration(defaultRedisTimeout)
	}
	if r.KeyPrefix == "" {
		r.KeyPrefix = defaultRedisKeyPrefix
	}
}

// acquireStore gets the pool's store, starting it if no configuration
// holds it yet; Cleanup releases it.
func (h *Handler) acquireStore(ctx caddy.Context, repl *caddy.Replacer) error {
	cfg, err := h.Redis.storeConfig(repl, h.Pool)
	if err != nil {
		return err
	}
	key := storeKey(cfg)
	val, _, err := stores.LoadOrNew(key, func() (caddy.Destructor, error) {
		cfg.OnRoundTrip = redisRoundTripObserver(ctx, h.Pool)
		logger := new(atomic.Pointer[zap.Logger])
		logger.Store(h.logger)
		s, err := newStore(cfg, logger.Load)
		if err != nil {
			return nil, err
		}
		return sharedStore{s, logger}, nil
	})
	if err != nil {
		return err
	}
	ss := val.(sharedStore)
	ss.logger.Store(h.logger)
	h.store, h.storeKey = ss.Store, key
	return nil
}

// releaseStore lets go of the store acquireStore got, once.
func (h *Handler) releaseStore() error {
	if h.store == nil {
		return nil
	}
	h.store = nil
	_, err := stores.Delete(h.storeKey)
	return err
}
