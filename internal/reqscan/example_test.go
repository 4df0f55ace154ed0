package reqscan_test

import (
	"fmt"

	"github.com/cc-relay/caddy-cc-relay/internal/reqscan"
)

func ExampleScan() {
	body := []byte(`{
		"model": "claude-sonnet-4-5-20250929",
		"max_tokens": 32000,
		"stream": true,
		"metadata": {"user_id": "{\"device_id\":\"d1\",\"account_uuid\":\"a1\",\"session_id\":\"5f0c2b1e\"}"},
		"system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
		"messages": [{"role": "user", "content": "Fix the failing test."}]
	}`)
	info, err := reqscan.Scan(body)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(info.Model, info.MaxTokens, info.Stream, info.SessionID, info.PrefixHash() != 0)

	_, err = reqscan.Scan([]byte(`{"model": "claude-sonnet-4-5", "stream": "yes"}`))
	fmt.Println(err)
	_, err = reqscan.Scan([]byte(`{"model": "claude-sonnet-4-5", "messages": [`))
	fmt.Println(err)
	// Output:
	// claude-sonnet-4-5-20250929 32000 true 5f0c2b1e true
	// stream is not a boolean
	// invalid JSON at offset 44: unexpected end of input
}

func ExampleSessionFromUserID() {
	fmt.Println(reqscan.SessionFromUserID("user_9f86d081_account_0b6f1e2a-8c4d-4e7f-9a1b-2c3d4e5f6a7b_session_5f0c2b1e-7d3a-4c9b-8e6f-1a2b3c4d5e6f"))
	fmt.Println(reqscan.SessionFromUserID(`{"device_id":"9f86d081","account_uuid":"","session_id":"5f0c2b1e-7d3a-4c9b-8e6f-1a2b3c4d5e6f"}`))
	fmt.Printf("%q\n", reqscan.SessionFromUserID("some-other-client"))
	// Output:
	// 5f0c2b1e-7d3a-4c9b-8e6f-1a2b3c4d5e6f
	// 5f0c2b1e-7d3a-4c9b-8e6f-1a2b3c4d5e6f
	// ""
}
