package caddymodule

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/rueidis"

	"github.com/cc-relay/caddy-cc-relay/internal/pricing"
	"github.com/cc-relay/caddy-cc-relay/internal/redisstate"
	"github.com/cc-relay/caddy-cc-relay/internal/redistest"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// A pool's clients on Redis: spend goes up under the client's name, and
// nothing of the client's token reaches Redis (every key and every value
// scanned).
func TestClientSpendOnRedisHoldsNoToken(t *testing.T) {
	const token = "sk-client-tok-4c1f8e2a9b7d"
	h, err := parse(`cc_relay cfg_clients_redis {
		client_token ` + token + ` alice {
			budget 5 day
		}
		key k
	}`)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	defer cancel()
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	srv := redistest.Start(t)
	store, err := redisstate.New(redisstate.Config{URL: srv.URL(), Pool: h.Pool, Heartbeat: time.Hour, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	h.clientSet.useRedis(store)
	var res keypool.ClientReservation
	if err := h.clientSet.clients.Admit(&keypool.ClientRequest{Client: "alice", Model: "claude-sonnet-4-5", Bytes: 400, MaxTokens: 100}, &res); err != nil {
		t.Fatal(err)
	}
	res.Add(pricing.Usage{InputTokens: 100, OutputTokens: 100}, true, true)
	res.Settle()
	// Cleanup makes the last exchange: this configuration's spend goes up.
	if err := h.Cleanup(); err != nil {
		t.Fatal(err)
	}

	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr()}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bg := context.Background()
	keys, err := c.Do(bg, c.B().Keys().Pattern("*").Build()).AsStrSlice()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, k := range keys {
		vals, err := c.Do(bg, c.B().Hgetall().Key(k).Build()).AsStrMap()
		if err != nil { // not a hash: read it whole
			v, _ := c.Do(bg, c.B().Dump().Key(k).Build()).ToString()
			vals = map[string]string{"": v}
		}
		for f, v := range vals {
			for _, s := range []string{k, f, v} {
				if strings.Contains(s, token[3:15]) || strings.Contains(s, token[12:]) {
					t.Fatalf("client token in redis: key %q field %q", k, f)
				}
			}
		}
		if strings.Contains(k, ":spend:day:") && strings.HasSuffix(k, ":alice") && vals["s"] == "1800000000" {
			found = true // 100 × $3 + 100 × $15 per million
		}
	}
	if !found {
		t.Fatalf("alice's spend not in redis: keys %q", keys)
	}
}
