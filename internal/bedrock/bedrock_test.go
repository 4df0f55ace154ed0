package bedrock_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"

	"github.com/cc-relay/caddy-cc-relay/internal/bedrock"
	"github.com/cc-relay/caddy-cc-relay/internal/mockanthropic"
	"github.com/cc-relay/caddy-cc-relay/internal/mockbedrock"
)

const (
	akid   = "AKIDEXAMPLE0000001"
	secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	region = "us-east-1"
)

func TestTranslateBody(t *testing.T) {
	body := []byte(`{"model":"claude-sonnet-4-5","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	got, stream, err := bedrock.TranslateBody(nil, body, bedrock.Betas([]string{"interleaved-thinking-2025-05-14, context-1m-2025-08-07", "x"}))
	if err != nil || !stream {
		t.Fatalf("stream %v err %v", stream, err)
	}
	want := `{"anthropic_version":"bedrock-2023-05-31","anthropic_beta":["interleaved-thinking-2025-05-14","context-1m-2025-08-07","x"],"max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	got, stream, err = bedrock.TranslateBody(nil, []byte(`{"model":"m","stream":false,"max_tokens":1,"messages":[]}`), nil)
	if err != nil || stream || string(got) != `{"anthropic_version":"bedrock-2023-05-31","max_tokens":1,"messages":[]}` {
		t.Fatalf("got %s %v %v", got, stream, err)
	}
	if _, _, err := bedrock.TranslateBody(nil, []byte(`not json`), nil); err == nil {
		t.Fatal("bad body translated")
	}
}

func TestPathEscapesModelID(t *testing.T) {
	p, raw := bedrock.Path("us.anthropic.claude-sonnet-4-5-20250929-v1:0", true)
	if p != "/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/invoke-with-response-stream" ||
		raw != "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream" {
		t.Fatalf("%s %s", p, raw)
	}
	_, raw = bedrock.Path("arn:aws:bedrock:us-east-1:123:inference-profile/x", false)
	if raw != "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123%3Ainference-profile%2Fx/invoke" {
		t.Fatal(raw)
	}
}

// signedRequest builds a request as the relay sends it to srv.
func signedRequest(t *testing.T, srv *httptest.Server, sg *bedrock.Signer, model string, body []byte, stream bool) *http.Request {
	t.Helper()
	tb, _, err := bedrock.TranslateBody(nil, body, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, raw := bedrock.Path(model, stream)
	r, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(tb))
	r.URL.Path, r.URL.RawPath = p, raw
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("X-Forwarded-For", "10.0.0.1") // added after signing by a proxy: not signed
	if err := sg.Sign(r, strings.TrimPrefix(srv.URL, "http://"), tb); err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Via", "1.1 Caddy")
	return r
}

func newMock(t *testing.T, cfg mockbedrock.Config) (*mockbedrock.Server, *httptest.Server) {
	cfg.Region = region
	if cfg.Credentials == nil {
		cfg.Credentials = map[string]string{akid: secret}
	}
	m := mockbedrock.New(cfg)
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	return m, srv
}

const msgBody = `{"model":"claude-sonnet-4-5","max_tokens":50,"messages":[{"role":"user","content":"hello there"}]}`

func TestSignatureVerifiedByMock(t *testing.T) {
	m, srv := newMock(t, mockbedrock.Config{SessionTokens: map[string]string{akid: "tok"}})
	sg := bedrock.NewSigner(region, bedrock.Credentials{AccessKeyID: akid, SecretAccessKey: secret, SessionToken: "tok"})
	resp, err := http.DefaultClient.Do(signedRequest(t, srv, sg, "anthropic.claude-sonnet-4-5-20250929-v1:0", []byte(msgBody), false))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if !strings.Contains(string(b), `"usage"`) {
		t.Fatalf("no message: %s", b)
	}
	if rec := m.Records(); len(rec) != 1 || !rec[0].Verified || rec[0].ModelID != "anthropic.claude-sonnet-4-5-20250929-v1:0" {
		t.Fatalf("records %+v", rec)
	}

	// Wrong secret, tampered body, wrong region, stale clock: all refused.
	cases := map[string]func(r *http.Request){
		"tampered body": func(r *http.Request) {
			r.Body = io.NopCloser(strings.NewReader(`{"anthropic_version":"bedrock-2023-05-31","max_tokens":99,"messages":[]}`))
			r.ContentLength = -1
		},
		"changed path": func(r *http.Request) { r.URL.Path, r.URL.RawPath = "/model/other/invoke", "" },
		"changed host": func(r *http.Request) { r.Host = "bedrock-runtime.us-east-1.amazonaws.com" },
	}
	for name, mutate := range cases {
		r := signedRequest(t, srv, sg, "anthropic.claude-sonnet-4-5-20250929-v1:0", []byte(msgBody), false)
		mutate(r)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.HasPrefix(resp.Header.Get("X-Amzn-Errortype"), "InvalidSignatureException") {
			t.Errorf("%s: status %d %s", name, resp.StatusCode, resp.Header.Get("X-Amzn-Errortype"))
		}
	}
	for name, s := range map[string]*bedrock.Signer{
		"wrong secret": bedrock.NewSigner(region, bedrock.Credentials{AccessKeyID: akid, SecretAccessKey: "nope", SessionToken: "tok"}),
		"wrong region": bedrock.NewSigner("eu-west-1", bedrock.Credentials{AccessKeyID: akid, SecretAccessKey: secret, SessionToken: "tok"}),
		"no token":     bedrock.NewSigner(region, bedrock.Credentials{AccessKeyID: akid, SecretAccessKey: secret}),
		"stale":        {Region: region, Creds: bedrock.Credentials{AccessKeyID: akid, SecretAccessKey: secret, SessionToken: "tok"}, Now: func() time.Time { return time.Now().Add(-time.Hour) }},
	} {
		resp, err := http.DefaultClient.Do(signedRequest(t, srv, s, "m", []byte(msgBody), false))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: status %d", name, resp.StatusCode)
		}
	}
}

// sseEvents splits an SSE body into its events (without pings when
// dropPing), byte for byte.
func sseEvents(t *testing.T, b []byte, dropPing bool) []string {
	var out []string
	for ev := range strings.SplitSeq(string(b), "\n\n") {
		if ev == "" || dropPing && strings.HasPrefix(ev, "event: ping\n") {
			continue
		}
		out = append(out, ev+"\n\n")
	}
	return out
}

func TestStreamEquivalentToAnthropicSSE(t *testing.T) {
	cfg := mockanthropic.Config{Keys: map[string]string{"k": "o"}, StreamDeltas: 7}
	ma := httptest.NewServer(mockanthropic.New(cfg))
	defer ma.Close()
	body := `{"model":"claude-sonnet-4-5-20250929","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"hello there"}]}`
	req, _ := http.NewRequest(http.MethodPost, ma.URL+"/v1/messages", strings.NewReader(body))
	req.Header.Set("X-Api-Key", "k")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := io.ReadAll(resp.Body)
	resp.Body.Close()

	_, srv := newMock(t, mockbedrock.Config{Anthropic: mockanthropic.Config{StreamDeltas: 7}})
	sg := bedrock.NewSigner(region, bedrock.Credentials{AccessKeyID: akid, SecretAccessKey: secret})
	resp, err = http.DefaultClient.Do(signedRequest(t, srv, sg, "anthropic.claude-sonnet-4-5-20250929-v1:0", []byte(body), true))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != bedrock.ContentType {
		t.Fatalf("status %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// Feed the converter in small, uneven pieces: frames split anywhere.
	var s bedrock.Stream
	var got []byte
	br := bufio.NewReader(resp.Body)
	buf := make([]byte, 37)
	for {
		n, err := br.Read(buf)
		got, _ = s.Convert(got, buf[:n])
		if err != nil {
			break
		}
	}
	w, g := sseEvents(t, want, true), sseEvents(t, got, false)
	if len(w) != len(g) {
		t.Fatalf("%d events, want %d:\n%s\nwant\n%s", len(g), len(w), got, want)
	}
	for i := range w {
		// Message ids differ between the two mocks' counters; all else
		// is byte for byte.
		if i == 0 {
			w[i], g[i] = stripID(w[i]), stripID(g[i])
		}
		if w[i] != g[i] {
			t.Errorf("event %d:\ngot  %q\nwant %q", i, g[i], w[i])
		}
	}
}

func stripID(s string) string {
	i := strings.Index(s, `"id":"`)
	if i < 0 {
		return s
	}
	j := strings.IndexByte(s[i+6:], '"')
	return s[:i+6] + s[i+6+j:]
}

func encode(t testing.TB, f func(enc *eventstream.Encoder, w io.Writer) error) []byte {
	var b bytes.Buffer
	if err := f(eventstream.NewEncoder(), &b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestStreamRoundTripByteForByte(t *testing.T) {
	events := []string{
		`{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}`,
		`{"type": "ping"}`,
		`{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`,
		`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"héllo \"x\"\n"}}`,
		`{"type":"content_block_stop","index":0}`,
		`{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":3}}`,
		`{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":12,"outputTokenCount":3,"invocationLatency":5,"firstByteLatency":1}}`,
	}
	wire := encode(t, func(enc *eventstream.Encoder, w io.Writer) error {
		for _, e := range events {
			if err := bedrock.WriteChunk(enc, w, []byte(e), "pad"); err != nil {
				return err
			}
		}
		return nil
	})
	want := ""
	for i, e := range events {
		typ := []string{"message_start", "ping", "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"}[i]
		if typ == "message_stop" {
			e = `{"type":"message_stop"}`
		}
		want += "event: " + typ + "\ndata: " + e + "\n\n"
	}
	for _, step := range []int{1, 5, 64, len(wire)} {
		var s bedrock.Stream
		var got []byte
		for i := 0; i < len(wire); i += step {
			var err error
			got, err = s.Convert(got, wire[i:min(i+step, len(wire))])
			if err != nil {
				t.Fatal(err)
			}
		}
		if string(got) != want {
			t.Fatalf("step %d:\ngot  %q\nwant %q", step, got, want)
		}
	}
}

func TestStreamExceptionBecomesErrorEvent(t *testing.T) {
	for name, want := range map[string]string{
		"modelStreamErrorException":   "api_error",
		"throttlingException":         "rate_limit_error",
		"serviceUnavailableException": "overloaded_error",
		"validationException":         "invalid_request_error",
	} {
		wire := encode(t, func(enc *eventstream.Encoder, w io.Writer) error {
			if err := bedrock.WriteChunk(enc, w, []byte(`{"type":"message_start","message":{}}`), ""); err != nil {
				return err
			}
			return bedrock.WriteException(enc, w, name, "boom")
		})
		var s bedrock.Stream
		got, err := s.Convert(nil, wire)
		if err != nil {
			t.Fatal(err)
		}
		wantSSE := "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n" +
			`event: error` + "\n" + `data: {"type":"error","error":{"type":"` + want + `","message":"Amazon Bedrock: boom"}}` + "\n\n"
		if string(got) != wantSSE {
			t.Errorf("%s:\ngot  %q\nwant %q", name, got, wantSSE)
		}
	}
}

func TestStreamRejectsBadCRC(t *testing.T) {
	wire := encode(t, func(enc *eventstream.Encoder, w io.Writer) error {
		return bedrock.WriteChunk(enc, w, []byte(`{"type":"message_start","message":{}}`), "")
	})
	wire[len(wire)-6] ^= 0xff // payload byte: the message CRC no longer matches
	var s bedrock.Stream
	got, err := s.Convert(nil, wire)
	if !errors.Is(err, bedrock.ErrStream) {
		t.Fatalf("err %v", err)
	}
	if !strings.HasPrefix(string(got), "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\"") {
		t.Fatalf("got %q", got)
	}
	if _, err := s.Convert(nil, wire); err == nil {
		t.Fatal("a broken stream converted more")
	}
	// A length field beyond any real message is corruption, not a wait.
	var s2 bedrock.Stream
	if _, err := s2.Convert(nil, []byte{0x7f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}); err == nil {
		t.Fatal("absurd length accepted")
	}
}

func TestMapError(t *testing.T) {
	for _, c := range []struct {
		status     int
		name, typ  string
		wantStatus int
	}{
		{429, "ThrottlingException", "rate_limit_error", 429},
		{400, "ValidationException", "invalid_request_error", 400},
		{403, "AccessDeniedException", "permission_error", 403},
		{503, "ServiceUnavailableException", "overloaded_error", 529},
		{403, "UnrecognizedClientException", "authentication_error", 401},
		{403, "InvalidSignatureException", "authentication_error", 401},
		{404, "ResourceNotFoundException", "not_found_error", 404},
		{500, "InternalServerException", "api_error", 500},
		{424, "ModelErrorException", "api_error", 500},
		{503, "", "overloaded_error", 529},
		{429, "", "rate_limit_error", 429},
	} {
		h := http.Header{}
		if c.name != "" {
			h.Set("X-Amzn-ErrorType", c.name+":http://internal.amazon.com/coral/com.amazon.bedrock/")
		}
		status, body := bedrock.MapError(c.status, h, []byte(`{"message":"the reason"}`))
		var e struct {
			Type  string `json:"type"`
			Error struct{ Type, Message string }
		}
		if err := json.Unmarshal(body, &e); err != nil {
			t.Fatal(err)
		}
		if status != c.wantStatus || e.Type != "error" || e.Error.Type != c.typ || e.Error.Message != "Amazon Bedrock: the reason" {
			t.Errorf("%d %s: got %d %s", c.status, c.name, status, body)
		}
	}
	// __type in the body when the header is missing.
	status, _ := bedrock.MapError(400, http.Header{}, []byte(`{"__type":"com.amazon.bedrock#ThrottlingException","message":"x"}`))
	if status != 429 {
		t.Fatalf("__type: %d", status)
	}
}

func TestMockThrottles(t *testing.T) {
	m, srv := newMock(t, mockbedrock.Config{})
	m.Throttle(1)
	sg := bedrock.NewSigner(region, bedrock.Credentials{AccessKeyID: akid, SecretAccessKey: secret})
	resp, err := http.DefaultClient.Do(signedRequest(t, srv, sg, "m", []byte(msgBody), false))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	status, mapped := bedrock.MapError(resp.StatusCode, resp.Header, b)
	if status != 429 || !strings.Contains(string(mapped), "rate_limit_error") {
		t.Fatalf("%d %s", status, mapped)
	}
	_ = context.Background
}
