package ccload

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
)

// Request bodies shaped like Claude Code's: a Messages API body with a
// system prompt, tools, a conversation and metadata.user_id. Everything is
// generated from seeded random sources, so every variant of a scenario sees
// byte-for-byte the same traffic.

const (
	ModelSonnet = "claude-sonnet-4-5-20250929"
	ModelHaiku  = "claude-haiku-4-5-20251001"
)

// words is the benchmark's vocabulary: code and prose, ASCII only, so JSON
// encodes it without escapes that would change its size.
var words = strings.Fields(`func return if else for range the a to of and in is that it with
	as for was on are be this by error nil err string int bool struct type interface package import
	const var map slice len cap append make new go defer select case switch default break continue
	request response relay key pool budget token limit session cache header stream event message
	file line test build run check value result context handler server client upstream retry
	which when then there their would could should about into over under after before between`)

// Text returns about n bytes of words, with a newline now and then.
func Text(r *rand.Rand, n int) string {
	var b strings.Builder
	b.Grow(n + 16)
	for b.Len() < n {
		w := words[r.IntN(len(words))]
		b.WriteString(w)
		if r.IntN(12) == 0 {
			b.WriteString(".\n")
		} else {
			b.WriteByte(' ')
		}
	}
	return b.String()
}

func hexID(r *rand.Rand, n int) string {
	const digits = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = digits[r.IntN(16)]
	}
	return string(b)
}

// UUID is a random version-4 UUID from r.
func UUID(r *rand.Rand) string {
	h := hexID(r, 32)
	return h[:8] + "-" + h[8:12] + "-4" + h[13:16] + "-a" + h[17:20] + "-" + h[20:]
}

type cacheControl struct {
	Type string `json:"type"`
}

var ephemeral = &cacheControl{Type: "ephemeral"}

// Block is a content block of the kinds Claude Code sends.
type Block struct {
	Type         string            `json:"type"`
	Text         string            `json:"text,omitempty"`
	ID           string            `json:"id,omitempty"`
	Name         string            `json:"name,omitempty"`
	Input        map[string]string `json:"input,omitempty"`
	ToolUseID    string            `json:"tool_use_id,omitempty"`
	Content      string            `json:"content,omitempty"`
	CacheControl *cacheControl     `json:"cache_control,omitempty"`
}

// Message is one turn of a conversation.
type Message struct {
	Role    string  `json:"role"`
	Content []Block `json:"content"`
}

type tool struct {
	Name        string         `json:"name"`
	Description string         `json:"description"`
	InputSchema map[string]any `json:"input_schema"`
}

// Body is a Messages API request body.
type Body struct {
	Model     string            `json:"model"`
	MaxTokens int               `json:"max_tokens"`
	Stream    bool              `json:"stream"`
	System    []Block           `json:"system,omitempty"`
	Tools     []tool            `json:"tools,omitempty"`
	Messages  []Message         `json:"messages"`
	Metadata  map[string]string `json:"metadata,omitempty"`
}

// Encode is v as JSON without HTML escapes.
func Encode(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// The mock's Config.OutputTokens reads how long the answer to a body is from
// the last "[[out:N]]" marker in it, which the generator chose.
var outMarker = []byte("[[out:")

func OutputTokens(b []byte) int64 {
	i := bytes.LastIndex(b, outMarker)
	if i < 0 {
		return 100
	}
	rest := b[i+len(outMarker):]
	j := bytes.IndexByte(rest, ']')
	if j < 0 {
		return 100
	}
	n, err := strconv.ParseInt(string(rest[:j]), 10, 64)
	if err != nil {
		return 100
	}
	return n
}

// Marker asks the mock for an answer of n output tokens.
func Marker(n int) string { return fmt.Sprintf(" [[out:%d]]", n) }

// ExpOut draws an output length: an exponential tail over a floor, capped.
func ExpOut(r *rand.Rand, floor, mean, ceiling int) int {
	v := floor + int(-math.Log(1-r.Float64())*float64(mean-floor))
	return min(v, ceiling)
}

const ClaudeCodeIntro = "You are Claude Code, Anthropic's official CLI for Claude."

// UserID is metadata.user_id as Claude Code sends it for session.
func UserID(r *rand.Rand, session string) string {
	return "user_" + hexID(r, 64) + "_account__session_" + session
}

// Request is one generated request.
type Request struct {
	Body    []byte
	Model   string
	Class   string // "sonnet" or "haiku"
	Stream  bool
	Out     int // output tokens the mock will produce (before max_tokens)
	Session string
}

// QuotaRequest is an independent Claude-Code-like request: 85% main-model
// requests of 1-40 KB (70% of all requests stream), 15% small Haiku
// side requests; output lengths and max_tokens vary.
func QuotaRequest(r *rand.Rand, outMean int) Request {
	session := UUID(r)
	if r.IntN(100) < 15 { // 1 - SonnetShare
		n := 1000 + r.IntN(3000)
		out := ExpOut(r, 10, 80, 400)
		b := Body{
			Model: ModelHaiku, MaxTokens: 512, Stream: r.IntN(100) < 30,
			System:   []Block{{Type: "text", Text: "Analyze if this message indicates a new conversation topic."}},
			Messages: []Message{{Role: "user", Content: []Block{{Type: "text", Text: Text(r, n) + Marker(out)}}}},
			Metadata: map[string]string{"user_id": UserID(r, session)},
		}
		return Request{Body: Encode(b), Model: ModelHaiku, Class: "haiku", Stream: b.Stream, Out: out, Session: session}
	}
	size := 1000 + r.IntN(39000)
	maxTok := 32000
	switch p := r.IntN(100); {
	case p < 10:
		maxTok = 1024
	case p < 30:
		maxTok = 8192
	}
	out := ExpOut(r, 20, outMean, 4000)
	sys := min(size/3, 6000)
	b := Body{
		Model: ModelSonnet, MaxTokens: maxTok, Stream: r.IntN(100) < 80,
		System: []Block{
			{Type: "text", Text: ClaudeCodeIntro},
			{Type: "text", Text: Text(r, sys)},
		},
		Metadata: map[string]string{"user_id": UserID(r, session)},
	}
	// A conversation of 1-5 exchanges filling the rest.
	turns := 1 + r.IntN(5)
	rest := max(size-sys-300, 200)
	for t := 0; t < turns; t++ {
		part := rest / turns
		if t > 0 {
			b.Messages = append(b.Messages, Message{Role: "assistant", Content: []Block{{Type: "text", Text: Text(r, part/4)}}})
			part -= part / 4
		}
		b.Messages = append(b.Messages, Message{Role: "user", Content: []Block{{Type: "text", Text: Text(r, part)}}})
	}
	last := &b.Messages[len(b.Messages)-1].Content[0]
	last.Text += Marker(out)
	return Request{Body: Encode(b), Model: ModelSonnet, Class: "sonnet", Stream: b.Stream, Out: out, Session: session}
}

// SonnetShare is the share of QuotaRequest's requests on the main model.
const SonnetShare = 0.85

// MeanSonnetTokens estimates a main-model QuotaRequest's prompt tokens (body
// bytes / 4) from a sample of 2000 requests drawn with seed.
func MeanSonnetTokens(seed uint64, outMean int) float64 {
	r := rand.New(rand.NewPCG(seed^0xabcdef, 3))
	var sum, n float64
	for range 2000 {
		q := QuotaRequest(r, outMean)
		if q.Class == "sonnet" {
			sum += float64(len(q.Body)) / 4
			n++
		}
	}
	return sum / n
}

// Claude Code's tool definitions: identical for every session.
var ccTools = func() []tool {
	r := rand.New(rand.NewPCG(42, 42))
	names := []string{"Task", "Bash", "Glob", "Grep", "LS", "ExitPlanMode", "Read", "Edit", "MultiEdit", "Write", "NotebookEdit", "WebFetch", "TodoWrite", "WebSearch", "BashOutput", "KillShell"}
	var ts []tool
	for _, n := range names {
		ts = append(ts, tool{
			Name:        n,
			Description: Text(r, 300+r.IntN(900)),
			InputSchema: map[string]any{
				"type":                 "object",
				"properties":           map[string]any{"path": map[string]string{"type": "string", "description": Text(r, 60)}},
				"required":             []string{"path"},
				"additionalProperties": false,
			},
		})
	}
	return ts
}()

// The system prompt common to every session.
var ccSystem = Text(rand.New(rand.NewPCG(43, 43)), 9000)

// Conversation is one Claude Code session: a system prompt with the
// session's environment, the tools, and a history that grows by an
// assistant turn (text + tool_use) and a tool_result per request. Like
// Claude Code it marks the system prompt and the last message with
// cache_control.
type Conversation struct {
	r        *rand.Rand
	id       string
	user     string
	env      string
	history  []Message
	turn     int
	maxTurns int
}

// NewConversation starts a conversation of 15-40 turns drawn from r.
func NewConversation(r *rand.Rand) *Conversation {
	c := &Conversation{r: r, id: UUID(r), maxTurns: 15 + r.IntN(26)}
	c.user = UserID(r, c.id)
	c.env = "<env>\nWorking directory: /home/dev/project-" + hexID(r, 6) + "\nIs directory a git repo: Yes\nPlatform: linux\n</env>\n" + Text(r, 400+r.IntN(800))
	c.history = []Message{{Role: "user", Content: []Block{{Type: "text", Text: Text(r, 300+r.IntN(1500))}}}}
	return c
}

var toolNames = []string{"Read", "Bash", "Grep", "Edit", "Glob"}

// Next returns the body of the conversation's next main request; the caller
// then calls Advance with the same output length once it was answered.
func (c *Conversation) Next() Request {
	out := ExpOut(c.r, 30, 250, 2000)
	hist := make([]Message, len(c.history))
	copy(hist, c.history)
	last := hist[len(hist)-1]
	blocks := make([]Block, len(last.Content))
	copy(blocks, last.Content)
	lb := &blocks[len(blocks)-1]
	switch lb.Type {
	case "tool_result":
		lb.Content += Marker(out)
	default:
		lb.Text += Marker(out)
	}
	lb.CacheControl = ephemeral
	hist[len(hist)-1] = Message{Role: last.Role, Content: blocks}
	b := Body{
		Model: ModelSonnet, MaxTokens: 32000, Stream: true,
		System: []Block{
			{Type: "text", Text: ClaudeCodeIntro},
			{Type: "text", Text: ccSystem + c.env, CacheControl: ephemeral},
		},
		Tools:    ccTools,
		Messages: hist,
		Metadata: map[string]string{"user_id": c.user},
	}
	return Request{Body: Encode(b), Model: ModelSonnet, Class: "sonnet", Stream: true, Out: out, Session: c.id}
}

// Advance appends the answered turn (what the model said, as the client
// keeps it, and the tool's result) to the history. The marker stays in the
// history unmarked, so later prefixes match what was cached.
func (c *Conversation) Advance(req Request) {
	last := &c.history[len(c.history)-1]
	lb := &last.Content[len(last.Content)-1]
	if lb.Type == "tool_result" {
		lb.Content += Marker(req.Out)
	} else {
		lb.Text += Marker(req.Out)
	}
	id := "toolu_" + hexID(c.r, 24)
	name := toolNames[c.r.IntN(len(toolNames))]
	c.history = append(c.history,
		Message{Role: "assistant", Content: []Block{
			{Type: "text", Text: Text(c.r, min(req.Out*6, 3000))},
			{Type: "tool_use", ID: id, Name: name, Input: map[string]string{"path": "/home/dev/project/" + hexID(c.r, 8) + ".go"}},
		}},
		Message{Role: "user", Content: []Block{{Type: "tool_result", ToolUseID: id, Content: Text(c.r, 300+c.r.IntN(4700))}}},
	)
	c.turn++
}

// Done says the conversation has had all its turns.
func (c *Conversation) Done() bool { return c.turn >= c.maxTurns }

// SideRequest is a small Haiku request Claude Code makes on the side of a
// session (topic detection, command prefixes): no cache_control.
func (c *Conversation) SideRequest() Request {
	out := ExpOut(c.r, 5, 40, 200)
	b := Body{
		Model: ModelHaiku, MaxTokens: 512, Stream: false,
		System:   []Block{{Type: "text", Text: "Extract the command prefix of this shell command."}},
		Messages: []Message{{Role: "user", Content: []Block{{Type: "text", Text: Text(c.r, 500+c.r.IntN(2000)) + Marker(out)}}}},
		Metadata: map[string]string{"user_id": c.user},
	}
	return Request{Body: Encode(b), Model: ModelHaiku, Class: "haiku", Stream: false, Out: out, Session: c.id}
}
