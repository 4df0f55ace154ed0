package mockanthropic

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

func streamBody(tokens int) map[string]any {
	b := msg(sonnet, tokens)
	b["stream"] = true
	return b
}

// logged returns a Log hook and a channel that receives each record, so a
// test can wait for the handler to finish without guessing how long.
func logged() (func(Record), chan Record) {
	ch := make(chan Record, 16)
	return func(r Record) { ch <- r }, ch
}

func TestStreamEventSequence(t *testing.T) {
	h := newHarness(t, Config{
		Orgs:         []Org{{ID: "org-a", RPM: 10, ITPM: 10000, OTPM: 10000}},
		Keys:         map[string]string{"sk-a": "org-a"},
		OutputTokens: func([]byte) int64 { return 10 },
		StreamDeltas: 3,
	})
	body := chat(sonnet, []any{block(100, true)}, user(block(10, false)))
	body["stream"] = true
	resp := h.open("/v1/messages", "sk-a", body)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("content-type"), "text/event-stream") {
		t.Fatalf("status %d content-type %q", resp.StatusCode, resp.Header.Get("content-type"))
	}
	if resp.Header.Get("anthropic-ratelimit-requests-remaining") != "9" || resp.Header.Get("anthropic-organization-id") != "org-a" {
		t.Fatalf("stream lacks rate-limit or organization headers: %v", resp.Header)
	}
	evs, err := readEvents(resp.Body)
	if err != nil {
		t.Fatalf("stream ended with %v", err)
	}
	want := "message_start,content_block_start,ping,content_block_delta,content_block_delta,content_block_delta,content_block_stop,message_delta,message_stop"
	if got := names(evs); got != want {
		t.Fatalf("events %s\nwant   %s", got, want)
	}
	for _, ev := range evs {
		var typed struct{ Type string }
		if err := json.Unmarshal(ev.data, &typed); err != nil || typed.Type != ev.name {
			t.Fatalf("event %s: data %s has type %q (%v)", ev.name, ev.data, typed.Type, err)
		}
	}

	var start messageStart
	if err := json.Unmarshal(evs[0].data, &start); err != nil {
		t.Fatal(err)
	}
	if start.Message.Model != sonnet || start.Message.Role != "assistant" || !strings.HasPrefix(start.Message.ID, "msg_") {
		t.Fatalf("message_start message %+v", start.Message)
	}
	wantUsage(t, start.Message.Usage, 10, 100, 0)
	if start.Message.Usage.OutputTokens != 1 {
		t.Fatalf("message_start output_tokens %d, want 1", start.Message.Usage.OutputTokens)
	}

	var text strings.Builder
	for _, ev := range evs[3:6] {
		var d blockDelta
		if err := json.Unmarshal(ev.data, &d); err != nil || d.Delta.Type != "text_delta" {
			t.Fatalf("delta %s: %v", ev.data, err)
		}
		text.WriteString(d.Delta.Text)
	}
	if got := text.String(); got != words(0, 10) || len(strings.Fields(got)) != 10 {
		t.Fatalf("streamed text %q, want 10 words %q", got, words(0, 10))
	}

	var md messageDelta
	if err := json.Unmarshal(evs[7].data, &md); err != nil {
		t.Fatal(err)
	}
	if md.Delta.StopReason != "end_turn" || md.Usage.OutputTokens != 10 {
		t.Fatalf("message_delta %s", evs[7].data)
	}
	if !strings.Contains(string(evs[7].data), `"stop_sequence":null`) {
		t.Fatalf("message_delta without stop_sequence null: %s", evs[7].data)
	}
	if got := h.s.Stats().Keys["sk-a"].OutputTokens; got != 10 {
		t.Fatalf("output tokens charged %d, want 10", got)
	}
}

func TestStreamGateHoldsAfterFirstEvent(t *testing.T) {
	release := make(chan struct{})
	logf, done := logged()
	h := newHarness(t, Config{
		Keys:         map[string]string{"sk-a": "org-a"},
		Gate:         func(*http.Request) <-chan struct{} { return release },
		Log:          logf,
		OutputTokens: func([]byte) int64 { return 10 },
	})
	resp := h.open("/v1/messages", "sk-a", streamBody(10))
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	ev, err := readEvent(br)
	if err != nil || ev.name != "message_start" {
		t.Fatalf("first event %q, %v", ev.name, err)
	}
	// The handler is parked at the gate: admitted, not finished, and charged
	// only the output token message_start reported.
	st := h.s.Stats()
	if st.InFlight != 1 || len(st.Requests) != 0 || st.Total.OutputTokens != 1 {
		t.Fatalf("while gated: in flight %d, records %d, output %d; want 1, 0, 1",
			st.InFlight, len(st.Requests), st.Total.OutputTokens)
	}
	close(release)
	rest, err := readEvents(br)
	if err != nil || rest[len(rest)-1].name != "message_stop" {
		t.Fatalf("after release: %s, %v", names(rest), err)
	}
	rec := <-done
	if rec.Status != 200 || rec.OutputTokens != 10 || rec.Aborted {
		t.Fatalf("record %+v", rec)
	}
	if st := h.s.Stats(); st.InFlight != 0 || st.PeakInFlight != 1 {
		t.Fatalf("in flight %d peak %d after the stream", st.InFlight, st.PeakInFlight)
	}
}

func TestGateHoldsNonStreaming(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	logf, done := logged()
	h := newHarness(t, Config{
		Keys: map[string]string{"sk-a": "org-a"},
		Gate: func(*http.Request) <-chan struct{} {
			entered <- struct{}{}
			return release
		},
		Log: logf,
	})
	got := make(chan response, 1)
	go func() { got <- h.post("sk-a", msg(sonnet, 10)) }()
	<-entered
	if st := h.s.Stats(); st.InFlight != 1 || st.Total.OutputTokens != 0 {
		t.Fatalf("while gated: in flight %d, output %d; want 1 and 0", st.InFlight, st.Total.OutputTokens)
	}
	close(release)
	if r := <-got; r.status != http.StatusOK {
		t.Fatalf("status %d", r.status)
	}
	if rec := <-done; rec.OutputTokens != DefaultOutputTokens {
		t.Fatalf("record %+v", rec)
	}
}

func TestGateClientLeaves(t *testing.T) {
	entered := make(chan struct{}, 1)
	logf, done := logged()
	h := newHarness(t, Config{
		Keys: map[string]string{"sk-a": "org-a"},
		Gate: func(*http.Request) <-chan struct{} {
			entered <- struct{}{}
			return make(chan struct{}) // never released
		},
		Log: logf,
	})
	ctx, cancel := context.WithCancel(context.Background())
	data, _ := json.Marshal(msg(sonnet, 10))
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.ts.URL+"/v1/messages", strings.NewReader(string(data)))
	req.Header.Set("x-api-key", "sk-a")
	errc := make(chan error, 1)
	go func() {
		resp, err := h.ts.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-entered
	cancel()
	if err := <-errc; err == nil {
		t.Fatalf("canceled request succeeded")
	}
	rec := <-done
	if !rec.Aborted || rec.OutputTokens != 0 {
		t.Fatalf("record %+v, want aborted with no output charged", rec)
	}
	if st := h.s.Stats(); st.InFlight != 0 {
		t.Fatalf("in flight %d", st.InFlight)
	}
}

func TestStreamCut(t *testing.T) {
	logf, done := logged()
	h := newHarness(t, Config{Keys: map[string]string{"sk-a": "org-a"}, Log: logf})
	h.s.SetStreamFault(StreamCut, 1)
	// A non-streaming request neither suffers nor uses up the fault.
	h.expect(http.StatusOK, "sk-a", msg(sonnet, 10))
	<-done

	resp := h.open("/v1/messages", "sk-a", streamBody(10))
	evs, err := readEvents(resp.Body)
	resp.Body.Close()
	if names(evs) != "message_start" || err == nil {
		t.Fatalf("cut stream: events %s, err %v; want message_start then an error", names(evs), err)
	}
	rec := <-done
	if rec.Fault != StreamCut || rec.OutputTokens != 1 {
		t.Fatalf("record %+v", rec)
	}

	// The fault was for one stream only.
	resp = h.open("/v1/messages", "sk-a", streamBody(10))
	evs, err = readEvents(resp.Body)
	resp.Body.Close()
	if err != nil || evs[len(evs)-1].name != "message_stop" {
		t.Fatalf("next stream: %s, %v", names(evs), err)
	}
}

func TestStreamResetAfterFirstEvent(t *testing.T) {
	release := make(chan struct{})
	h := newHarness(t, Config{
		Keys: map[string]string{"sk-a": "org-a"},
		Gate: func(*http.Request) <-chan struct{} { return release },
	})
	h.s.SetStreamFault(StreamReset, -1)
	resp := h.open("/v1/messages", "sk-a", streamBody(10))
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if ev, err := readEvent(br); err != nil || ev.name != "message_start" {
		t.Fatalf("first event %q, %v", ev.name, err)
	}
	close(release) // the reset happens only now that message_start was read
	evs, err := readEvents(br)
	if err == nil || len(evs) != 0 {
		t.Fatalf("after reset: events %s, err %v; want an error and nothing more", names(evs), err)
	}
}

func TestStreamFaultEveryStreamUntilCleared(t *testing.T) {
	h := newHarness(t, Config{Keys: map[string]string{"sk-a": "org-a"}})
	h.s.SetStreamFault(StreamCut, -1)
	for range 2 {
		resp := h.open("/v1/messages", "sk-a", streamBody(10))
		_, err := readEvents(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Fatalf("stream not cut")
		}
	}
	h.s.SetStreamFault(StreamOK, 0)
	resp := h.open("/v1/messages", "sk-a", streamBody(10))
	defer resp.Body.Close()
	if _, err := readEvents(resp.Body); err != nil {
		t.Fatalf("stream after clearing: %v", err)
	}
}

func TestStreamErrorEvent(t *testing.T) {
	h := newHarness(t, Config{Keys: map[string]string{"sk-a": "org-a"}})
	h.s.SetStreamFault(StreamErrorEvent, 1)
	resp := h.open("/v1/messages", "sk-a", streamBody(10))
	defer resp.Body.Close()
	evs, err := readEvents(resp.Body)
	if err != nil || names(evs) != "message_start,error" {
		t.Fatalf("events %s, err %v; want message_start,error and a clean end", names(evs), err)
	}
	var e apiError
	if err := json.Unmarshal(evs[1].data, &e); err != nil || e.Type != "error" || e.Error.Type != "overloaded_error" {
		t.Fatalf("error event %s", evs[1].data)
	}
}
