package mockbedrock

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"

	"github.com/cc-relay/caddy-cc-relay/internal/bedrock"
	"github.com/cc-relay/caddy-cc-relay/internal/jsonedit"
)

// translator receives the inner Anthropic mock's answer and sends it on
// the way Bedrock would.
type translator struct {
	w      http.ResponseWriter
	stream bool
	enc    *eventstream.Encoder
	fault  *injected

	hdr     http.Header
	status  int
	errName string
	sse     bool
	buf     bytes.Buffer // an error or JSON body; or SSE not yet complete
	events  int
	input   int64
	output  int64
	done    bool
}

func (t *translator) Header() http.Header {
	if t.hdr == nil {
		t.hdr = http.Header{}
	}
	return t.hdr
}

func (t *translator) WriteHeader(code int) {
	if t.status != 0 {
		return
	}
	t.status = code
	if code == http.StatusOK && t.stream {
		t.sse = true
		h := t.w.Header()
		h.Set("Content-Type", bedrock.ContentType)
		h.Set("X-Amzn-Bedrock-Content-Type", "application/json")
		t.w.WriteHeader(http.StatusOK)
	}
}

func (t *translator) Write(p []byte) (int, error) {
	if t.status == 0 {
		t.WriteHeader(http.StatusOK)
	}
	t.buf.Write(p)
	if t.sse {
		t.drain()
	}
	return len(p), nil
}

func (t *translator) Flush() {
	if t.sse {
		_ = http.NewResponseController(t.w).Flush()
	}
}

// drain sends every complete SSE event buffered as a chunk.
func (t *translator) drain() {
	for !t.done {
		b := t.buf.Bytes()
		i := bytes.Index(b, []byte("\n\n"))
		if i < 0 {
			return
		}
		block := b[:i]
		var data []byte
		for line := range bytes.SplitSeq(block, []byte("\n")) {
			if d, ok := bytes.CutPrefix(line, []byte("data: ")); ok {
				data = append([]byte(nil), d...)
			}
		}
		t.buf.Next(i + 2)
		if data != nil {
			t.event(data)
		}
	}
}

func (t *translator) event(data []byte) {
	var ev struct {
		Type    string `json:"type"`
		Message struct {
			Usage struct {
				InputTokens int64 `json:"input_tokens"`
			} `json:"usage"`
		} `json:"message"`
		Usage struct {
			OutputTokens int64 `json:"output_tokens"`
		} `json:"usage"`
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.Unmarshal(data, &ev)
	switch ev.Type {
	case "ping":
		return // Bedrock sends none
	case "error":
		name := "modelStreamErrorException"
		if ev.Error.Type == "overloaded_error" {
			name = "serviceUnavailableException"
		}
		_ = bedrock.WriteException(t.enc, t.w, name, ev.Error.Message)
		t.done = true
		return
	case "message_start":
		t.input = ev.Message.Usage.InputTokens
	case "message_delta":
		t.output = ev.Usage.OutputTokens
	case "message_stop":
		metrics := `"amazon-bedrock-invocationMetrics":{"inputTokenCount":` + strconv.FormatInt(t.input, 10) +
			`,"outputTokenCount":` + strconv.FormatInt(t.output, 10) + `,"invocationLatency":12,"firstByteLatency":3}`
		data, _ = jsonedit.Rewrite(nil, data, nil, []byte(`"type":"message_stop"`), []byte(metrics))
	}
	_ = bedrock.WriteChunk(t.enc, t.w, data, "abcdefghij"[:1+t.events%10])
	t.events++
	if t.fault != nil && t.events == 1 {
		_ = bedrock.WriteException(t.enc, t.w, t.fault.name, t.fault.msg)
		t.done = true
	}
}

// finish answers a JSON message or an error once the inner mock is done.
func (t *translator) finish() {
	if t.sse {
		return
	}
	body := t.buf.Bytes()
	if t.status == http.StatusOK {
		h := t.w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(body)))
		t.w.WriteHeader(http.StatusOK)
		_, _ = t.w.Write(body)
		return
	}
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	status, name, msg := t.status, "InternalServerException", e.Error.Message
	switch t.status {
	case http.StatusTooManyRequests:
		name, msg = "ThrottlingException", "Too many requests, please wait before trying again."
	case 529:
		status, name, msg = http.StatusServiceUnavailable, "ServiceUnavailableException", "Bedrock is unable to process your request."
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		status, name = http.StatusBadRequest, "ValidationException"
	}
	t.errName = name
	writeError(t.w, status, name, msg)
}
