package caddymodule

import (
	"encoding/json"
	"path"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/cc-relay/caddy-cc-relay/internal/pricing"
)

// parseClientToken reads
//
//	client_token <secret> [<name>] {
//	    rpm            <n>
//	    itpm           <n>
//	    otpm           <n>
//	    max_concurrent <n>
//	    weight         <n>
//	    budget         <usd> day | week | month
//	    models         <glob>...
//	}
//
// The block is optional, and every line in it.
func parseClientToken(d *caddyfile.Dispenser) (ClientToken, error) {
	var c ClientToken
	if !d.NextArg() {
		return c, d.ArgErr()
	}
	c.Token = d.Val()
	if d.NextArg() {
		c.Name = d.Val()
	}
	if d.NextArg() {
		return c, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		switch sub {
		case "rpm", "itpm", "otpm", "max_concurrent", "weight":
			n, err := intArg(d, sub)
			if err != nil {
				return c, err
			}
			switch sub {
			case "rpm":
				c.RPM = n
			case "itpm":
				c.ITPM = n
			case "otpm":
				c.OTPM = n
			case "max_concurrent":
				c.MaxConcurrent = int(n)
			case "weight":
				if n == 0 {
					return c, d.Errf("weight must be at least 1")
				}
				c.Weight = int(n)
			}
		case "budget":
			var usd, period string
			if !d.Args(&usd, &period) {
				return c, d.Errf("budget: want <usd> day|week|month")
			}
			if d.NextArg() {
				return c, d.ArgErr()
			}
			v, err := pricing.ParseUSD(usd)
			if err != nil {
				return c, d.Errf("budget: %v", err)
			}
			// Written back as a plain JSON number ("$5" and ".5" are not).
			b := &ClientBudget{USD: json.Number(v.String()[1:]), Period: period}
			if _, _, err := clientBudget(b); err != nil {
				return c, d.Errf("%v", err)
			}
			c.Budget = b
		case "models":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return c, d.ArgErr()
			}
			for _, m := range args {
				if _, err := path.Match(m, ""); err != nil {
					return c, d.Errf("models: bad pattern %q", m)
				}
			}
			c.Models = append(c.Models, args...)
		default:
			return c, d.Errf("unknown client_token subdirective %q", sub)
		}
	}
	return c, nil
}

// parsePrice reads
//
//	price <model glob> <input> <output> [<cache_write_5m> [<cache_write_1h> [<cache_read>]]]
//
// in USD per million tokens.
func parsePrice(d *caddyfile.Dispenser) (Price, error) {
	var p Price
	args := d.RemainingArgs()
	if len(args) < 3 || len(args) > 6 {
		return p, d.Errf("price: want <model glob> <input> <output> [<cache_write_5m> [<cache_write_1h> [<cache_read>]]], USD per million tokens")
	}
	if _, err := path.Match(args[0], ""); err != nil {
		return p, d.Errf("price: bad model pattern %q", args[0])
	}
	p.Model = args[0]
	dst := []*json.Number{&p.Input, &p.Output, &p.CacheWrite5m, &p.CacheWrite1h, &p.CacheRead}
	for i, a := range args[1:] {
		r, err := pricing.ParseRate(a)
		if err != nil {
			return p, d.Errf("price %s: %v", p.Model, err)
		}
		*dst[i] = json.Number(r.String()[1:])
	}
	return p, nil
}
