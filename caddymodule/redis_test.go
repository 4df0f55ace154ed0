package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
	zapobserver "go.uber.org/zap/zaptest/observer"

	"github.com/cc-relay/caddy-cc-relay/internal/redistest"
	"github.com/cc-relay/caddy-cc-relay/internal/relaytest"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

func TestRedisCaddyfile(t *testing.T) {
	for name, tc := range map[string]struct {
		in   string
		want Redis
		err  string
	}{
		"url":     {in: `redis redis://relay:pw@10.0.0.5:6379/2`, want: Redis{URL: "redis://relay:pw@10.0.0.5:6379/2"}},
		"env":     {in: `redis {env.REDIS_URL}`, want: Redis{URL: "{env.REDIS_URL}"}},
		"options": {in: "redis rediss://r:6380 {\n timeout 50ms\n key_prefix relay1\n}", want: Redis{URL: "rediss://r:6380", Timeout: caddy.Duration(50 * time.Millisecond), KeyPrefix: "relay1"}},
		"no url":  {in: `redis`, err: "wrong argument count"},
		"two":     {in: `redis a b`, err: "wrong argument count"},
		"bad opt": {in: "redis redis://r {\n retries 3\n}", err: `unknown redis option "retries"`},
		"bad dur": {in: "redis redis://r {\n timeout soon\n}", err: `redis timeout "soon"`},
	} {
		t.Run(name, func(t *testing.T) {
			d := caddyfile.NewTestDispenser(tc.in)
			d.Next()
			var r Redis
			err := r.unmarshalCaddyfile(d)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || r != tc.want {
				t.Fatalf("got %+v, %v; want %+v", r, err, tc.want)
			}
		})
	}
}

func TestRedisJSONStringOrObject(t *testing.T) {
	var r Redis
	if err := json.Unmarshal([]byte(`"redis://h:1"`), &r); err != nil || r.URL != "redis://h:1" {
		t.Fatalf("string form: %+v %v", r, err)
	}
	r = Redis{}
	if err := json.Unmarshal([]byte(`{"url":"redis://h:1","timeout":"50ms","key_prefix":"p"}`), &r); err != nil ||
		r.URL != "redis://h:1" || r.Timeout != caddy.Duration(50*time.Millisecond) || r.KeyPrefix != "p" {
		t.Fatalf("object form: %+v %v", r, err)
	}
	if b, _ := json.Marshal(Redis{URL: "redis://h:1"}); string(b) != `"redis://h:1"` {
		t.Fatalf("short form marshals as %s", b)
	}
}

// The password never appears in an error, whether written in the config,
// taken from the environment or from a file.
func TestRedisPasswordNeverInErrors(t *testing.T) {
	const pw = "s3cret-redis-pw"
	file := filepath.Join(t.TempDir(), "url")
	if err := os.WriteFile(file, []byte("http://u:"+pw+"@h:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CC_TEST_REDIS_URL", "redis://u:"+pw+"@h:notaport")
	repl := caddy.NewReplacer()
	for _, u := range []string{
		"http://u:" + pw + "@h:1",
		"redis://u:" + pw + "@h:notaport",
		"redis://u:" + pw + "@%zz",
		"{env.CC_TEST_REDIS_URL}",
		"{file." + file + "}",
	} {
		r := Redis{URL: u}
		err := r.validate()
		if err == nil {
			_, err = r.storeConfig(repl, "p")
		}
		if err == nil {
			t.Fatalf("%q accepted", redactRedisURL(u))
		}
		if strings.Contains(err.Error(), pw) {
			t.Fatalf("error leaks the password: %v", err)
		}
	}
	if got := redactRedisURL("redis://u:" + pw + "@h:1/0"); strings.Contains(got, pw) || !strings.Contains(got, "h:1") {
		t.Fatalf("redacted %q", got)
	}
	r := Redis{URL: "{env.CC_TEST_REDIS_OK}"}
	t.Setenv("CC_TEST_REDIS_OK", "redis://u:"+pw+"@127.0.0.1:6379/1")
	cfg, err := r.storeConfig(repl, "pool1")
	if err != nil || cfg.URL != "redis://u:"+pw+"@127.0.0.1:6379/1" || cfg.Pool != "pool1" {
		t.Fatalf("resolved %+v, %v", cfg.Pool, err)
	}
}

// Against a real redis-server, and one that is gone: the store starts
// either way, and no log line at any level carries the password.
func TestRedisStoreLogsNoPassword(t *testing.T) {
	const pw = "s3cret-redis-pw"
	srv := redistest.Start(t)
	if _, err := srv.Do("CONFIG", "SET", "requirepass", pw); err != nil {
		t.Fatal(err)
	}
	core, logs := zapobserver.New(zap.DebugLevel)
	logger := func() *zap.Logger { return zap.New(core) }
	repl := caddy.NewReplacer()
	t.Setenv("CC_TEST_REDIS_URL", "redis://default:"+pw+"@"+srv.Addr()+"/0")
	r := Redis{URL: "{env.CC_TEST_REDIS_URL}", Timeout: caddy.Duration(time.Second)}
	cfg, err := r.storeConfig(repl, "redis_log_pool")
	if err != nil {
		t.Fatal(err)
	}
	s, err := newStore(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	if s.Mode() != keypool.SharedModeShared {
		t.Fatalf("mode %v with the right password", s.Mode())
	}
	srv.Kill()
	s.Reserve(context.Background(), keypool.SharedBudget{Org: "cfg:a", Class: "sonnet", Caps: [3]float64{10}},
		[3]float64{1}, [3]float64{1})
	s.Close()

	down := Redis{URL: "redis://default:" + pw + "@" + srv.Addr() + "/0", Timeout: caddy.Duration(100 * time.Millisecond)}
	cfg2, err := down.storeConfig(repl, "redis_log_pool2")
	if err != nil {
		t.Fatal(err)
	}
	s2, err := newStore(cfg2, logger)
	if err != nil {
		t.Fatalf("redis down at start is an error: %v", err)
	}
	s2.Close()
	if logs.Len() < 2 {
		t.Fatalf("%d log entries, want the fallback warnings", logs.Len())
	}
	for _, e := range logs.All() {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += " " + k + "=" + fmt.Sprint(v)
		}
		if strings.Contains(line, pw) {
			t.Fatalf("log line leaks the password: %s", line)
		}
		if !strings.Contains(line, srv.Addr()) {
			t.Fatalf("log line does not say which redis: %s", line)
		}
	}
}

// The redis line in a cc_relay block: adapt keeps a placeholder as it is,
// writes the block form as an object, refuses a second line, and its
// errors never carry a literal password.
func TestRedisDirective(t *testing.T) {
	site := func(redis string) string {
		return ":8080 {\n\tcc_relay redis_adapt {\n\t\tclient_auth off\n\t\tkey sk-redis-adapt\n\t\t" + redis + "\n\t}\n\treverse_proxy 127.0.0.1:1\n}"
	}
	out, err := adapt(t, site("redis {env.REDIS_URL}"))
	if err != nil || !strings.Contains(out, `"redis":"{env.REDIS_URL}"`) {
		t.Fatalf("placeholder not kept: %v\n%s", err, out)
	}
	out, err = adapt(t, site("redis redis://10.0.0.5:6379 {\n\t\t\ttimeout 50ms\n\t\t\tkey_prefix relay1\n\t\t}"))
	if err != nil || !strings.Contains(out, `"redis":{"key_prefix":"relay1","timeout":50000000,"url":"redis://10.0.0.5:6379"}`) {
		t.Fatalf("block form: %v\n%s", err, out)
	}
	if _, err := adapt(t, site("redis redis://a:1\n\t\tredis redis://b:1")); err == nil || !strings.Contains(err.Error(), "redis given twice") {
		t.Fatalf("two redis lines: %v", err)
	}
	const pw = "s3cret-adapt-pw"
	for _, bad := range []string{"http://u:" + pw + "@h:1", "redis://u:" + pw + "@h:notaport"} {
		_, err := adapt(t, site("redis "+bad))
		if err == nil || !strings.Contains(err.Error(), "redis") {
			t.Fatalf("%s accepted or error names no redis: %v", redactRedisURL(bad), err)
		}
		if strings.Contains(err.Error(), pw) {
			t.Fatalf("adapt error leaks the password: %v", err)
		}
	}
	h := Handler{DisableClientAuth: true, Keys: []Key{{Key: "sk-a"}}, Redis: &Redis{}}
	if err := h.Validate(); err == nil || !strings.Contains(err.Error(), "redis: url is empty") {
		t.Fatalf("empty url: %v", err)
	}
}

// deadRedisURL is a redis URL with a password on a 127.0.0.1 port nothing
// listens on (the kernel just handed it out and it was closed again).
func deadRedisURL(t *testing.T, pw string) string {
	t.Helper()
	addr, err := relaytest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return "redis://default:" + pw + "@" + addr + "/0"
}

// A Redis nothing answers on at start is no configuration error: the pool
// serves from local-fallback and its errors and status hold no password.
func TestRedisUnreachableAtStart(t *testing.T) {
	const pool, pw = "redis_unreachable", "s3cret-dead-pw"
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	defer cancel()
	m, err := ctx.LoadModuleByID("http.handlers.cc_relay", json.RawMessage(
		`{"pool":"`+pool+`","disable_client_auth":true,"keys":[{"key":"sk-redis-dead"}],"redis":"`+deadRedisURL(t, pw)+`"}`))
	if err != nil {
		t.Fatalf("provisioning with redis down: %v", err)
	}
	h := m.(*Handler)
	if h.store == nil || h.Redis.Timeout != caddy.Duration(defaultRedisTimeout) || h.Redis.KeyPrefix != defaultRedisKeyPrefix {
		t.Fatalf("store %v, defaults %+v", h.store != nil, h.Redis.Timeout)
	}
	e, ok := lookupEntry(pool)
	if !ok {
		t.Fatal("pool not live")
	}
	st := poolStatus(pool, e)
	if st.Mode != "local-fallback" || st.Instance == "" || st.Instance != h.store.Instance() {
		t.Fatalf("status mode %q instance %q", st.Mode, st.Instance)
	}
	b, _ := json.Marshal(st)
	if strings.Contains(string(b), pw) {
		t.Fatalf("status leaks the password: %s", b)
	}
}

// One store per pool, URL, prefix and timeout, across configurations: a
// reload with the same redis keeps the store (same instance id, no new
// connection); a changed prefix gets a new store; a store closes, leaving
// Redis's instance registry, when the last configuration holding it is
// cleaned up, and then leaves no goroutine.
func TestRedisStoresAcrossReloads(t *testing.T) {
	const pool = "redis_reload_unit"
	srv := redistest.Start(t)
	lc := startLeakCheck()
	load := func(redis string) (*Handler, context.CancelFunc) {
		t.Helper()
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		raw := `{"pool":"` + pool + `","disable_client_auth":true,"keys":[{"key":"sk-redis-reload"}]`
		if redis != "" {
			raw += `,"redis":` + redis
		}
		m, err := ctx.LoadModuleByID("http.handlers.cc_relay", json.RawMessage(raw+"}"))
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		return m.(*Handler), cancel
	}
	registered := func(prefix, instance string) bool {
		score, err := srv.Do("ZSCORE", "{"+prefix+":"+pool+"}:instances", instance)
		if err != nil {
			t.Fatal(err)
		}
		return score != ""
	}
	refs := func(h *Handler) int { n, _ := stores.References(h.storeKey); return n }

	h1, cancel1 := load(`"` + srv.URL() + `"`)
	if h1.store == nil || h1.store.Mode() != keypool.SharedModeShared || !registered("cc_relay", h1.store.Instance()) {
		t.Fatalf("first config: store %v", h1.store != nil)
	}
	first := h1.store
	h2, cancel2 := load(`{"url":"` + srv.URL() + `","timeout":"100ms","key_prefix":"cc_relay"}`)
	if h2.store != first || refs(h2) != 2 {
		t.Fatalf("same redis (defaults spelled out) got another store; refs %d", refs(h2))
	}
	cancel1()
	if refs(h2) != 1 || !registered("cc_relay", first.Instance()) || first.Mode() != keypool.SharedModeShared {
		t.Fatalf("old config's cleanup closed the store the new one holds")
	}
	if e, _ := lookupEntry(pool); e.store != first || poolStatus(pool, e).Instance != first.Instance() {
		t.Fatalf("live entry lost its store")
	}

	h3, cancel3 := load(`{"url":"` + srv.URL() + `","key_prefix":"other"}`)
	if h3.store == nil || h3.store == first || h3.store.Instance() == first.Instance() {
		t.Fatal("a changed key prefix kept the old store")
	}
	cancel2()
	if _, ok := stores.References(h2.storeKey); ok || registered("cc_relay", first.Instance()) {
		t.Fatal("the replaced store is still open after its last config was cleaned up")
	}
	if !registered("other", h3.store.Instance()) {
		t.Fatal("the new store is not registered")
	}
	third := h3.store
	h4, cancel4 := load("")
	if h4.store != nil {
		t.Fatal("a config without redis got a store")
	}
	cancel3()
	if e, _ := lookupEntry(pool); e.store != nil || poolStatus(pool, e).Mode != "local" || poolStatus(pool, e).Instance != "" {
		t.Fatalf("without redis: %+v", poolStatus(pool, e))
	}
	if registered("other", third.Instance()) {
		t.Fatal("the removed store is still registered")
	}
	cancel4()
	lc.verify(t) // a closed store leaves no goroutine behind
}

// The status view prints where a pool with redis keeps its state, and
// nothing about it for a pool without.
func TestRedisStatusLine(t *testing.T) {
	var b strings.Builder
	printStatus(&b, []PoolStatus{
		{Name: "with", Mode: "local-fallback", Instance: "a1b2", InstancesAlive: 3},
		{Name: "without", Mode: "local"},
	}, time.Now(), false)
	out := b.String()
	if !strings.Contains(out, "redis local-fallback · instance a1b2 · 3 instances alive") || strings.Count(out, "redis ") != 1 {
		t.Fatalf("status view:\n%s", out)
	}
}

// The alert rules match only modes the relay reports.
func TestAlertRulesRedisModes(t *testing.T) {
	src, err := os.ReadFile(alertRules)
	if err != nil {
		t.Fatal(err)
	}
	found := regexp.MustCompile(`mode="([a-z-]+)"`).FindAllStringSubmatch(string(src), -1)
	if len(found) == 0 {
		t.Fatal("no rule watches the redis mode")
	}
	for _, m := range found {
		known := false
		for _, sm := range sharedModes {
			known = known || sm.String() == m[1]
		}
		if !known {
			t.Errorf("the alert rules match mode %q, which the relay never reports", m[1])
		}
	}
}
