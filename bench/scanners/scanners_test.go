package scanners

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/buger/jsonparser"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/tidwall/gjson"

	"github.com/cc-relay/caddy-cc-relay/internal/reqscan"
)

const (
	model   = "claude-sonnet-4-5-20250929"
	userID  = `{"device_id":"3f9a1c0e5b7d2468ace0f1357924680bdf13579bdf02468ace13579bdf024681","account_uuid":"0b6f1e2a-8c4d-4e7f-9a1b-2c3d4e5f6a7b","session_id":"5f0c2b1e-7d3a-4c9b-8e6f-1a2b3c4d5e6f"}`
	maxToks = 32000
)

// claudeCodeBody is a request body shaped like Claude Code's, with the
// fields the relay reads first (as Claude Code sends them) and metadata
// after a conversation of tool calls that is grown to at least size bytes.
func claudeCodeBody(size int) []byte {
	block := func(v ...any) map[string]any {
		m := map[string]any{}
		for i := 0; i < len(v); i += 2 {
			m[v[i].(string)] = v[i+1]
		}
		return m
	}
	code := strings.Repeat("func f(x int) string {\n\tif x > 0 {\n\t\treturn \"positive\\n\"\n\t}\n\treturn `\\d+`\n}\n", 8)
	var msgs []any
	req := block("model", model, "max_tokens", maxToks, "stream", true,
		"system", []any{block("type", "text", "text", strings.Repeat("You are Claude Code. ", 40), "cache_control", block("type", "ephemeral"))},
		"tools", []any{block("name", "Bash", "description", strings.Repeat("Runs a command. ", 20),
			"input_schema", block("type", "object", "properties", block("command", block("type", "string"))))})
	for i := 0; ; i++ {
		id := fmt.Sprintf("toolu_%020d", i)
		msgs = append(msgs,
			block("role", "assistant", "content", []any{block("type", "tool_use", "id", id, "name", "Read", "input", block("file_path", "/src/main.go"))}),
			block("role", "user", "content", []any{block("type", "tool_result", "tool_use_id", id, "content", code)}))
		req["messages"] = msgs
		req["metadata"] = block("user_id", userID)
		b, err := json.Marshal(req)
		if err != nil {
			panic(err)
		}
		if len(b) >= size {
			return b
		}
	}
}

type fields struct {
	model     string
	stream    bool
	maxTokens int64
	userID    string
}

func (f fields) check(b *testing.B) {
	if f.model != model || !f.stream || f.maxTokens != maxToks || f.userID != userID {
		b.Fatalf("read %+v", f)
	}
}

// byReqscan is the relay's scanner. Besides the four fields it checks the
// body's structure (brackets, strings, separators, trailing data), refuses
// repeated fields and keeps the raw system prompt and first message.
func byReqscan(body []byte) (fields, error) {
	info, err := reqscan.Scan(body)
	return fields{info.Model, info.Stream, info.MaxTokens, info.UserID}, err
}

// byGjson reads the four paths in one pass; it checks nothing it skips.
func byGjson(body []byte) (fields, error) {
	r := gjson.GetManyBytes(body, "model", "stream", "max_tokens", "metadata.user_id")
	return fields{r[0].String(), r[1].Bool(), r[2].Int(), r[3].String()}, nil
}

// byJsonparser reads the four paths in one pass; it checks nothing it skips.
func byJsonparser(body []byte) (fields, error) {
	var f fields
	var ferr error
	jsonparser.EachKey(body, func(i int, v []byte, _ jsonparser.ValueType, err error) {
		if err != nil {
			ferr = err
			return
		}
		switch i {
		case 0:
			f.model, ferr = jsonparser.ParseString(v)
		case 1:
			f.stream, ferr = jsonparser.ParseBoolean(v)
		case 2:
			f.maxTokens, ferr = jsonparser.ParseInt(v)
		case 3:
			f.userID, ferr = jsonparser.ParseString(v)
		}
	}, []string{"model"}, []string{"stream"}, []string{"max_tokens"}, []string{"metadata", "user_id"})
	return f, ferr
}

// byJsontext walks the top-level object with the streaming tokenizer of
// encoding/json/v2, skipping other values; it validates everything.
func byJsontext(body []byte) (fields, error) {
	var f fields
	d := jsontext.NewDecoder(bytes.NewReader(body))
	if _, err := d.ReadToken(); err != nil {
		return f, err
	}
	for d.PeekKind() != '}' {
		k, err := d.ReadToken()
		if err != nil {
			return f, err
		}
		key := k.String() // k is valid only until the next read
		switch key {
		case "model", "stream", "max_tokens":
			t, err := d.ReadToken()
			if err != nil {
				return f, err
			}
			switch key {
			case "model":
				f.model = t.String()
			case "stream":
				f.stream = t.Bool()
			default:
				if f.maxTokens, err = t.Int(); err != nil {
					return f, err
				}
			}
		case "metadata":
			v, err := d.ReadValue()
			if err != nil {
				return f, err
			}
			var m struct {
				UserID string `json:"user_id"`
			}
			if err := json.Unmarshal(v, &m); err != nil {
				return f, err
			}
			f.userID = m.UserID
		default:
			if err := d.SkipValue(); err != nil {
				return f, err
			}
		}
	}
	_, err := d.ReadToken()
	return f, err
}

// byUnmarshal is encoding/json into a struct of the fields, the baseline.
func byUnmarshal(body []byte) (fields, error) {
	var v struct {
		Model     string `json:"model"`
		Stream    bool   `json:"stream"`
		MaxTokens int64  `json:"max_tokens"`
		Metadata  struct {
			UserID string `json:"user_id"`
		} `json:"metadata"`
	}
	err := json.Unmarshal(body, &v)
	return fields{v.Model, v.Stream, v.MaxTokens, v.Metadata.UserID}, err
}

func BenchmarkReadFields(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"4KB", 4 << 10}, {"200KB", 200 << 10}} {
		body := claudeCodeBody(size.n)
		for _, r := range []struct {
			name string
			read func([]byte) (fields, error)
		}{
			{"reqscan", byReqscan},
			{"gjson", byGjson},
			{"jsonparser", byJsonparser},
			{"jsontext", byJsontext},
			{"encoding_json", byUnmarshal},
		} {
			b.Run(size.name+"/"+r.name, func(b *testing.B) {
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				var f fields
				var err error
				for b.Loop() {
					if f, err = r.read(body); err != nil {
						b.Fatal(err)
					}
				}
				f.check(b)
			})
		}
	}
}
