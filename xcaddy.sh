#!/usr/bin/env bash
# Build (and run) Caddy with the cc_relay module.
#
#   ./xcaddy.sh build            build ./caddy with xcaddy
#   ./xcaddy.sh run [caddy args] build, then run ./caddy (default: run --config Caddyfile.example)
#   ./xcaddy.sh demo             build, start the mock upstream with 3 keys in 2 orgs, run a local relay
#
# CADDY_VERSION picks the Caddy release (default v2.11.9).
set -euo pipefail
cd "$(dirname "$0")"

CADDY_VERSION="${CADDY_VERSION:-v2.11.9}"
XCADDY_VERSION=v0.4.5
GOBIN_DIR="$(go env GOPATH)/bin"

ensure_xcaddy() {
	if ! command -v xcaddy >/dev/null 2>&1 && [ ! -x "$GOBIN_DIR/xcaddy" ]; then
		echo "installing xcaddy $XCADDY_VERSION" >&2
		go install "github.com/caddyserver/xcaddy/cmd/xcaddy@$XCADDY_VERSION"
	fi
	command -v xcaddy 2>/dev/null || echo "$GOBIN_DIR/xcaddy"
}

build() {
	local xc
	xc="$(ensure_xcaddy)"
	# The module is not published: pin a placeholder version and replace
	# it with this checkout (the module proxy refuses an unversioned one).
	"$xc" build "$CADDY_VERSION" \
		--with "github.com/cc-relay/caddy-cc-relay@v0.0.0=$PWD" \
		--output ./caddy
}

cmd="${1:-build}"
shift || true
case "$cmd" in
build)
	build
	;;
run)
	build
	if [ $# -eq 0 ]; then
		set -- run --config Caddyfile.example --adapter caddyfile
	fi
	exec ./caddy "$@"
	;;
demo)
	build
	exec ./demo/run.sh
	;;
*)
	echo "usage: $0 build | run [caddy args] | demo" >&2
	exit 2
	;;
esac
