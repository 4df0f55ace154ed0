package usage

import (
	"bytes"
	"encoding/json"
	"strconv"
	"testing"
)

func refApply(u *Usage, raw []byte, reset bool) {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil || m == nil {
		return
	}
	if reset {
		u.InputTokens, u.CacheCreationInputTokens, u.CacheReadInputTokens, u.OutputTokens = 0, 0, 0, 0
		u.HaveInput, u.HaveOutput = false, false
	}
	set := func(key string, dst *int64) bool {
		v, ok := m[key]
		if !ok {
			return false
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
		if err != nil {
			return false
		}
		*dst = n
		return true
	}
	in := set("input_tokens", &u.InputTokens)
	in = set("cache_creation_input_tokens", &u.CacheCreationInputTokens) || in
	in = set("cache_read_input_tokens", &u.CacheReadInputTokens) || in
	if in {
		u.HaveInput = true
	}
	if set("output_tokens", &u.OutputTokens) {
		u.HaveOutput = true
	}
}

func FuzzApplyUsageDiff(f *testing.F) {
	for _, s := range []string{`{"input_tokens":12,"output_tokens":3}`, `{"input_tokens":1,"input_tokens":"x"}`,
		`{"cache_creation":{"a":1},"cache_read_input_tokens":-5 , "output_tokens" : 9223372036854775807}`,
		`{"input\u005ftokens":7}`, `null`, `[1]`, `{"output_tokens":1.0}`, `{"output_tokens":99999999999999999999}`, `{}`,
		`{"input_tokens":-9223372036854775808,"output_tokens":-9223372036854775809}`, `{"input_tokens":-9270000000000000000}`, `{"a":[{"b":"}"}],"input_tokens":0}`} {
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, raw []byte, reset bool) {
		a := Usage{InputTokens: 1, OutputTokens: 2, HaveInput: true}
		b := a
		applyUsage(&a, raw, reset)
		refApply(&b, raw, reset)
		if a != b {
			t.Fatalf("%q: got %+v want %+v", raw, a, b)
		}
	})
}

// refApplyEvent is applyEvent as it was, with encoding/json: the oracle
// for FuzzApplyEventDiff.
func refApplyEvent(u *Usage, data, name []byte) {
	var ev struct {
		Type    string `json:"type"`
		Message *struct {
			Model string          `json:"model"`
			Usage json.RawMessage `json:"usage"`
		} `json:"message"`
		Usage json.RawMessage `json:"usage"`
		Error *struct {
			Type string `json:"type"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &ev) != nil {
		return
	}
	typ := ev.Type
	if typ == "" {
		typ = string(name)
	}
	switch typ {
	case "message_start":
		if ev.Message != nil {
			if ev.Message.Model != "" {
				u.Model = ev.Message.Model
			}
			refApply(u, ev.Message.Usage, false)
		}
	case "message_delta":
		refApply(u, ev.Usage, false)
	case "error":
		if ev.Error != nil && ev.Error.Type != "" {
			u.ErrorType = ev.Error.Type
		}
	}
}

// FuzzApplyEventDiff checks applyEvent against encoding/json, directly and
// through an SSEScanner reading the data as one event.
func FuzzApplyEventDiff(f *testing.F) {
	for _, s := range []string{
		`{"type":"message_start","message":{"id":"msg_1","model":"claude-x","usage":{"input_tokens":25,"cache_creation_input_tokens":1200,"cache_read_input_tokens":30000,"output_tokens":1}}}`,
		`{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}`,
		`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`,
		// Escapes, in keys and values.
		`{"type":"message_st\u0061rt","mess\u0061ge":{"model":"cl\"aude\\\/\u00e9\ud83d\ude00","usage":{"input\u005ftokens":3}}}`,
		`{"type":"error","error":{"type":"\ud800"}}`,
		`{"ty\\pe":"message_delta","usage":{"output_tokens":1}}`,
		// Case folding, as encoding/json matches struct fields.
		`{"TYPE":"message_start","Message":{"MODEL":"m","USAGE":{"output_tokens":2}}}`,
		`{"type":"message_start","me\u017f\u017fage":{"model":"long s"}}`,
		`{"type":"message_start","meſſage":{"model":"long s"}}`,
		`{"type":"MESSAGE_DELTA","usage":{"output_tokens":2}}`,
		// Duplicates: later wins, objects merge, null clears a pointer.
		`{"type":"ping","type":"message_delta","usage":{"output_tokens":1},"usage":{"input_tokens":2}}`,
		`{"type":"message_start","message":{"model":"a"},"message":{"usage":{"output_tokens":3}}}`,
		`{"type":"message_start","message":{"model":"a"},"message":null,"message":{"usage":{"output_tokens":3}}}`,
		`{"type":"message_start","message":{"model":"a","model":""}}`,
		`{"type":"message_start","message":{"model":"a","model":null}}`,
		`{"type":"message_delta","type":null,"usage":{"output_tokens":4}}`,
		`{"type":"message_delta","type":"","usage":{"output_tokens":4}}`,
		`{"type":"error","error":{"type":"a"},"error":{}}`,
		`{"type":"error","error":{"type":"a"},"error":null}`,
		// Nested values, and members of the wrong type.
		`{"type":"message_delta","delta":{"a":[1,{"usage":{"output_tokens":9}}],"b":"}"},"usage":{"output_tokens":5}}`,
		`{"type":"message_delta","message":[],"usage":{"output_tokens":5}}`,
		`{"type":"message_delta","message":{"model":1},"usage":{"output_tokens":5}}`,
		`{"type":"message_delta","error":"x","usage":{"output_tokens":5}}`,
		`{"type":7,"usage":{"output_tokens":5}}`,
		`{"type":"message_delta","usage":[1],"usage":"x"}`,
		`{"type":"message_delta","usage":null}`,
		// Invalid JSON and non-objects.
		`{"type":"message_delta","usage":{"output_tokens":5}`,
		`{"type":"message_delta","usage":{"output_tokens":5}}x`,
		`{"type":"message_delta",}`,
		`{'type':"message_delta"}`,
		`null`, `[]`, `"message_delta"`, ``, ` `,
		"{\"type\":\"message_delta\",\"usage\":{\"output_tokens\":\xff}}",
		"{\"type\":\"message_start\",\"message\":{\"model\":\"\xff\xfe\"}}",
		// Numbers.
		`{"type":"message_delta","usage":{"output_tokens":1e3,"input_tokens":1.0,"cache_read_input_tokens":-1}}`,
		`{"type":"message_delta","usage":{"output_tokens":99999999999999999999,"input_tokens":-9223372036854775808}}`,
		`{"type":"message_delta","usage":{"output_tokens":-0,"input_tokens":0.0e0}}`,
		// Whitespace.
		" \t{ \"type\" : \"message_delta\" ,\n \"usage\" : { \"output_tokens\" : 6 } } \r\n",
	} {
		for _, name := range []string{"", "message_start", "message_delta", "error"} {
			f.Add([]byte(s), name)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, name string) {
		start := Usage{InputTokens: 1, OutputTokens: 2, Model: "m0", ErrorType: "e0", HaveInput: true}
		got, want := start, start
		applyEvent(&got, data, []byte(name))
		refApplyEvent(&want, data, []byte(name))
		if got != want {
			t.Fatalf("event %q data %q:\n got %+v\nwant %+v", name, data, got, want)
		}

		// Through a scanner: the data as data lines of one event, whose
		// name makes the scanner keep it.
		if !relevantType([]byte(name)) || bytes.IndexByte(data, '\r') >= 0 || len(data) > maxEventData {
			return
		}
		var stream bytes.Buffer
		stream.WriteString("event: " + name + "\n")
		for line := range bytes.SplitSeq(data, []byte("\n")) {
			stream.WriteString("data: ")
			stream.Write(line)
			stream.WriteString("\n")
		}
		stream.WriteString("\n")
		var s SSEScanner
		s.Write(stream.Bytes())
		want = Usage{}
		refApplyEvent(&want, data, []byte(name))
		if s.Usage() != want {
			t.Fatalf("stream %q:\n got %+v\nwant %+v", stream.Bytes(), s.Usage(), want)
		}
	})
}

// refJSONEndValue is JSONScanner.endValue as it was, with encoding/json:
// the oracle for FuzzJSONValueDiff.
func refJSONEndValue(u *Usage, m jsonMember, v []byte) {
	switch m {
	case memberUsage:
		refApply(u, v, true)
	case memberModel:
		var model string
		if v[0] == '"' && json.Unmarshal(v, &model) == nil {
			u.Model = model
		}
	case memberError:
		var e struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(v, &e) == nil && e.Type != "" {
			u.ErrorType = e.Type
		}
	}
}

// FuzzJSONValueDiff checks how a JSONScanner reads the value of a member
// it keeps against encoding/json.
func FuzzJSONValueDiff(f *testing.F) {
	for _, s := range []string{
		`{"input_tokens":12,"output_tokens":3}`, `{"input_tokens":1,"input_tokens":"x"}`, `{"INPUT_TOKENS":1}`, `[1]`,
		`"claude-opus-4-1-20250805"`, `""`, `null`, `7`, `true`, `"m\u00e9"`, `"\ud800"`, "\"\xff\xfe\"", `"a`, `"a\q"`,
		"\"\x01\"", `"cl\"aude\\\/"`, `"a"x`, `"a"}`, `"a"""`,
		`{"type":"overloaded_error","message":"Overloaded"}`, `{"TYPE":"x"}`, `{"ty\u0070e":"x"}`, `{"Type":"a","type":null}`,
		`{"type":"a","type":""}`, `{"type":1}`, `{"type":"a","type":1}`, `{"type":"a","message":1}`, `{}`, `[]`, `"s"`,
		`{"type":"a",}`, `{"type":"a"}}`, "{\"type\":\"\xff\"}", `{"type":"\u0000"}`,
	} {
		for m := range 3 {
			f.Add([]byte(s), uint8(m))
		}
	}
	f.Fuzz(func(t *testing.T, v []byte, which uint8) {
		if len(v) == 0 || len(v) > maxCapture || isSpace(v[0]) || isSpace(v[len(v)-1]) {
			// A kept value has from 1 to maxCapture bytes, and starts
			// and ends with a byte that is not white space.
			return
		}
		m := memberUsage + jsonMember(which%3)
		start := Usage{InputTokens: 1, OutputTokens: 2, Model: "m0", ErrorType: "e0", HaveInput: true}
		s := JSONScanner{u: start, member: m}
		s.capture(v)
		s.endValue()
		want := start
		refJSONEndValue(&want, m, v)
		if s.Usage() != want {
			t.Fatalf("member %d value %q:\n got %+v\nwant %+v", m, v, s.Usage(), want)
		}
		if s.buf != nil {
			t.Fatalf("holds a buffer after the value")
		}
	})
}

// checkJSONScannerStrings checks the model and error type a scan of body
// reports against encoding/json reading each top-level member in turn, as
// JSONScanner did with it, when body is valid JSON.
func checkJSONScannerStrings(t testing.TB, body []byte) {
	t.Helper()
	if !json.Valid(body) {
		return
	}
	var s JSONScanner
	s.Write(body)
	var want Usage
	d := json.NewDecoder(bytes.NewReader(body))
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		return
	}
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			t.Fatalf("%q: %v", body, err)
		}
		var raw json.RawMessage
		if err := d.Decode(&raw); err != nil {
			t.Fatalf("%q: %v", body, err)
		}
		if len(raw) > maxCapture {
			continue
		}
		switch tok.(string) {
		case "model":
			refJSONEndValue(&want, memberModel, raw)
		case "error":
			refJSONEndValue(&want, memberError, raw)
		}
	}
	if got := s.Usage(); got.Model != want.Model || got.ErrorType != want.ErrorType {
		t.Fatalf("scan of %q: model %q, error type %q; want %q, %q (encoding/json)", body, got.Model, got.ErrorType, want.Model, want.ErrorType)
	}
}
