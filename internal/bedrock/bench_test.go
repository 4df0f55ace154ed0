package bedrock_test

import (
	"bytes"
	"io"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"

	"github.com/cc-relay/caddy-cc-relay/internal/bedrock"
)

// benchEvent is a typical streamed event: a text delta of a few words.
const benchEvent = `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" spreads requests over keys within each organization's limits"}}`

// BenchmarkStreamConvert converts one event-stream chunk to one SSE event
// per op, as a long stream does, buffers reused from event to event.
func BenchmarkStreamConvert(b *testing.B) {
	frame := encode(b, func(enc *eventstream.Encoder, w io.Writer) error {
		return bedrock.WriteChunk(enc, w, []byte(benchEvent), "abcdefg")
	})
	var s bedrock.Stream
	var out []byte
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		out, _ = s.Convert(out[:0], frame)
	}
	if !bytes.HasPrefix(out, []byte("event: content_block_delta\ndata: ")) {
		b.Fatalf("%q", out)
	}
}

// BenchmarkStreamConvertSplit feeds each frame in two writes, as a TCP
// read may cut it.
func BenchmarkStreamConvertSplit(b *testing.B) {
	frame := encode(b, func(enc *eventstream.Encoder, w io.Writer) error {
		return bedrock.WriteChunk(enc, w, []byte(benchEvent), "abcdefg")
	})
	var s bedrock.Stream
	var out []byte
	half := len(frame) / 2
	b.ReportAllocs()
	for b.Loop() {
		out, _ = s.Convert(out[:0], frame[:half])
		out, _ = s.Convert(out, frame[half:])
	}
}
