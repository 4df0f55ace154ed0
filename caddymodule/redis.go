package caddymodule

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"go.uber.org/zap"

	"github.com/cc-relay/caddy-cc-relay/internal/redisstate"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// Redis configures a pool's shared state on Redis (or Valkey), so that
// several relay instances with the same pool name act as one pool. In JSON
// it is either the URL as a string or this object.
type Redis struct {
	// URL is redis://[user:password@]host:port[/db], or rediss:// for TLS.
	// It may be or contain {env.*} and {file.*} placeholders, resolved at
	// provision time; it is never logged or shown with its password. It
	// is required; there is no default.
	URL string `json:"url,omitempty"`
	// Timeout bounds every call to Redis; after it the instance serves
	// from its local share of each limit. Default: 100ms.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// KeyPrefix starts every Redis key the pool writes. Default: cc_relay.
	KeyPrefix string `json:"key_prefix,omitempty"`
}

// UnmarshalJSON accepts "redis": "redis://…" as well as the object.
func (r *Redis) UnmarshalJSON(b []byte) error {
	if b = bytes.TrimSpace(b); len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &r.URL)
	}
	type plain Redis
	return json.Unmarshal(b, (*plain)(r))
}

// MarshalJSON writes the short form when only the URL is set.
func (r Redis) MarshalJSON() ([]byte, error) {
	if r.Timeout == 0 && r.KeyPrefix == "" {
		return json.Marshal(r.URL)
	}
	type plain Redis
	return json.Marshal(plain(r))
}

// unmarshalCaddyfile reads
//
//	redis <url> [{
//	    timeout    <duration>
//	    key_prefix <prefix>
//	}]
//
// with the dispenser on the redis token.
func (r *Redis) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	r.URL = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "timeout":
			if !d.NextArg() {
				return d.ArgErr()
			}
			v, err := caddy.ParseDuration(d.Val())
			if err != nil || v <= 0 {
				return d.Errf("redis timeout %q: want a positive duration", d.Val())
			}
			r.Timeout = caddy.Duration(v)
		case "key_prefix":
			if !d.NextArg() {
				return d.ArgErr()
			}
			r.KeyPrefix = d.Val()
		default:
			return d.Errf("unknown redis option %q", d.Val())
		}
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	return nil
}

// validate checks what can be checked before placeholders resolve.
func (r *Redis) validate() error {
	if strings.TrimSpace(r.URL) == "" {
		return fmt.Errorf("redis: url is empty")
	}
	if r.Timeout < 0 {
		return fmt.Errorf("redis: timeout %v is negative", time.Duration(r.Timeout))
	}
	if strings.ContainsAny(r.URL, "{") {
		return nil // checked once resolved
	}
	_, err := redisstate.ClientOptions(r.URL, time.Second)
	if err != nil {
		return fmt.Errorf("redis %s: %v", redactRedisURL(r.URL), err)
	}
	return nil
}

// storeConfig resolves placeholders and returns the engine's config for
// pool; its errors name the URL only without its password.
func (r *Redis) storeConfig(repl *caddy.Replacer, pool string) (redisstate.Config, error) {
	u, err := repl.ReplaceOrErr(r.URL, true, true)
	if err != nil {
		return redisstate.Config{}, fmt.Errorf("redis url: resolving %s: %v", redactRedisURL(r.URL), err)
	}
	u = strings.TrimSpace(u)
	if _, err := redisstate.ClientOptions(u, time.Second); err != nil {
		return redisstate.Config{}, fmt.Errorf("redis %s: %v", redactRedisURL(u), err)
	}
	return redisstate.Config{
		URL:     u,
		Prefix:  r.KeyPrefix,
		Pool:    pool,
		Timeout: time.Duration(r.Timeout),
	}, nil
}

// redactRedisURL is the URL as it may be logged or shown: without its
// password (and without anything at all when it does not parse, since the
// password could be anywhere in it).
func redactRedisURL(s string) string {
	if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") && !strings.Contains(s, "@") {
		return s // a placeholder, not the URL
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return "(unparsable url)"
	}
	return u.Redacted()
}

// newStore starts a pool's shared state from a resolved config. An
// unreachable Redis is no error (the instance serves locally and joins
// when Redis answers); mode changes are logged to logger() at the time,
// with the URL redacted.
func newStore(cfg redisstate.Config, logger func() *zap.Logger) (*redisstate.Store, error) {
	pool := cfg.Pool
	where := zap.String("redis", redactRedisURL(cfg.URL))
	onMode := cfg.OnMode
	cfg.OnMode = func(from, to keypool.SharedMode, err error) {
		if onMode != nil {
			onMode(from, to, err)
		}
		if to == keypool.SharedModeShared {
			logger().Info("pool state shared on redis", zap.String("pool", pool), where, zap.Stringer("from", from))
			return
		}
		logger().Warn("redis unavailable: serving from this instance's share of each limit",
			zap.String("pool", pool), where, zap.Stringer("mode", to), zap.String("error", redactError(err, cfg.URL)))
	}
	s, err := redisstate.New(cfg)
	if err != nil {
		return nil, err
	}
	if s.Mode() != keypool.SharedModeShared {
		logger().Warn("redis unreachable at start: serving from this instance's share of each limit until it answers",
			zap.String("pool", pool), where)
	}
	return s, nil
}

// redactError is err's text with the URL's password cut out, should a
// client library ever repeat it.
func redactError(err error, rawURL string) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	if u, perr := url.Parse(rawURL); perr == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
	}
	return msg
}
