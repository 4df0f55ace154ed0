package bedrock

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"

	"github.com/cc-relay/caddy-cc-relay/internal/anthropic"
	"github.com/cc-relay/caddy-cc-relay/internal/jsonedit"
)

// ContentType is the media type of an InvokeModelWithResponseStream answer.
const ContentType = "application/vnd.amazon.eventstream"

// maxMessage bounds one event-stream message: the format allows 16 MiB of
// payload and 128 KiB of headers; a length beyond that is corruption, not
// a message to wait for.
const maxMessage = 16<<20 + 128<<10 + 16

// ErrStream is returned once the upstream's event stream is broken.
var ErrStream = errors.New("bedrock: malformed event stream")

// Stream turns an InvokeModelWithResponseStream answer, fed in pieces as
// it arrives, into the SSE events the Anthropic API sends for the same
// request: each chunk's decoded JSON as "event: <type>\ndata: <json>\n\n",
// the event name taken from the JSON's type. Bedrock's own additions
// (amazon-bedrock-invocationMetrics) are removed. An exception message
// becomes an SSE error event in Anthropic's shape. Frames are decoded and
// their CRCs checked by the SDK's eventstream decoder; buffers are reused
// from event to event.
type Stream struct {
	pending []byte // bytes of an incomplete message
	payload []byte // the decoder's payload buffer
	raw     []byte // a chunk's decoded bytes
	rd      bytes.Reader
	dec     *eventstream.Decoder
	broken  bool
}

// Convert appends to dst the SSE events of every message that p completes.
// A message split across calls is kept until its last byte arrives. After
// a malformed message it appends one SSE error event and returns ErrStream,
// and converts nothing more.
func (s *Stream) Convert(dst, p []byte) ([]byte, error) {
	if s.broken {
		return dst, ErrStream
	}
	if s.dec == nil {
		s.dec = eventstream.NewDecoder()
	}
	buf := p
	if len(s.pending) > 0 {
		s.pending = append(s.pending, p...)
		buf = s.pending
	}
	for {
		if len(buf) < 12 {
			break
		}
		n := binary.BigEndian.Uint32(buf)
		if n < 16 || n > maxMessage {
			return s.fail(dst)
		}
		if uint32(len(buf)) < n {
			break
		}
		var err error
		dst, err = s.message(dst, buf[:n])
		if err != nil {
			return s.fail(dst)
		}
		buf = buf[n:]
	}
	// Keep the incomplete tail for the next call; copying down keeps the
	// buffer from growing with the stream.
	s.pending = append(s.pending[:0], buf...)
	return dst, nil
}

func (s *Stream) fail(dst []byte) ([]byte, error) {
	s.broken = true
	s.pending = nil
	return anthropic.AppendErrorEvent(dst, "api_error", "Amazon Bedrock sent a malformed event stream"), ErrStream
}

// message converts one whole event-stream message.
func (s *Stream) message(dst, frame []byte) ([]byte, error) {
	s.rd.Reset(frame)
	m, err := s.dec.Decode(&s.rd, s.payload[:0])
	if err != nil {
		return dst, err
	}
	if cap(m.Payload) > cap(s.payload) {
		s.payload = m.Payload[:0]
	}
	switch headerString(m.Headers, ":message-type") {
	case "event":
		if headerString(m.Headers, ":event-type") != "chunk" {
			return dst, nil // not an event Anthropic's API has
		}
		return s.chunk(dst, m.Payload)
	case "exception":
		return appendException(dst, headerString(m.Headers, ":exception-type"), m.Payload), nil
	case "error":
		return appendException(dst, headerString(m.Headers, ":error-code"), []byte(headerString(m.Headers, ":error-message"))), nil
	}
	return dst, nil
}

// chunk converts a chunk event: {"bytes":"<base64 of the Anthropic event>"}.
func (s *Stream) chunk(dst, payload []byte) ([]byte, error) {
	enc, ok := chunkBytes(payload)
	if !ok {
		var c struct {
			Bytes []byte `json:"bytes"`
		}
		if err := json.Unmarshal(payload, &c); err != nil {
			return dst, err
		}
		s.raw = append(s.raw[:0], c.Bytes...)
	} else {
		n := base64.StdEncoding.DecodedLen(len(enc))
		if cap(s.raw) < n {
			s.raw = make([]byte, n, n+n/2)
		}
		s.raw = s.raw[:n]
		m, err := base64.StdEncoding.Decode(s.raw, enc)
		if err != nil {
			return dst, err
		}
		s.raw = s.raw[:m]
	}
	ev := s.raw
	typ, ok := eventType(ev)
	if !ok {
		return dst, fmt.Errorf("bedrock: chunk without a type")
	}
	if bytes.Contains(ev, invocationMetrics) {
		var err error
		ev, err = jsonedit.Rewrite(nil, ev, []string{"amazon-bedrock-invocationMetrics"})
		if err != nil {
			return dst, err
		}
	}
	dst = append(dst, "event: "...)
	dst = append(dst, typ...)
	dst = append(dst, "\ndata: "...)
	dst = append(dst, ev...)
	return append(dst, '\n', '\n'), nil
}

var invocationMetrics = []byte(`"amazon-bedrock-invocationMetrics"`)

// chunkBytes finds the base64 text of {"bytes":"..."} without decoding the
// JSON: base64 has no characters a JSON string would escape.
func chunkBytes(p []byte) ([]byte, bool) {
	const key = `"bytes":"`
	i := bytes.Index(p, []byte(key))
	if i < 0 {
		return nil, false
	}
	rest := p[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 || bytes.IndexByte(rest[:j], '\\') >= 0 {
		return nil, false
	}
	return rest[:j], true
}

// eventType reads the Anthropic event's top-level "type".
func eventType(ev []byte) ([]byte, bool) {
	const prefix = `{"type":"`
	if bytes.HasPrefix(ev, []byte(prefix)) {
		rest := ev[len(prefix):]
		if j := bytes.IndexByte(rest, '"'); j > 0 && bytes.IndexByte(rest[:j], '\\') < 0 {
			return rest[:j], true
		}
	}
	v, ok := jsonedit.Get(ev, "type")
	if !ok {
		return nil, false
	}
	var t string
	if json.Unmarshal(v, &t) != nil || t == "" || bytes.ContainsAny([]byte(t), "\r\n") {
		return nil, false
	}
	return []byte(t), true
}

func headerString(hs eventstream.Headers, name string) string {
	for _, h := range hs {
		if h.Name == name {
			// A type assertion, not Get: Get boxes the string.
			if v, ok := h.Value.(eventstream.StringValue); ok {
				return string(v)
			}
			return h.Value.String()
		}
	}
	return ""
}

// appendException appends the SSE error event for a Bedrock exception sent
// mid-stream.
func appendException(dst []byte, exceptionType string, payload []byte) []byte {
	_, typ := mapException(exceptionType, 0)
	msg := messageOf(payload)
	if msg == "" {
		msg = exceptionType
	}
	return anthropic.AppendErrorEvent(dst, typ, "Amazon Bedrock: "+msg)
}
