package usage

import (
	"bytes"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

const messageBody = `{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-opus-4-1-20250805",` +
	`"content":[{"type":"text","text":"Here is the \"usage\": {\"input_tokens\": 999} you asked about. \\\"},{\"usage\":1}"},` +
	`{"type":"tool_use","id":"toolu_01","name":"Bash","input":{"command":"ls","usage":{"input_tokens":888}}}],` +
	`"stop_reason":"end_turn","stop_sequence":null,` +
	`"usage":{"input_tokens":2095,"cache_creation_input_tokens":100,"cache_read_input_tokens":5000,"output_tokens":503,"service_tier":"standard","cache_creation":{"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":0}}}`

var messageUsage = Usage{
	InputTokens: 2095, CacheCreationInputTokens: 100, CacheReadInputTokens: 5000, OutputTokens: 503,
	CacheCreation: CacheCreation{Ephemeral5mInputTokens: 100},
	Model:         "claude-opus-4-1-20250805", HaveInput: true, HaveOutput: true,
}

var jsonTests = []struct {
	name string
	body string
	want Usage
}{
	{"empty", "", Usage{}},
	{"empty object", "{}", Usage{}},
	{"message", messageBody, messageUsage},
	{"pretty printed", prettyJSON(messageBody), messageUsage},
	{"usage first", `{"usage":{"input_tokens":1,"output_tokens":2},"model":"m","content":[]}`,
		Usage{InputTokens: 1, OutputTokens: 2, Model: "m", HaveInput: true, HaveOutput: true}},
	{"error body", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`,
		Usage{ErrorType: "overloaded_error"}},
	{"error body with request id", `{"type":"error","error":{"message":"Number of request tokens has exceeded your per-minute rate limit","type":"rate_limit_error"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}`,
		Usage{ErrorType: "rate_limit_error"}},
	{"nested usage and error are ignored", `{"content":[{"usage":{"output_tokens":5}}],"x":{"error":{"type":"e"},"model":"n"}}`, Usage{}},
	{"escaped key", `{"us\u0061ge":{"output_tokens":3},"mod\u0065l":"m\u00e9"}`, Usage{OutputTokens: 3, HaveOutput: true, Model: "mé"}},
	{"last usage replaces", `{"usage":{"input_tokens":1,"output_tokens":2},"usage":{"output_tokens":7}}`,
		Usage{OutputTokens: 7, HaveOutput: true}},
	{"scalar and literal members", `{"a":1,"b":true,"c":null,"d":-1.5e3 ,"usage":{"output_tokens":4}}`, Usage{OutputTokens: 4, HaveOutput: true}},
	{"string with escaped backslashes", `{"a":"\\\\","b":"\\\"","usage":{"output_tokens":6}}`, Usage{OutputTokens: 6, HaveOutput: true}},
	{"usage members match as struct fields do", `{"usage":{"Output_Tokens":3,"cache_creation":{"EPHEMERAL_1H_INPUT_TOKENS":2}}}`,
		Usage{OutputTokens: 3, CacheCreation: CacheCreation{Ephemeral1hInputTokens: 2}, HaveOutput: true}},
	{"non-integer counts are ignored", `{"usage":{"input_tokens":1.5,"output_tokens":"2","cache_read_input_tokens":null}}`, Usage{}},
	{"usage not an object", `{"usage":[1,2],"model":7}`, Usage{}},
	{"oversized usage is ignored", `{"usage":{"output_tokens":9,"pad":"` + strings.Repeat("x", maxCapture) + `"}}`, Usage{}},
	{"not an object", `[{"usage":{"output_tokens":1}}]`, Usage{}},
	{"garbage before", `x{"usage":{"output_tokens":1}}`, Usage{}},
	{"stops after the object", `{"model":"a"}{"model":"b"}`, Usage{Model: "a"}},
	{"stops at a syntax error", `{"model":"a" "usage":{"output_tokens":1}}`, Usage{Model: "a"}},
	{"truncated", `{"model":"a","usage":{"output_tokens":1`, Usage{Model: "a"}},
}

func prettyJSON(s string) string {
	var b bytes.Buffer
	if err := json.Indent(&b, []byte(s), "", "  "); err != nil {
		panic(err)
	}
	return b.String()
}

func TestJSONScanner(t *testing.T) {
	for _, tt := range jsonTests {
		t.Run(tt.name, func(t *testing.T) {
			for how, u := range feedAllWays(func() scanner { return new(JSONScanner) }, []byte(tt.body)) {
				if u != tt.want {
					t.Errorf("fed %s:\n got %+v\nwant %+v", how, u, tt.want)
				}
			}
			checkJSONScanner(t, []byte(tt.body))
			checkJSONScannerStrings(t, []byte(tt.body))
		})
	}
}

func TestJSONScannerChanged(t *testing.T) {
	var s JSONScanner
	body := []byte(messageBody)
	i := bytes.Index(body, []byte(`"usage":{"input`))
	if s.Write(body[:i]) != true { // the model
		t.Error("Write of the part with the model returned false")
	}
	if s.Write(body[i:len(body)-2]) != false {
		t.Error("Write of an incomplete usage returned true")
	}
	if s.Write(body[len(body)-2:]) != true {
		t.Error("Write completing usage returned false")
	}
	if s.Write([]byte(" ")) != false {
		t.Error("Write after the end returned true")
	}
}

// TestJSONScannerMemory scans a 50 MB body and checks that the scanner keeps
// at most maxCapture bytes and allocates almost nothing.
func TestJSONScannerMemory(t *testing.T) {
	block := []byte(`{"type":"text","text":"` + strings.Repeat(`lorem \"ipsum\" \\ dolor `, 100) + `"},`)
	var s JSONScanner
	s.Write([]byte(`{"model":"m","content":[`))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	chunk := bytes.Repeat(block, 32<<10/len(block))
	for fed := 0; fed < 50<<20; fed += len(chunk) {
		s.Write(chunk)
		if c := s.bufCap(); c > maxCapture {
			t.Fatalf("cap(buf) = %d > %d", c, maxCapture)
		}
	}
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
		t.Errorf("scanning 50 MB allocated %d bytes", alloc)
	}
	s.Write([]byte(`{}],"usage":{"output_tokens":12}}`))
	if got, want := s.Usage(), (Usage{Model: "m", OutputTokens: 12, HaveOutput: true}); got != want {
		t.Errorf("usage = %+v, want %+v", got, want)
	}

	// A huge captured value is dropped without growing the buffer.
	s = JSONScanner{}
	s.Write([]byte(`{"usage":{"pad":"`))
	for range 100 {
		s.Write(chunk)
	}
	if c := s.bufCap(); c > maxCapture {
		t.Errorf("cap(buf) = %d > %d after a huge usage value", c, maxCapture)
	}
	if s.buf != nil {
		t.Errorf("holds a buffer of %d bytes after dropping a huge usage value", s.bufCap())
	}
}

// bufCap returns the capacity of the buffer s holds, or 0.
func (s *JSONScanner) bufCap() int {
	if s.buf == nil {
		return 0
	}
	return cap(*s.buf)
}

// maxResponseAllocs bounds the allocations of one response's scan: the
// model name, or the error type. The values read are decoded by pooled
// decoders into pooled values, and the bytes skipped cost nothing.
const maxResponseAllocs = 1

// TestJSONScannerResponseAllocs checks that a response's scan allocates
// only for decoding the values it reads, and that after it the scanner
// holds no buffer.
func TestJSONScannerResponseAllocs(t *testing.T) {
	// Under the race detector sync.Pool drops a random quarter of what is
	// put back, so each value kept may allocate a buffer (a slice and its
	// pointer) and a decoder (a dozen), and the detector's own bookkeeping
	// allocates.
	slack := 0
	if raceEnabled {
		slack = 30
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1)) // one P, so one pool shard
	for _, tc := range []struct {
		name string
		body string
		want Usage
	}{
		{"message", messageBody, messageUsage},
		{"pretty printed message", prettyJSON(messageBody), messageUsage},
		{"error", errorBody, Usage{ErrorType: "overloaded_error"}},
	} {
		for _, chunk := range []int{1, 7, 64, 500, 4 << 10} {
			t.Run(fmt.Sprintf("%s/%dB writes", tc.name, chunk), func(t *testing.T) {
				// Warm the buffer pool, as earlier responses would have.
				var s JSONScanner
				body := []byte(tc.body)
				writeJSONChunks(&s, body, chunk)
				allocs := testing.AllocsPerRun(20, func() {
					s = JSONScanner{}
					writeJSONChunks(&s, body, chunk)
				})
				if allocs > float64(maxResponseAllocs+slack) {
					t.Errorf("a response allocates %v times, want at most %d", allocs, maxResponseAllocs+slack)
				}
				if s.Usage() != tc.want {
					t.Errorf("usage = %+v, want %+v", s.Usage(), tc.want)
				}
				if s.buf != nil {
					t.Errorf("holds a buffer of %d bytes after the response", s.bufCap())
				}
			})
		}
	}
}

// TestJSONScannerHoldsBufferOnlyInValue feeds bodies a byte at a time and
// checks that the scanner holds a buffer only while in the value of a
// member it reads.
func TestJSONScannerHoldsBufferOnlyInValue(t *testing.T) {
	for _, tt := range jsonTests {
		var s JSONScanner
		held := 0
		for i := range len(tt.body) {
			s.Write([]byte(tt.body[i : i+1]))
			checkHeldBuffer(t, &s)
			if s.buf != nil {
				held++
			}
		}
		if tt.name == "message" {
			// The model and usage values, but for their last bytes.
			usage := messageBody[strings.LastIndex(messageBody, `"usage":`)+len(`"usage":`) : len(messageBody)-1]
			want := len(`"claude-opus-4-1-20250805"`) - 1 + len(usage) - 1
			if held != want {
				t.Errorf("%s: held a buffer for %d bytes, want %d", tt.name, held, want)
			}
		}
	}
}

// checkHeldBuffer checks that s holds a buffer only while in the value of
// a member it reads.
func checkHeldBuffer(t testing.TB, s *JSONScanner) {
	t.Helper()
	if s.buf == nil {
		return
	}
	if s.member == memberOther || s.over || s.done || (s.st != jsonString && s.st != jsonNested && s.st != jsonScalar) {
		t.Fatalf("holds a buffer in state %+v", *s)
	}
	if cap(*s.buf) > maxCapture {
		t.Fatalf("cap(buf) = %d > %d", cap(*s.buf), maxCapture)
	}
}

func TestJSONScannerAllocs(t *testing.T) {
	var s JSONScanner
	s.Write([]byte(`{"model":"m","content":[`))
	chunk := []byte(strings.Repeat(`{"type":"text","text":"a \"quoted\" word"},`, 100))
	if allocs := testing.AllocsPerRun(100, func() { s.Write(chunk) }); allocs != 0 {
		t.Errorf("Write of content allocates %v times, want 0", allocs)
	}
}

// checkJSONScanner checks the counts a scan of body reports against
// encoding/json's own tokenizer finding the top-level "usage" member: when
// body is a valid JSON object whose last top-level "usage" is an object of
// at most maxCapture bytes, the counts are what decoding that object gives.
// It holds the hand-written framing (which bytes are the usage value) to
// encoding/json's; the decoding itself is encoding/json's on both sides.
func checkJSONScanner(t testing.TB, body []byte) {
	t.Helper()
	var s JSONScanner
	s.Write(body)
	got := s.Usage()
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil || top == nil {
		return
	}
	raw, ok := top["usage"]
	if !ok || len(raw) > maxCapture {
		return
	}
	var want Usage
	var o usageObject
	if raw[0] != '{' || json.Unmarshal(raw, &o) != nil {
		return
	}
	o.apply(&want)
	got.Model, got.ErrorType = "", ""
	if got != want {
		t.Fatalf("scan of %q\n got %+v\nwant %+v (encoding/json)", body, got, want)
	}
}

func BenchmarkJSONScanner(b *testing.B) {
	// A 100 KB message body: a long answer and a few tool calls.
	var body bytes.Buffer
	body.WriteString(`{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[`)
	for i := 0; body.Len() < 100<<10; i++ {
		fmt.Fprintf(&body, `{"type":"text","text":%q},{"type":"tool_use","id":"toolu_%d","name":"Edit","input":{"file_path":"/a/b.go","old_string":"x := 1\n","new_string":"x := 2\n"}},`,
			strings.Repeat("Some explanation with \"quotes\" and a\nnewline. ", 20), i)
	}
	body.WriteString(`{"type":"text","text":"done"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":10,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":25000}}`)
	data := body.Bytes()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		var s JSONScanner
		for p := data; len(p) > 0; {
			n := min(len(p), 32<<10)
			s.Write(p[:n])
			p = p[n:]
		}
		if s.Usage().OutputTokens != 25000 {
			b.Fatal("wrong usage")
		}
	}
}

// errorBody is an error response as the Messages API sends it.
const errorBody = `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}`

// writeJSONChunks writes body to s in chunks of n bytes.
func writeJSONChunks(s *JSONScanner, body []byte, n int) {
	for p := body; len(p) > 0; {
		k := min(len(p), n)
		s.Write(p[:k])
		p = p[k:]
	}
}

// BenchmarkJSONScannerResponse measures the cost per response of a short
// message body and of an error body, which is dominated by the members the
// scanner reads.
func BenchmarkJSONScannerResponse(b *testing.B) {
	for _, body := range []struct {
		name string
		body string
		want Usage
	}{
		{"message", messageBody, messageUsage},
		{"error", errorBody, Usage{ErrorType: "overloaded_error"}},
	} {
		data := []byte(body.body)
		for _, chunk := range []int{64, 1 << 10, len(data)} {
			b.Run(fmt.Sprintf("%s/%dB writes", body.name, chunk), func(b *testing.B) {
				b.SetBytes(int64(len(data)))
				b.ReportAllocs()
				var s JSONScanner
				for b.Loop() {
					s = JSONScanner{}
					writeJSONChunks(&s, data, chunk)
				}
				if s.Usage() != body.want {
					b.Fatalf("usage = %+v", s.Usage())
				}
			})
		}
	}
}

// checkJSONScannerStrings checks the model and error type a scan of body
// reports against encoding/json's own tokenizer finding each top-level
// member, when body is valid JSON: it holds the hand-written framing to
// encoding/json's.
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
			var m *string
			if json.Unmarshal(raw, &m) == nil && m != nil {
				want.Model = *m
			}
		case "error":
			var e struct{ Type string }
			if raw[0] == '{' && json.Unmarshal(raw, &e) == nil && e.Type != "" {
				want.ErrorType = e.Type
			}
		}
	}
	if got := s.Usage(); got.Model != want.Model || got.ErrorType != want.ErrorType {
		t.Fatalf("scan of %q: model %q, error type %q; want %q, %q (encoding/json)", body, got.Model, got.ErrorType, want.Model, want.ErrorType)
	}
}
