package usage

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
)

const (
	messageStart = `event: message_start
data: {"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":1200,"cache_read_input_tokens":30000,"output_tokens":1,"service_tier":"standard"}}}

`
	contentStart = `event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

`
	ping = `event: ping
data: {"type": "ping"}

`
	contentStop = `event: content_block_stop
data: {"type":"content_block_stop","index":0}

`
	messageStop = `event: message_stop
data: {"type":"message_stop"}

`
)

func textDelta(text string) string {
	return `event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":` + fmt.Sprintf("%q", text) + `}}

`
}

func messageDelta(usage string) string {
	return `event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":` + usage + `}

`
}

// startUsage is the Usage after messageStart.
var startUsage = Usage{
	InputTokens: 25, CacheCreationInputTokens: 1200, CacheReadInputTokens: 30000, OutputTokens: 1,
	Model: "claude-sonnet-4-5-20250929", HaveInput: true, HaveOutput: true,
}

func withOutput(u Usage, n int64) Usage {
	u.OutputTokens = n
	u.HaveOutput = true
	return u
}

// dropEventLines removes the "event:" lines, leaving the data to decide.
func dropEventLines(stream string) string {
	var b strings.Builder
	for line := range strings.SplitAfterSeq(stream, "\n") {
		if !strings.HasPrefix(line, "event:") {
			b.WriteString(line)
		}
	}
	return b.String()
}

var sseTests = []struct {
	name   string
	stream string
	want   Usage
}{
	{"empty", "", Usage{}},
	{
		"full response",
		messageStart + contentStart + ping + textDelta("Hello") + textDelta("!") + contentStop +
			messageDelta(`{"output_tokens":15}`) + messageStop,
		withOutput(startUsage, 15),
	},
	{
		"cumulative deltas take the latest",
		messageStart + messageDelta(`{"output_tokens":5}`) + textDelta("x") +
			messageDelta(`{"output_tokens":10}`) + messageDelta(`{"output_tokens":12}`),
		withOutput(startUsage, 12),
	},
	{
		"delta input fields override",
		messageStart + messageDelta(`{"input_tokens":30,"cache_creation_input_tokens":0,"cache_read_input_tokens":31000,"output_tokens":40,"server_tool_use":{"web_search_requests":1}}`),
		Usage{InputTokens: 30, CacheReadInputTokens: 31000, OutputTokens: 40, ServerToolUse: ServerToolUse{WebSearchRequests: 1},
			Model: startUsage.Model, HaveInput: true, HaveOutput: true},
	},
	{
		"cache lifetimes and server tool use",
		strings.Replace(messageStart, `"service_tier":"standard"`, `"cache_creation":{"ephemeral_5m_input_tokens":1000,"ephemeral_1h_input_tokens":200}`, 1) +
			messageDelta(`{"output_tokens":40,"server_tool_use":{"web_search_requests":2,"web_fetch_requests":1}}`),
		Usage{InputTokens: 25, CacheCreationInputTokens: 1200, CacheReadInputTokens: 30000, OutputTokens: 40,
			CacheCreation: CacheCreation{Ephemeral5mInputTokens: 1000, Ephemeral1hInputTokens: 200},
			ServerToolUse: ServerToolUse{WebSearchRequests: 2, WebFetchRequests: 1},
			Model:         startUsage.Model, HaveInput: true, HaveOutput: true},
	},
	{
		// Found by fuzzing the hand-written parser this replaced, which
		// turned it positive.
		"a count beyond int64 is absent",
		messageStart + messageDelta(`{"input_tokens":-9270000000000000000,"output_tokens":9}`),
		withOutput(startUsage, 9),
	},
	{
		"null and non-integer delta fields are ignored",
		messageStart + messageDelta(`{"input_tokens":null,"cache_read_input_tokens":"7","cache_creation_input_tokens":1.5,"output_tokens":9}`),
		withOutput(startUsage, 9),
	},
	{
		"delta without input fields",
		messageDelta(`{"output_tokens":3}`),
		Usage{OutputTokens: 3, HaveOutput: true},
	},
	{
		"error event",
		messageStart + textDelta("partial") +
			"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
		func() Usage { u := startUsage; u.ErrorType = "overloaded_error"; return u }(),
	},
	{
		"error only",
		"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Internal server error\"}}\n\n",
		Usage{ErrorType: "api_error"},
	},
	{
		"missing event lines",
		dropEventLines(messageStart + contentStart + ping + textDelta(strings.Repeat("long text ", 50)) +
			messageDelta(`{"output_tokens":15}`) + messageStop),
		withOutput(startUsage, 15),
	},
	{
		"type not first is still read",
		"data: {\"usage\":{\"output_tokens\":4},\"type\":\"message_delta\"}\n\n",
		Usage{OutputTokens: 4, HaveOutput: true},
	},
	{
		"event name used when data has no type",
		"event: message_delta\ndata: {\"usage\":{\"output_tokens\":6}}\n\n",
		Usage{OutputTokens: 6, HaveOutput: true},
	},
	{
		"usage-like text in skipped events is not read",
		messageStart + textDelta(`"type":"message_delta","usage":{"output_tokens":999}`) +
			"event: content_block_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":999}}\n\n" +
			messageDelta(`{"output_tokens":2}`),
		withOutput(startUsage, 2),
	},
	{
		"comments, other fields and no space after colon",
		": keep-alive\nid: 7\nretry: 1000\nevent:message_delta\ndata:{\"type\":\"message_delta\",\"usage\":{\"output_tokens\":8}}\n\n",
		Usage{OutputTokens: 8, HaveOutput: true},
	},
	{
		"data split over lines",
		"event: message_delta\ndata: {\"type\":\"message_delta\",\ndata: \"usage\":{\"output_tokens\":11}}\n\n",
		Usage{OutputTokens: 11, HaveOutput: true},
	},
	{
		"unterminated last event is ignored",
		messageStart + "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":50}}\n",
		startUsage,
	},
	{
		"malformed data is ignored",
		messageStart + "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":\n\n",
		startUsage,
	},
	{
		"oversized event is ignored",
		messageStart + "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"pad\":\"" +
			strings.Repeat("x", maxEventData) + "\"},\"usage\":{\"output_tokens\":70}}\n\n" +
			messageDelta(`{"output_tokens":71}`),
		withOutput(startUsage, 71),
	},
	{
		"oversized event without name is ignored",
		"data: {\"type\":\"message_delta\",\"delta\":{\"pad\":\"" + strings.Repeat("x", maxEventData) +
			"\"},\"usage\":{\"output_tokens\":70}}\n\n",
		Usage{},
	},
	{
		"escaped type is unquoted",
		"data: {\"type\":\"message\\u005fdelta\",\"usage\":{\"output_tokens\":3}}\n\n",
		Usage{OutputTokens: 3, HaveOutput: true},
	},
	{
		"null or empty type falls back to the event name",
		"event: message_delta\ndata: {\"type\":null,\"usage\":{\"output_tokens\":3}}\n\n" +
			"event: message_delta\ndata: {\"type\":\"\",\"usage\":{\"output_tokens\":4},\"type\":null}\n\n",
		Usage{OutputTokens: 4, HaveOutput: true},
	},
	{
		"type of another event wins over the name",
		"event: message_delta\ndata: {\"type\":\"ping\",\"usage\":{\"output_tokens\":3}}\n\n",
		Usage{},
	},
	{
		"type that is not a string is ignored with its event",
		"event: message_delta\ndata: {\"type\":7,\"usage\":{\"output_tokens\":3}}\n\n" +
			"event: message_delta\ndata: {\"type\":{\"a\":1},\"usage\":{\"output_tokens\":4}}\n\n" +
			messageDelta(`{"output_tokens":5}`),
		Usage{OutputTokens: 5, HaveOutput: true},
	},
	{
		"data with bytes after the object is ignored",
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":3}} x\n\n" +
			messageDelta(`{"output_tokens":5}`) + "event: message_delta\ndata: {\"usage\":{\"output_tokens\":6}}  \n\n",
		Usage{OutputTokens: 6, HaveOutput: true},
	},
	{
		"long unrecognised field names",
		"datadata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":1}}\neventevent: message_delta\n\n",
		Usage{},
	},
	{
		"long event name",
		"event: message_delta_and_then_some_more\ndata: {\"usage\":{\"output_tokens\":1}}\n\n",
		Usage{},
	},
}

// lineEndings returns stream with its "\n" line endings also rewritten as
// "\r\n" and as "\r". The test streams have no raw newlines inside data.
func lineEndings(stream string) map[string]string {
	return map[string]string{
		"LF":   stream,
		"CRLF": strings.ReplaceAll(stream, "\n", "\r\n"),
		"CR":   strings.ReplaceAll(stream, "\n", "\r"),
	}
}

func TestSSEScanner(t *testing.T) {
	for _, tt := range sseTests {
		for eol, stream := range lineEndings(tt.stream) {
			t.Run(tt.name+"/"+eol, func(t *testing.T) {
				for how, u := range feedAllWays(func() scanner { return new(SSEScanner) }, []byte(stream)) {
					if u != tt.want {
						t.Errorf("fed %s:\n got %+v\nwant %+v", how, u, tt.want)
					}
				}
			})
		}
	}
}

func TestSSEScannerChanged(t *testing.T) {
	var s SSEScanner
	steps := []struct {
		write   string
		changed bool
	}{
		{messageStart[:20], false},
		{messageStart[20:], true},
		{contentStart + ping, false},
		{textDelta("a"), false},
		{messageDelta(`{"output_tokens":5}`), true},
		{messageDelta(`{"output_tokens":5}`), false}, // same total
		{"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n", false},
		{"\n", true}, // the blank line ends the event
		{messageStop, false},
	}
	for i, step := range steps {
		if got := s.Write([]byte(step.write)); got != step.changed {
			t.Errorf("step %d: Write(%q) = %v, want %v", i, step.write, got, step.changed)
		}
	}
	if got := s.Usage().OutputTokens; got != 9 {
		t.Errorf("OutputTokens = %d, want 9", got)
	}
}

// TestSSEScannerMemory streams 50 MB of content through a scanner and checks
// that it retains no more than maxEventData and allocates almost nothing,
// which would fail if it buffered skipped events or long lines.
func TestSSEScannerMemory(t *testing.T) {
	delta := []byte(textDelta(strings.Repeat("The quick brown fox jumps over the lazy dog. ", 40)))
	longRelevant := []byte("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"pad\":\"" +
		strings.Repeat("y", 1<<20) + "\"}}\n\n")
	for _, tc := range []struct {
		name    string
		chunk   []byte
		maxData int // the most data the scanner may hold between writes
	}{
		{"content_block_delta", delta, 0},
		{"content_block_delta without event lines", []byte(dropEventLines(string(delta))), 0},
		{"one long line", []byte("event: content_block_delta\ndata: " + strings.Repeat("z", 1<<20)), 0},
		{"oversized message_delta", longRelevant, maxEventData},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s SSEScanner
			s.Write([]byte(messageStart))
			const total = 50 << 20
			stream := bytes.Repeat(tc.chunk, 2*32<<10/len(tc.chunk)+2)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			off := 0
			for fed := 0; fed < total; fed += 32 << 10 {
				// Writes are 32 KiB at varying offsets into the chunk
				// pattern, so event boundaries fall everywhere.
				s.Write(stream[off : off+32<<10])
				off = (off + 32<<10) % len(tc.chunk)
				if c := cap(s.kept()); c > maxEventData {
					t.Fatalf("after %d bytes, cap(data) = %d > %d", fed, c, maxEventData)
				}
				if n := len(s.kept()); n > tc.maxData {
					t.Fatalf("after %d bytes, len(data) = %d > %d", fed, n, tc.maxData)
				}
			}
			runtime.ReadMemStats(&after)
			// Only data kept takes a pooled buffer, and a pool cannot be
			// relied on under the race detector.
			pooled := tc.maxData > 0
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 && !(pooled && raceEnabled) {
				t.Errorf("scanning 50 MB allocated %d bytes", alloc)
			}
			s.Write([]byte("\n\n" + messageDelta(`{"output_tokens":77}`)))
			if got := s.Usage(); got != withOutput(startUsage, 77) {
				t.Errorf("usage after stream = %+v", got)
			}
		})
	}
}

// maxStreamAllocs bounds the allocations of one stream's scan: the model
// name of its message_start. Its events are decoded by pooled decoders
// into pooled values, and the events skipped cost nothing.
const maxStreamAllocs = 1

// TestSSEScannerStreamAllocs checks that a stream's scan allocates only for
// decoding the events it reads, and that after it the scanner holds no
// buffer.
func TestSSEScannerStreamAllocs(t *testing.T) {
	// Under the race detector sync.Pool drops a random quarter of what is
	// put back, so each of the stream's two kept events may allocate a
	// buffer (a slice and its pointer) and a decoder (a dozen), and the
	// detector's own bookkeeping allocates.
	slack := 0
	if raceEnabled {
		slack = 30
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1)) // one P, so one pool shard
	for _, chunk := range []int{1, 7, 64, 500, 4 << 10} {
		t.Run(fmt.Sprintf("%dB writes", chunk), func(t *testing.T) {
			// Warm the buffer pool, as earlier streams would have.
			var s SSEScanner
			stream := []byte(realisticStream)
			writeChunks(&s, stream, chunk)
			want := withOutput(startUsage, 15)
			allocs := testing.AllocsPerRun(20, func() {
				s = SSEScanner{}
				writeChunks(&s, stream, chunk)
			})
			if allocs > float64(maxStreamAllocs+slack) {
				t.Errorf("a stream allocates %v times, want at most %d", allocs, maxStreamAllocs+slack)
			}
			if s.Usage() != want {
				t.Errorf("usage = %+v, want %+v", s.Usage(), want)
			}
			if s.data != nil {
				t.Errorf("holds a buffer of %d bytes after the stream", cap(*s.data))
			}
		})
	}
}

func TestSSEScannerAllocs(t *testing.T) {
	var s SSEScanner
	s.Write([]byte(messageStart))
	chunk := []byte(contentStart + ping + textDelta("some text") + textDelta("more text") + contentStop)
	if allocs := testing.AllocsPerRun(100, func() { s.Write(chunk) }); allocs != 0 {
		t.Errorf("Write of skipped events allocates %v times, want 0", allocs)
	}
	chunk = []byte(dropEventLines(string(chunk)))
	if allocs := testing.AllocsPerRun(100, func() { s.Write(chunk) }); allocs != 0 {
		t.Errorf("Write of skipped events without event lines allocates %v times, want 0", allocs)
	}
}

// scanner is what SSEScanner and JSONScanner have in common.
type scanner interface {
	Write([]byte) bool
	Usage() Usage
}

// feedAllWays feeds data to fresh scanners whole, a byte at a time and in
// seeded random splits, and returns the resulting usage by method.
func feedAllWays(newScanner func() scanner, data []byte) map[string]Usage {
	results := map[string]Usage{}
	s := newScanner()
	s.Write(data)
	results["whole"] = s.Usage()

	s = newScanner()
	for i := range data {
		s.Write(data[i : i+1])
	}
	results["byte by byte"] = s.Usage()

	for seed := uint64(1); seed <= 5; seed++ {
		rng := rand.New(rand.NewPCG(seed, 0))
		s = newScanner()
		for rest := data; len(rest) > 0; {
			n := min(len(rest), rng.IntN(200))
			s.Write(rest[:n]) // including empty writes
			rest = rest[n:]
		}
		results[fmt.Sprintf("random splits seed %d", seed)] = s.Usage()
	}
	return results
}

// longStream returns a realistic stream of about size bytes.
func longStream(size int) []byte {
	var b bytes.Buffer
	b.WriteString(messageStart + contentStart)
	for i := 0; b.Len() < size; i++ {
		b.WriteString(textDelta(fmt.Sprintf("word %d of a fairly typical streamed sentence, ", i)))
		if i%100 == 0 {
			b.WriteString(ping)
		}
	}
	b.WriteString(contentStop + messageDelta(`{"output_tokens":4096}`) + messageStop)
	return b.Bytes()
}

func BenchmarkSSEScanner(b *testing.B) {
	stream := longStream(8 << 20)
	for _, chunk := range []int{4 << 10, 32 << 10} {
		b.Run(fmt.Sprintf("%dKB writes", chunk>>10), func(b *testing.B) {
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			for b.Loop() {
				var s SSEScanner
				for p := stream; len(p) > 0; {
					n := min(len(p), chunk)
					s.Write(p[:n])
					p = p[n:]
				}
				if s.Usage().OutputTokens != 4096 {
					b.Fatal("wrong usage")
				}
			}
		})
	}
	b.Run("skipped events", func(b *testing.B) {
		chunk := []byte(textDelta(strings.Repeat("word ", 6)))
		chunk = bytes.Repeat(chunk, 32<<10/len(chunk))
		var s SSEScanner
		b.SetBytes(int64(len(chunk)))
		b.ReportAllocs()
		for b.Loop() {
			s.Write(chunk)
		}
	})
}

// realisticStream is a short response as the Messages API streams it.
var realisticStream = messageStart + contentStart + ping + textDelta("Hello") + textDelta(", world") +
	textDelta("!") + contentStop + messageDelta(`{"output_tokens":15}`) + messageStop

// writeChunks writes stream to s in chunks of n bytes.
func writeChunks(s *SSEScanner, stream []byte, n int) {
	for p := stream; len(p) > 0; {
		k := min(len(p), n)
		s.Write(p[:k])
		p = p[k:]
	}
}

// BenchmarkSSEScannerStream measures the cost per stream of a short
// response, which is dominated by the events the scanner reads.
func BenchmarkSSEScannerStream(b *testing.B) {
	stream := []byte(realisticStream)
	for _, chunk := range []int{64, 1 << 10, len(stream)} {
		b.Run(fmt.Sprintf("%dB writes", chunk), func(b *testing.B) {
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			var s SSEScanner
			for b.Loop() {
				s = SSEScanner{}
				writeChunks(&s, stream, chunk)
			}
			if s.Usage() != withOutput(startUsage, 15) {
				b.Fatalf("usage = %+v", s.Usage())
			}
		})
	}
}
