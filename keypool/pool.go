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
// The package never sees a secret: keys are known by name only.
package keypool

import (
	"fmt"
	"math"
	"path"
	"strings"
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

type org struct {
	name       string // "cfg:<label>", "key:<name>" or "id:<organization id>"
	id         string // upstream organization id, once learned
	into       *org   // merged into another organization
	budgets    []*budget
	parkUntil  int64
	parkReason string
}

func (o *org) resolve() *org {
	for o.into != nil {
		o = o.into
	}
	return o
}

func (o *org) budget(class int) *budget {
	for len(o.budgets) <= class {
		o.budgets = append(o.budgets, nil)
	}
	if o.budgets[class] == nil {
		o.budgets[class] = &budget{}
	}
	return o.budgets[class]
}

// label is the organization as operators know it.
func (o *org) label() string {
	if o.id != "" {
		return o.id
	}
	_, l, _ := strings.Cut(o.name, ":")
	return l
}

type budget struct {
	buckets    [numKinds]bucket
	coolUntil  int64
	coolReason string
	// pendingOut is the output that requests in flight are expected to
	// produce and have not reported yet: the upstream charges output as
	// it is generated, a stream reports it only at its end.
	pendingOut float64
	// holdReq and holdIn are what waiters hold ahead on this budget
	// (requests, input tokens): others are admitted only beyond them.
	holdReq, holdIn float64
	// unanswered is what its reservations with no response yet hold.
	unanswered unanswered
}

func (st *State) orgNamed(name string) *org {
	o := st.orgs[name]
	if o == nil {
		o = &org{name: name}
		st.orgs[name] = o
	}
	return o
}

// Learned organizations are bounded: a key follows at most
// maxOrgMovesPerKey changes of its organization id (a key really moves
// rarely; an upstream that names a new id on every response must not make
// the pool track each), at most maxLearnedOrgs ids are known at once, and
// an organization no key refers to any more is forgotten. An id beyond a
// bound is ignored: the key keeps the budget it has.
const (
	maxOrgMovesPerKey = 8
	maxLearnedOrgs    = 4096
)

// learnOrg records that ks belongs to the upstream organization id and
// merges its budgets with every other key seen in that organization. caps
// are the key's configured limits (0: use what was learned); now is when
// the merge happens.
func (st *State) learnOrg(ks *keyState, id string, now int64, caps [numKinds]float64) {
	cur := ks.org.resolve()
	if cur.id == id {
		return
	}
	moving := cur.id != ""
	if moving && ks.orgMoves >= maxOrgMovesPerKey {
		return
	}
	target := st.orgs["id:"+id]
	if target == nil {
		if st.learnedOrgs >= maxLearnedOrgs {
			return
		}
		st.learnedOrgs++
		if !moving {
			// First sighting: this organization simply gets its name.
			cur.id = id
			st.orgs["id:"+id] = cur
			return
		}
		target = st.orgNamed("id:" + id)
		target.id = id
	}
	target = target.resolve()
	if target == cur {
		return
	}
	// Both describe the key's budget: keep the more pessimistic view.
	mergeBudgets(target, cur, now, caps)
	if moving {
		// The key moved to another organization: it leaves the old one,
		// taking what it knows of its budget along (a new id must not
		// hand out a full budget), and the old one may now be unused.
		ks.orgMoves++
		ks.org = target
		st.sweepOrgs()
		return
	}
	cur.into = target
}

// mergeBudgets lowers dst's budgets to src's where src's are lower,
// comparing the two levels at the same moment (a budget drained long ago
// has refilled since), and keeps the later cooldowns and park.
func mergeBudgets(dst, src *org, now int64, caps [numKinds]float64) {
	for c, b := range src.budgets {
		if b == nil {
			continue
		}
		tb := dst.budget(c)
		for k := range b.buckets {
			from, to := &b.buckets[k], &tb.buckets[k]
			capacity := caps[k]
			if capacity <= 0 {
				capacity = math.Max(from.learned, to.learned)
			}
			switch {
			case !from.init:
			case !to.init:
				// Keep the running total: marks of reservations on the
				// target refer to it.
				charged := to.charged
				*to = *from
				to.charged = charged
			default:
				from.refill(now, capacity)
				to.refill(now, capacity)
				to.level = math.Min(to.level, from.level)
				to.learned = math.Max(to.learned, from.learned)
			}
		}
		if b.coolUntil > tb.coolUntil {
			tb.coolUntil, tb.coolReason = b.coolUntil, b.coolReason
		}
	}
	if src.parkUntil > dst.parkUntil {
		dst.parkUntil, dst.parkReason = src.parkUntil, src.parkReason
	}
}

// sweepOrgs forgets organizations no key refers to, directly or through a
// merge. Reservations in flight keep their own pointer and settle on it.
func (st *State) sweepOrgs() {
	live := make(map[*org]bool, len(st.keys))
	for _, ks := range st.keys {
		for o := ks.org; o != nil && !live[o]; o = o.into {
			live[o] = true
		}
	}
	st.learnedOrgs = 0
	for name, o := range st.orgs {
		switch {
		case !live[o]:
			delete(st.orgs, name)
		case strings.HasPrefix(name, "id:"):
			st.learnedOrgs++
		}
	}
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
		for _, b := range o.budgets {
			if b == nil {
				continue
			}
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
		return true
	}
	return false
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

// view is the selector's window on the pool for one pick; it reuses one
// value per pool so a pick allocates nothing.
type view struct {
	p       *Pool
	now     int64
	class   int
	est     float64
	exclude *Attempts
	only    []bool
}

func (v *view) Len() int { return len(v.p.members) }

func (v *view) Load(i int) (bool, float64, int) {
	m := &v.p.members[i]
	ks := m.ks
	if ks.disabled != "" || v.exclude != nil && v.exclude.excludes(ks) || !servable(v.only, i) {
		return false, 0, 0
	}
	o := ks.org
	if o.into != nil {
		o = o.resolve()
	}
	now := v.now
	if o.parkUntil > now {
		return false, 0, 0
	}
	b := o.budget(v.class)
	if b.coolUntil > now {
		return false, 0, 0
	}
	// Load runs for every candidate a strategy looks at (every key of a
	// pool of up to 16 under least_loaded), so the three kinds are written
	// out rather than looped over with capsOf's array: same order, same
	// arithmetic, without the stack copies. A bucket of unknown capacity
	// is left alone, admits and has headroom 1 (see bucket).
	// What waiters hold ahead (see waitQueue) is not there to take; both
	// holds are zero unless someone waits.
	h := 1.0
	bk := &b.buckets[kindRequests]
	if c := capOf(m.caps[kindRequests], bk); c > 0 {
		bk.refill(now, c)
		if !bk.admitsBeyond(c, 1, b.holdReq) {
			return false, 0, 0
		}
		h = min(h, bk.headroomBeyond(c, b.holdReq))
	}
	bk = &b.buckets[kindInput]
	if c := capOf(m.caps[kindInput], bk); c > 0 {
		bk.refill(now, c)
		if !bk.admitsBeyond(c, v.est, b.holdIn) {
			return false, 0, 0
		}
		h = min(h, bk.headroomBeyond(c, b.holdIn))
	}
	bk = &b.buckets[kindOutput]
	if c := capOf(m.caps[kindOutput], bk); c > 0 {
		bk.refill(now, c)
		// Output is charged as it is produced: admission needs positive
		// headroom, not max_tokens of it, once what the requests in
		// flight are still producing is counted.
		if bk.init && bk.level-max(0, b.pendingOut) <= 0 {
			return false, 0, 0
		}
		h = min(h, bk.headroom(c))
	}
	return true, h, ks.inFlight
}

// capOf is one kind's capacity: the configured org-wide cap, else what
// the bucket learned (0: unknown).
func capOf(cfg float64, bk *bucket) float64 {
	if cfg == 0 {
		return bk.learned
	}
	return cfg
}
