#!/usr/bin/env bash
# Runs the demo: the mock upstream on 127.0.0.1:9099 and the relay (./caddy,
# built by ./xcaddy.sh) on localhost:8080. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x ./caddy ] || ./xcaddy.sh build

tmp="$(mktemp -d)"
go build -o "$tmp/mockanthropic" ./cmd/mockanthropic
"$tmp/mockanthropic" -listen 127.0.0.1:9099 \
	-orgs 'org-a:rpm=30,itpm=20000,otpm=4000;org-b:rpm=30,itpm=20000,otpm=4000' \
	-keys 'sk-test-a1=org-a,sk-test-a2=org-a,sk-test-b1=org-b' &
mock=$!
trap 'kill $mock 2>/dev/null; rm -rf "$tmp"' EXIT

cat <<'MSG'

cc-relay demo: relay on http://localhost:8080, mock upstream on 127.0.0.1:9099.
Try (X-Cc-Relay-Key names the key that served each request):
  ask() { curl -s localhost:8080/v1/messages -H 'x-api-key: demo-token' -H 'content-type: application/json' \
    -H "X-Claude-Code-Session-Id: $1" -o /dev/null -D - \
    -d '{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}' | grep -i x-cc-relay-key; }
  for s in 1 2 3 4; do ask "demo-$s"; done   # four conversations spread over the keys
  for t in 1 2 3; do ask demo-same; done     # one conversation stays on its key (session affinity)
  curl -s localhost:2019/cc_relay/pools/demo          # keys, budgets, in-flight, pinned sessions, totals
  ANTHROPIC_BASE_URL=http://localhost:8080 ANTHROPIC_API_KEY=demo-token claude -p hi

MSG
./caddy run --config demo/Caddyfile --adapter caddyfile
