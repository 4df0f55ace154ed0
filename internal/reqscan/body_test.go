package reqscan

import (
	"encoding/json"
	"fmt"
	"strings"
)

// ccUserID is a metadata.user_id in the JSON form recent Claude Code sends.
const ccUserID = `{"device_id":"3f9a1c0e5b7d2468ace0f1357924680bdf13579bdf02468ace13579bdf024681","account_uuid":"0b6f1e2a-8c4d-4e7f-9a1b-2c3d4e5f6a7b","session_id":"5f0c2b1e-7d3a-4c9b-8e6f-1a2b3c4d5e6f"}`

const ccSessionID = "5f0c2b1e-7d3a-4c9b-8e6f-1a2b3c4d5e6f"

// claudeCodeBody returns a request body shaped like Claude Code's: a system
// prompt array with cache_control, a tools array with JSON schemas, and a
// conversation of text, tool_use and tool_result blocks, grown until it is
// at least size bytes.
func claudeCodeBody(size int) []byte {
	cache := map[string]any{"type": "ephemeral"}
	system := []any{
		map[string]any{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.", "cache_control": cache},
		map[string]any{"type": "text", "text": strings.Repeat("You are an interactive CLI tool that helps users with software engineering tasks. ", 8), "cache_control": cache},
	}
	tools := []any{}
	for _, name := range []string{"Bash", "Read", "Edit", "Grep", "Glob", "Write", "TodoWrite"} {
		tools = append(tools, map[string]any{
			"name":        name,
			"description": strings.Repeat("Executes the "+name+" tool with the given parameters, in a sandbox. ", 3),
			"input_schema": map[string]any{
				"type": "object",
				"properties": map[string]any{
					"command":     map[string]any{"type": "string", "description": "The command to execute"},
					"timeout":     map[string]any{"type": "number", "description": "Optional timeout in milliseconds (max 600000)"},
					"description": map[string]any{"type": "string", "description": "Clear, concise description of what this command does in 5-10 words."},
				},
				"required":             []any{"command"},
				"additionalProperties": false,
				"$schema":              "http://json-schema.org/draft-07/schema#",
			},
		})
	}
	req := map[string]any{
		"model":      "claude-sonnet-4-5-20250929",
		"max_tokens": 32000,
		"stream":     true,
		"system":     system,
		"tools":      tools,
		"metadata":   map[string]any{"user_id": ccUserID},
		"messages":   []any{},
		"thinking":   map[string]any{"type": "enabled", "budget_tokens": 4000},
	}
	for i := 0; ; i++ {
		msgs := req["messages"].([]any)
		id := fmt.Sprintf("toolu_01%022d", i)
		msgs = append(msgs,
			map[string]any{"role": "user", "content": []any{
				map[string]any{"type": "text", "text": fmt.Sprintf("Step %d: please look at \"internal/server.go\"\nand fix the failing test.\t\u00e9\u4e16", i)},
			}},
			map[string]any{"role": "assistant", "content": []any{
				map[string]any{"type": "text", "text": "I'll read the file first."},
				map[string]any{"type": "tool_use", "id": id, "name": "Read", "input": map[string]any{"file_path": "/repo/internal/server.go", "limit": 2000}},
			}},
			map[string]any{"role": "user", "content": []any{
				map[string]any{"type": "tool_result", "tool_use_id": id, "content": strings.Repeat("     1\tpackage server\n     2\t\n     3\timport \"net/http\"\n", 12), "cache_control": cache},
			}},
		)
		req["messages"] = msgs
		b, err := json.Marshal(req)
		if err != nil {
			panic(err)
		}
		if len(b) >= size {
			return b
		}
	}
}
