// Package ccrelay plugs the cc_relay modules into Caddy. xcaddy imports a
// plugin by its module path, so this root package exists to register
// http.handlers.cc_relay and admin.api.cc_relay:
//
//	xcaddy build --with github.com/cc-relay/caddy-cc-relay
package ccrelay

import (
	// Registers http.handlers.cc_relay, its Caddyfile directive and
	// admin.api.cc_relay.
	_ "github.com/cc-relay/caddy-cc-relay/caddymodule"
)
