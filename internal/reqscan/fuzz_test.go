package reqscan

import (
	"encoding/json"
	"testing"
)

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
		// Structure around the fast paths that skip nested values: empty
		// and spaced containers, escapes across the 16-byte blocks,
		// broken literals and separators, other whitespace.
		` { } `, `{"a":{}}`, `{"a":[]}`, `{"a":{ }}`, `{"a":[ ]}`,
		`{"a":{"b":"0123456789abcdef0123456789abcdef0123456789\\\\\"x"}}`,
		`{"a":{"b":"0123456789abcdef0123456789abcdef01234567\\"}`,
		`{"a":[1 ,2 ] , "b" : { "c" :tru }}`,
		`{"a":[fals]}`, `{"a":[nul]}`, `{"a":{"b":1]}`, `{"a":[1,]}`, `{"a":{"b" 1}}`,
		"{\"a\":[\n\t{\"b\"\r:\n1}\n]\n}",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	body := claudeCodeBody(4 << 10)
	f.Add(body)
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		f.Fatal(err)
	}
	indented, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(indented)
	f.Fuzz(func(t *testing.T, body []byte) {
		checkScan(t, body)
		// SessionFromUserID must cope with any string.
		SessionFromUserID(string(body))
	})
}

// TestScanRejectsBrokenStructure checks the errors Scan gives for bodies
// broken inside values it skips, which FuzzScan's comparison with
// encoding/json does not cover (it only compares bodies encoding/json
// decodes). The messages are the ones the scanner gave before its skipping
// was rewritten for speed, when the previous version was the reference.
func TestScanRejectsBrokenStructure(t *testing.T) {
	for _, tt := range []struct{ body, err string }{
		{`{"a":{"b":"0123456789abcdef0123456789abcdef01234567\\"}`, "invalid JSON at offset 55: unexpected end of input"},
		{`{"a":[1 ,2 ] , "b" : { "c" :tru }}`, "invalid JSON at offset 28: unexpected character 't' in literal true"},
		{`{"a":[fals]}`, "invalid JSON at offset 6: unexpected character 'f' in literal false"},
		{`{"a":[nul]}`, "invalid JSON at offset 6: unexpected character 'n' in literal null"},
		{`{"a":{"b":1]}`, "invalid JSON at offset 11: unexpected character ']' after value"},
		{`{"a":[1,]}`, "invalid JSON at offset 8: unexpected character ']' looking for beginning of value"},
		{`{"a":{"b" 1}}`, "invalid JSON at offset 10: unexpected character '1' after object key"},
	} {
		if _, err := Scan([]byte(tt.body)); err == nil || err.Error() != tt.err {
			t.Errorf("Scan(%q) error = %v, want %q", tt.body, err, tt.err)
		}
	}
}
