package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
)

// Realistic Messages API bodies, shaped like Claude Code's: a cached system
// prompt, tool definitions, a conversation of text, tool_use and
// tool_result blocks (source code with quotes, tabs and newlines to escape),
// metadata.user_id with a session, and stream set or not.

type block map[string]any

var toolDefs = []block{
	{"name": "Bash", "description": "Executes a given bash command in a persistent shell session with optional timeout, ensuring proper handling and security measures.",
		"input_schema": block{"type": "object", "properties": block{
			"command":     block{"type": "string", "description": "The command to execute"},
			"timeout":     block{"type": "number", "description": "Optional timeout in milliseconds (max 600000)"},
			"description": block{"type": "string", "description": "Clear, concise description of what this command does in 5-10 words."}},
			"required": []string{"command"}, "additionalProperties": false, "$schema": "http://json-schema.org/draft-07/schema#"}},
	{"name": "Read", "description": "Reads a file from the local filesystem. You can access any file directly by using this tool.",
		"input_schema": block{"type": "object", "properties": block{
			"file_path": block{"type": "string", "description": "The absolute path to the file to read"},
			"offset":    block{"type": "number", "description": "The line number to start reading from"},
			"limit":     block{"type": "number", "description": "The number of lines to read"}},
			"required": []string{"file_path"}, "additionalProperties": false}},
	{"name": "Edit", "description": "Performs exact string replacements in files.",
		"input_schema": block{"type": "object", "properties": block{
			"file_path":   block{"type": "string"},
			"old_string":  block{"type": "string", "description": "The text to replace"},
			"new_string":  block{"type": "string", "description": "The text to replace it with (must be different from old_string)"},
			"replace_all": block{"type": "boolean", "default": false}},
			"required": []string{"file_path", "old_string", "new_string"}}},
	{"name": "Grep", "description": "A powerful search tool built on ripgrep. Supports full regex syntax (e.g., \"log.*Error\", \"function\\s+\\w+\").",
		"input_schema": block{"type": "object", "properties": block{
			"pattern": block{"type": "string"}, "path": block{"type": "string"}, "glob": block{"type": "string"},
			"output_mode": block{"type": "string", "enum": []string{"content", "files_with_matches", "count"}}},
			"required": []string{"pattern"}}},
}

const systemPrompt = "You are Claude Code, Anthropic's official CLI for Claude.\n\nYou are an interactive CLI tool that helps users with software engineering tasks. " +
	"Use the instructions below and the tools available to you to assist the user.\n\nIMPORTANT: Assist with defensive security tasks only. " +
	"Refuse to create, modify, or improve code that may be used maliciously.\n\n# Tone and style\nYou should be concise, direct, and to the point.\n"

var codeLines = []string{
	"func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {",
	"\tclient, ok := h.authenticate(r)",
	"\tif !ok {",
	"\t\twriteError(w, http.StatusUnauthorized, \"authentication_error\", \"invalid or missing client token\", 0)",
	"\t\treturn nil",
	"\t}",
	"\tbody, status, msg := readBody(r, h.MaxBody) // bounded: the upstream's own limit",
	"\tfor i := range h.Keys { fmt.Printf(\"%d\\t%q\\n\", i, h.Keys[i].Name) }",
	"\t// Ünïcödé comments — and “smart quotes” — must survive the relay unchanged.",
	"\treturn next.ServeHTTP(w, r)",
	"}",
	"",
}

func codeText(rng *rand.Rand, n int) string {
	var sb strings.Builder
	line := rng.IntN(len(codeLines))
	for sb.Len() < n {
		fmt.Fprintf(&sb, "%6d\t%s\n", line+1, codeLines[line%len(codeLines)])
		line++
	}
	return sb.String()
}

// makeBody returns a Messages body of about size bytes (never less) for the
// given session, with stream set as asked.
func makeBody(size int, session int, stream bool) []byte {
	rng := rand.New(rand.NewPCG(uint64(size), uint64(session)))
	userID := fmt.Sprintf("user_%064x_account_%s_session_%s", uint64(0xabcdef1234567)*uint64(session+1),
		"3f1a9b2c-7d4e-4f5a-8b6c-1d2e3f4a5b6c", fakeUUID(rng))
	msgs := []block{{"role": "user", "content": []block{{"type": "text", "text": "Please add a benchmark for the relay's request path and fix anything slow you find."}}}}
	build := func(pad string) []byte {
		m := msgs
		if pad != "" {
			m = append(append([]block{}, msgs...), block{"role": "user", "content": []block{{"type": "text", "text": pad}}})
		}
		body := block{
			"model":      "claude-sonnet-4-5-20250929",
			"max_tokens": 32000,
			"system": []block{
				{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.", "cache_control": block{"type": "ephemeral"}},
				{"type": "text", "text": systemPrompt, "cache_control": block{"type": "ephemeral"}},
			},
			"tools":       toolDefs,
			"messages":    m,
			"metadata":    block{"user_id": userID},
			"temperature": 1,
			"stream":      stream,
		}
		b, err := json.Marshal(body)
		if err != nil {
			panic(err)
		}
		return b
	}
	for turn := 0; ; turn++ {
		b := build("")
		if len(b) >= size-1500 {
			break
		}
		id := fmt.Sprintf("toolu_01%022d", rng.Uint64()%1e18)
		msgs = append(msgs,
			block{"role": "assistant", "content": []block{
				{"type": "text", "text": "Let me look at the handler first."},
				{"type": "tool_use", "id": id, "name": "Read", "input": block{"file_path": fmt.Sprintf("/src/caddymodule/file%d.go", turn)}},
			}},
			block{"role": "user", "content": []block{
				{"type": "tool_result", "tool_use_id": id, "content": codeText(rng, min(1800, max(200, size-len(b)-2000)))},
			}},
		)
	}
	// Pad the last user turn up to the size.
	b := build("")
	if len(b) < size {
		pad := size - len(b) - 60
		b = build(codeText(rng, max(pad, 1)))
		for len(b) < size {
			pad += size - len(b) + 8
			b = build(codeText(rng, pad)[:pad])
		}
	}
	return b
}

func fakeUUID(rng *rand.Rand) string {
	return fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", rng.Uint32(), rng.Uint32()&0xffff, rng.Uint32()&0xfff, rng.Uint32()&0xfff, rng.Uint64()&0xffffffffffff)
}

// bodySet is one body per session, so concurrent workers look like
// separate Claude Code sessions.
type bodySet struct {
	size     int
	stream   bool
	bodies   [][]byte
	sessions []string
}

func makeBodies(size, n int, stream bool) *bodySet {
	bs := &bodySet{size: size, stream: stream}
	for i := 0; i < n; i++ {
		bs.bodies = append(bs.bodies, makeBody(size, i, stream))
		bs.sessions = append(bs.sessions, fmt.Sprintf("5b0e4c1d-0000-4000-8000-%012d", i))
	}
	return bs
}
