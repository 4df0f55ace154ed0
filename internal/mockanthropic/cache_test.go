package mockanthropic

import (
	"net/http"
	"testing"
	"time"
)

// chat is a request body with the given system blocks and messages.
func chat(model string, system []any, messages ...any) map[string]any {
	b := map[string]any{"model": model, "max_tokens": 8192, "messages": messages}
	if system != nil {
		b["system"] = system
	}
	return b
}

func user(content ...any) map[string]any { return map[string]any{"role": "user", "content": content} }

func assistant(content ...any) map[string]any {
	return map[string]any{"role": "assistant", "content": content}
}

// usageOf posts body and returns the usage of the 200 answer.
func (h *harness) usageOf(key string, body any) usage {
	h.t.Helper()
	return h.expect(http.StatusOK, key, body).message(h.t).Usage
}

func wantUsage(t *testing.T, got usage, input, created, read int64) {
	t.Helper()
	if got.InputTokens != input || got.CacheCreationInputTokens != created || got.CacheReadInputTokens != read {
		t.Fatalf("usage input/created/read = %d/%d/%d, want %d/%d/%d",
			got.InputTokens, got.CacheCreationInputTokens, got.CacheReadInputTokens, input, created, read)
	}
}

func TestCacheHitMissAndITPM(t *testing.T) {
	h := newHarness(t, Config{
		Orgs: []Org{{ID: "org-a", ITPM: 200}},
		Keys: map[string]string{"sk-a": "org-a"},
	})
	body := chat(sonnet, []any{block(100, true)}, user(block(10, false)))
	wantUsage(t, h.usageOf("sk-a", body), 10, 100, 0)
	// 90 input tokens left: the same request now fits only because cache
	// reads are not charged to ITPM.
	r := h.expect(http.StatusOK, "sk-a", body)
	wantUsage(t, r.message(t).Usage, 10, 0, 100)
	if got := r.header.Get("anthropic-ratelimit-input-tokens-remaining"); got != "0" {
		t.Fatalf("input-tokens-remaining %q, want 0 (80 rounded down)", got)
	}
	c := h.s.Stats().Orgs["org-a"]
	if c.InputTokens != 120 || c.CacheCreationTokens != 100 || c.CacheReadTokens != 100 {
		t.Fatalf("counters %+v, want input 120 (110+10), created 100, read 100", c)
	}
	// A different model does not share the prefix.
	h.clock.Advance(time.Minute)
	wantUsage(t, h.usageOf("sk-a", chat("claude-haiku-4-5", []any{block(100, true)}, user(block(10, false)))), 10, 100, 0)
}

func TestCacheTTL(t *testing.T) {
	h := newHarness(t, Config{Keys: map[string]string{"sk-a": "org-a"}})
	body := chat(sonnet, []any{block(100, true)}, user(block(10, false)))
	wantUsage(t, h.usageOf("sk-a", body), 10, 100, 0)
	// A hit just before expiry refreshes the TTL…
	h.clock.Advance(DefaultCacheTTL - time.Nanosecond)
	wantUsage(t, h.usageOf("sk-a", body), 10, 0, 100)
	h.clock.Advance(DefaultCacheTTL - time.Nanosecond)
	wantUsage(t, h.usageOf("sk-a", body), 10, 0, 100)
	// …and TTL after the last use the entry is gone.
	h.clock.Advance(DefaultCacheTTL)
	wantUsage(t, h.usageOf("sk-a", body), 10, 100, 0)
}

func TestCacheConfiguredTTL(t *testing.T) {
	h := newHarness(t, Config{Keys: map[string]string{"sk-a": "org-a"}, CacheTTL: time.Hour})
	body := chat(sonnet, []any{block(100, true)}, user(block(10, false)))
	h.usageOf("sk-a", body)
	h.clock.Advance(59 * time.Minute)
	wantUsage(t, h.usageOf("sk-a", body), 10, 0, 100)
}

func TestCacheIsPerOrganization(t *testing.T) {
	h := newHarness(t, Config{
		Orgs: []Org{{ID: "org-a"}, {ID: "org-b"}},
		Keys: map[string]string{"sk-a1": "org-a", "sk-a2": "org-a", "sk-b": "org-b"},
	})
	body := chat(sonnet, []any{block(100, true)}, user(block(10, false)))
	wantUsage(t, h.usageOf("sk-a1", body), 10, 100, 0)
	// Another key of the same organization reads it…
	wantUsage(t, h.usageOf("sk-a2", body), 10, 0, 100)
	// …another organization does not see it.
	wantUsage(t, h.usageOf("sk-b", body), 10, 100, 0)
	wantUsage(t, h.usageOf("sk-b", body), 10, 0, 100)
}

func TestCacheLookbackAcrossTurns(t *testing.T) {
	h := newHarness(t, Config{Keys: map[string]string{"sk-a": "org-a"}})
	system := []any{block(50, false)}
	// Turn 1 marks its last block…
	wantUsage(t, h.usageOf("sk-a", chat(sonnet, system, user(block(20, true)))), 0, 70, 0)
	// …turn 2 moves the mark to its new last block and reads turn 1's prefix
	// from a boundary before the mark.
	turn2 := chat(sonnet, system, user(block(20, false)), assistant(block(30, false)), user(block(10, true)))
	wantUsage(t, h.usageOf("sk-a", turn2), 0, 40, 70)
	wantUsage(t, h.usageOf("sk-a", turn2), 0, 0, 110)

	// More than 20 blocks after the cached prefix, the lookback does not reach it.
	msgs := []any{user(block(20, false))}
	for i := range 24 {
		if i%2 == 0 {
			msgs = append(msgs, assistant(block(7, false)))
		} else {
			msgs = append(msgs, user(block(7, false)))
		}
	}
	msgs = append(msgs, assistant(block(7, false)), user(block(7, true)))
	far := chat(sonnet, system, msgs...)
	wantUsage(t, h.usageOf("sk-a", far), 0, 70+26*7, 0)
}

func TestCacheEarlierBreakpointHit(t *testing.T) {
	h := newHarness(t, Config{Keys: map[string]string{"sk-a": "org-a"}})
	// Cache the system prompt alone.
	wantUsage(t, h.usageOf("sk-a", chat(sonnet, []any{block(100, true)}, user(block(10, false)))), 10, 100, 0)
	// Two breakpoints: the system prompt is read, the rest up to the second
	// breakpoint is written, and what follows is plain input.
	body := chat(sonnet, []any{block(100, true)}, user(block(30, true)), assistant(block(8, false)), user(block(9, false)))
	wantUsage(t, h.usageOf("sk-a", body), 17, 30, 100)
	wantUsage(t, h.usageOf("sk-a", body), 17, 0, 130)
}

func TestRefusedRequestDoesNotTouchCache(t *testing.T) {
	h := newHarness(t, Config{
		Orgs: []Org{{ID: "org-a", RPM: 1}},
		Keys: map[string]string{"sk-a": "org-a"},
	})
	body := chat(sonnet, []any{block(100, true)}, user(block(10, false)))
	h.expect(http.StatusOK, "sk-a", msg(sonnet, 10))
	h.expect(http.StatusTooManyRequests, "sk-a", body)
	h.clock.Advance(time.Minute)
	wantUsage(t, h.usageOf("sk-a", body), 10, 100, 0)
}

func TestCacheBound(t *testing.T) {
	h := newHarness(t, Config{Keys: map[string]string{"sk-a": "org-a"}, CacheEntries: 2})
	prefix := func(tokens int) map[string]any {
		return chat(sonnet, []any{block(tokens, true)}, user(block(10, false)))
	}
	for _, n := range []int{100, 101, 102} {
		wantUsage(t, h.usageOf("sk-a", prefix(n)), 10, int64(n), 0)
	}
	wantUsage(t, h.usageOf("sk-a", prefix(102)), 10, 0, 102)
	wantUsage(t, h.usageOf("sk-a", prefix(101)), 10, 0, 101)
	// The least recently used one was dropped when the third came in.
	wantUsage(t, h.usageOf("sk-a", prefix(100)), 10, 100, 0)

	c := newPromptCache(time.Minute, 3)
	for i := range 10 {
		c.put([32]byte{byte(i)}, t0)
	}
	if c.len() != 3 {
		t.Fatalf("cache holds %d entries, bound 3", c.len())
	}
	// Expired entries go on the next write even below the bound.
	c.put([32]byte{100}, t0.Add(time.Minute))
	if c.len() != 1 {
		t.Fatalf("after expiry the cache holds %d entries, want 1", c.len())
	}
}

func TestTooManyBreakpoints(t *testing.T) {
	h := newHarness(t, Config{Keys: map[string]string{"sk-a": "org-a"}})
	body := chat(sonnet, []any{block(10, true), block(10, true)},
		user(block(10, true), block(10, true)), assistant(block(10, true)))
	r := h.expect(http.StatusBadRequest, "sk-a", body)
	if typ, m := r.error(); typ != "invalid_request_error" || m != "A maximum of 4 blocks with cache_control may be provided. Found 5." {
		t.Fatalf("error %q %q", typ, m)
	}
}
