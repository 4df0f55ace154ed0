package main

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
	modelSonnet = "claude-sonnet-4-5-20250929"
	modelHaiku  = "claude-haiku-4-5-20251001"
)

// words is the benchmark's vocabulary: code and prose, ASCII only, so JSON
// encodes it without escapes that would change its size.
var words = strings.Fields(`func return if else for range the a to of and in is that it with
	as for was on are be this by error nil err string int bool struct type interface package import
	const var map slice len cap append make new go defer select case switch default break continue
	request response relay key pool budget token limit session cache header stream event message
	file line test build run check value result context handler server client upstream retry
	which when then there their would could should about into over under after before between`)

// text returns about n bytes of words, with a newline now and then.
func text(r *rand.Rand, n int) string {
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

func uuid(r *rand.Rand) string {
	h := hexID(r, 32)
	return h[:8] + "-" + h[8:12] + "-4" + h[13:16] + "-a" + h[17:20] + "-" + h[20:]
}

type cacheControl struct {
	Type string `json:"type"`
}

var ephemeral = &cacheControl{Type: "ephemeral"}

// block is a content block of the kinds Claude Code sends.
type block struct {
	Type         string            `json:"type"`
	Text         string            `json:"text,omitempty"`
	ID           string            `json:"id,omitempty"`
	Name         string            `json:"name,omitempty"`
	Input        map[string]string `json:"input,omitempty"`
	ToolUseID    string            `json:"tool_use_id,omitempty"`
	Content      string            `json:"content,omitempty"`
	CacheControl *cacheControl     `json:"cache_control,omitempty"`
}

type message struct {
	Role    string  `json:"role"`
	Content []block `json:"content"`
}

type tool struct {
	Name        string         `json:"name"`
	Description string         `json:"description"`
	InputSchema map[string]any `json:"input_schema"`
}

type body struct {
	Model     string            `json:"model"`
	MaxTokens int               `json:"max_tokens"`
	Stream    bool              `json:"stream"`
	System    []block           `json:"system,omitempty"`
	Tools     []tool            `json:"tools,omitempty"`
	Messages  []message         `json:"messages"`
	Metadata  map[string]string `json:"metadata,omitempty"`
}

func encode(v any) []byte {
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

func outputTokens(b []byte) int64 {
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

func marker(n int) string { return fmt.Sprintf(" [[out:%d]]", n) }

// expOut draws an output length: an exponential tail over a floor, capped.
func expOut(r *rand.Rand, floor, mean, ceiling int) int {
	v := floor + int(-math.Log(1-r.Float64())*float64(mean-floor))
	return min(v, ceiling)
}

const claudeCodeIntro = "You are Claude Code, Anthropic's official CLI for Claude."

func userID(r *rand.Rand, session string) string {
	return "user_" + hexID(r, 64) + "_account__session_" + session
}

// genReq is one generated request.
type genReq struct {
	body    []byte
	model   string
	class   string // "sonnet" or "haiku"
	stream  bool
	out     int // output tokens the mock will produce (before max_tokens)
	session string
}

// quotaRequest is an independent Claude-Code-like request: 85% main-model
// requests of 1-40 KB (70% of all requests stream), 15% small Haiku
// side requests; output lengths and max_tokens vary.
func quotaRequest(r *rand.Rand, outMean int) genReq {
	session := uuid(r)
	if r.IntN(100) < 15 {
		n := 1000 + r.IntN(3000)
		out := expOut(r, 10, 80, 400)
		b := body{
			Model: modelHaiku, MaxTokens: 512, Stream: r.IntN(100) < 30,
			System:   []block{{Type: "text", Text: "Analyze if this message indicates a new conversation topic."}},
			Messages: []message{{Role: "user", Content: []block{{Type: "text", Text: text(r, n) + marker(out)}}}},
			Metadata: map[string]string{"user_id": userID(r, session)},
		}
		return genReq{body: encode(b), model: modelHaiku, class: "haiku", stream: b.Stream, out: out, session: session}
	}
	size := 1000 + r.IntN(39000)
	maxTok := 32000
	switch p := r.IntN(100); {
	case p < 10:
		maxTok = 1024
	case p < 30:
		maxTok = 8192
	}
	out := expOut(r, 20, outMean, 4000)
	sys := min(size/3, 6000)
	b := body{
		Model: modelSonnet, MaxTokens: maxTok, Stream: r.IntN(100) < 80,
		System: []block{
			{Type: "text", Text: claudeCodeIntro},
			{Type: "text", Text: text(r, sys)},
		},
		Metadata: map[string]string{"user_id": userID(r, session)},
	}
	// A conversation of 1-5 exchanges filling the rest.
	turns := 1 + r.IntN(5)
	rest := max(size-sys-300, 200)
	for t := 0; t < turns; t++ {
		part := rest / turns
		if t > 0 {
			b.Messages = append(b.Messages, message{Role: "assistant", Content: []block{{Type: "text", Text: text(r, part/4)}}})
			part -= part / 4
		}
		b.Messages = append(b.Messages, message{Role: "user", Content: []block{{Type: "text", Text: text(r, part)}}})
	}
	last := &b.Messages[len(b.Messages)-1].Content[0]
	last.Text += marker(out)
	return genReq{body: encode(b), model: modelSonnet, class: "sonnet", stream: b.Stream, out: out, session: session}
}

// Claude Code's tool definitions: identical for every session.
var ccTools = func() []tool {
	r := rand.New(rand.NewPCG(42, 42))
	names := []string{"Task", "Bash", "Glob", "Grep", "LS", "ExitPlanMode", "Read", "Edit", "MultiEdit", "Write", "NotebookEdit", "WebFetch", "TodoWrite", "WebSearch", "BashOutput", "KillShell"}
	var ts []tool
	for _, n := range names {
		ts = append(ts, tool{
			Name:        n,
			Description: text(r, 300+r.IntN(900)),
			InputSchema: map[string]any{
				"type":                 "object",
				"properties":           map[string]any{"path": map[string]string{"type": "string", "description": text(r, 60)}},
				"required":             []string{"path"},
				"additionalProperties": false,
			},
		})
	}
	return ts
}()

// The system prompt common to every session.
var ccSystem = text(rand.New(rand.NewPCG(43, 43)), 9000)

// conversation is one Claude Code session: a system prompt with the
// session's environment, the tools, and a history that grows by an
// assistant turn (text + tool_use) and a tool_result per request. Like
// Claude Code it marks the system prompt and the last message with
// cache_control.
type conversation struct {
	r        *rand.Rand
	id       string
	user     string
	env      string
	history  []message
	turn     int
	maxTurns int
}

func newConversation(r *rand.Rand) *conversation {
	c := &conversation{r: r, id: uuid(r), maxTurns: 15 + r.IntN(26)}
	c.user = userID(r, c.id)
	c.env = "<env>\nWorking directory: /home/dev/project-" + hexID(r, 6) + "\nIs directory a git repo: Yes\nPlatform: linux\n</env>\n" + text(r, 400+r.IntN(800))
	c.history = []message{{Role: "user", Content: []block{{Type: "text", Text: text(r, 300+r.IntN(1500))}}}}
	return c
}

var toolNames = []string{"Read", "Bash", "Grep", "Edit", "Glob"}

// next returns the body of the conversation's next main request; the caller
// then calls advance with the same output length once it was answered.
func (c *conversation) next() genReq {
	out := expOut(c.r, 30, 250, 2000)
	hist := make([]message, len(c.history))
	copy(hist, c.history)
	last := hist[len(hist)-1]
	blocks := make([]block, len(last.Content))
	copy(blocks, last.Content)
	lb := &blocks[len(blocks)-1]
	switch lb.Type {
	case "tool_result":
		lb.Content += marker(out)
	default:
		lb.Text += marker(out)
	}
	lb.CacheControl = ephemeral
	hist[len(hist)-1] = message{Role: last.Role, Content: blocks}
	b := body{
		Model: modelSonnet, MaxTokens: 32000, Stream: true,
		System: []block{
			{Type: "text", Text: claudeCodeIntro},
			{Type: "text", Text: ccSystem + c.env, CacheControl: ephemeral},
		},
		Tools:    ccTools,
		Messages: hist,
		Metadata: map[string]string{"user_id": c.user},
	}
	return genReq{body: encode(b), model: modelSonnet, class: "sonnet", stream: true, out: out, session: c.id}
}

// advance appends the answered turn (what the model said, as the client
// keeps it, and the tool's result) to the history. The marker stays in the
// history unmarked, so later prefixes match what was cached.
func (c *conversation) advance(req genReq) {
	last := &c.history[len(c.history)-1]
	lb := &last.Content[len(last.Content)-1]
	if lb.Type == "tool_result" {
		lb.Content += marker(req.out)
	} else {
		lb.Text += marker(req.out)
	}
	id := "toolu_" + hexID(c.r, 24)
	name := toolNames[c.r.IntN(len(toolNames))]
	c.history = append(c.history,
		message{Role: "assistant", Content: []block{
			{Type: "text", Text: text(c.r, min(req.out*6, 3000))},
			{Type: "tool_use", ID: id, Name: name, Input: map[string]string{"path": "/home/dev/project/" + hexID(c.r, 8) + ".go"}},
		}},
		message{Role: "user", Content: []block{{Type: "tool_result", ToolUseID: id, Content: text(c.r, 300+c.r.IntN(4700))}}},
	)
	c.turn++
}

func (c *conversation) done() bool { return c.turn >= c.maxTurns }

// sideRequest is a small Haiku request Claude Code makes on the side of a
// session (topic detection, command prefixes): no cache_control.
func (c *conversation) sideRequest() genReq {
	out := expOut(c.r, 5, 40, 200)
	b := body{
		Model: modelHaiku, MaxTokens: 512, Stream: false,
		System:   []block{{Type: "text", Text: "Extract the command prefix of this shell command."}},
		Messages: []message{{Role: "user", Content: []block{{Type: "text", Text: text(c.r, 500+c.r.IntN(2000)) + marker(out)}}}},
		Metadata: map[string]string{"user_id": c.user},
	}
	return genReq{body: encode(b), model: modelHaiku, class: "haiku", stream: false, out: out, session: c.id}
}
