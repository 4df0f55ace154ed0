package mockanthropic

import (
	"net/http"
	"sync"
	"testing"
	"time"
)

const sonnet = "claude-sonnet-4-5"

func TestRPMExhaustionRetryAfterAndAdmission(t *testing.T) {
	h := newHarness(t, Config{
		Orgs: []Org{{ID: "org-a", RPM: 3}},
		Keys: map[string]string{"sk-a": "org-a"},
	})
	for i := range 3 {
		r := h.expect(http.StatusOK, "sk-a", msg(sonnet, 10))
		if got, want := r.header.Get("anthropic-ratelimit-requests-remaining"), []string{"2", "1", "0"}[i]; got != want {
			t.Fatalf("request %d: requests-remaining %q, want %q", i, got, want)
		}
	}
	r := h.expect(http.StatusTooManyRequests, "sk-a", msg(sonnet, 10))
	if typ, _ := r.error(); typ != "rate_limit_error" {
		t.Fatalf("429 error type %q", typ)
	}
	// 3 per minute refills one request every 20 s.
	if got := r.header.Get("retry-after"); got != "20" {
		t.Fatalf("retry-after %q, want 20", got)
	}
	for name, want := range map[string]string{
		"anthropic-organization-id":              "org-a",
		"anthropic-ratelimit-requests-limit":     "3",
		"anthropic-ratelimit-requests-remaining": "0",
		"anthropic-ratelimit-requests-reset":     "2025-06-01T12:01:00Z",
	} {
		if got := r.header.Get(name); got != want {
			t.Errorf("429 %s = %q, want %q", name, got, want)
		}
	}
	if r.header.Get("request-id") == "" {
		t.Errorf("429 without request-id")
	}

	h.clock.Advance(19 * time.Second)
	r = h.expect(http.StatusTooManyRequests, "sk-a", msg(sonnet, 10))
	if got := r.header.Get("retry-after"); got != "1" {
		t.Fatalf("retry-after after 19s = %q, want 1", got)
	}
	h.clock.Advance(time.Second)
	h.expect(http.StatusOK, "sk-a", msg(sonnet, 10))
	h.expect(http.StatusTooManyRequests, "sk-a", msg(sonnet, 10))

	st := h.s.Stats()
	if c := st.Orgs["org-a"]; c.Accepted != 4 || c.RateLimited != 3 {
		t.Fatalf("org counters %+v, want 4 accepted, 3 rate limited", c)
	}
	// Refused requests are not charged: 4 × 10 input tokens.
	if got := st.Keys["sk-a"].InputTokens; got != 40 {
		t.Fatalf("input tokens charged %d, want 40", got)
	}
}

func TestITPMChargeAndOversizedRequest(t *testing.T) {
	h := newHarness(t, Config{
		Orgs: []Org{{ID: "org-a", ITPM: 1200}}, // 20 tokens per second
		Keys: map[string]string{"sk-a": "org-a"},
	})
	h.expect(http.StatusOK, "sk-a", msg(sonnet, 700))
	r := h.expect(http.StatusTooManyRequests, "sk-a", msg(sonnet, 700))
	// 500 left, 700 needed: 200 tokens at 20/s.
	if got := r.header.Get("retry-after"); got != "10" {
		t.Fatalf("retry-after %q, want 10", got)
	}
	h.clock.Advance(10 * time.Second)
	h.expect(http.StatusOK, "sk-a", msg(sonnet, 700))

	// A request larger than the limit passes only when the bucket is full…
	h.clock.Advance(time.Minute)
	h.expect(http.StatusOK, "sk-a", msg(sonnet, 1500))
	// …and leaves 300 tokens of debt: a 1-token request waits for 301 tokens.
	r = h.expect(http.StatusTooManyRequests, "sk-a", msg(sonnet, 1))
	if got := r.header.Get("retry-after"); got != "16" {
		t.Fatalf("retry-after after oversized request %q, want 16 (301 tokens at 20/s)", got)
	}
	// 1500 tokens at 20/s: full again after 75 s, not a second earlier.
	h.clock.Advance(75 * time.Second)
	h.expect(http.StatusOK, "sk-a", msg(sonnet, 1500))
	h.clock.Advance(74 * time.Second)
	h.expect(http.StatusTooManyRequests, "sk-a", msg(sonnet, 1500))
	h.clock.Advance(time.Second)
	h.expect(http.StatusOK, "sk-a", msg(sonnet, 1500))
}

func TestOTPMRejectsAtOrBelowZero(t *testing.T) {
	h := newHarness(t, Config{
		Orgs:         []Org{{ID: "org-a", OTPM: 120}}, // 2 tokens per second
		Keys:         map[string]string{"sk-a": "org-a"},
		OutputTokens: func([]byte) int64 { return 180 },
	})
	m := h.expect(http.StatusOK, "sk-a", msg(sonnet, 5)).message(t)
	if m.Usage.OutputTokens != 180 {
		t.Fatalf("output tokens %d, want 180", m.Usage.OutputTokens)
	}
	// Output is charged as produced, taking the bucket to -60.
	r := h.expect(http.StatusTooManyRequests, "sk-a", msg(sonnet, 5))
	// Back to exactly 0 after 30 s, which still refuses; above 0 just after.
	if got := r.header.Get("retry-after"); got != "31" {
		t.Fatalf("retry-after %q, want 31", got)
	}
	if got := r.header.Get("anthropic-ratelimit-output-tokens-remaining"); got != "0" {
		t.Fatalf("output-tokens-remaining %q, want 0", got)
	}
	h.clock.Advance(30 * time.Second)
	h.expect(http.StatusTooManyRequests, "sk-a", msg(sonnet, 5))
	h.clock.Advance(time.Nanosecond)
	h.expect(http.StatusOK, "sk-a", msg(sonnet, 5))
}

func TestHeadersRoundingAndReset(t *testing.T) {
	h := newHarness(t, Config{
		Orgs: []Org{{ID: "org-a", RPM: 50, ITPM: 40000, OTPM: 8000}},
		Keys: map[string]string{"sk-a": "org-a"},
	})
	r := h.expect(http.StatusOK, "sk-a", msg(sonnet, 1234))
	want := map[string]string{
		"anthropic-organization-id":              "org-a",
		"anthropic-ratelimit-requests-limit":     "50",
		"anthropic-ratelimit-requests-remaining": "49", // exact
		// One request at 50/min takes 1.2 s to refill: rounded up to the second.
		"anthropic-ratelimit-requests-reset":          "2025-06-01T12:00:02Z",
		"anthropic-ratelimit-input-tokens-limit":      "40000",
		"anthropic-ratelimit-input-tokens-remaining":  "38000", // 38766 rounded down
		"anthropic-ratelimit-input-tokens-reset":      "2025-06-01T12:00:02Z",
		"anthropic-ratelimit-output-tokens-limit":     "8000",
		"anthropic-ratelimit-output-tokens-remaining": "8000", // output not produced yet
		"anthropic-ratelimit-output-tokens-reset":     "2025-06-01T12:00:00Z",
		// Output has fewer tokens left: it is the most restrictive.
		"anthropic-ratelimit-tokens-limit":     "8000",
		"anthropic-ratelimit-tokens-remaining": "8000",
		"anthropic-ratelimit-tokens-reset":     "2025-06-01T12:00:00Z",
	}
	for name, v := range want {
		if got := r.header.Get(name); got != v {
			t.Errorf("%s = %q, want %q", name, got, v)
		}
	}
	// The first request's 200 output tokens are now charged: 7800 left.
	r = h.expect(http.StatusOK, "sk-a", msg(sonnet, 10))
	if got := r.header.Get("anthropic-ratelimit-output-tokens-remaining"); got != "7000" {
		t.Errorf("output-tokens-remaining %q, want 7000", got)
	}
	// 200 tokens at 8000/min take 1.5 s.
	if got := r.header.Get("anthropic-ratelimit-output-tokens-reset"); got != "2025-06-01T12:00:02Z" {
		t.Errorf("output-tokens-reset %q", got)
	}
}

func TestTokensHeaderFollowsMostRestrictive(t *testing.T) {
	h := newHarness(t, Config{
		Orgs:         []Org{{ID: "org-a", ITPM: 5000, OTPM: 8000}},
		Keys:         map[string]string{"sk-a": "org-a"},
		OutputTokens: func([]byte) int64 { return 7000 },
	})
	r := h.expect(http.StatusOK, "sk-a", msg(sonnet, 1234))
	// Input now has 3766 left, fewer than output's 8000.
	if got := r.header.Get("anthropic-ratelimit-tokens-limit"); got != "5000" {
		t.Fatalf("tokens-limit %q, want the input limit 5000", got)
	}
	if got := r.header.Get("anthropic-ratelimit-tokens-remaining"); got != "3000" {
		t.Fatalf("tokens-remaining %q, want 3000", got)
	}
	if got, want := r.header.Get("anthropic-ratelimit-tokens-reset"), r.header.Get("anthropic-ratelimit-input-tokens-reset"); got != want {
		t.Fatalf("tokens-reset %q, want input's %q", got, want)
	}
	// 7000 output tokens later and 10 s on, input has ~4589 left and output
	// ~2333: output is now the tighter one.
	h.clock.Advance(10 * time.Second)
	r = h.expect(http.StatusOK, "sk-a", msg(sonnet, 10))
	if got := r.header.Get("anthropic-ratelimit-tokens-limit"); got != "8000" {
		t.Fatalf("tokens-limit %q, want the output limit 8000", got)
	}
	if got := r.header.Get("anthropic-ratelimit-tokens-remaining"); got != "2000" {
		t.Fatalf("tokens-remaining %q, want 2000", got)
	}
	if got, want := r.header.Get("anthropic-ratelimit-tokens-reset"), r.header.Get("anthropic-ratelimit-output-tokens-reset"); got != want {
		t.Fatalf("tokens-reset %q, want output's %q", got, want)
	}
}

func TestUnlimitedOmitsHeaders(t *testing.T) {
	h := newHarness(t, Config{
		Orgs: []Org{{ID: "org-a", RPM: 10}},
		Keys: map[string]string{"sk-a": "org-a", "sk-x": "org-unlisted"},
	})
	r := h.expect(http.StatusOK, "sk-a", msg(sonnet, 10))
	if r.header.Get("anthropic-ratelimit-requests-limit") != "10" {
		t.Fatalf("requests-limit missing")
	}
	for _, name := range []string{"input-tokens", "output-tokens", "tokens"} {
		if v := r.header.Get("anthropic-ratelimit-" + name + "-limit"); v != "" {
			t.Errorf("unlimited %s has limit header %q", name, v)
		}
	}
	r = h.expect(http.StatusOK, "sk-x", msg(sonnet, 10))
	if r.header.Get("anthropic-organization-id") != "org-unlisted" {
		t.Fatalf("org id %q", r.header.Get("anthropic-organization-id"))
	}
	for name := range r.header {
		if len(name) > 20 && name[:20] == "Anthropic-Ratelimit-" {
			t.Errorf("org without limits sent %s", name)
		}
	}
}

func TestOrgIsolationAndKeyDistribution(t *testing.T) {
	h := newHarness(t, Config{
		Orgs: []Org{{ID: "org-a", RPM: 2}, {ID: "org-b", RPM: 2}},
		Keys: map[string]string{"sk-a1": "org-a", "sk-a2": "org-a", "sk-b1": "org-b"},
	})
	h.expect(http.StatusOK, "sk-a1", msg(sonnet, 10))
	h.expect(http.StatusOK, "sk-a2", msg(sonnet, 10))
	// Keys of one organization share its budget…
	h.expect(http.StatusTooManyRequests, "sk-a1", msg(sonnet, 10))
	h.expect(http.StatusTooManyRequests, "sk-a2", msg(sonnet, 10))
	// …and another organization's is untouched.
	r := h.expect(http.StatusOK, "sk-b1", msg(sonnet, 10))
	if got := r.header.Get("anthropic-ratelimit-requests-remaining"); got != "1" {
		t.Fatalf("org-b requests-remaining %q, want 1", got)
	}
	if got := r.header.Get("anthropic-organization-id"); got != "org-b" {
		t.Fatalf("org id %q", got)
	}

	st := h.s.Stats()
	wantKeys := []string{"sk-a1", "sk-a2", "sk-a1", "sk-a2", "sk-b1"}
	wantStatus := []int{200, 200, 429, 429, 200}
	if len(st.Requests) != len(wantKeys) {
		t.Fatalf("%d records, want %d", len(st.Requests), len(wantKeys))
	}
	for i, rec := range st.Requests {
		if rec.Key != wantKeys[i] || rec.Status != wantStatus[i] {
			t.Errorf("record %d: key %q status %d, want %q %d", i, rec.Key, rec.Status, wantKeys[i], wantStatus[i])
		}
	}
	if c := st.Keys["sk-a1"]; c.Accepted != 1 || c.RateLimited != 1 {
		t.Errorf("sk-a1 counters %+v", c)
	}
	if c := st.Orgs["org-b"]; c.Accepted != 1 || c.RateLimited != 0 {
		t.Errorf("org-b counters %+v", c)
	}
	if st.Total.Accepted != 3 || st.Total.RateLimited != 2 {
		t.Errorf("total counters %+v", st.Total)
	}
}

func TestModelFamiliesHaveSeparateLimits(t *testing.T) {
	h := newHarness(t, Config{
		Orgs: []Org{{ID: "org-a", RPM: 1}},
		Keys: map[string]string{"sk-a": "org-a"},
	})
	h.expect(http.StatusOK, "sk-a", msg("claude-sonnet-4-5", 10))
	h.expect(http.StatusOK, "sk-a", msg("claude-haiku-4-5", 10))
	h.expect(http.StatusOK, "sk-a", msg("claude-opus-4-1", 10))
	// Another Sonnet model shares the Sonnet family's budget.
	h.expect(http.StatusTooManyRequests, "sk-a", msg("claude-sonnet-4-20250514", 10))
}

func TestForce429(t *testing.T) {
	h := newHarness(t, Config{
		Orgs: []Org{{ID: "org-a"}, {ID: "org-b"}},
		Keys: map[string]string{"sk-a": "org-a", "sk-b": "org-b"},
	})
	h.s.Force429("org-a", t0.Add(2500*time.Millisecond))
	r := h.expect(http.StatusTooManyRequests, "sk-a", msg(sonnet, 10))
	if got := r.header.Get("retry-after"); got != "3" {
		t.Fatalf("retry-after %q, want 3", got)
	}
	if typ, _ := r.error(); typ != "rate_limit_error" {
		t.Fatalf("error type %q", typ)
	}
	h.expect(http.StatusOK, "sk-b", msg(sonnet, 10))
	h.clock.Advance(2500 * time.Millisecond)
	h.expect(http.StatusOK, "sk-a", msg(sonnet, 10))
	if got := h.s.Stats().Orgs["org-a"].RateLimited; got != 1 {
		t.Fatalf("org-a rate limited %d, want 1", got)
	}
}

func TestOverloaded(t *testing.T) {
	h := newHarness(t, Config{
		Orgs: []Org{{ID: "org-a", RPM: 10}},
		Keys: map[string]string{"sk-a": "org-a"},
	})
	h.s.SetOverloaded(2)
	for range 2 {
		r := h.expect(529, "sk-a", msg(sonnet, 10))
		if typ, _ := r.error(); typ != "overloaded_error" {
			t.Fatalf("529 error type %q", typ)
		}
		// Not the organization's fault: nothing is charged.
		if got := r.header.Get("anthropic-ratelimit-requests-remaining"); got != "10" {
			t.Fatalf("529 requests-remaining %q, want 10", got)
		}
	}
	h.expect(http.StatusOK, "sk-a", msg(sonnet, 10))

	h.s.Force529(t0.Add(time.Second))
	h.expect(529, "sk-a", msg(sonnet, 10))
	h.clock.Advance(time.Second)
	h.expect(http.StatusOK, "sk-a", msg(sonnet, 10))
	if c := h.s.Stats().Orgs["org-a"]; c.Overloaded != 3 || c.Accepted != 2 {
		t.Fatalf("counters %+v, want 3 overloaded, 2 accepted", c)
	}
}

func TestConcurrentRequestsNeverExceedRPM(t *testing.T) {
	h := newHarness(t, Config{
		Orgs: []Org{{ID: "org-a", RPM: 20}},
		Keys: map[string]string{"sk-a1": "org-a", "sk-a2": "org-a"},
	})
	var wg sync.WaitGroup
	for i := range 50 {
		key := []string{"sk-a1", "sk-a2"}[i%2]
		wg.Go(func() {
			resp := h.open("/v1/messages", key, msg(sonnet, 10))
			resp.Body.Close()
		})
	}
	wg.Wait()
	st := h.s.Stats()
	if st.Total.Accepted != 20 || st.Total.RateLimited != 30 {
		t.Fatalf("accepted %d, rate limited %d; want 20 and 30", st.Total.Accepted, st.Total.RateLimited)
	}
	if a1, a2 := st.Keys["sk-a1"], st.Keys["sk-a2"]; a1.Accepted+a1.RateLimited != 25 || a2.Accepted+a2.RateLimited != 25 {
		t.Fatalf("per-key counts %+v %+v", a1, a2)
	}
	if st.InFlight != 0 {
		t.Fatalf("in flight %d after all finished", st.InFlight)
	}
}
