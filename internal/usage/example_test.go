package usage_test

import (
	"fmt"
	"strings"

	"github.com/cc-relay/caddy-cc-relay/internal/usage"
)

func ExampleSSEScanner() {
	stream := "event: message_start\n" +
		`data: {"type":"message_start","message":{"model":"claude-sonnet-4-5-20250929","usage":{"input_tokens":25,"cache_read_input_tokens":30000,"output_tokens":1}}}` + "\n\n" +
		"event: content_block_delta\n" +
		`data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}` + "\n\n" +
		"event: message_delta\n" +
		`data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}` + "\n\n"

	// A relay feeds the scanner each chunk it forwards; here the stream
	// arrives in 40-byte chunks.
	var s usage.SSEScanner
	r := strings.NewReader(stream)
	buf := make([]byte, 40)
	for {
		n, err := r.Read(buf)
		if s.Write(buf[:n]) {
			u := s.Usage()
			fmt.Printf("input %d, cache read %d, output %d\n", u.InputTokens, u.CacheReadInputTokens, u.OutputTokens)
		}
		if err != nil {
			break
		}
	}
	fmt.Println(s.Usage().Model)
	// Output:
	// input 25, cache read 30000, output 1
	// input 25, cache read 30000, output 15
	// claude-sonnet-4-5-20250929
}

func ExampleJSONScanner() {
	var s usage.JSONScanner
	s.Write([]byte(`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`))
	fmt.Println(s.Usage().ErrorType)
	// Output:
	// overloaded_error
}
