package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
	zapobserver "go.uber.org/zap/zaptest/observer"

	"github.com/cc-relay/caddy-cc-relay/internal/redistest"
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
	logger := zap.New(core)
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
