package mockanthropic

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// usage is the API's usage object.
type usage struct {
	InputTokens              int64 `json:"input_tokens"`
	CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
	OutputTokens             int64 `json:"output_tokens"`
}

// message is the API's message object, fields in upstream order.
type message struct {
	ID           string         `json:"id"`
	Type         string         `json:"type"`
	Role         string         `json:"role"`
	Model        string         `json:"model"`
	Content      []contentBlock `json:"content"`
	StopReason   *string        `json:"stop_reason"`
	StopSequence *string        `json:"stop_sequence"`
	Usage        usage          `json:"usage"`
}

type contentBlock struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// Event payloads, fields in upstream order.
type (
	messageStart struct {
		Type    string  `json:"type"`
		Message message `json:"message"`
	}
	blockStart struct {
		Type         string       `json:"type"`
		Index        int          `json:"index"`
		ContentBlock contentBlock `json:"content_block"`
	}
	blockDelta struct {
		Type  string `json:"type"`
		Index int    `json:"index"`
		Delta struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"delta"`
	}
	blockStop struct {
		Type  string `json:"type"`
		Index int    `json:"index"`
	}
	messageDelta struct {
		Type  string `json:"type"`
		Delta struct {
			StopReason   string  `json:"stop_reason"`
			StopSequence *string `json:"stop_sequence"`
		} `json:"delta"`
		Usage struct {
			OutputTokens int64 `json:"output_tokens"`
		} `json:"usage"`
	}
	typeOnly struct {
		Type string `json:"type"`
	}
)

// stream answers an admitted request with the upstream SSE event sequence:
// message_start, content_block_start, ping, content_block_delta…,
// content_block_stop, message_delta, message_stop. Output tokens are charged
// as events go out: 1 with message_start (as its usage says), the rest with
// the deltas, so a stream cut short is charged only what was generated for it.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, u usage, total int64, stop string, fault StreamFault, out *outputMeter) {
	rec := out.rec
	h := w.Header()
	h.Set("content-type", "text/event-stream; charset=utf-8")
	h.Set("cache-control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	send := func(event string, v any) bool {
		data, err := json.Marshal(v)
		if err == nil {
			_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data)
		}
		if err == nil {
			err = rc.Flush()
		}
		if err != nil {
			rec.Aborted = true
		}
		return err == nil
	}

	start := messageStart{Type: "message_start", Message: message{
		ID: s.newID("msg_"), Type: "message", Role: "assistant", Model: out.model,
		Content: []contentBlock{}, Usage: u,
	}}
	start.Message.Usage.OutputTokens = 1
	// Charge before sending, so that a client that has read an event sees
	// its tokens in Stats.
	produced := int64(1)
	out.charge(produced)
	if !send("message_start", start) {
		return
	}
	if !s.wait(r) {
		rec.Aborted = true
		return
	}
	switch fault {
	case StreamCut, StreamReset:
		cut(rc, fault == StreamReset)
		return
	case StreamErrorEvent:
		rec.ErrorType = "overloaded_error"
		var e apiError
		e.Type, e.Error.Type, e.Error.Message = "error", "overloaded_error", "Overloaded"
		send("error", e)
		return
	}

	if !send("content_block_start", blockStart{Type: "content_block_start", ContentBlock: contentBlock{Type: "text"}}) ||
		!send("ping", typeOnly{Type: "ping"}) {
		return
	}
	deltas := min(int64(s.cfg.StreamDeltas), total)
	var sent int64
	for i := range deltas {
		if !s.pause(r) {
			rec.Aborted = true
			return
		}
		// Spread total over the deltas, the first ones one token longer.
		n := total / deltas
		if i < total%deltas {
			n++
		}
		d := blockDelta{Type: "content_block_delta"}
		d.Delta.Type, d.Delta.Text = "text_delta", words(sent, n)
		if sent > 0 {
			d.Delta.Text = " " + d.Delta.Text
		}
		sent += n
		if sent > produced {
			out.charge(sent - produced)
			produced = sent
		}
		if !send("content_block_delta", d) {
			return
		}
	}
	md := messageDelta{Type: "message_delta"}
	md.Delta.StopReason = stop
	md.Usage.OutputTokens = total
	_ = send("content_block_stop", blockStop{Type: "content_block_stop"}) &&
		send("message_delta", md) &&
		send("message_stop", typeOnly{Type: "message_stop"})
}

// pause waits Config.DeltaDelay on a real timer; false if the client left.
func (s *Server) pause(r *http.Request) bool {
	if s.cfg.DeltaDelay <= 0 {
		return true
	}
	t := time.NewTimer(s.cfg.DeltaDelay)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// cut drops the connection under a stream: closed (the client sees the body
// end without its final chunk) or, with reset, aborted with a TCP RST. Over
// HTTP/2 there is no connection to hijack; returning from the handler then
// ends the stream early instead.
func cut(rc *http.ResponseController, reset bool) {
	conn, _, err := rc.Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok && reset {
		_ = tc.SetLinger(0) // close now sends RST instead of FIN
	}
	_ = conn.Close()
}

// vocabulary is the mock's output language; each word is one token.
var vocabulary = strings.Fields("the relay spreads requests over keys within each organization's limits so no caller waits longer than it must")

// words returns n words of output starting at word offset.
func words(offset, n int64) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(vocabulary[(offset+i)%int64(len(vocabulary))])
	}
	return b.String()
}
