package bedrock

import (
	"encoding/base64"
	"io"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"

	"github.com/cc-relay/caddy-cc-relay/internal/jsonedit"
)

// WriteChunk writes one InvokeModelWithResponseStream chunk event carrying
// the Anthropic event JSON ev, framed (with CRCs) by the SDK's encoder, as
// Bedrock sends it: {"bytes":"<base64>","p":"<padding>"}. Mock upstreams
// and tests use it.
func WriteChunk(enc *eventstream.Encoder, w io.Writer, ev []byte, padding string) error {
	p := make([]byte, 0, base64.StdEncoding.EncodedLen(len(ev))+len(padding)+20)
	p = append(p, `{"bytes":"`...)
	p = base64.StdEncoding.AppendEncode(p, ev)
	p = append(p, `","p":"`...)
	p = append(p, padding...)
	p = append(p, `"}`...)
	var m eventstream.Message
	m.Headers.Set(":event-type", eventstream.StringValue("chunk"))
	m.Headers.Set(":content-type", eventstream.StringValue("application/json"))
	m.Headers.Set(":message-type", eventstream.StringValue("event"))
	m.Payload = p
	return enc.Encode(w, m)
}

// WriteException writes an exception message, as Bedrock ends a stream
// that failed: exceptionType is e.g. "modelStreamErrorException".
func WriteException(enc *eventstream.Encoder, w io.Writer, exceptionType, message string) error {
	var m eventstream.Message
	m.Headers.Set(":exception-type", eventstream.StringValue(exceptionType))
	m.Headers.Set(":content-type", eventstream.StringValue("application/json"))
	m.Headers.Set(":message-type", eventstream.StringValue("exception"))
	m.Payload = jsonedit.AppendString([]byte(`{"message":`), message)
	m.Payload = append(m.Payload, '}')
	return enc.Encode(w, m)
}
