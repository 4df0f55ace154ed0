package keypool

import (
	"context"
	"time"
)

// A key the upstream refused (401/403) is disabled (Reservation.Disable)
// and re-checked on its own: a caller runs probes (DueProbes), at most one
// at a time per key, and reports each (FinishProbe). A probe that passes
// returns the key to rotation; one that is refused keeps it out with the
// new reason; either a refusal or an inconclusive probe (a network error,
// a 429, a 5xx) doubles the wait before the next, from ProbeBackoffMin up
// to ProbeBackoffMax. An operator's Enable clears it all at once.

// Probe backoff bounds.
const (
	ProbeBackoffMin = 30 * time.Second
	ProbeBackoffMax = 30 * time.Minute
)

// probePhase is where a disabled key stands in its recovery. An enabled
// key (ks.disabled == "") has no phase: keyHealth means nothing then, and
// the next Disable starts it afresh.
type probePhase uint8

const (
	probeWaiting probePhase = iota // until next, then a probe may start
	probeRunning                   // a probe is out; no other starts
)

// keyHealth is a disabled key's recovery state.
type keyHealth struct {
	phase   probePhase
	next    int64 // unix nanos when the next probe is due
	backoff time.Duration
	// gen counts disablements: the outcome of a probe started before the
	// key was enabled and disabled again is not this disablement's.
	gen uint64
	// since is when the key was disabled (unix nanos).
	since int64
}

// disabledAt starts recovery for a key disabled at now.
func (h *keyHealth) disabledAt(now int64) {
	h.gen++
	h.since = now
	h.phase = probeWaiting
	h.backoff = ProbeBackoffMin
	h.next = now + int64(h.backoff)
}

// Probe is one probe a caller must run and report with FinishProbe.
type Probe struct {
	// Index is the key's position in the pool's configuration.
	Index int
	// Name is the key's name.
	Name string
	gen  uint64
}

// ProbeOutcome is what a probe found.
type ProbeOutcome int

const (
	// ProbePassed: the upstream accepted the key (2xx).
	ProbePassed ProbeOutcome = iota
	// ProbeRefused: the upstream refused the key again (401/403).
	ProbeRefused
	// ProbeInconclusive: anything else (network error, 429, 5xx).
	ProbeInconclusive
)

// DueProbes returns a probe for every disabled key of the pool whose probe
// is due, and marks each as running, so that no other probe of the key
// starts (also from another pool sharing it) until FinishProbe.
func (p *Pool) DueProbes() []Probe {
	st := p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.clock.Now().UnixNano()
	var out []Probe
	for i := range p.members {
		ks := p.members[i].ks
		h := &ks.health
		if ks.disabled == "" || h.phase != probeWaiting || now < h.next {
			continue
		}
		h.phase = probeRunning
		out = append(out, Probe{Index: i, Name: p.members[i].cfg.Name, gen: h.gen})
	}
	return out
}

// FinishProbe records a probe's outcome. reason replaces the disabled
// key's reason when the probe was refused (if not empty).
func (p *Pool) FinishProbe(pr Probe, outcome ProbeOutcome, reason string) {
	st := p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if pr.Index < 0 || pr.Index >= len(p.members) {
		return
	}
	ks := p.members[pr.Index].ks
	h := &ks.health
	if ks.disabled == "" || h.gen != pr.gen || h.phase != probeRunning {
		return // enabled meanwhile, or disabled again since
	}
	if outcome == ProbePassed {
		ks.disabled = ""
		st.dispatchAll(st.clock.Now().UnixNano())
		if sh := p.cfg.Shared; sh != nil {
			// Every instance takes the key back, not only the one whose
			// probe passed.
			name := ks.name
			p.background(func(ctx context.Context) { sh.Enable(ctx, name, "", nil) })
		}
		return
	}
	if outcome == ProbeRefused && reason != "" {
		ks.disabled = reason
	}
	h.phase = probeWaiting
	h.backoff = min(2*h.backoff, ProbeBackoffMax)
	h.next = st.clock.Now().UnixNano() + int64(h.backoff)
}

// NextProbe is when the pool's earliest waiting probe is due; ok is false
// when no key of the pool waits for one.
func (p *Pool) NextProbe() (t time.Time, ok bool) {
	st := p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	var next int64
	for i := range p.members {
		ks := p.members[i].ks
		if ks.disabled == "" || ks.health.phase != probeWaiting {
			continue
		}
		if !ok || ks.health.next < next {
			next, ok = ks.health.next, true
		}
	}
	if !ok {
		return time.Time{}, false
	}
	return time.Unix(0, next).UTC(), true
}

// ProbeStatus is a disabled key's recovery as the admin API shows it.
type ProbeStatus struct {
	// NextProbe is when the key is next re-checked, unless a probe is
	// running.
	NextProbe *time.Time `json:"next_probe,omitempty"`
	// Probing is set while a probe of the key is out.
	Probing bool `json:"probing,omitempty"`
	// Backoff is the wait after the next probe if it fails.
	Backoff string `json:"backoff"`
}

// ProbeStatuses returns the recovery state of the pool's disabled keys, by
// key name.
func (p *Pool) ProbeStatuses() map[string]ProbeStatus {
	st := p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	var out map[string]ProbeStatus
	for i := range p.members {
		ks := p.members[i].ks
		if ks.disabled == "" {
			continue
		}
		if out == nil {
			out = map[string]ProbeStatus{}
		}
		h := ks.health
		ps := ProbeStatus{Probing: h.phase == probeRunning, Backoff: min(2*h.backoff, ProbeBackoffMax).String()}
		if !ps.Probing {
			t := time.Unix(0, h.next).UTC()
			ps.NextProbe = &t
		}
		out[p.members[i].cfg.Name] = ps
	}
	return out
}
