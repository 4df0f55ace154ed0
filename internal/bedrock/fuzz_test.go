package bedrock_test

import (
	"io"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"

	"github.com/cc-relay/caddy-cc-relay/internal/bedrock"
)

// Whatever the upstream sends, the converter neither panics nor holds
// more than one message's worth of bytes.
func FuzzStreamConvert(f *testing.F) {
	good := encode(f, func(enc *eventstream.Encoder, w io.Writer) error {
		if err := bedrock.WriteChunk(enc, w, []byte(`{"type":"message_start","message":{}}`), "p"); err != nil {
			return err
		}
		return bedrock.WriteException(enc, w, "throttlingException", "slow")
	})
	f.Add(good, 7)
	f.Add(good[:20], 3)
	f.Add([]byte{0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 1)
	f.Add([]byte("event: message_start\ndata: {}\n\n"), 5)
	f.Fuzz(func(t *testing.T, wire []byte, step int) {
		if step <= 0 || step > 1<<16 {
			step = 1 + len(wire)
		}
		var s bedrock.Stream
		var out []byte
		for i := 0; i < len(wire); i += step {
			out, _ = s.Convert(out[:0], wire[i:min(i+step, len(wire))])
		}
	})
}
