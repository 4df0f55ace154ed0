package caddymodule

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cc-relay/caddy-cc-relay/internal/redistest"
)

// End-to-end tests of the redis subdirective: a real redis-server
// (internal/redistest), the in-process Caddy, the recording upstream.

// redisPoolStatus reads one pool's status from the admin API.
func redisPoolStatus(t *testing.T, pool string) PoolStatus {
	t.Helper()
	var ps PoolStatus
	if err := json.Unmarshal([]byte(adminGet(t, "/cc_relay/pools/"+pool)), &ps); err != nil {
		t.Fatal(err)
	}
	return ps
}

// waitMode polls the admin API (bounded) until pool is in mode.
func waitMode(t *testing.T, pool, mode string) PoolStatus {
	t.Helper()
	var ps PoolStatus
	pollUntil(t, "pool "+pool+" in mode "+mode, func() bool {
		ps = redisPoolStatus(t, pool)
		return ps.Mode == mode
	})
	return ps
}

// dropRedisAtEnd replaces the running config, when the test ends, by one
// without redis, so that no store of this test keeps calling a Redis the
// test stopped while later tests count goroutines. Call it after
// redistest.Start: cleanups run last-in first-out.
func dropRedisAtEnd(t *testing.T) {
	t.Cleanup(func() { startRelay(t, "http://localhost:9080 {\n\trespond 204\n}\n") })
}

// mustRelay sends one request through the relay, which must answer 200.
func mustRelay(t *testing.T, path string) {
	t.Helper()
	req := newRequest(t, "POST", relayAddr+path, strings.NewReader(msgStream(false)))
	setRelayHeaders(req.Header, "")
	if res, body := roundTrip(t, relayHTTP, req); res.StatusCode != 200 {
		t.Fatalf("POST %s: %d %s", path, res.StatusCode, body)
	}
}

// TestRedisE2ESharedAndUnreachable runs two pools: one on a Redis that
// requires a password (the URL, password included, comes from the
// environment), one whose Caddyfile names a literal password for a Redis
// nothing listens on. The first is shared with one instance alive, the
// second starts in local-fallback with a warning; the admin API and the
// metrics say so; neither password is anywhere in the logs (DEBUG), the
// admin API, the metrics, or (for the one from the environment) the
// adapted config.
func TestRedisE2ESharedAndUnreachable(t *testing.T) {
	const pwEnv, pwLiteral = "s3cret-e2e-env-pw", "s3cret-e2e-literal-pw"
	srv := redistest.Start(t)
	dropRedisAtEnd(t)
	if _, err := srv.Do("CONFIG", "SET", "requirepass", pwEnv); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CC_TEST_REDIS_E2E_URL", "redis://default:"+pwEnv+"@"+srv.Addr()+"/0")
	dead := deadRedisURL(t, pwLiteral)
	up := newUpstream(t, nil)
	logPath := filepath.Join(t.TempDir(), "caddy.log")
	caddyfile := caddyGlobal(fmt.Sprintf("\tlog {\n\t\toutput file %s\n\t\tlevel DEBUG\n\t\t%s\n\t}", logPath, opsFilterBlocks(t)[0])) +
		fmt.Sprintf(`http://localhost:9080 {
	handle_path /dead/* {
		cc_relay redis_e2e_dead {
			client_auth off
			key sk-redis-e2e-dead
			redis %s {
				timeout 50ms
			}
		}
		reverse_proxy %s
	}
	handle {
		cc_relay redis_e2e {
			client_auth off
			key sk-redis-e2e-1 {
				name one
			}
			redis {env.CC_TEST_REDIS_E2E_URL}
		}
		reverse_proxy %s
	}
}
`, dead, up.addr(), up.addr())
	adapted, err := adapt(t, caddyfile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(adapted, `"redis":"{env.CC_TEST_REDIS_E2E_URL}"`) || strings.Contains(adapted, pwEnv) {
		t.Fatalf("adapt did not keep the placeholder:\n%s", adapted)
	}
	startCaddy(t, caddyfile)

	mustRelay(t, "/v1/messages")
	mustRelay(t, "/dead/v1/messages")

	shared := waitMode(t, "redis_e2e", "shared")
	if shared.Instance == "" || shared.InstancesAlive != 1 {
		t.Fatalf("shared pool: instance %q, %d alive", shared.Instance, shared.InstancesAlive)
	}
	down := redisPoolStatus(t, "redis_e2e_dead")
	if down.Mode != "local-fallback" || down.Instance == "" || down.Instance == shared.Instance {
		t.Fatalf("unreachable pool: mode %q instance %q", down.Mode, down.Instance)
	}

	metricsText := adminGet(t, "/metrics")
	samples := scrapeMetrics(t)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"caddy_cc_relay_redis_mode", map[string]string{"pool": "redis_e2e", "mode": "shared"}, 1},
		{"caddy_cc_relay_redis_mode", map[string]string{"pool": "redis_e2e", "mode": "local-fallback"}, 0},
		{"caddy_cc_relay_redis_mode", map[string]string{"pool": "redis_e2e_dead", "mode": "local-fallback"}, 1},
		{"caddy_cc_relay_instances_alive", map[string]string{"pool": "redis_e2e"}, 1},
	} {
		if got := sampleValue(t, samples, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := sampleValue(t, samples, "caddy_cc_relay_redis_round_trip_seconds_count", map[string]string{"pool": "redis_e2e", "op": "heartbeat"}); got < 1 {
		t.Errorf("no heartbeat round trip observed: %v", got)
	}
	var deadErrors float64
	for _, s := range findSamples(samples, "caddy_cc_relay_redis_errors_total", map[string]string{"pool": "redis_e2e_dead"}) {
		deadErrors += s.Value
	}
	if deadErrors < 1 {
		t.Errorf("no redis error counted for the unreachable pool")
	}
	if n := len(findSamples(samples, "caddy_cc_relay_redis_errors_total", map[string]string{"pool": "redis_e2e"})); n != 0 {
		t.Errorf("errors counted for the healthy pool: %v", findSamples(samples, "caddy_cc_relay_redis_errors_total", map[string]string{"pool": "redis_e2e"}))
	}

	logText, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logText), "redis unreachable at start") || !strings.Contains(string(logText), "xxxxx@"+strings.Split(dead, "@")[1]) {
		t.Fatalf("no start warning naming the unreachable redis in the log:\n%s", logText)
	}
	for what, text := range map[string]string{
		"log": string(logText), "metrics": metricsText,
		"admin pools": adminGet(t, "/cc_relay/pools"), "admin clients": adminGet(t, "/cc_relay/pools/redis_e2e_dead/clients"),
	} {
		for _, pw := range []string{pwEnv, pwLiteral} {
			if strings.Contains(text, pw) {
				t.Errorf("the %s shows a redis password", what)
			}
		}
	}
}

// TestRedisE2EFallback kills Redis under a running relay: the pool goes to
// local-fallback and requests keep succeeding; Redis back (empty, on the
// same port), the pool rejoins. A stalled Redis (SIGSTOP) does the same.
func TestRedisE2EFallback(t *testing.T) {
	const pool = "redis_e2e_fallback"
	srv := redistest.Start(t)
	dropRedisAtEnd(t)
	up := newUpstream(t, nil)
	startRelay(t, fmt.Sprintf(`http://localhost:9080 {
	cc_relay %s {
		client_auth off
		key sk-redis-fb-1 {
			name one
			rpm 1000
		}
		redis redis://%s
	}
	reverse_proxy %s
}
`, pool, srv.Addr(), up.addr()))
	mustRelay(t, "/v1/messages")
	before := waitMode(t, pool, "shared")

	srv.Kill()
	waitMode(t, pool, "local-fallback")
	for range 5 {
		mustRelay(t, "/v1/messages")
	}
	samples := scrapeMetrics(t)
	if got := sampleValue(t, samples, "caddy_cc_relay_redis_mode", map[string]string{"pool": pool, "mode": "local-fallback"}); got != 1 {
		t.Fatalf("mode gauge local-fallback = %v", got)
	}
	if len(findSamples(samples, "caddy_cc_relay_redis_errors_total", map[string]string{"pool": pool})) == 0 {
		t.Fatal("the lost redis counted no error")
	}

	srv.Restart()
	after := waitMode(t, pool, "shared")
	if after.Instance != before.Instance {
		t.Fatalf("the instance changed its id across the outage: %q → %q", before.Instance, after.Instance)
	}
	mustRelay(t, "/v1/messages")

	srv.Pause()
	waitMode(t, pool, "local-fallback")
	mustRelay(t, "/v1/messages")
	srv.Resume()
	waitMode(t, pool, "shared")
	mustRelay(t, "/v1/messages")
}

// TestRedisE2EReloadKeepsStore reloads a running relay: with the same
// redis the store stays (same instance id, still registered); with another
// key prefix a new store replaces it and the old one leaves Redis's
// instance registry; without redis the pool is local and the last store
// is gone from the registry too.
func TestRedisE2EReloadKeepsStore(t *testing.T) {
	const pool = "redis_e2e_reload"
	srv := redistest.Start(t)
	dropRedisAtEnd(t)
	up := newUpstream(t, nil)
	site := func(extra string) string {
		return fmt.Sprintf(`http://localhost:9080 {
	cc_relay %s {
		client_auth off
		key sk-redis-reload-1
		%s
	}
	reverse_proxy %s
}
`, pool, extra, up.addr())
	}
	registered := func(prefix, instance string) bool {
		score, err := srv.Do("ZSCORE", "{"+prefix+":"+pool+"}:instances", instance)
		if err != nil {
			t.Fatal(err)
		}
		return score != ""
	}

	startRelay(t, site("redis "+srv.URL()))
	first := waitMode(t, pool, "shared").Instance
	startRelay(t, site("redis "+srv.URL()+"\n\t\tmax_wait 1s"))
	mustRelay(t, "/v1/messages")
	if ps := waitMode(t, pool, "shared"); ps.Instance != first || !registered("cc_relay", first) {
		t.Fatalf("a reload with the same redis replaced the store: %q → %q", first, ps.Instance)
	}

	startRelay(t, site("redis "+srv.URL()+" {\n\t\t\tkey_prefix other\n\t\t}"))
	second := waitMode(t, pool, "shared").Instance
	if second == first || !registered("other", second) {
		t.Fatalf("a changed key prefix kept the store %q", first)
	}
	pollUntil(t, "the replaced store to leave the registry", func() bool { return !registered("cc_relay", first) })

	startRelay(t, site(""))
	mustRelay(t, "/v1/messages")
	if ps := redisPoolStatus(t, pool); ps.Mode != "local" || ps.Instance != "" || ps.InstancesAlive != 0 {
		t.Fatalf("without redis: mode %q instance %q alive %d", ps.Mode, ps.Instance, ps.InstancesAlive)
	}
	pollUntil(t, "the removed store to leave the registry", func() bool { return !registered("other", second) })
}

// TestRedisE2EReloadLogsToNewConfig reloads with the same redis but
// another log file, then loses Redis: the store kept across the reload
// logs its fallback to the new configuration's log, not the old one's.
func TestRedisE2EReloadLogsToNewConfig(t *testing.T) {
	const pool = "redis_e2e_relog"
	srv := redistest.Start(t)
	dropRedisAtEnd(t)
	up := newUpstream(t, nil)
	dir := t.TempDir()
	config := func(logName string) string {
		return caddyGlobal(fmt.Sprintf("\tlog {\n\t\toutput file %s\n\t\tlevel WARN\n\t}", filepath.Join(dir, logName))) +
			fmt.Sprintf("http://localhost:9080 {\n\tcc_relay %s {\n\t\tclient_auth off\n\t\tkey sk-redis-relog\n\t\tredis %s\n\t}\n\treverse_proxy %s\n}\n", pool, srv.URL(), up.addr())
	}
	startCaddy(t, config("old.log"))
	first := waitMode(t, pool, "shared").Instance
	startCaddy(t, config("new.log"))
	if ps := waitMode(t, pool, "shared"); ps.Instance != first {
		t.Fatalf("the reload replaced the store")
	}
	srv.Kill()
	waitMode(t, pool, "local-fallback")
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		return string(b)
	}
	pollUntil(t, "the fallback warning in the new log", func() bool {
		return strings.Contains(read("new.log"), "redis unavailable")
	})
	if strings.Contains(read("old.log"), "redis unavailable") {
		t.Fatalf("the fallback was logged to the old configuration's log:\n%s", read("old.log"))
	}
	mustRelay(t, "/v1/messages")
}
