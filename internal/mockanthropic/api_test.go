package mockanthropic

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

func TestAuthentication(t *testing.T) {
	h := newHarness(t, Config{
		Orgs: []Org{{ID: "org-a", RPM: 10}},
		Keys: map[string]string{"sk-a": "org-a", "sk-b": "org-a"},
	})
	r := h.expect(http.StatusUnauthorized, "sk-unknown", msg(sonnet, 10))
	if typ, m := r.error(); typ != "authentication_error" || m != "invalid x-api-key" {
		t.Fatalf("unknown key: %q %q", typ, m)
	}
	if !strings.HasPrefix(string(r.body), `{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}`) {
		t.Fatalf("401 body %s", r.body)
	}
	r = h.expect(http.StatusUnauthorized, "", msg(sonnet, 10))
	if _, m := r.error(); m != "x-api-key header is required" {
		t.Fatalf("missing key: %q", m)
	}

	// Bearer works as well as x-api-key.
	req, _ := http.NewRequest(http.MethodPost, h.ts.URL+"/v1/messages", strings.NewReader(`{"model":"m","max_tokens":5,"messages":[]}`))
	req.Header.Set("Authorization", "Bearer sk-b")
	resp, err := h.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("bearer: status %d", resp.StatusCode)
	}

	h.expect(http.StatusOK, "sk-a", msg(sonnet, 10))
	h.s.Revoke("sk-a")
	r = h.expect(http.StatusUnauthorized, "sk-a", msg(sonnet, 10))
	if typ, _ := r.error(); typ != "authentication_error" {
		t.Fatalf("revoked key: %q", typ)
	}
	h.expect(http.StatusOK, "sk-b", msg(sonnet, 10))

	st := h.s.Stats()
	if st.Keys["sk-a"].Unauthorized != 1 || st.Keys["sk-a"].Accepted != 1 {
		t.Fatalf("sk-a counters %+v", st.Keys["sk-a"])
	}
	if st.Orgs["org-a"].Unauthorized != 1 || st.Total.Unauthorized != 3 {
		t.Fatalf("org %+v total %+v", st.Orgs["org-a"], st.Total)
	}
	if _, ok := st.Keys["sk-unknown"]; ok {
		t.Fatalf("unknown key got counters")
	}
}

func TestRoutingAndValidation(t *testing.T) {
	h := newHarness(t, Config{
		Orgs: []Org{{ID: "org-a", RPM: 1}},
		Keys: map[string]string{"sk-a": "org-a"},
	})
	for _, path := range []string{"/v1/complete", "/v1/models", "/", "/v1/messages/batches"} {
		r := h.postPath(path, "sk-a", msg(sonnet, 10))
		if typ, _ := r.error(); r.status != http.StatusNotFound || typ != "not_found_error" {
			t.Errorf("%s: %d %q", path, r.status, typ)
		}
	}
	resp, err := h.ts.Client().Get(h.ts.URL + "/v1/messages")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", resp.StatusCode)
	}

	bad := map[string]string{
		"malformed":          `{"model":`,
		"not an object":      `[1,2]`,
		"no model":           `{"max_tokens":5,"messages":[]}`,
		"no max_tokens":      `{"model":"m","messages":[]}`,
		"zero max_tokens":    `{"model":"m","max_tokens":0,"messages":[]}`,
		"no messages":        `{"model":"m","max_tokens":5}`,
		"bad role":           `{"model":"m","max_tokens":5,"messages":[{"role":"tool","content":"x"}]}`,
		"bad content":        `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":5}]}`,
		"bad block":          `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":["x"]}]}`,
		"bad stream":         `{"model":"m","max_tokens":5,"stream":"yes","messages":[]}`,
		"tools not a list":   `{"model":"m","max_tokens":5,"tools":{},"messages":[]}`,
		"system not a block": `{"model":"m","max_tokens":5,"system":[1],"messages":[]}`,
	}
	for name, body := range bad {
		r := h.postPath("/v1/messages", "sk-a", body)
		if typ, _ := r.error(); r.status != http.StatusBadRequest || typ != "invalid_request_error" {
			t.Errorf("%s: %d %q %s", name, r.status, typ, r.body)
		}
		if r.header.Get("anthropic-organization-id") != "org-a" {
			t.Errorf("%s: 400 without organization id", name)
		}
	}
	if got := h.s.Stats().Orgs["org-a"]; got.Invalid != int64(len(bad)) || got.Accepted != 0 {
		t.Fatalf("counters %+v", got)
	}
	// Invalid requests cost nothing, and ?beta=true is the same endpoint.
	r := h.postPath("/v1/messages?beta=true", "sk-a", msg(sonnet, 10))
	if r.status != http.StatusOK {
		t.Fatalf("?beta=true: %d %s", r.status, r.body)
	}
}

func TestMessageShapeAndMaxTokens(t *testing.T) {
	h := newHarness(t, Config{Keys: map[string]string{"sk-a": "org-a"}})
	r := h.expect(http.StatusOK, "sk-a", msg(sonnet, 10))
	var raw map[string]any
	if err := json.Unmarshal(r.body, &raw); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"type": "message", "role": "assistant", "model": sonnet, "stop_reason": "end_turn", "stop_sequence": nil} {
		if got, ok := raw[k]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, want)
		}
	}
	if id, _ := raw["id"].(string); !strings.HasPrefix(id, "msg_") {
		t.Errorf("id %q", id)
	}
	if !strings.HasPrefix(r.header.Get("content-type"), "application/json") || !strings.HasPrefix(r.header.Get("request-id"), "req_") {
		t.Errorf("headers %v", r.header)
	}
	m := r.message(t)
	if len(m.Content) != 1 || m.Content[0].Type != "text" || len(strings.Fields(m.Content[0].Text)) != DefaultOutputTokens {
		t.Fatalf("content %+v", m.Content)
	}
	wantUsage(t, m.Usage, 10, 0, 0)
	if m.Usage.OutputTokens != DefaultOutputTokens {
		t.Fatalf("output %d", m.Usage.OutputTokens)
	}

	body := msg(sonnet, 10)
	body["max_tokens"] = 5
	m = h.expect(http.StatusOK, "sk-a", body).message(t)
	if m.Usage.OutputTokens != 5 || *m.StopReason != "max_tokens" || len(strings.Fields(m.Content[0].Text)) != 5 {
		t.Fatalf("capped: output %d stop %q text %q", m.Usage.OutputTokens, *m.StopReason, m.Content[0].Text)
	}
}

func TestTokenCountingRule(t *testing.T) {
	h := newHarness(t, Config{
		Orgs: []Org{{ID: "org-a", RPM: 1}},
		Keys: map[string]string{"sk-a": "org-a"},
	})
	count := func(body string) int64 {
		t.Helper()
		r := h.postPath("/v1/messages/count_tokens", "sk-a", body)
		var c struct {
			InputTokens int64 `json:"input_tokens"`
		}
		if err := json.Unmarshal(r.body, &c); r.status != http.StatusOK || err != nil {
			t.Fatalf("count_tokens: %d %s", r.status, r.body)
		}
		return c.InputTokens
	}
	// Compact, sorted, cache_control dropped, no HTML escaping:
	tool := `{"description":"x","input_schema":{"type":"object"},"name":"get_weather"}`
	system := `"You are <b>"`
	message := `"hi"`
	want := int64((len(tool) + len(system) + len(message) + BytesPerToken - 1) / BytesPerToken)

	got := count(`{"model":"m","tools":[` + tool + `],"system":` + system + `,"messages":[{"role":"user","content":` + message + `}]}`)
	if got != want {
		t.Fatalf("count %d, want %d", got, want)
	}
	// Whitespace, key order and cache_control do not change the count.
	messy := `{"model":"m","tools":[ {"name" : "get_weather", "cache_control":{"type":"ephemeral"},
		"input_schema":{"type":"object"}, "description":"x"} ],"system":"You are <b>",
		"messages":[{"content":"hi","role":"user"}]}`
	if got := count(messy); got != want {
		t.Fatalf("messy count %d, want %d", got, want)
	}
	// count_tokens is free: the single RPM slot is still there.
	h.expect(http.StatusOK, "sk-a", msg(sonnet, 10))
}
