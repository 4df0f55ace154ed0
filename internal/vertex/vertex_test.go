package vertex_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/mockvertex"
	"github.com/cc-relay/caddy-cc-relay/internal/vertex"
)

func TestTranslate(t *testing.T) {
	got, stream, err := vertex.TranslateBody(nil, []byte(`{"model":"claude-sonnet-4-5","stream":true,"max_tokens":3,"messages":[]}`))
	if err != nil || !stream || string(got) != `{"anthropic_version":"vertex-2023-10-16","stream":true,"max_tokens":3,"messages":[]}` {
		t.Fatalf("%s %v %v", got, stream, err)
	}
	got, err = vertex.TranslateCountTokens(nil, []byte(`{"model":"claude-sonnet-4-5","messages":[]}`), "claude-sonnet-4-5@20250929")
	if err != nil || string(got) != `{"anthropic_version":"vertex-2023-10-16","model":"claude-sonnet-4-5@20250929","messages":[]}` {
		t.Fatalf("%s %v", got, err)
	}
	if p := vertex.Path("proj", "us-east5", "claude-sonnet-4-5@20250929", true); p != "/v1/projects/proj/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict" {
		t.Fatal(p)
	}
	if vertex.DefaultHost("global") != "aiplatform.googleapis.com" || vertex.DefaultHost("us-east5") != "us-east5-aiplatform.googleapis.com" {
		t.Fatal("hosts")
	}
}

func TestMapError(t *testing.T) {
	for _, c := range []struct {
		status int
		body   string
		want   int
		typ    string
	}{
		{429, `{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}`, 429, "rate_limit_error"},
		{429, `[{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}]`, 429, "rate_limit_error"},
		{400, `{"error":{"code":400,"message":"bad","status":"INVALID_ARGUMENT"}}`, 400, "invalid_request_error"},
		{401, `{"error":{"code":401,"message":"no","status":"UNAUTHENTICATED"}}`, 401, "authentication_error"},
		{403, `{"error":{"code":403,"message":"no","status":"PERMISSION_DENIED"}}`, 403, "permission_error"},
		{404, `{"error":{"code":404,"message":"no","status":"NOT_FOUND"}}`, 404, "not_found_error"},
		{503, `{"error":{"code":503,"message":"down","status":"UNAVAILABLE"}}`, 529, "overloaded_error"},
		{500, `{"error":{"code":500,"message":"oops","status":"INTERNAL"}}`, 500, "api_error"},
		{502, `<html>bad gateway</html>`, 502, "api_error"},
	} {
		status, body, mapped := vertex.MapError(c.status, []byte(c.body))
		var e struct {
			Type  string
			Error struct{ Type, Message string }
		}
		if err := json.Unmarshal(body, &e); err != nil || !mapped {
			t.Fatalf("%s: %s %v", c.body, body, err)
		}
		if status != c.want || e.Type != "error" || e.Error.Type != c.typ || !strings.HasPrefix(e.Error.Message, "Vertex AI: ") {
			t.Errorf("%s: got %d %s", c.body, status, body)
		}
	}
	// The model's own (Anthropic-shaped) errors pass unchanged.
	anth := `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`
	if status, body, mapped := vertex.MapError(529, []byte(anth)); mapped || status != 529 || string(body) != anth {
		t.Fatalf("%d %s %v", status, body, mapped)
	}
}

func newMock(t *testing.T, ttl time.Duration) (*mockvertex.Server, *httptest.Server) {
	m := mockvertex.New(mockvertex.Config{Project: "proj", Region: "us-east5", TokenTTL: ttl})
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	return m, srv
}

func TestTokenSourceCachesAndHonoursTokenURI(t *testing.T) {
	m, srv := newMock(t, time.Hour)
	ts, err := vertex.NewTokenSource(m.ServiceAccountJSON(srv.URL), srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	first, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		tok, err := ts.Token()
		if err != nil || tok.AccessToken != first.AccessToken {
			t.Fatalf("token changed or failed: %v", err)
		}
	}
	if n := m.TokensIssued(); n != 1 {
		t.Fatalf("%d tokens issued for 21 requests, want 1", n)
	}

	// The token works on the prediction endpoint; none, or a made-up one,
	// is refused.
	body := `{"anthropic_version":"vertex-2023-10-16","max_tokens":20,"messages":[{"role":"user","content":"hi"}]}`
	for _, c := range []struct {
		auth string
		want int
	}{{"Bearer " + first.AccessToken, 200}, {"", 401}, {"Bearer ya29.forged", 401}} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+vertex.Path("proj", "us-east5", "claude-sonnet-4-5@20250929", false), strings.NewReader(body))
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Fatalf("auth %q: %d %s", c.auth, resp.StatusCode, b)
		}
		if c.want == 200 && (!strings.Contains(string(b), `"model":"claude-sonnet-4-5@20250929"`) || resp.Header.Get("anthropic-ratelimit-requests-limit") != "") {
			t.Fatalf("answer %s %v", b, resp.Header)
		}
	}
}

func TestTokenSourceRefreshesEarly(t *testing.T) {
	// A token with less than EarlyRefresh left is replaced at once.
	m, srv := newMock(t, vertex.EarlyRefresh-time.Minute)
	ts, err := vertex.NewTokenSource(m.ServiceAccountJSON(srv.URL), srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	a, _ := ts.Token()
	b, _ := ts.Token()
	if a == nil || b == nil || a.AccessToken == b.AccessToken || m.TokensIssued() != 2 {
		t.Fatalf("no early refresh: %d issued", m.TokensIssued())
	}
	// With more than EarlyRefresh left, the token is kept.
	m2, srv2 := newMock(t, vertex.EarlyRefresh+time.Minute)
	ts2, _ := vertex.NewTokenSource(m2.ServiceAccountJSON(srv2.URL), srv2.Client())
	_, _ = ts2.Token()
	_, _ = ts2.Token()
	if m2.TokensIssued() != 1 {
		t.Fatalf("%d issued", m2.TokensIssued())
	}
}

func TestTokenEndpointRejectsForeignKey(t *testing.T) {
	m, srv := newMock(t, time.Hour)
	other := mockvertex.New(mockvertex.Config{Project: "proj", Region: "us-east5"})
	// Same account and token_uri, signed with a key the account does not have.
	ts, err := vertex.NewTokenSource(other.ServiceAccountJSON(srv.URL), srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Token(); err == nil || !strings.Contains(err.Error(), "invalid_grant") {
		t.Fatalf("err %v", err)
	}
	if m.TokensIssued() != 0 {
		t.Fatal("token issued for a bad signature")
	}
	if _, err := vertex.NewTokenSource([]byte(`{"type":"authorized_user"}`), nil); err == nil {
		t.Fatal("a non-service-account key accepted")
	}
}

func TestResourceExhaustedMapped(t *testing.T) {
	m, srv := newMock(t, time.Hour)
	ts, _ := vertex.NewTokenSource(m.ServiceAccountJSON(srv.URL), srv.Client())
	tok, _ := ts.Token()
	m.Exhaust(1)
	req, _ := http.NewRequest(http.MethodPost, srv.URL+vertex.Path("proj", "us-east5", "m", false), strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	status, body, _ := vertex.MapError(resp.StatusCode, b)
	if status != 429 || !strings.Contains(string(body), `"rate_limit_error"`) {
		t.Fatalf("%d %s", status, body)
	}
}
