package ccload

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/mockanthropic"
)

// Org is one upstream organization and its keys.
type Org struct {
	ID              string
	Keys            int
	RPM, ITPM, OTPM int64
}

// KeySecret is the upstream secret of key i of an organization.
func KeySecret(org string, i int) string { return fmt.Sprintf("sk-ant-bench-%s-%d", org, i) }

// KeyName is the name the relay is configured with for key i of org.
func KeyName(org string, i int) string {
	return fmt.Sprintf("%s-k%d", strings.TrimPrefix(org, "org-"), i+1)
}

// RelayKeys is the cc_relay handler's "keys" for orgs' keys in JSON: with
// limits, each key names its organization and its limits; without, the
// relay learns both from the upstream's headers.
func RelayKeys(orgs []Org, limits bool) []any {
	var keys []any
	for _, o := range orgs {
		for i := 0; i < o.Keys; i++ {
			k := map[string]any{"key": KeySecret(o.ID, i), "name": KeyName(o.ID, i)}
			if limits {
				k["org"] = o.ID
				k["rpm"], k["itpm"], k["otpm"] = o.RPM, o.ITPM, o.OTPM
			}
			keys = append(keys, k)
		}
	}
	return keys
}

// Attempt is one request the upstream saw.
type Attempt struct {
	At     time.Time
	Status int
	Org    string
	Why    string // the limit a 429 names
}

// Upstream is a mock Anthropic API on 127.0.0.1 that also remembers, per
// client attempt (the X-Bench-Id header the relay passes through), every
// upstream request the relay made for it: the way to count the relay's
// retries and to time them.
type Upstream struct {
	Mock *mockanthropic.Server
	srv  *httptest.Server
	Orgs []Org

	mu       sync.Mutex
	attempts map[string][]Attempt
}

// NewUpstream serves orgs (their keys are KeySecret(org, i)) on a free
// 127.0.0.1 port; streams have 8 deltas deltaDelay apart.
func NewUpstream(orgs []Org, deltaDelay time.Duration) *Upstream {
	cfg := mockanthropic.Config{
		Keys:         map[string]string{},
		OutputTokens: OutputTokens,
		StreamDeltas: 8,
		DeltaDelay:   deltaDelay,
		MaxRecords:   1 << 20,
	}
	for _, o := range orgs {
		cfg.Orgs = append(cfg.Orgs, mockanthropic.Org{ID: o.ID, RPM: o.RPM, ITPM: o.ITPM, OTPM: o.OTPM})
		for i := 0; i < o.Keys; i++ {
			cfg.Keys[KeySecret(o.ID, i)] = o.ID
		}
	}
	u := &Upstream{Mock: mockanthropic.New(cfg), Orgs: orgs, attempts: map[string][]Attempt{}}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	return u
}

func (u *Upstream) serve(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("X-Bench-Id")
	at := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	u.Mock.ServeHTTP(sw, r)
	if id == "" {
		return
	}
	u.mu.Lock()
	why := ""
	if sw.status == http.StatusTooManyRequests {
		why = limitNamed(sw.body.String())
	}
	u.attempts[id] = append(u.attempts[id], Attempt{At: at, Status: sw.status, Org: w.Header().Get("anthropic-organization-id"), Why: why})
	u.mu.Unlock()
}

// Attempts is a copy of every attempt so far, by X-Bench-Id.
func (u *Upstream) Attempts() map[string][]Attempt {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make(map[string][]Attempt, len(u.attempts))
	for id, as := range u.attempts {
		out[id] = slices.Clone(as)
	}
	return out
}

// AttemptsOf is the upstream requests made for client attempt id.
func (u *Upstream) AttemptsOf(id string) []Attempt {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.attempts[id]
}

// Limited counts the upstream's 429s by the limit they name.
func (u *Upstream) Limited() map[string]int {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := map[string]int{}
	for _, as := range u.attempts {
		for _, a := range as {
			if a.Status == http.StatusTooManyRequests {
				out[a.Why]++
			}
		}
	}
	return out
}

// Addr is the upstream's host:port.
func (u *Upstream) Addr() string { return strings.TrimPrefix(u.srv.URL, "http://") }

// Close stops the server.
func (u *Upstream) Close() { u.srv.Close() }

// limitNamed is the limit a mock 429 message names, e.g. "input tokens".
func limitNamed(msg string) string {
	for _, k := range []string{"input tokens", "output tokens", "requests"} {
		if strings.Contains(msg, k+" per minute") {
			return k
		}
	}
	return "forced"
}

// statusWriter records the status and the start of an error body; Unwrap
// keeps the mock's flushes working.
type statusWriter struct {
	http.ResponseWriter
	status int
	body   strings.Builder
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	if s.status >= 400 && s.body.Len() < 4096 {
		s.body.Write(p)
	}
	return s.ResponseWriter.Write(p)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
