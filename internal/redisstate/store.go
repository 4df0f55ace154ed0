// Package redisstate keeps a key pool's shared state in Redis (or Valkey),
// so that several relay instances behind a load balancer act as one pool.
// It implements keypool.SharedState; caddymodule wires it in when a pool
// names a redis URL.
//
// Every operation is one server-side script or command with a short
// timeout and no client-level retry; the budget scripts of many requests
// go in batches (flush.go), and far from the limit admission makes no
// round trip. The first failure trips a circuit
// breaker: the store stops calling Redis on the request path and answers
// from local budgets of this instance's share of each limit until the
// heartbeat's probe (about once a second) succeeds again.
package redisstate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/rueidis"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// Config configures a Store. Zero values take the defaults named.
type Config struct {
	// URL is redis://[user:password@]host:port[/db] or rediss:// for TLS.
	URL string
	// Prefix starts every key; default "cc_relay".
	Prefix string
	// Pool is the pool's name: instances with the same prefix and pool
	// share one pool.
	Pool string
	// Timeout bounds every call to Redis; default 100 ms.
	Timeout time.Duration
	// Heartbeat is how often the instance registers itself, refreshes the
	// pool-wide view and, in local-fallback, probes Redis; default 1 s.
	Heartbeat time.Duration
	// Alive is how long an instance counts as alive after its last
	// heartbeat; default 3 heartbeats.
	Alive time.Duration
	// BucketTTL is how long a budget outlives its last use in Redis;
	// default 130 s: longer than a refill from the debt bound (one capacity
	// below zero) to full, so an expired bucket is a full one.
	BucketTTL time.Duration
	// FlushInterval is how long corrections, header syncs and the charges
	// of requests admitted without a round trip may wait to be sent to
	// Redis in one batch (see flush.go); default 20 ms. A view of a
	// budget older than two intervals is not trusted for admission.
	FlushInterval time.Duration
	// LeaseShare is the share of each bucket's level that the instances
	// together may admit without a round trip between two views of it
	// (see flush.go); default 0.1. Negative: every admission asks Redis.
	LeaseShare float64
	// MaxPark is the furthest ahead a park may lie; default 31 days.
	MaxPark time.Duration
	// MaxLimit bounds a limit learned from headers; default 1e9.
	MaxLimit float64
	// Instance names this instance; default random.
	Instance string
	// Clock times the local fallback budgets; default the wall clock.
	Clock clock.Clock
	// OnRoundTrip, when set, is told about every call to Redis (its
	// operation name, duration and error), e.g. to feed a histogram.
	OnRoundTrip func(op string, d time.Duration, err error)
	// OnMode, when set, is told about every change of mode.
	OnMode func(from, to keypool.SharedMode, err error)
}

func (c *Config) setDefaults() {
	if c.Prefix == "" {
		c.Prefix = "cc_relay"
	}
	if c.Timeout <= 0 {
		c.Timeout = 100 * time.Millisecond
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = time.Second
	}
	if c.Alive <= 0 {
		c.Alive = 3 * c.Heartbeat
	}
	if c.BucketTTL <= 0 {
		c.BucketTTL = 130 * time.Second
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = 20 * time.Millisecond
	}
	if c.LeaseShare == 0 {
		c.LeaseShare = 0.1
	}
	if c.MaxPark <= 0 {
		c.MaxPark = 31 * 24 * time.Hour
	}
	if c.MaxLimit <= 0 {
		c.MaxLimit = 1e9
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.Instance == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		c.Instance = hex.EncodeToString(b[:])
	}
}

// ClientOptions turns a redis URL into client options with the request
// path's settings: the timeout on connections, no retries, no client-side
// cache. Its errors never repeat the URL (it may hold a password).
func ClientOptions(rawURL string, timeout time.Duration) (rueidis.ClientOption, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return rueidis.ClientOption{}, errors.New("redis url does not parse")
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return rueidis.ClientOption{}, fmt.Errorf("redis url scheme %q: want redis or rediss", u.Scheme)
	}
	opt, err := rueidis.ParseURL(rawURL)
	if err != nil {
		return rueidis.ClientOption{}, fmt.Errorf("redis url of host %q is not valid", u.Hostname())
	}
	opt.Dialer.Timeout = timeout
	opt.ConnWriteTimeout = timeout
	opt.DisableRetry = true
	opt.DisableCache = true
	// 2^2 = 4 connections pipelined (the client's default on this many
	// cores, set so that maxReconnects covers them all).
	opt.PipelineMultiplex = pipelineMultiplex
	return opt, nil
}

// Store is the Redis-backed shared state of one pool.
type Store struct {
	cfg  Config
	opt  rueidis.ClientOption
	keys keys

	client atomic.Pointer[rueidis.Client]
	mode   atomic.Uint32 // keypool.SharedMode
	view   atomic.Pointer[keypool.SharedView]
	// share is N of the 1/N share each limit is split into while in
	// local-fallback: the instances alive at the last heartbeat before
	// the outage.
	share atomic.Int64

	local localBudgets

	// pending are the writes of pool-wide state (disable, enable, parks,
	// cooldowns, organization ids) made while Redis was away, replayed in
	// order when the store rejoins, so an operator's enable on one
	// instance during an outage still reaches the others.
	pendingMu sync.Mutex
	pending   []pendingWrite

	// epoch is the pool's epoch in Redis as last seen, and epochMine
	// whether this instance's heartbeat set it.
	epochMu   sync.Mutex
	epoch     string
	epochMine bool

	// flush batches the budget scripts (flush.go).
	flush     flusher
	flushDone chan struct{}

	// offset is Redis's clock less this instance's, in ms, as the
	// heartbeat measured it (offsetKnown once it has): the budget scripts
	// get their caller's deadline on Redis's clock.
	offset      atomic.Int64
	offsetKnown atomic.Bool

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// New connects to Redis and starts the heartbeat. An unreachable Redis is
// no error: the store starts in local-fallback and joins when Redis
// answers. Only a URL that cannot work is.
func New(cfg Config) (*Store, error) {
	cfg.setDefaults()
	opt, err := ClientOptions(cfg.URL, cfg.Timeout)
	if err != nil {
		return nil, err
	}
	s := &Store{
		cfg:       cfg,
		opt:       opt,
		keys:      keys{prefix: cfg.Prefix, pool: cfg.Pool},
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		flushDone: make(chan struct{}),
	}
	s.flush.init()
	s.local.init(cfg.Clock)
	s.share.Store(1)
	s.mode.Store(uint32(keypool.SharedModeLocalFallback))
	s.view.Store(&keypool.SharedView{Instance: cfg.Instance, Mode: keypool.SharedModeLocalFallback, InstancesAlive: 1})
	s.beat() // join now if Redis answers
	go s.run()
	go s.runFlusher()
	return s, nil
}

// Instance is this instance's id in the registry.
func (s *Store) Instance() string { return s.cfg.Instance }

// Mode is where shared state lives at the moment.
func (s *Store) Mode() keypool.SharedMode { return keypool.SharedMode(s.mode.Load()) }

// View is the pool-wide state as of the last heartbeat.
func (s *Store) View() keypool.SharedView {
	v := *s.view.Load()
	v.Mode = s.Mode()
	return v
}

// Close stops the heartbeat, leaves the registry and closes the client.
func (s *Store) Close() error {
	s.once.Do(func() {
		s.flush.mu.Lock()
		s.flush.closed = true
		s.flush.mu.Unlock()
		close(s.stop)
		<-s.done
		<-s.flushDone // the last flush sends what was queued
		if c := s.client.Load(); c != nil {
			if s.Mode() == keypool.SharedModeShared {
				ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
				(*c).Do(ctx, (*c).B().Zrem().Key(s.keys.instances()).Member(s.cfg.Instance).Build())
				cancel()
			}
			(*c).Close()
		}
	})
	return nil
}

func (s *Store) run() {
	defer close(s.done)
	t := time.NewTicker(s.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.beat()
		}
	}
}

// errFallback is what a call returns without touching Redis while the
// breaker is open.
var errFallback = errors.New("redis: local-fallback")

// call runs fn against Redis when the store is shared, with the timeout,
// reports its round trip, and trips the breaker on failure.
func (s *Store) call(parent context.Context, op string, fn func(ctx context.Context, c rueidis.Client) error) error {
	if s.Mode() != keypool.SharedModeShared {
		return errFallback
	}
	c := s.client.Load()
	if c == nil {
		return errFallback
	}
	ctx, cancel := context.WithTimeout(parent, s.cfg.Timeout)
	defer cancel()
	start := time.Now()
	err := attempt(ctx, *c, fn)
	if s.cfg.OnRoundTrip != nil {
		s.cfg.OnRoundTrip(op, time.Since(start), err)
	}
	if err != nil && !isRedisNil(err) {
		// A caller that gave up (its client went away) says nothing
		// about Redis: only the store's own timeout and errors trip.
		if parent.Err() == nil {
			s.trip(err)
		}
		return err
	}
	return nil
}

func isRedisNil(err error) bool { return rueidis.IsRedisNil(err) }

// attempt runs fn, again while the connection it got was found closed
// under the client (Redis restarted, a proxy dropped it): the client
// dials anew once it has seen that, so more tries within the same
// deadline tell a dead Redis from dead connections (the client multiplexes
// a few, and each fails once). A script whose reply was lost may run
// twice: a charge counted twice errs on the side of fewer 429s.
func attempt(ctx context.Context, c rueidis.Client, fn func(ctx context.Context, c rueidis.Client) error) error {
	err := fn(ctx, c)
	for try := 0; brokenConn(err) && ctx.Err() == nil && try < maxReconnects; try++ {
		err = fn(ctx, c)
	}
	return err
}

// maxReconnects bounds the tries on connections found closed: one more
// than the client's 1<<pipelineMultiplex connections, each of which may
// fail once.
const (
	pipelineMultiplex = 2
	maxReconnects     = 1<<pipelineMultiplex + 1
)

// brokenConn reports an error of a connection that was closed, not of
// Redis or of the deadline.
func brokenConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// trip moves shared → local-fallback: the breaker opens.
func (s *Store) trip(err error) {
	if s.mode.CompareAndSwap(uint32(keypool.SharedModeShared), uint32(keypool.SharedModeLocalFallback)) {
		s.epochMu.Lock()
		epoch := s.epoch
		s.epochMu.Unlock()
		s.local.enter(s.share.Load(), epoch)
		if s.cfg.OnMode != nil {
			s.cfg.OnMode(keypool.SharedModeShared, keypool.SharedModeLocalFallback, err)
		}
	}
}

// beat registers the instance and refreshes the view; in local-fallback
// it is the breaker's probe, and its success closes the breaker after the
// local spending of the outage is charged to the shared budgets.
func (s *Store) beat() {
	c := s.client.Load()
	if c == nil {
		cl, err := rueidis.NewClient(s.opt)
		if err != nil {
			s.report("connect", 0, err)
			return
		}
		s.client.Store(&cl)
		c = &cl
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	start := time.Now()
	k := s.keys
	var vs []rueidis.RedisMessage
	err := attempt(ctx, *c, func(ctx context.Context, c rueidis.Client) error {
		var err error
		vs, err = heartbeatScript.Exec(ctx, c,
			[]string{k.instances(), k.disabled(), k.orgIDs(), k.epoch()},
			[]string{s.cfg.Instance, fmtInt(s.cfg.Alive.Milliseconds()), s.cfg.Instance + ":" + fmtInt(time.Now().UnixNano())}).ToArray()
		return err
	})
	rtt := time.Since(start)
	s.report("heartbeat", rtt, err)
	if err != nil || len(vs) != 6 {
		if err == nil {
			err = errors.New("redis: heartbeat reply malformed")
		}
		s.trip(err)
		return
	}
	if nowms, err := vs[0].AsInt64(); err == nil {
		s.learnOffset(nowms, start, rtt)
	}
	alive, _ := vs[1].AsInt64()
	disabled, _ := vs[2].AsStrMap()
	orgIDs, _ := vs[3].AsStrMap()
	epoch, _ := vs[4].ToString()
	created, _ := vs[5].AsInt64()
	if disabled == nil {
		disabled = map[string]string{}
	}
	if orgIDs == nil {
		orgIDs = map[string]string{}
	}
	s.view.Store(&keypool.SharedView{
		Instance:       s.cfg.Instance,
		InstancesAlive: int(alive),
		Disabled:       disabled,
		OrgIDs:         orgIDs,
		Epoch:          epoch,
		EpochMine:      s.ownEpoch(epoch, created == 1),
		Refreshed:      time.Now(),
	})
	if s.Mode() == keypool.SharedModeLocalFallback {
		if err := s.rejoin(epoch); err != nil {
			return
		}
		s.mode.Store(uint32(keypool.SharedModeShared))
		if s.cfg.OnMode != nil {
			s.cfg.OnMode(keypool.SharedModeLocalFallback, keypool.SharedModeShared, nil)
		}
		// The view read above predates the replayed writes.
		s.beat()
		return
	}
	// N for the next outage is the instances alive now.
	s.share.Store(max(1, alive))
}

// learnOffset takes Redis's clock (nowms) from a heartbeat sent at start
// and answered after rtt: Redis read it about halfway. A quick round trip
// (within a quarter of the timeout) replaces the offset; a slow one only
// stands in until a quick one comes.
func (s *Store) learnOffset(nowms int64, start time.Time, rtt time.Duration) {
	if rtt > s.cfg.Timeout/4 && s.offsetKnown.Load() {
		return
	}
	s.offset.Store(nowms - start.Add(rtt/2).UnixMilli())
	s.offsetKnown.Store(true)
}

// deadline is when the caller of a budget script gives up (ctx's deadline
// less a quarter of the timeout, for the reply's way back and the offset's
// error), in ms on Redis's clock: the script does nothing after it. "0"
// (none) while the offset is not known.
//
// Why a deadline, not a correction afterwards: a call that times out was
// written to a connection, and a stalled Redis (SIGSTOP, a long fork, a
// paused VM) runs it when it continues, long after this instance served
// the request from its local share; the reply, if any, comes to a caller
// that is gone, so only Redis can tell a late script from a timely one,
// and only at the moment it runs.
func (s *Store) deadline(ctx context.Context) string {
	dl, ok := ctx.Deadline()
	if !ok || !s.offsetKnown.Load() {
		return "0"
	}
	return fmtInt(dl.Add(-s.cfg.Timeout/4).UnixMilli() + s.offset.Load())
}

// ownEpoch reports whether this instance started the pool's current
// epoch in the store (created says this heartbeat did), until it changes.
func (s *Store) ownEpoch(epoch string, created bool) bool {
	s.epochMu.Lock()
	defer s.epochMu.Unlock()
	if epoch != s.epoch {
		s.epoch, s.epochMine = epoch, created
	}
	return s.epochMine
}

type pendingWrite struct {
	op string
	fn func(ctx context.Context, c rueidis.Client) error
}

// maxPending bounds the writes kept for replay; the oldest go first.
const maxPending = 1024

// write is call for a write of pool-wide state: when Redis is away it is
// kept for replay on rejoin.
func (s *Store) write(ctx context.Context, op string, fn func(ctx context.Context, c rueidis.Client) error) error {
	err := s.call(ctx, op, fn)
	if err != nil && !isRedisNil(err) {
		s.pendingMu.Lock()
		if len(s.pending) == maxPending {
			s.pending = s.pending[1:]
		}
		s.pending = append(s.pending, pendingWrite{op, fn})
		s.pendingMu.Unlock()
	}
	return err
}

// replay sends the writes kept during the outage, in order, each with the
// timeout; it stops at the first failure and keeps the rest.
func (s *Store) replay(c rueidis.Client) error {
	s.pendingMu.Lock()
	defer s.pendingMu.Unlock()
	for len(s.pending) > 0 {
		w := s.pending[0]
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
		start := time.Now()
		err := attempt(ctx, c, w.fn)
		cancel()
		s.report(w.op, time.Since(start), err)
		if err != nil && !isRedisNil(err) {
			return err
		}
		s.pending = s.pending[1:]
	}
	return nil
}

// rejoin charges the shared budgets with what this instance spent locally
// during the outage (see localBudgets.debts: Redis's state being of epoch
// now tells whether it kept counting or restarted empty), so that neither
// hands out budget twice nor charges it twice.
func (s *Store) rejoin(epoch string) error {
	if err := s.replay(*s.client.Load()); err != nil {
		return err
	}
	debts := s.local.debts(epoch)
	if len(debts) == 0 {
		s.local.reset()
		return nil
	}
	c := s.client.Load()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	start := time.Now()
	err := attempt(ctx, *c, func(ctx context.Context, c rueidis.Client) error { return s.settleBatch(ctx, c, debts) })
	s.report("rejoin", time.Since(start), err)
	if err == nil {
		s.local.reset()
	}
	return err
}

func (s *Store) report(op string, d time.Duration, err error) {
	if s.cfg.OnRoundTrip != nil {
		s.cfg.OnRoundTrip(op, d, err)
	}
}
