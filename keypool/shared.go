package keypool

import (
	"context"
	"time"
)

// SharedState is the state of a pool that several relay instances must
// agree on: organization × model-class budgets, learned limits, cooldowns,
// parks, disabled keys, session pins and organization merges. Without one
// the pool keeps all of it in process, as it always has; with one (the Redis
// engine in internal/redisstate, wired in by caddymodule) every instance
// that names the same pool reads and writes the same state.
//
// Everything is plain values: organizations and model classes by name (the
// names the pool already uses: "cfg:<label>", "key:<name>", "id:<org id>";
// "sonnet", "opus", …), keys by name, sessions by their 64-bit hash. Secrets
// never cross this interface. The three numbers of a [3]float64 are the
// requests, input-token and output-token buckets, in that order.
//
// No method blocks longer than the implementation's timeout, and none
// fails a request because the shared store is unreachable: while it is, the
// implementation answers from local budgets of this instance's share of
// each limit (see SharedMode) and reports that in the results' Mode.
type SharedState interface {
	// Reserve admits a request against an organization's budgets for one
	// model class, atomically across the three buckets: each refills
	// continuously (capacity = limit, limit/60 per second), the request is
	// admitted only if every bucket admits admit (an amount larger than the
	// bucket is admitted when the bucket is full), and then charged charge:
	// the pool admits on its estimate plus the estimate's typical error and
	// charges the estimate; charging the expected output here (corrected by
	// Settle) shares what the in-process pool keeps as pending output.
	// caps are the configured limits; 0 means the limit learned from
	// headers (shared, see Sync), and a bucket with no limit known admits.
	// A bucket the store does not hold (never used, expired after idling
	// longer than a refill from the debt bound, or lost in a restart) is
	// full; after an outage each instance charges it with what it spent
	// locally meanwhile, so a restart does not hand out a second budget.
	Reserve(ctx context.Context, b SharedBudget, admit, charge [3]float64) SharedAdmission

	// Settle applies signed corrections (positive charges more, negative
	// refunds) to budgets, in one batch. Levels never rise above capacity
	// and never fall more than one capacity below zero.
	Settle(ctx context.Context, cs []SharedCorrection) SharedMode

	// Sync learns from one response's anthropic-ratelimit-* headers:
	// limits (newest observation wins) and the remaining counts, which move
	// the level into what the upstream reports without refilling it beyond
	// that (the rule of the in-process bucket's sync).
	Sync(ctx context.Context, s SharedSync) SharedSyncResult

	// Cool keeps an organization's budget for a class out of rotation until
	// until (a later cooldown wins).
	Cool(ctx context.Context, b SharedBudget, until time.Time, reason string) SharedMode
	// Park keeps a whole organization out of rotation until until (a later
	// park wins; the implementation caps how far ahead it may lie).
	Park(ctx context.Context, org string, until time.Time, reason string) SharedMode
	// Disable takes a key out of rotation on every instance, with a reason.
	Disable(ctx context.Context, key, reason string) SharedMode
	// Enable clears a key's disabled state, its organization's park and the
	// cooldowns of the given classes of that organization, on every
	// instance.
	Enable(ctx context.Context, key, org string, classes []string) SharedMode

	// Pin records that a session's conversation lives on key, for ttl.
	Pin(ctx context.Context, session uint64, key string, ttl time.Duration) SharedMode
	// Pinned returns the key a session is pinned to ("" for none) and
	// refreshes the pin's ttl.
	Pinned(ctx context.Context, session uint64, ttl time.Duration) (string, SharedMode)

	// LearnOrg records the upstream organization id a key belongs to, so
	// every instance merges that key's budget into the organization's.
	LearnOrg(ctx context.Context, key, orgID string) SharedMode

	// View is the pool-wide state as last refreshed (at most a heartbeat
	// old): disabled keys, learned organization ids, instances alive, mode.
	View() SharedView

	// Close stops background work and leaves the instance registry.
	Close() error
}

// SharedMode says where shared state lives at the moment. It is a state
// machine, not a set of flags: Local (no store configured), Shared (the
// store answers), LocalFallback (the store failed; this instance serves
// from local budgets of its 1/N share of each limit, N = instances alive
// before the outage, and probes the store about once a second).
type SharedMode uint8

// The modes of a SharedState.
const (
	SharedModeLocal SharedMode = iota
	SharedModeShared
	SharedModeLocalFallback
)

var sharedModeNames = [...]string{"local", "shared", "local-fallback"}

// String is the mode as the admin API and metrics name it.
func (m SharedMode) String() string {
	if int(m) < len(sharedModeNames) {
		return sharedModeNames[m]
	}
	return "unknown"
}

// SharedBudget names one organization × model-class budget and carries the
// caller's configured limits for it (0: learned).
type SharedBudget struct {
	Org   string
	Class string
	Caps  [3]float64
}

// SharedOutcome is what Reserve decided.
type SharedOutcome uint8

// Reserve's outcomes.
const (
	// SharedAdmitted: every bucket admitted and was charged.
	SharedAdmitted SharedOutcome = iota
	// SharedWait: some bucket is short; Wait says for how long by refill.
	SharedWait
	// SharedCooling: the budget cools down until Until, for Reason.
	SharedCooling
	// SharedParked: the organization is parked until Until, for Reason.
	SharedParked
)

// SharedAdmission is Reserve's answer.
type SharedAdmission struct {
	Outcome SharedOutcome
	Wait    time.Duration
	Until   time.Time
	Reason  string
	// Levels are the buckets' levels after the charge (admitted) or now
	// (refused); Known says which buckets have a limit at all.
	Levels [3]float64
	Known  [3]bool
	// Caps are the capacities used: configured, else learned.
	Caps [3]float64
	// Marks are the buckets' running totals of charges before this one,
	// for Sync to tell what was charged after this request was admitted.
	Marks [3]float64
	// Ahead is what requests admitted before this one (on any instance)
	// and not yet answered held then: the upstream may count them after
	// this one, so Sync never raises a level past them. An admitted
	// request's own request and input charge count as unanswered until
	// its Sync, or a Settle that releases them.
	Ahead [3]float64
	Mode  SharedMode
	// Ticket, when not nil, is the implementation's handle on a charge
	// it admitted without a round trip and writes later: Marks and Ahead
	// are then unknown (NaN, 0) here, and the request's SharedSync
	// passes the ticket back so that the implementation fills them in.
	Ticket any
}

// SharedCorrection is a signed correction to one budget.
type SharedCorrection struct {
	Budget SharedBudget
	Delta  [3]float64
	// Release is what a request that ends without a Sync held as
	// unanswered (see SharedAdmission.Ahead).
	Release [3]float64
}

// SharedSync is what one response's headers say about a budget.
type SharedSync struct {
	Budget SharedBudget
	// Observed orders observations across instances (newest wins); zero
	// means the store's clock at arrival.
	Observed time.Time
	// Limit and Remaining per bucket; -1 when the header is absent.
	Limit     [3]int64
	Remaining [3]int64
	// Mark is the request's SharedAdmission.Marks (NaN unknown: the level
	// then only comes down) and Own what the request itself charged.
	Mark [3]float64
	Own  [3]float64
	// Gran is the upstream's rounding of each remaining count (1, or 1000
	// for tokens); Raise allows the level to rise to the remaining count
	// (false when the configured limit is not the upstream's).
	Gran  [3]float64
	Raise [3]bool
	// Ahead is the request's SharedAdmission.Ahead; Release is what it
	// held as unanswered (its request and input charge), released now.
	Ahead   [3]float64
	Release [3]float64
	// Ticket is the request's SharedAdmission.Ticket while its Marks
	// still date its charge (nil otherwise): the implementation takes
	// the marks and ahead from it where Mark is NaN.
	Ticket any
}

// SharedSyncResult is the budget after a Sync.
type SharedSyncResult struct {
	Moved  [3]bool
	Levels [3]float64
	Caps   [3]float64
	Mode   SharedMode
}

// SharedView is the pool-wide part of shared state, refreshed by the
// implementation's heartbeat.
type SharedView struct {
	Instance       string
	Mode           SharedMode
	InstancesAlive int
	Disabled       map[string]string // key name → reason
	OrgIDs         map[string]string // key name → upstream organization id
	// Epoch names the life of the pool's state in the store: it changes
	// when the store lost that state (Redis restarted empty). EpochMine
	// says this instance started the current one, and so is the one that
	// rebuilds the store from what it knows.
	Epoch     string
	EpochMine bool
	Refreshed time.Time
}
