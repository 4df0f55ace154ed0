package reqscan

import "testing"

// FuzzScan checks that Scan never panics, rejects every body whose top level
// is not an object, and agrees with encoding/json on every body that
// encoding/json decodes (see checkScan).
func FuzzScan(f *testing.F) {
	seeds := []string{
		`{}`,
		`{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,"metadata":{"user_id":"user_1_account_2_session_3"},"system":"s","messages":[{"role":"user","content":"hi"}]}`,
		`{"mod\u0065l":"a\ud83d\ude00","model":"b","metadata":{"user_id":"{\"session_id\":\"s\"}"}}`,
		`{"a":[1,{"b":"\\\"}"},[true,false,null]],"max_tokens":-0}`,
		`{"max_tokens":1e3}`,
		`{"stream":"yes"}`,
		`{"a":"x}`,
		`{"a":[1,2}`,
		`{"a":1}x`,
		`[{"model":"m"}]`,
		"{\"model\":\"\xff\"}",
		``,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Add(claudeCodeBody(4 << 10))
	f.Fuzz(func(t *testing.T, body []byte) {
		checkScan(t, body)
		// SessionFromUserID must cope with any string.
		SessionFromUserID(string(body))
	})
}
