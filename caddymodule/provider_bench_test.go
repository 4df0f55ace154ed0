package caddymodule

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/cc-relay/caddy-cc-relay/internal/bedrock"
)

// benchSSE is a short streamed answer: the events of the Anthropic API.
var benchSSE = []string{
	`{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":1200,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}`,
	`{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`,
	`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"the relay spreads"}}`,
	`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" requests over keys"}}`,
	`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" within each organization's limits"}}`,
	`{"type":"content_block_stop","index":0}`,
	`{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":12}}`,
	`{"type":"message_stop"}`,
}

// BenchmarkProviderAttempt is one streamed request through the handler on
// an Anthropic key and on a Bedrock key, side by side: the Bedrock one
// adds the body translation, the SigV4 signature and the event-stream to
// SSE conversion of the answer. next stands in for reverse_proxy with a
// canned upstream answer, so only the relay's work is measured.
func BenchmarkProviderAttempt(b *testing.B) {
	var sse, es bytes.Buffer
	enc := eventstream.NewEncoder()
	for _, ev := range benchSSE {
		sse.WriteString("event: x\ndata: " + ev + "\n\n")
		_ = bedrock.WriteChunk(enc, &es, []byte(ev), "abc")
	}
	body := []byte(ccBody(legacyUserID(sessionUUID(1)), strings.Repeat("please look at this code ", 150), true))
	for _, c := range []struct {
		name string
		h    *Handler
		ct   string
		resp []byte
	}{
		{"anthropic", &Handler{Pool: "bench_attempt_a", DisableClientAuth: true, Keys: []Key{{Key: "sk-bench-a"}}}, "text/event-stream", sse.Bytes()},
		{"bedrock", &Handler{Pool: "bench_attempt_b", DisableClientAuth: true, Bedrock: []BedrockKey{{
			Name: "aws", Region: "us-east-1", AccessKeyID: "AKIABENCH", SecretAccessKey: "bench-secret", Endpoint: "https://127.0.0.1:1",
		}}}, bedrock.ContentType, es.Bytes()},
	} {
		b.Run(c.name, func(b *testing.B) {
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			if err := c.h.Provision(ctx); err != nil {
				b.Fatal(err)
			}
			defer c.h.Cleanup()
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				_, _ = io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", c.ct)
				w.WriteHeader(http.StatusOK)
				_, _ = w.Write(c.resp)
				http.NewResponseController(w).Flush()
				return nil
			})
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/v1/messages?beta=true", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Anthropic-Beta", "interleaved-thinking-2025-05-14")
				rec := httptest.NewRecorder()
				if err := c.h.ServeHTTP(rec, req, next); err != nil || rec.Code != 200 {
					b.Fatalf("%v %d %s", err, rec.Code, rec.Body)
				}
			}
		})
	}
}
