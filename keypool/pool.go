// Package keypool keeps a pool of upstream API keys inside their
// organizations' rate limits.
//
// A State holds everything that must outlive a configuration: per-key health
// and counters, per-organization budgets (one set of requests / input-token /
// output-token buckets per model class, because that is how the upstream
// counts), pinned sessions, the calibrated token estimator and the wait
// queue. A Pool is one configuration's view of a State: which keys exist,
// their configured limits, weights and priorities, and the strategy. On a
// config reload a new Pool is built over the same State; keys are matched by
// name, so budgets, learned limits, cooldowns and pins carry over.
//
// With Config.Shared, several relay instances keep one pool: the State's
// budgets become a mirror of shared ones and a SharedState (the Redis
// engine in internal/redisstate) has the last word on admission
// (shared_pool.go). Responses' rate-limit headers arrive as plain values,
// parsed by internal/anthropic (RateLimitHeaders is an alias of its type).
//
// The package never sees a secret: keys are known by name only.
package keypool

import (
	"context"
	"fmt"
	"math"
	"path"
	"sync"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
	"github.com/cc-relay/caddy-cc-relay/selector"
)

// Limits are per-minute limits; 0 means learn them from response headers.
type Limits struct {
	RPM  int64
	ITPM int64
	OTPM int64
}

// KeyConfig describes one upstream key (never its secret).
type KeyConfig struct {
	Name string
	// Org groups keys that share one upstream budget. Empty: the key is its
	// own organization until a response names its organization.
	Org string
	// Workspace is the prompt-cache scope; empty means the organization.
	Workspace string
	Limits    Limits
	Weight    int
	Priority  int
}

// ClassRule maps model names matching Pattern (path.Match syntax, e.g.
// "claude-3-7-*") to a model class.
type ClassRule struct {
	Pattern string
	Class   string
}

// Config is one configuration of a pool. It has no defaults: the caller
// sets every number (the Caddy module does so in Provision), and NewPool
// refuses a zero TokenEstimateRatio, DefaultCooldown or SpendCapPark, and
// a zero StickyTTL or StickyMaxSessions when Sticky is set.
type Config struct {
	Keys     []KeyConfig
	Strategy selector.Strategy
	// Sticky pins sessions to keys for StickyTTL (refreshed on use), at
	// most StickyMaxSessions at a time; both must be positive when Sticky
	// is set.
	Sticky            bool
	StickyTTL         time.Duration
	StickyMaxSessions int
	// MaxWait is how long a request may wait for capacity before it is
	// refused; 0 refuses at once.
	MaxWait time.Duration
	// TokenEstimateRatio is request-body bytes per input token used before
	// the estimator has calibrated itself from real usage; it must be
	// positive (DefaultTokenEstimateRatio is a fair first guess).
	TokenEstimateRatio float64
	ModelClasses       []ClassRule
	// DefaultCooldown applies to an upstream 429 that says neither
	// retry-after nor a reset time; it must be positive and is capped at
	// MaxCooldown.
	DefaultCooldown time.Duration
	// SpendCapPark is how long a key whose organization hit its spend cap
	// stays out when the upstream names no date; it must be positive and
	// is capped at MaxPark.
	SpendCapPark time.Duration
	// Seed seeds random choices (tests pass a fixed one).
	Seed uint64
	// Shared, when set, holds the pool's budgets, learned limits,
	// cooldowns, parks, disabled keys and session pins where every relay
	// instance naming the same pool sees them (see SharedState); nil keeps
	// all of it in this process. The pool does not close it.
	Shared SharedState
}

// State is the part of a pool that survives config reloads.
type State struct {
	mu      sync.Mutex
	clock   clock.Clock
	keys    map[string]*keyState
	orgs    map[string]*org
	classes map[string]int
	cnames  []string
	derived int // classes named after a model family, not a rule
	// learnedOrgs counts the "id:" organizations in orgs.
	learnedOrgs int
	usage       map[string]*clientUse // recent use by client (fairshare.go)
	est         []estimator
	sticky      *stickyTable
	waitq       waitQueue
	// shared is the store the last configuration used (nil: none), to
	// tell when one starts to be used; sharedOps counts writes to it in
	// flight (shared_pool.go).
	shared    SharedState
	sharedOps sync.WaitGroup
	epoch     string // the store's epoch last seen (SharedView.Epoch)
	// fellBack says an admission was answered from the store's local
	// fallback since the view was last seen shared.
	fellBack bool
}

// NewState returns an empty state that reads time from c.
func NewState(c clock.Clock) *State {
	if c == nil {
		c = clock.Real{}
	}
	return &State{
		clock:   c,
		keys:    map[string]*keyState{},
		orgs:    map[string]*org{},
		classes: map[string]int{},
		sticky:  newStickyTable(),
	}
}

// Destruct satisfies caddy.Destructor; a State owns no goroutine or file.
func (st *State) Destruct() error { return nil }

type keyState struct {
	name     string
	refs     int // pools that list this key
	org      *org
	cfgOrg   string
	orgMoves int // organization id changes followed
	disabled string
	health   keyHealth // recovery while disabled (health.go)
	inFlight int
	sticky   int
	totals   Totals
}

// Totals are a key's counters since the state was created.
type Totals struct {
	Requests            int64 `json:"requests"`
	Succeeded           int64 `json:"succeeded"`
	Failed              int64 `json:"failed"`
	RateLimited         int64 `json:"rate_limited"`
	InputTokens         int64 `json:"input_tokens"`
	OutputTokens        int64 `json:"output_tokens"`
	CacheReadTokens     int64 `json:"cache_read_input_tokens"`
	CacheCreationTokens int64 `json:"cache_creation_input_tokens"`
}

// member is a key as one configuration sees it.
type member struct {
	ks    *keyState
	cfg   KeyConfig
	caps  [numKinds]float64 // configured org-wide limits; 0 = learned
	label string            // configured org label
}

// Pool is one configuration's view of a State. Its methods are safe for
// concurrent use.
type Pool struct {
	st        *State
	cfg       Config
	members   []member
	byKey     map[*keyState]int
	sel       *selector.State
	view      view
	scratch   []int
	ttl       int64
	closed    bool
	lastModel string // classOf's cache, guarded by st.mu
	lastClass int
	lastOK    bool
	viewAt    int64 // the shared view last applied (unix nanos of its refresh)
}

// NewPool builds cfg's view over st, matching keys by name. It refuses a
// configuration it cannot work with (see Config; duplicate or unnamed
// keys, negative limits, one organization with two different limits)
// and changes nothing in st when it does.
func (st *State) NewPool(cfg Config) (*Pool, error) {
	if len(cfg.Keys) == 0 {
		return nil, fmt.Errorf("no keys configured")
	}
	orgCaps := map[string][numKinds]int64{}
	orgSrc := map[string][numKinds]string{}
	seen := map[string]bool{}
	for _, k := range cfg.Keys {
		if k.Name == "" {
			return nil, fmt.Errorf("key without a name")
		}
		if seen[k.Name] {
			return nil, fmt.Errorf("duplicate key name %q", k.Name)
		}
		seen[k.Name] = true
		if k.Limits.RPM < 0 || k.Limits.ITPM < 0 || k.Limits.OTPM < 0 || k.Weight < 0 {
			return nil, fmt.Errorf("key %q: limits and weight must not be negative", k.Name)
		}
		if k.Org == "" {
			continue
		}
		caps, src := orgCaps[k.Org], orgSrc[k.Org]
		for i, v := range [numKinds]int64{k.Limits.RPM, k.Limits.ITPM, k.Limits.OTPM} {
			if v == 0 {
				continue
			}
			if caps[i] != 0 && caps[i] != v {
				return nil, fmt.Errorf("keys %q and %q of org %q configure different %s limits (%d, %d): an organization has one budget",
					src[i], k.Name, k.Org, kindNames[i], caps[i], v)
			}
			caps[i], src[i] = v, k.Name
		}
		orgCaps[k.Org], orgSrc[k.Org] = caps, src
	}
	for _, r := range cfg.ModelClasses {
		if _, err := path.Match(r.Pattern, ""); err != nil || r.Class == "" {
			return nil, fmt.Errorf("bad model_class %q %q", r.Pattern, r.Class)
		}
	}
	// keypool has no defaults of its own: the caller (the Caddy module's
	// Provision) sets them. What it cannot work with is refused.
	if r := cfg.TokenEstimateRatio; !(r > 0) || math.IsInf(r, 1) {
		return nil, fmt.Errorf("token estimate ratio must be a positive number of bytes per token, got %v", r)
	}
	if cfg.Sticky && (cfg.StickyTTL <= 0 || cfg.StickyMaxSessions <= 0) {
		return nil, fmt.Errorf("sticky sessions need a positive ttl and session bound, got %v and %d", cfg.StickyTTL, cfg.StickyMaxSessions)
	}
	if cfg.DefaultCooldown <= 0 || cfg.SpendCapPark <= 0 {
		return nil, fmt.Errorf("default cooldown and spend cap park must be positive, got %v and %v", cfg.DefaultCooldown, cfg.SpendCapPark)
	}
	// Bounds, not defaults: nothing configured may hold a key out longer
	// than the package's own caps (bounds.go).
	cfg.DefaultCooldown = min(cfg.DefaultCooldown, MaxCooldown)
	cfg.SpendCapPark = min(cfg.SpendCapPark, MaxPark)

	st.mu.Lock()
	defer st.mu.Unlock()
	p := &Pool{st: st, cfg: cfg, byKey: map[*keyState]int{}, ttl: int64(cfg.StickyTTL)}
	moved := false // some key left the organization it had
	weights := make([]int, len(cfg.Keys))
	prios := make([]int, len(cfg.Keys))
	for i, k := range cfg.Keys {
		ks := st.keys[k.Name]
		if ks == nil {
			ks = &keyState{name: k.Name}
			st.keys[k.Name] = ks
		}
		ks.refs++
		orgName := "key:" + k.Name
		if k.Org != "" {
			orgName = "cfg:" + k.Org
		}
		// A key whose configured org changed starts over in the new one;
		// otherwise it keeps what it learned (including a merge).
		if ks.org == nil || ks.cfgOrg != k.Org {
			moved = moved || ks.org != nil
			ks.org, ks.cfgOrg = st.orgNamed(orgName), k.Org
		}
		m := member{ks: ks, cfg: k, label: k.Org}
		lim := [numKinds]int64{k.Limits.RPM, k.Limits.ITPM, k.Limits.OTPM}
		if k.Org != "" {
			lim = orgCaps[k.Org]
		}
		for j, v := range lim {
			m.caps[j] = float64(v)
		}
		p.members = append(p.members, m)
		p.byKey[ks] = i
		weights[i] = max(k.Weight, 1)
		prios[i] = k.Priority
	}
	// Configured limits may have shrunk since the budgets were last used:
	// a budget keeps its level, but within the new capacity (and at most
	// one capacity in debt), or a lowered limit would leave it in debt
	// far longer than a period.
	for i := range p.members {
		for _, b := range p.members[i].ks.org.resolve().budgets {
			if b == nil {
				continue
			}
			for k, c := range p.capsOf(i, b) {
				b.buckets[k].clampTo(c)
			}
		}
	}
	if moved {
		st.sweepOrgs()
	}
	p.sel = selector.NewState(weights, prios, cfg.Seed)
	p.view.p = p
	if cfg.Shared != nil && st.shared != cfg.Shared {
		p.moveStateUp(st.clock.Now().UnixNano())
	}
	st.shared = cfg.Shared
	return p, nil
}

// Close releases the pool's hold on its keys; keys no configuration lists
// any more are dropped from the state with their pinned sessions.
func (p *Pool) Close() {
	st := p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	dropped := false
	for _, m := range p.members {
		m.ks.refs--
		if m.ks.refs == 0 {
			st.sticky.dropKey(m.ks)
			delete(st.keys, m.ks.name)
			dropped = true
		}
	}
	if dropped {
		st.sweepOrgs()
	}
}

// Enable clears a key's disabled state, its organization's park, every
// cooldown of its organization's budgets and any debt they carry (levels
// below zero are raised to zero, to refill from there): after it the key
// can take requests as soon as a budget refills. It reports false for an
// unknown key.
func (p *Pool) Enable(name string) bool {
	org, classes, ok := p.enable(name)
	if ok && p.cfg.Shared != nil {
		// Every instance takes it back at its next heartbeat.
		p.cfg.Shared.Enable(context.Background(), name, org, classes)
	}
	return ok
}

// enable is Enable in this process; it returns the key's organization and
// the classes of its budgets, as the shared store names them.
func (p *Pool) enable(name string) (string, []string, bool) {
	st := p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.clock.Now().UnixNano()
	for i := range p.members {
		m := &p.members[i]
		if m.cfg.Name != name {
			continue
		}
		m.ks.disabled = ""
		o := m.ks.org.resolve()
		o.parkUntil, o.parkReason = 0, ""
		var classes []string
		for c, b := range o.budgets {
			if b == nil {
				continue
			}
			classes = append(classes, st.cnames[c])
			b.coolUntil, b.coolReason = 0, ""
			caps := p.capsOf(i, b)
			for k := range b.buckets {
				b.buckets[k].refill(now, caps[k])
				if bk := &b.buckets[k]; bk.init && bk.level < 0 {
					bk.level = 0
				}
			}
		}
		st.dispatchAll(now)
		return o.name, classes, true
	}
	return "", nil, false
}

// Len is the number of keys in the pool.
func (p *Pool) Len() int { return len(p.members) }

// Name is the name of the i'th key.
func (p *Pool) Name(i int) string { return p.members[i].cfg.Name }

func (p *Pool) capsOf(i int, b *budget) [numKinds]float64 {
	var c [numKinds]float64
	for k := range c {
		c[k] = capOf(p.members[i].caps[k], &b.buckets[k])
	}
	return c
}
