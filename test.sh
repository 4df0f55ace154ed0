#!/usr/bin/env bash
# The test suite, with what it needs installed first.
#
#   ./test.sh [go test flags]   install missing test dependencies, then go test -race ./...
#   ./test.sh deps              only install them
#
# Some tests use real parts, as operators run them: redis-server (the shared
# pool), headless Chromium (the status page), promtool (the alert rules) and
# npm (the Claude Code CLI). On Debian as root the missing ones are
# installed from Debian's packages; otherwise one line says what to install.
set -euo pipefail
cd "$(dirname "$0")"

deps() {
	local need=() pkgs=()
	command -v redis-server >/dev/null || { need+=(redis-server); pkgs+=(redis-server); }
	command -v chromium >/dev/null || { need+=(chromium); pkgs+=(chromium); }
	command -v promtool >/dev/null || { need+=(promtool); pkgs+=(prometheus); }
	command -v npm >/dev/null || { need+=(npm); pkgs+=(npm); }
	[ ${#pkgs[@]} -eq 0 ] && return 0
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "== installing ${pkgs[*]} (Debian packages)" >&2
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
	else
		echo "the tests need ${need[*]}: install them (Debian: sudo apt-get install ${pkgs[*]})" >&2
		exit 1
	fi
}

if [ "${1:-}" = deps ]; then
	deps
	exit 0
fi
deps
exec go test -race -count=1 "$@" ./...
