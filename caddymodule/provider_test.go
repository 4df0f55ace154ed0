package caddymodule

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
	"github.com/cc-relay/caddy-cc-relay/internal/mockanthropic"
	"github.com/cc-relay/caddy-cc-relay/internal/mockbedrock"
	"github.com/cc-relay/caddy-cc-relay/internal/mockvertex"
	"github.com/cc-relay/caddy-cc-relay/internal/usage"
)

// End-to-end tests of Bedrock and Vertex keys through a real Caddy: the
// relay translates and signs, the mocks verify what AWS and Google verify.

const (
	provAKID    = "AKIAPROVIDERTEST0001"
	provSecret  = "provider/secret/Access+Key/000000000001"
	provToken   = "FwoGZXIvYXdzEprovidersessiontoken0001"
	provRegion  = "us-east-1"
	provProject = "relay-proj"
	provVRegion = "us-east5"
)

// providerProxy is the reverse_proxy of the configuration, over
// plain HTTP to the mocks.
const providerProxy = `reverse_proxy {http.cc_relay.upstream} {
		header_up Host {upstream_hostport}
		transport http {
			keepalive off
		}
	}`

func newBedrockMock(t *testing.T, fake *clock.Fake, cfg mockanthropic.Config) (*mockbedrock.Server, string) {
	t.Helper()
	now := time.Now
	if fake != nil {
		now = fake.Now
	}
	cfg.Now = now
	m := mockbedrock.New(mockbedrock.Config{
		Region:        provRegion,
		Credentials:   map[string]string{provAKID: provSecret},
		SessionTokens: map[string]string{provAKID: provToken},
		Anthropic:     cfg,
		Now:           now,
	})
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	return m, srv.URL
}

func bedrockBlock(name, endpoint string, extra string) string {
	return fmt.Sprintf(`bedrock %s {
			region %s
			access_key_id {env.CC_RELAY_PROV_AKID}
			secret_access_key {env.CC_RELAY_PROV_SECRET}
			session_token {env.CC_RELAY_PROV_TOKEN}
			endpoint %s
			%s
		}`, name, provRegion, endpoint, extra)
}

func setProviderEnv(t *testing.T) {
	setEnvs(t, map[string]string{"CC_RELAY_PROV_AKID": provAKID, "CC_RELAY_PROV_SECRET": provSecret, "CC_RELAY_PROV_TOKEN": provToken})
}

// exhaustedAnthropic is a mock Anthropic API whose organization allows
// rpm requests a minute on the fake clock.
func exhaustedAnthropic(t *testing.T, fake *clock.Fake, rpm int64) *recUpstream {
	up, _ := anthropicMock(t, fake, rpm)
	return up
}

func anthropicMock(t *testing.T, fake *clock.Fake, rpm int64) (*recUpstream, *mockanthropic.Server) {
	m := mockanthropic.New(mockanthropic.Config{
		Orgs: []mockanthropic.Org{{ID: "org-a", RPM: rpm}}, Keys: map[string]string{"sk-ant-prov-1": "org-a"},
		Now: fake.Now, OutputTokens: func([]byte) int64 { return 20 },
	})
	return newRecUpstream(t, m), m
}

func sseBody(model string) string {
	return fmt.Sprintf(`{"model":%q,"stream":true,"max_tokens":64,"messages":[{"role":"user","content":"hello"}]}`, model)
}

// events splits an SSE body into events, without pings and with the
// message id blanked (two mocks count ids apart).
func events(body string) []string {
	var out []string
	for ev := range strings.SplitSeq(body, "\n\n") {
		if ev == "" || strings.HasPrefix(ev, "event: ping\n") {
			continue
		}
		if i := strings.Index(ev, `"id":"`); i >= 0 {
			j := strings.IndexByte(ev[i+6:], '"')
			ev = ev[:i+6] + ev[i+6+j:]
		}
		out = append(out, ev)
	}
	return out
}

// An Anthropic organization that runs out spills over to Bedrock (priority
// 1) with no 429 reaching the client; streams through Bedrock are the SSE
// events the Anthropic API sends for the same request.
func TestProviderSpillOverToBedrock(t *testing.T) {
	fake := useFakeClock(t)
	setProviderEnv(t)
	ant, antMock := anthropicMock(t, fake, 2)
	bm, bURL := newBedrockMock(t, fake, mockanthropic.Config{OutputTokens: func([]byte) int64 { return 20 }})
	startRelay(t, relaySite(`prov_bedrock_spill {
		client_auth off
		strategy priority
		key sk-ant-prov-1 {
			name anthropic
			upstream `+ant.URL+`
		}
		`+bedrockBlock("aws", bURL, "priority 1\n\t\t\trpm 100")+"\n\t}", providerProxy))

	var streams []string
	for i := range 6 {
		res, body := post(t, "", sseBody("claude-sonnet-4-5-20250929"), "Anthropic-Beta", "interleaved-thinking-2025-05-14")
		if res.StatusCode != 200 || !strings.Contains(body, "event: message_stop\n") {
			t.Fatalf("request %d: %d %s", i, res.StatusCode, body)
		}
		key := res.Header.Get("X-CC-Relay-Key")
		if want := map[bool]string{true: "anthropic", false: "aws"}[i < 2]; key != want {
			t.Fatalf("request %d went to %q, want %q", i, key, want)
		}
		if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
			t.Fatalf("request %d: content-type %q", i, ct)
		}
		if i == 1 || i == 2 {
			streams = append(streams, body)
		}
	}
	// Byte for byte the events the Anthropic API sent (Bedrock has no
	// pings; the message ids are the two mocks' own).
	a, b := events(streams[0]), events(streams[1])
	if len(a) != len(b) || len(a) < 5 {
		t.Fatalf("anthropic %d events, bedrock %d:\n%s\n---\n%s", len(a), len(b), streams[0], streams[1])
	}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("event %d differs:\nanthropic %q\nbedrock   %q", i, a[i], b[i])
		}
	}
	recs := bm.Records()
	if len(recs) != 4 {
		t.Fatalf("bedrock saw %d requests, want 4", len(recs))
	}
	for _, r := range recs {
		if !r.Verified || r.ModelID != "us.anthropic.claude-sonnet-4-5-20250929-v1:0" || !r.Stream {
			t.Fatalf("bedrock request %+v", r)
		}
		if !strings.Contains(string(r.Body), `"anthropic_beta":["interleaved-thinking-2025-05-14"]`) ||
			!strings.HasPrefix(string(r.Body), `{"anthropic_version":"bedrock-2023-05-31"`) || strings.Contains(string(r.Body), `"model"`) {
			t.Fatalf("bedrock body %s", r.Body)
		}
		if r.Header.Get("X-Api-Key") != "" || r.Header.Get("Anthropic-Beta") != "" {
			t.Fatalf("bedrock request headers %v", r.Header)
		}
	}

	// Bedrock's usage is charged like Anthropic's: the admin API counts
	// the key's tokens (20 output tokens per request).
	snap := adminGet(t, "/cc_relay/pools/prov_bedrock_spill")
	if !strings.Contains(snap, `"name":"aws"`) || !strings.Contains(snap, `"output_tokens":80`) {
		t.Fatalf("admin snapshot: %s", snap)
	}
	for _, s := range []string{provSecret, provToken, provAKID} {
		if strings.Contains(snap, s) {
			t.Fatal("a Bedrock credential appears in the admin API")
		}
	}
	// Non-streaming answers come back as the API's JSON.
	res, body := post(t, "", msgBody)
	if res.StatusCode != 200 || res.Header.Get("X-CC-Relay-Key") != "aws" || !strings.Contains(body, `"type":"message"`) {
		t.Fatalf("json: %d %s", res.StatusCode, body)
	}
	// A minute on, the relay expects the Anthropic organization to have
	// room again, but it answers 429: the request is retried on Bedrock
	// before any byte reached the client.
	fake.Advance(time.Minute)
	antMock.Force429("org-a", fake.Now().Add(time.Hour))
	before := len(ant.all())
	// A new conversation: the earlier one stays pinned to Bedrock.
	res, body = post(t, "", msgText("a new conversation"))
	if res.StatusCode != 200 || res.Header.Get("X-CC-Relay-Key") != "aws" || len(ant.all()) != before+1 {
		t.Fatalf("after an Anthropic 429: %d key %s (anthropic saw %d more): %s", res.StatusCode, res.Header.Get("X-CC-Relay-Key"), len(ant.all())-before, body)
	}
}

// A Bedrock throttle cools the key down and the request moves on to the
// next provider; each Bedrock error reaches the client in Anthropic's shape
// and status when no other key can take the request.
func TestProviderBedrockErrors(t *testing.T) {
	fake := useFakeClock(t)
	setProviderEnv(t)
	bm, bURL := newBedrockMock(t, fake, mockanthropic.Config{})
	startRelay(t, relaySite(`prov_bedrock_errors {
		client_auth off
		retries 0
		`+bedrockBlock("aws", bURL, "")+"\n\t}", providerProxy))

	for _, c := range []struct {
		status     int
		name       string
		wantStatus int
		wantType   string
	}{
		{400, "ValidationException", 400, "invalid_request_error"},
		{503, "ServiceUnavailableException", 529, "overloaded_error"},
		{429, "ThrottlingException", 429, "rate_limit_error"},
	} {
		bm.Fail(c.status, c.name, "the reason")
		res, body := post(t, "", msgBody)
		if res.StatusCode != c.wantStatus || !strings.Contains(body, `"type":"error"`) || !strings.Contains(body, `"type":"`+c.wantType+`"`) {
			t.Fatalf("%s: %d %s", c.name, res.StatusCode, body)
		}
		if c.name == "ThrottlingException" && res.Header.Get("Retry-After") == "" {
			t.Fatalf("429 without Retry-After")
		}
		fake.Advance(time.Minute) // the throttled key's cooldown ends
	}
	// Mid-stream failure: an SSE error event in the API's shape.
	bm.FailStream("modelStreamErrorException", "the model stream broke")
	res, body := post(t, "", sseBody("claude-sonnet-4-5"))
	if res.StatusCode != 200 || !strings.Contains(body, "event: message_start\n") ||
		!strings.HasSuffix(body, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Amazon Bedrock: the model stream broke\"}}\n\n") {
		t.Fatalf("stream error: %d %q", res.StatusCode, body)
	}
	// AccessDeniedException disables the key: the client is told the
	// relay has no key, not asked to log in again.
	bm.Fail(403, "AccessDeniedException", "not authorized to invoke this model")
	res, body = post(t, "", msgBody)
	if res.StatusCode != 503 || !strings.Contains(body, "api_error") {
		t.Fatalf("access denied: %d %s", res.StatusCode, body)
	}
	snap := adminGet(t, "/cc_relay/pools/prov_bedrock_errors")
	if !strings.Contains(snap, "permission_error") {
		t.Fatalf("disabled reason not in snapshot: %s", snap)
	}
}

// A request for a model the Bedrock key's table lacks never goes there;
// /v1/models answers from the tables when no Anthropic key is configured;
// count_tokens never goes to Bedrock.
func TestProviderModelRouting(t *testing.T) {
	fake := useFakeClock(t)
	setProviderEnv(t)
	bm, bURL := newBedrockMock(t, fake, mockanthropic.Config{})
	startRelay(t, relaySite(`prov_bedrock_models {
		client_auth off
		`+bedrockBlock("aws", bURL, "model claude-custom-* arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc")+"\n\t}", providerProxy))

	res, body := post(t, "", `{"model":"gpt-4o","max_tokens":5,"messages":[{"role":"user","content":"x"}]}`)
	if res.StatusCode != 404 || !strings.Contains(body, "not_found_error") {
		t.Fatalf("unknown model: %d %s", res.StatusCode, body)
	}
	res, body = post(t, "", `{"model":"claude-custom-1","max_tokens":5,"messages":[{"role":"user","content":"x"}]}`)
	if res.StatusCode != 200 {
		t.Fatalf("model line: %d %s", res.StatusCode, body)
	}
	if recs := bm.Records(); len(recs) != 1 || recs[0].Path != "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile%2Fabc/invoke" || !recs[0].Verified {
		t.Fatalf("records %+v", recs)
	}
	req := newRequest(t, http.MethodGet, relayAddr+"/v1/models", nil)
	res, body = roundTrip(t, relayHTTP, req)
	if res.StatusCode != 200 || !strings.Contains(body, `"id":"claude-sonnet-4-5-20250929"`) || !strings.Contains(body, `"id":"claude-opus-4-7"`) {
		t.Fatalf("models: %d %s", res.StatusCode, body)
	}
	req = newRequest(t, http.MethodPost, relayAddr+"/v1/messages/count_tokens", strings.NewReader(msgBody))
	res, body = roundTrip(t, relayHTTP, req)
	if res.StatusCode != 404 || len(bm.Records()) != 1 {
		t.Fatalf("count_tokens: %d %s", res.StatusCode, body)
	}
}

// Vertex: the service account's token comes from its token_uri (verified
// by the mock), is cached across requests, and spill-over from an
// exhausted Anthropic organization reaches Vertex with no 429; Vertex's
// RESOURCE_EXHAUSTED moves the request on to the next key.
func TestProviderSpillOverToVertex(t *testing.T) {
	fake := useFakeClock(t)
	ant := exhaustedAnthropic(t, fake, 1)
	vm := mockvertex.New(mockvertex.Config{Project: provProject, Region: provVRegion})
	vsrv := httptest.NewServer(vm)
	t.Cleanup(vsrv.Close)
	credFile := filepath.Join(t.TempDir(), "sa.json")
	if err := os.WriteFile(credFile, vm.ServiceAccountJSON(vsrv.URL), 0o600); err != nil {
		t.Fatal(err)
	}
	setProviderEnv(t)
	bm, bURL := newBedrockMock(t, fake, mockanthropic.Config{})
	startRelay(t, relaySite(`prov_vertex_spill {
		client_auth off
		strategy priority
		key sk-ant-prov-1 {
			name anthropic
			upstream `+ant.URL+`
		}
		vertex gcp {
			project `+provProject+`
			region `+provVRegion+`
			credentials `+credFile+`
			endpoint `+vsrv.URL+`
			priority 1
		}
		`+bedrockBlock("aws", bURL, "priority 2")+"\n\t}", providerProxy))

	for i := range 4 {
		res, body := post(t, "", sseBody("claude-haiku-4-5"))
		want := map[bool]string{true: "anthropic", false: "gcp"}[i == 0]
		if res.StatusCode != 200 || res.Header.Get("X-CC-Relay-Key") != want || !strings.Contains(body, "event: message_stop\n") {
			t.Fatalf("request %d: %d %s %s", i, res.StatusCode, res.Header.Get("X-CC-Relay-Key"), body)
		}
	}
	if n := vm.TokensIssued(); n != 1 {
		t.Fatalf("%d access tokens fetched for 3 requests, want 1", n)
	}
	paths, bodies := vm.Paths()
	if len(paths) != 3 || paths[0] != "/v1/projects/relay-proj/locations/us-east5/publishers/anthropic/models/claude-haiku-4-5@20251001:streamRawPredict" ||
		!strings.HasPrefix(string(bodies[0]), `{"anthropic_version":"vertex-2023-10-16"`) || strings.Contains(string(bodies[0]), `"model"`) {
		t.Fatalf("vertex saw %v %s", paths, bodies)
	}
	// RESOURCE_EXHAUSTED: cooled down, the request goes on to Bedrock.
	vm.Exhaust(1)
	res, body := post(t, "", sseBody("claude-haiku-4-5"))
	if res.StatusCode != 200 || res.Header.Get("X-CC-Relay-Key") != "aws" {
		t.Fatalf("after RESOURCE_EXHAUSTED: %d %s %s", res.StatusCode, res.Header.Get("X-CC-Relay-Key"), body)
	}
	if len(bm.Records()) != 1 {
		t.Fatal("bedrock not reached")
	}
	// count_tokens may go to Vertex's count-tokens endpoint.
	fake.Advance(time.Minute)
	req := newRequest(t, http.MethodPost, relayAddr+"/v1/messages/count_tokens", strings.NewReader(`{"model":"claude-haiku-4-5","messages":[{"role":"user","content":"hello"}]}`))
	res, body = roundTrip(t, relayHTTP, req)
	if res.StatusCode != 200 || !strings.Contains(body, "input_tokens") {
		t.Fatalf("count_tokens: %d %s", res.StatusCode, body)
	}
}

// Provider credentials never appear in the admin API's config or
// metrics, and bad provider configuration is a config error naming it.
func TestProviderConfig(t *testing.T) {
	setProviderEnv(t)
	_, bURL := newBedrockMock(t, useFakeClock(t), mockanthropic.Config{})
	startRelay(t, relaySite(`prov_config {
		client_auth off
		`+bedrockBlock("aws", bURL, "")+"\n\t}", providerProxy))
	for _, path := range []string{"/config/", "/metrics", "/cc_relay/pools/prov_config"} {
		code, body := adminDo(t, http.MethodGet, path, "", "")
		if code != 200 {
			t.Fatalf("%s: %d", path, code)
		}
		// The Bedrock key is there by name.
		if path != "/config/" && !strings.Contains(body, `aws`) {
			t.Fatalf("%s does not show the bedrock key:\n%s", path, body)
		}
		for _, s := range []string{provSecret, provToken, provAKID} {
			if strings.Contains(body, s) {
				t.Fatalf("%s shows a credential", path)
			}
		}
	}
	for name, c := range map[string]struct{ cfg, want string }{
		"mixed schemes": {`key sk-a {
			upstream https://api.example.com
		}
		` + bedrockBlock("aws", bURL, ""), "mix http:// and https://"},
		"missing region": {`bedrock aws {
			access_key_id x
			secret_access_key y
		}`, "region, access_key_id and secret_access_key are required"},
		"duplicate name": {`key sk-a {
			name aws
		}
		` + bedrockBlock("aws", bURL, ""), "duplicate key name"},
		"bad credentials": {`vertex gcp {
			project p
			region r
			credentials /nonexistent/sa.json
		}`, "reading the service account key file"},
		"bad endpoint": {bedrockBlock("aws", "ftp://x", ""), "not an http:// or https:// URL"},
	} {
		h, err := parse("cc_relay prov_bad {\n\t\tclient_auth off\n\t\t" + c.cfg + "\n\t}")
		if err == nil {
			err = provision(t, h)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, c.want)
		}
		for _, s := range []string{provSecret, provToken} {
			if err != nil && strings.Contains(err.Error(), s) {
				t.Errorf("%s: the error shows a credential", name)
			}
		}
	}
}

// With the log filters Caddyfile.example recommends, no provider
// credential (AWS secret, access key id, session token, SigV4 signature,
// Vertex access token or private key) appears in the debug or access log,
// while reverse_proxy's upstream roundtrip entries are there.
func TestProviderNoSecretInLogs(t *testing.T) {
	filters := opsFilterBlocks(t)
	fake := useFakeClock(t)
	setProviderEnv(t)
	bm, bURL := newBedrockMock(t, fake, mockanthropic.Config{})
	vm := mockvertex.New(mockvertex.Config{Project: provProject, Region: provVRegion})
	vsrv := httptest.NewServer(vm)
	t.Cleanup(vsrv.Close)
	saJSON := vm.ServiceAccountJSON(vsrv.URL)
	credFile := filepath.Join(t.TempDir(), "sa.json")
	if err := os.WriteFile(credFile, saJSON, 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	debugPath, accessPath := filepath.Join(dir, "caddy.log"), filepath.Join(dir, "access.log")
	startCaddy(t, caddyGlobal(fmt.Sprintf(`	log {
		output file %s
		level DEBUG
		%s
	}`, debugPath, filters[0]))+fmt.Sprintf(`http://localhost:9080 {
	log {
		output file %s
		%s
	}
	cc_relay prov_logs {
		client_auth off
		strategy priority
		vertex gcp {
			project %s
			region %s
			credentials %s
			endpoint %s
		}
		%s
	}
	%s
}
`, accessPath, filters[1], provProject, provVRegion, credFile, vsrv.URL, bedrockBlock("aws", bURL, "priority 1"), providerProxy))

	if res, body := post(t, "", sseBody("claude-sonnet-4-5")); res.StatusCode != 200 || res.Header.Get("X-CC-Relay-Key") != "gcp" {
		t.Fatalf("vertex: %d %s", res.StatusCode, body)
	}
	vm.Exhaust(1)
	if res, body := post(t, "", msgBody); res.StatusCode != 200 || res.Header.Get("X-CC-Relay-Key") != "aws" {
		t.Fatalf("bedrock: %d %s", res.StatusCode, body)
	}
	waitIdle(t, "prov_logs")
	pollUntil(t, "the access log's 2 entries", func() bool {
		return strings.Count(opsReadLog(accessPath), `"msg":"handled request"`) >= 2
	})
	startRelay(t, "http://localhost:9080 {\n\trespond \"bye\"\n}\n")
	debugLog, accessLog := opsReadLog(debugPath), opsReadLog(accessPath)
	if strings.Count(debugLog, "upstream roundtrip") < 3 {
		t.Fatalf("no upstream roundtrip entries: the test would prove nothing")
	}
	recs := bm.Records()
	if len(recs) == 0 {
		t.Fatal("bedrock not reached")
	}
	_, sig, _ := strings.Cut(recs[len(recs)-1].Header.Get("Authorization"), "Signature=")
	secrets := map[string]string{"secret access key": provSecret, "session token": provToken, "access key id": provAKID, "signature": sig}
	var sa struct {
		PrivateKey string `json:"private_key"`
	}
	_ = json.Unmarshal(saJSON, &sa)
	secrets["private key"] = strings.Split(sa.PrivateKey, "\n")[1]
	for name, secret := range secrets {
		if secret == "" {
			t.Fatalf("%s is empty", name)
		}
		for logName, text := range map[string]string{"debug log": debugLog, "access log": accessLog} {
			if strings.Contains(text, secret) {
				t.Errorf("%s holds the %s:\n%s", logName, name, opsLinesWith(text, secret))
			}
		}
	}
	if strings.Contains(debugLog, "ya29.mock-") || strings.Contains(accessLog, "ya29.mock-") {
		t.Errorf("a log holds the Vertex access token:\n%s", opsLinesWith(debugLog, "ya29.mock-"))
	}
}

// The Caddyfile parses into the JSON config, secrets staying
// placeholders.
func TestProviderCaddyfile(t *testing.T) {
	src := `{
	admin off
}
:8080 {
	cc_relay prod {
		client_auth off
		strategy priority
		key {env.ANTHROPIC_KEY} {
			upstream https://gateway.example.com/anthropic
			auth bearer
		}
		bedrock aws-main {
			region            us-east-1
			access_key_id     {env.AWS_ACCESS_KEY_ID}
			secret_access_key {env.AWS_SECRET_ACCESS_KEY}
			session_token     {env.AWS_SESSION_TOKEN}
			endpoint          https://vpce-1.bedrock-runtime.us-east-1.vpce.amazonaws.com
			model claude-sonnet-4-5* us.anthropic.claude-sonnet-4-5-20250929-v1:0
			model claude-opus-* arn:aws:bedrock:us-east-1:1:application-inference-profile/x
			rpm 50  itpm 200000  otpm 40000  weight 2  priority 1  org aws-acct
		}
		vertex gcp-main {
			project     my-project
			region      us-east5
			credentials {file./etc/relay/sa.json}
			model claude-haiku-* claude-haiku-4-5@20251001
			rpm 10 priority 2 org gcp
		}
	}
	reverse_proxy {http.cc_relay.upstream} {
		header_up Host {upstream_hostport}
		transport http {
			tls
		}
	}
}`
	out, err := adapt(t, src)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(out, `{"bedrock":`)
	if i < 0 || !strings.Contains(out, `"upstreams":[{"dial":"{http.cc_relay.upstream}"}]`) {
		t.Fatalf("adapted config:\n%s", out)
	}
	var h Handler
	if err := json.NewDecoder(strings.NewReader(out[i:])).Decode(&h); err != nil {
		t.Fatal(err)
	}
	b, v, k := h.Bedrock, h.Vertex, h.Keys
	if len(b) != 1 || len(v) != 1 || len(k) != 1 {
		t.Fatalf("%+v", h)
	}
	if k[0].Upstream != "https://gateway.example.com/anthropic" || k[0].Auth != "bearer" || k[0].Key != "{env.ANTHROPIC_KEY}" {
		t.Fatalf("key %+v", k[0])
	}
	wantB := BedrockKey{Name: "aws-main", Region: "us-east-1", AccessKeyID: "{env.AWS_ACCESS_KEY_ID}", SecretAccessKey: "{env.AWS_SECRET_ACCESS_KEY}",
		SessionToken: "{env.AWS_SESSION_TOKEN}", Endpoint: "https://vpce-1.bedrock-runtime.us-east-1.vpce.amazonaws.com",
		Models: []ModelRoute{{"claude-sonnet-4-5*", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"}, {"claude-opus-*", "arn:aws:bedrock:us-east-1:1:application-inference-profile/x"}},
		RPM:    50, ITPM: 200000, OTPM: 40000, Weight: 2, Priority: 1, Org: "aws-acct"}
	if fmt.Sprint(b[0]) != fmt.Sprint(wantB) {
		t.Fatalf("bedrock\n%+v\nwant\n%+v", b[0], wantB)
	}
	wantV := VertexKey{Name: "gcp-main", Project: "my-project", Region: "us-east5", Credentials: "{file./etc/relay/sa.json}",
		Models: []ModelRoute{{"claude-haiku-*", "claude-haiku-4-5@20251001"}}, RPM: 10, Priority: 2, Org: "gcp"}
	if fmt.Sprint(v[0]) != fmt.Sprint(wantV) {
		t.Fatalf("vertex\n%+v\nwant\n%+v", v[0], wantV)
	}
	for _, bad := range []string{
		"cc_relay {\n bedrock x {\n region r\n access_key_id a\n secret_access_key s\n colour blue\n }\n}",
		"cc_relay {\n bedrock x {\n region r\n access_key_id a\n secret_access_key s\n model only-one\n }\n}",
		"cc_relay {\n bedrock {\n }\n}",
	} {
		if _, err := parse(bad); err == nil {
			t.Errorf("accepted:\n%s", bad)
		}
	}
	// A block missing a required field parses; Validate names what is
	// missing, for a Caddyfile as for JSON.
	hv, err := parse("cc_relay {\n client_auth off\n vertex x {\n project p\n region r\n }\n}")
	if err != nil {
		t.Fatalf("a well-formed vertex block was refused by the parser: %v", err)
	}
	if err := hv.Validate(); err == nil || !strings.Contains(err.Error(), `vertex "x": project, region and credentials are required`) {
		t.Errorf("vertex without credentials: %v", err)
	}
}

// An Anthropic-compatible endpoint per key: each key's requests go to its
// own upstream (base path kept, bearer auth where configured), and
// {http.cc_relay.upstream} is that upstream's host:port.
func TestProviderPerKeyUpstream(t *testing.T) {
	var mu sync.Mutex
	var paths []string
	record := func(_ string, w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.Host+" "+r.URL.Path)
		mu.Unlock()
		okMessage(w)
	}
	up1 := newUpstream(t, record)
	up2 := newUpstream(t, record)
	startRelay(t, relaySite(`prov_per_key {
		client_auth off
		strategy round_robin
		key sk-per-key-1 {
			name one
			upstream `+up1.URL+`/api/anthropic/
			auth bearer
		}
		key sk-per-key-2 {
			name two
			upstream `+up2.URL+`
		}
	}`, providerProxy))
	for i := range 4 {
		// Distinct conversations: no session pin keeps them on one key.
		if res, body := post(t, "", msgText(fmt.Sprint("conversation ", i)), "Anthropic-Beta", "x"); res.StatusCode != 200 {
			t.Fatalf("%d %s", res.StatusCode, body)
		}
	}
	r1, r2 := up1.all(), up2.all()
	if len(r1) != 2 || len(r2) != 2 {
		t.Fatalf("upstream 1 saw %d (%v), upstream 2 saw %d; paths %v", len(r1), up1.keys(), len(r2), paths)
	}
	for _, r := range r1 {
		if r.header.Get("Authorization") != "Bearer sk-per-key-1" || r.header.Get("X-Api-Key") != "" || r.header.Get("Anthropic-Beta") != "x" {
			t.Fatalf("upstream 1 headers %v", r.header)
		}
	}
	for _, r := range r2 {
		if r.key != "sk-per-key-2" {
			t.Fatalf("upstream 2 key %q", r.key)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	want := map[string]int{up1.addr() + " /api/anthropic/v1/messages": 2, up2.addr() + " /v1/messages": 2}
	for _, p := range paths {
		want[p]--
	}
	for p, n := range want {
		if n != 0 {
			t.Fatalf("paths %v: %s seen %d times too few", paths, p, n)
		}
	}
}

// A real Claude Code request (captured from the CLI) answered through a
// Bedrock-only pool: translated, signed, verified by the mock, and the
// client gets the Anthropic SSE it expects, usage included.
func TestProviderClaudeCodeRequestViaBedrock(t *testing.T) {
	fake := useFakeClock(t)
	setProviderEnv(t)
	bm, bURL := newBedrockMock(t, fake, mockanthropic.Config{})
	startRelay(t, relaySite(`prov_cc_bedrock {
		client_token demo-token dev
		`+bedrockBlock("aws", bURL, "")+"\n\t}", providerProxy))
	path, hdr, body := loadClaudeCodeRequest(t)
	req := newRequest(t, http.MethodPost, relayAddr+path, bytes.NewReader(body))
	req.Header = hdr.Clone()
	res, stream := roundTrip(t, relayHTTP, req)
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") || res.Header.Get("X-CC-Relay-Key") != "aws" {
		t.Fatalf("%d %s", res.StatusCode, stream)
	}
	var sc usage.SSEScanner
	sc.Write([]byte(stream))
	if u := sc.Usage(); !u.HaveInput || u.OutputTokens == 0 {
		t.Fatalf("stream carried no usage: %+v\n%s", u, stream)
	}
	recs := bm.Records()
	if len(recs) != 1 || !recs[0].Verified || !recs[0].Stream {
		t.Fatalf("%+v", recs)
	}
	var sent struct {
		Beta []string `json:"anthropic_beta"`
	}
	if err := json.Unmarshal(recs[0].Body, &sent); err != nil || !slices.Contains(sent.Beta, "claude-code-20250219") {
		t.Fatalf("anthropic_beta %v (%v)", sent.Beta, err)
	}
}
