#!/usr/bin/env bash
# Overhead benchmark of the cc_relay module (project issue 7).
#
#   bench/run.sh                 full run (~10-15 minutes on 2 cores)
#   bench/run.sh -quick          ~2 minutes: fewer rounds, short profile, default strategy only
#   bench/run.sh -soak 10m       full run plus a 10-minute fault-injecting soak
#   bench/run.sh -quick -phases mem      any flag of ./bench/overhead (see -h)
#
# Builds ONE Caddy binary with the module (go build ./cmd/caddy) into a temp
# dir, then runs `go run ./overhead -caddy <binary>` in bench/ (a Go module of
# its own, replaced onto this checkout), which starts the upstream, the Caddy
# subprocess (site A: reverse_proxy, site B: cc_relay + reverse_proxy) and the
# load in one process, and prints a Markdown report (also saved with profiles
# and logs in the -out directory, default a temp dir).
# Everything listens on 127.0.0.1, on free ports chosen at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/cc-relay-bench-bin.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

echo "building caddy with the cc_relay module into $tmp" >&2
go build -o "$tmp/caddy" ./cmd/caddy
cd bench
go run ./overhead -caddy "$tmp/caddy" -root "$root" "$@"
