package keypool

import (
	"math"
	"strings"
)

// An organization is what the upstream counts against: keys of one
// organization share its budgets (one per model class). Organizations are
// configured (org), a key's own, or learned from anthropic-organization-id
// and merged when keys turn out to share one.

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
			// First sighting: this organization simply gets its name,
			// and the name it goes by in shared state.
			cur.id = id
			st.orgs["id:"+id] = cur
			cur.name = sharedName(cur.name, "id:"+id)
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
	target.name = sharedName(target.name, cur.name)
}

// sharedName is the name of an organization that two names describe: the
// name it goes by in shared state (internal/redisstate keys its budgets by
// it), which must be the same on every instance, whichever of its keys
// each saw first and in whatever order the merges came. A configured
// organization keeps its own name ("cfg:" sorts first), a learned one is
// its id ("id:" before "key:"), and of two configured ones that turn out
// to be one the least label wins. Reservations admitted under the old name
// keep settling there (sharedLink.budget).
func sharedName(a, b string) string { return min(a, b) }

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
