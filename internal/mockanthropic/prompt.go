package mockanthropic

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// BytesPerToken is the divisor of the token-counting rule: a prompt of B bytes
// (as measured by the rule in the package documentation) is ceil(B/4) tokens.
const BytesPerToken = 4

// maxBreakpoints is the real API's limit on blocks carrying cache_control.
const maxBreakpoints = 4

// cacheLookback is how many block boundaries before a breakpoint the real API
// checks for an earlier cache entry, which is what makes a growing conversation
// read the prefix its previous turn wrote.
const cacheLookback = 20

// request is the part of a Messages API request the mock acts on.
type request struct {
	model     string
	maxTokens int64
	stream    bool
	// segments are the prompt's blocks in the order the API assembles them
	// (tools, system, messages), each with cumulative size and hash.
	segments []segment
	// breakpoints are indices into segments of blocks carrying cache_control.
	breakpoints []int
}

// segment is one prompt block, with totals over the prompt up to and including it.
type segment struct {
	cumBytes int64
	cumHash  [sha256.Size]byte // identifies model + every block up to here
}

// totalTokens is the input token count of the whole prompt.
func (q *request) totalTokens() int64 {
	if len(q.segments) == 0 {
		return 0
	}
	return q.prefixTokens(len(q.segments) - 1)
}

// prefixTokens is the token count of the prompt up to and including segment i.
func (q *request) prefixTokens(i int) int64 {
	if i < 0 {
		return 0
	}
	return ceilDiv(q.segments[i].cumBytes, BytesPerToken)
}

// badRequest is a client error reported as 400 invalid_request_error.
type badRequest struct{ msg string }

func (e *badRequest) Error() string { return e.msg }

func badf(format string, a ...any) error { return &badRequest{fmt.Sprintf(format, a...)} }

// wireRequest mirrors the request fields the mock reads; the rest are ignored.
type wireRequest struct {
	Model     *string         `json:"model"`
	MaxTokens *int64          `json:"max_tokens"`
	Stream    *bool           `json:"stream"`
	System    json.RawMessage `json:"system"`
	Messages  json.RawMessage `json:"messages"`
	Tools     json.RawMessage `json:"tools"`
}

// parseRequest validates body like the real API does for the fields the mock
// uses. needMaxTokens is false for count_tokens, which takes no max_tokens.
func parseRequest(body []byte, needMaxTokens bool) (*request, error) {
	var w wireRequest
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, badf("invalid request body: %v", err)
	}
	q := &request{}
	if w.Model == nil || *w.Model == "" {
		return nil, badf("model: Field required")
	}
	q.model = *w.Model
	if w.MaxTokens != nil {
		if *w.MaxTokens < 1 {
			return nil, badf("max_tokens: Input should be greater than or equal to 1")
		}
		q.maxTokens = *w.MaxTokens
	} else if needMaxTokens {
		return nil, badf("max_tokens: Field required")
	}
	if w.Stream != nil {
		q.stream = *w.Stream
	}

	p := newPromptBuilder(q)
	if isPresent(w.Tools) {
		var tools []json.RawMessage
		if err := json.Unmarshal(w.Tools, &tools); err != nil {
			return nil, badf("tools: Input should be a valid list")
		}
		for i, t := range tools {
			if err := p.addBlock('t', t); err != nil {
				return nil, badf("tools.%d: %v", i, err)
			}
		}
	}
	if isPresent(w.System) {
		if err := p.addContent('s', w.System); err != nil {
			return nil, badf("system: %v", err)
		}
	}
	if !isPresent(w.Messages) {
		return nil, badf("messages: Field required")
	}
	var msgs []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(w.Messages, &msgs); err != nil {
		return nil, badf("messages: Input should be a valid list")
	}
	for i, m := range msgs {
		var tag byte
		switch m.Role {
		case "user":
			tag = 'u'
		case "assistant":
			tag = 'a'
		case "system":
			// Claude Code (2.1.x, with its beta headers) sends mid-conversation
			// system messages; the real API takes them, so the mock does too.
			tag = 's'
		default:
			return nil, badf("messages.%d.role: Input should be 'user', 'assistant' or 'system'", i)
		}
		if !isPresent(m.Content) {
			return nil, badf("messages.%d.content: Field required", i)
		}
		if err := p.addContent(tag, m.Content); err != nil {
			return nil, badf("messages.%d.content: %v", i, err)
		}
	}
	if n := len(q.breakpoints); n > maxBreakpoints {
		return nil, badf("A maximum of %d blocks with cache_control may be provided. Found %d.", maxBreakpoints, n)
	}
	return q, nil
}

func isPresent(raw json.RawMessage) bool {
	return len(raw) > 0 && !bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}

// promptBuilder appends segments, keeping a running byte count and hash.
type promptBuilder struct {
	q     *request
	bytes int64
	h     interface {
		Write([]byte) (int, error)
		Sum([]byte) []byte
	}
}

func newPromptBuilder(q *request) *promptBuilder {
	h := sha256.New()
	// The model is part of every cache key: prefixes are cached per model.
	h.Write([]byte(q.model))
	h.Write([]byte{0})
	return &promptBuilder{q: q, h: h}
}

// addContent adds a string (one segment) or an array of blocks (one each).
func (p *promptBuilder) addContent(tag byte, raw json.RawMessage) error {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) > 0 && raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return errors.New("invalid string")
		}
		enc, err := encodeCompact(s)
		if err != nil {
			return err
		}
		p.add(tag, enc, false)
		return nil
	case len(raw) > 0 && raw[0] == '[':
		var blocks []json.RawMessage
		if err := json.Unmarshal(raw, &blocks); err != nil {
			return errors.New("input should be a valid list")
		}
		for i, b := range blocks {
			if err := p.addBlock(tag, b); err != nil {
				return fmt.Errorf("%d: %v", i, err)
			}
		}
		return nil
	default:
		return errors.New("input should be a valid string or list")
	}
}

// addBlock adds one JSON object block. Its bytes are its compact encoding with
// top-level keys sorted and cache_control removed, so that moving a cache
// breakpoint changes neither token counts nor the hash of the content.
func (p *promptBuilder) addBlock(tag byte, raw json.RawMessage) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return errors.New("input should be a valid dictionary")
	}
	cc, marked := m["cache_control"]
	marked = marked && isPresent(cc)
	delete(m, "cache_control")
	enc, err := encodeCompact(m)
	if err != nil {
		return err
	}
	p.add(tag, enc, marked)
	return nil
}

func (p *promptBuilder) add(tag byte, enc []byte, marked bool) {
	var hdr [9]byte
	hdr[0] = tag // a role change alone must change the hash
	binary.BigEndian.PutUint64(hdr[1:], uint64(len(enc)))
	p.h.Write(hdr[:])
	p.h.Write(enc)
	p.bytes += int64(len(enc))
	var sum [sha256.Size]byte
	copy(sum[:], p.h.Sum(nil))
	p.q.segments = append(p.q.segments, segment{cumBytes: p.bytes, cumHash: sum})
	if marked {
		p.q.breakpoints = append(p.q.breakpoints, len(p.q.segments)-1)
	}
}

// encodeCompact is json.Marshal without HTML escaping, so that "<" counts as
// one byte as it does in the request, and without the trailing newline.
func encodeCompact(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("cannot encode block: %v", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// modelClass names the family whose limits a model shares: the real API keeps
// separate limits for the Opus, Sonnet and Haiku families.
func modelClass(model string) string {
	m := strings.ToLower(model)
	for _, c := range []string{"opus", "sonnet", "haiku"} {
		if strings.Contains(m, c) {
			return c
		}
	}
	return m
}
