package caddymodule

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("cc_relay_ui", parseUICaddyfile)
	// The page answers requests itself, like metrics; ordering it beside
	// metrics means no global order line is needed.
	httpcaddyfile.RegisterDirectiveOrder("cc_relay_ui", httpcaddyfile.After, "metrics")
}

func parseUICaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	u := new(UI)
	err := u.UnmarshalCaddyfile(h.Dispenser)
	return u, err
}

// UnmarshalCaddyfile sets up the status page from Caddyfile tokens:
//
//	cc_relay_ui [<pool>...] {
//	    actions on | off
//	}
func (u *UI) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	seen := map[string]bool{}
	for d.NextArg() {
		if seen[d.Val()] {
			return d.Errf("cc_relay_ui: pool %q is listed twice", d.Val())
		}
		seen[d.Val()] = true
		u.Pools = append(u.Pools, d.Val())
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "actions":
			if !d.NextArg() {
				return d.ArgErr()
			}
			switch d.Val() {
			case "on":
				u.Actions = true
			case "off":
				u.Actions = false
			default:
				return d.Errf("actions: want on or off, got %q", d.Val())
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unknown cc_relay_ui subdirective %q", d.Val())
		}
	}
	return nil
}

// Interface guard.
var _ caddyfile.Unmarshaler = (*UI)(nil)
