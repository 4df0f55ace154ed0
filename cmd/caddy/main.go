// Command caddy is Caddy with the cc_relay module plugged in. xcaddy.sh
// builds the same binary through xcaddy; this file lets `go build` and
// `go run` do it without xcaddy.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/cc-relay/caddy-cc-relay/caddymodule"
)

func main() {
	caddycmd.Main()
}
