package redisstate

import (
	"context"
	"runtime"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"

	"github.com/cc-relay/caddy-cc-relay/internal/redistest"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// BenchmarkReserveClient runs the admission script with each candidate
// client, side by side in one run, at 1 and 32 requests in flight, on
// loopback: go test -run '^$' -bench ReserveClient -benchtime 2s ./internal/redisstate/
// Both clients get the same settings: no retries, and a timeout of 1 s
// rather than the request path's 100 ms, so that a loaded test machine
// measures throughput instead of tripping timeouts (errors are counted); go-redis gets a pool of 32 connections (its default would be
// 10 per CPU) so that 32 in flight never queue for a connection.
func BenchmarkReserveClient(b *testing.B) {
	srv := redistest.Start(b)
	k := keys{prefix: "bench", pool: "p"}
	args := func(i int64) ([]string, []string) {
		org := "cfg:o" + strconv.FormatInt(i%64, 10)
		return []string{k.budget(org, "sonnet"), k.org(org)},
			[]string{"1e9", "1e12", "1e12", "130000", "1e9", "0", "r", "1", "4400", "0", "1", "4000", "0"}
	}

	ropt, err := ClientOptions(srv.URL(), benchTimeout)
	if err != nil {
		b.Fatal(err)
	}
	rc, err := rueidis.NewClient(ropt)
	if err != nil {
		b.Fatal(err)
	}
	defer rc.Close()
	gopt, err := redis.ParseURL(srv.URL())
	if err != nil {
		b.Fatal(err)
	}
	gopt.ReadTimeout, gopt.WriteTimeout, gopt.DialTimeout = benchTimeout, benchTimeout, benchTimeout
	gopt.MaxRetries = -1
	gopt.PoolSize = 32
	gc := redis.NewClient(gopt)
	defer gc.Close()
	gscript := redis.NewScript(preludeSrc + flushSrc)

	ctx := context.Background()
	clients := []struct {
		name string
		run  func(i int64) error
	}{
		{"rueidis", func(i int64) error {
			ks, as := args(i)
			return flushScript.Exec(ctx, rc, ks, as).Error()
		}},
		{"go-redis", func(i int64) error {
			ks, as := args(i)
			anyArgs := make([]any, len(as))
			for j, a := range as {
				anyArgs[j] = a
			}
			return gscript.Run(ctx, gc, ks, anyArgs...).Err()
		}},
	}
	for _, inflight := range []int{1, 32} {
		for _, c := range clients {
			b.Run(c.name+"/inflight="+strconv.Itoa(inflight), func(b *testing.B) {
				var n, errs atomic.Int64
				defer func() { b.ReportMetric(float64(errs.Load())/float64(b.N), "errors/op") }()
				if inflight == 1 {
					for b.Loop() {
						if c.run(n.Add(1)) != nil {
							errs.Add(1)
						}
					}
					return
				}
				b.SetParallelism(max(1, inflight/runtime.GOMAXPROCS(0)))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if c.run(n.Add(1)) != nil {
							errs.Add(1)
						}
					}
				})
			})
		}
	}
}

const benchTimeout = time.Second

// BenchmarkStoreReserve is the whole admission as keypool would call it:
// breaker check, timeout, script, reply parsing.
func BenchmarkStoreReserve(b *testing.B) {
	srv := redistest.Start(b)
	s, err := New(Config{URL: srv.URL(), Pool: "bench", Heartbeat: time.Hour, Timeout: benchTimeout})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	bud := keypool.SharedBudget{Org: "cfg:a", Class: "sonnet", Caps: [3]float64{1e9, 1e12, 1e12}}
	for _, inflight := range []int{1, 32} {
		b.Run("inflight="+strconv.Itoa(inflight), func(b *testing.B) {
			reserve := func() {
				if a := s.Reserve(ctx, bud, [3]float64{1, 4000, 0}, [3]float64{1, 4000, 0}); a.Mode != keypool.SharedModeShared {
					b.Fatalf("fell back to local: %+v", a) // the numbers would be local ones
				}
			}
			if inflight == 1 {
				// The latency distribution, for the p50 target.
				var lat []time.Duration
				for b.Loop() {
					start := time.Now()
					reserve()
					lat = append(lat, time.Since(start))
				}
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
				return
			}
			b.SetParallelism(max(1, inflight/runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					reserve()
				}
			})
		})
	}
}

// BenchmarkPoolRequest is one request's whole life in the pool (Acquire,
// ObserveHeaders, Settle) without a store and with one on loopback Redis,
// side by side in one run, with and without a session:
// go test -run '^$' -bench PoolRequest -benchtime 2s ./internal/redisstate/
func BenchmarkPoolRequest(b *testing.B) {
	srv := redistest.Start(b)
	hdr := keypool.RateLimitHeaders{
		Requests:     keypool.Limit{Limit: 1e6, Remaining: 999000},
		InputTokens:  keypool.Limit{Limit: 1e9, Remaining: 999000000},
		OutputTokens: keypool.Limit{Limit: 1e9, Remaining: 999000000},
		Tokens:       keypool.Limit{Limit: -1, Remaining: -1},
	}
	keys := []keypool.KeyConfig{{Name: "a", Org: "o1"}, {Name: "b", Org: "o2"}}
	for _, mode := range []string{"local", "redis"} {
		for _, session := range []bool{false, true} {
			name := mode + "/session=" + strconv.FormatBool(session)
			b.Run(name, func(b *testing.B) {
				var sh keypool.SharedState
				if mode == "redis" {
					s, err := New(Config{URL: srv.URL(), Pool: name, Timeout: benchTimeout})
					if err != nil {
						b.Fatal(err)
					}
					defer s.Close()
					sh = s
				}
				p, err := keypool.NewState(nil).NewPool(poolConfig(keys, sh))
				if err != nil {
					b.Fatal(err)
				}
				defer p.WaitShared()
				ctx := context.Background()
				var n uint64
				b.ResetTimer()
				for b.Loop() {
					n++
					req := keypool.Request{Model: sonnet, Bytes: 4000}
					if session {
						req.Session = n%512 + 1
					}
					var r keypool.Reservation
					if err := p.Acquire(ctx, &req, &r); err != nil {
						b.Fatal(err)
					}
					r.ObserveHeaders(200, hdr)
					r.Settle(ok200())
				}
			})
		}
	}
}
