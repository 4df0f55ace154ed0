package caddymodule

import (
	"fmt"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("cc_relay", parseCaddyfile)
	// The relay sets the upstream key that reverse_proxy then sends.
	httpcaddyfile.RegisterDirectiveOrder("cc_relay", httpcaddyfile.Before, "reverse_proxy")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	h.Next() // the directive, to know its line; UnmarshalCaddyfile reads it again
	file, line := h.File(), h.Line()
	h.Prev()
	m := new(Handler)
	if err := m.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	// What concerns the whole block (keys at all, client tokens, duplicate
	// names) is Validate's alone; running it here too makes 'caddy adapt'
	// refuse such a block and name the directive's line, as the Caddyfile
	// contract promises.
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("%v, at %s:%d", err, file, line)
	}
	return m, nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	cc_relay [<pool name>] {
//	    strategy     least_loaded | round_robin | weighted | priority | random
//	    client_token <secret> [<client name>] {
//	        rpm            <n>
//	        itpm           <n>
//	        otpm           <n>
//	        max_concurrent <n>
//	        weight         <n>
//	        budget         <usd> day | week | month
//	        models         <glob>...
//	    }
//	    client_auth  off
//	    key <secret> {
//	        name      <label>
//	        rpm       <n>
//	        itpm      <n>
//	        otpm      <n>
//	        weight    <n>
//	        priority  <n>
//	        org       <label>
//	        workspace <label>
//	        auth      x-api-key | bearer
//	        upstream  <base url>
//	    }
//	    bedrock <name> { ... }   (caddyfile_provider.go)
//	    vertex  <name> { ... }
//	    redis   <url> [{ ... }]   (redis.go)
//	    max_wait             <duration>
//	    max_body             <size>
//	    read_body_timeout    <duration> | off
//	    retries              <n>
//	    retry_overloaded     [on | off]
//	    sticky               [<ttl>] | off
//	    sticky_max_sessions  <n>
//	    token_estimate_ratio <bytes per token>
//	    model_class          <pattern> <class>
//	    default_cooldown     <duration>
//	    spend_cap_park       <duration>
//	    price <model glob> <input> <output> [<cache_write_5m> [<cache_write_1h> [<cache_read>]]]
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		h.Pool = d.Val()
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	// Only what one line says is checked here, so that the error names the
	// line; what concerns the whole configuration (keys at all, client
	// tokens, duplicate names) is Validate's, and duplicate secrets are
	// Provision's, for JSON and Caddyfile alike.
	for d.NextBlock(0) {
		switch d.Val() {
		case "strategy":
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.Strategy = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "client_token":
			c, err := parseClientToken(d)
			if err != nil {
				return err
			}
			h.ClientTokens = append(h.ClientTokens, c)
		case "price":
			p, err := parsePrice(d)
			if err != nil {
				return err
			}
			h.Prices = append(h.Prices, p)
		case "client_auth":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if d.Val() != "off" {
				return d.Errf("client_auth: only 'off' is accepted (client auth is on unless turned off), got %q", d.Val())
			}
			h.DisableClientAuth = true
			if d.NextArg() {
				return d.ArgErr()
			}
		case "key":
			k, err := parseKey(d)
			if err != nil {
				return err
			}
			h.Keys = append(h.Keys, k)
		case "bedrock", "vertex":
			// Provider keys: caddyfile_provider.go.
			if d.Val() == "bedrock" {
				b, err := parseBedrock(d)
				if err != nil {
					return err
				}
				h.Bedrock = append(h.Bedrock, b)
			} else {
				v, err := parseVertex(d)
				if err != nil {
					return err
				}
				h.Vertex = append(h.Vertex, v)
			}
		case "redis":
			// redis.go reads the line and its block.
			if h.Redis != nil {
				return d.Err("redis given twice")
			}
			h.Redis = new(Redis)
			if err := h.Redis.unmarshalCaddyfile(d); err != nil {
				return err
			}
		case "max_wait":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			h.MaxWait = dur
		case "max_body":
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := humanize.ParseBytes(d.Val())
			if err != nil || n == 0 || n > 1<<40 {
				return d.Errf("max_body: bad size %q", d.Val())
			}
			h.MaxBody = int64(n)
			if d.NextArg() {
				return d.ArgErr()
			}
		case "read_body_timeout":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if d.Val() == "off" {
				h.ReadBodyTimeout = -1
			} else {
				dur, err := caddy.ParseDuration(d.Val())
				if err != nil || dur <= 0 {
					return d.Errf("read_body_timeout: want a positive duration or 'off', got %q", d.Val())
				}
				h.ReadBodyTimeout = caddy.Duration(dur)
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "retries":
			n, err := intArg(d, "retries")
			if err != nil {
				return err
			}
			r := int(n)
			h.Retries = &r
		case "retry_overloaded":
			h.RetryOverloaded = true
			if d.NextArg() {
				switch d.Val() {
				case "on":
				case "off":
					h.RetryOverloaded = false
				default:
					return d.Errf("retry_overloaded: want on or off, got %q", d.Val())
				}
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "sticky":
			if d.NextArg() {
				if d.Val() == "off" {
					h.DisableSticky = true
				} else {
					dur, err := caddy.ParseDuration(d.Val())
					if err != nil || dur <= 0 {
						return d.Errf("sticky: want a positive duration or 'off', got %q", d.Val())
					}
					h.StickyTTL = caddy.Duration(dur)
				}
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "sticky_max_sessions":
			n, err := intArg(d, "sticky_max_sessions")
			if err != nil {
				return err
			}
			if n == 0 {
				return d.Errf("sticky_max_sessions must be positive (use 'sticky off' to disable affinity)")
			}
			h.StickyMaxSessions = int(n)
		case "token_estimate_ratio":
			if !d.NextArg() {
				return d.ArgErr()
			}
			f, err := strconv.ParseFloat(d.Val(), 64)
			if err != nil || !(f > 0 && f < 1000) {
				return d.Errf("token_estimate_ratio: want a positive number of bytes per token, got %q", d.Val())
			}
			h.TokenEstimateRatio = f
			if d.NextArg() {
				return d.ArgErr()
			}
		case "model_class":
			var mc ModelClass
			if !d.Args(&mc.Pattern, &mc.Class) {
				return d.ArgErr()
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			h.ModelClasses = append(h.ModelClasses, mc)
		case "default_cooldown":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			h.DefaultCooldown = dur
		case "spend_cap_park":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			h.SpendCapPark = dur
		default:
			return d.Errf("unknown cc_relay subdirective %q", d.Val())
		}
	}
	return nil
}

func parseKey(d *caddyfile.Dispenser) (Key, error) {
	var k Key
	if !d.NextArg() {
		return k, d.ArgErr()
	}
	k.Key = d.Val()
	if d.NextArg() {
		return k, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		switch sub {
		case "name", "org", "workspace", "auth", "upstream":
			if !d.NextArg() {
				return k, d.ArgErr()
			}
			v := d.Val()
			if d.NextArg() {
				return k, d.ArgErr()
			}
			switch sub {
			case "name":
				k.Name = v
			case "org":
				k.Org = v
			case "workspace":
				k.Workspace = v
			case "upstream":
				k.Upstream = v
			case "auth":
				if v != "x-api-key" && v != "bearer" {
					return k, d.Errf("auth: want x-api-key or bearer, got %q", v)
				}
				k.Auth = v
			}
		case "rpm", "itpm", "otpm", "weight", "priority":
			n, err := intArg(d, sub)
			if err != nil {
				return k, err
			}
			switch sub {
			case "rpm":
				k.RPM = n
			case "itpm":
				k.ITPM = n
			case "otpm":
				k.OTPM = n
			case "weight":
				if n == 0 {
					return k, d.Errf("weight must be at least 1")
				}
				k.Weight = int(n)
			case "priority":
				k.Priority = int(n)
			}
		default:
			return k, d.Errf("unknown key subdirective %q", sub)
		}
	}
	return k, nil
}

// intArg reads one non-negative integer argument.
func intArg(d *caddyfile.Dispenser, what string) (int64, error) {
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	n, err := strconv.ParseInt(d.Val(), 10, 64)
	if err != nil {
		return 0, d.Errf("%s: %q is not a whole number", what, d.Val())
	}
	if n < 0 {
		return 0, d.Errf("%s must not be negative, got %d", what, n)
	}
	if n > 1<<40 {
		return 0, d.Errf("%s: %d is too large", what, n)
	}
	if d.NextArg() {
		return 0, d.ArgErr()
	}
	return n, nil
}

func durationArg(d *caddyfile.Dispenser) (caddy.Duration, error) {
	what := d.Val()
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	dur, err := caddy.ParseDuration(d.Val())
	if err != nil || dur < 0 {
		return 0, d.Errf("%s: bad duration %q", what, d.Val())
	}
	if d.NextArg() {
		return 0, d.ArgErr()
	}
	return caddy.Duration(dur), nil
}

// Interface guard.
var _ caddyfile.Unmarshaler = (*Handler)(nil)
