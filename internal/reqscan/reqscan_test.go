package reqscan

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestScan(t *testing.T) {
	tests := []struct {
		name string
		body string
		want Info // the prefix hash is checked only for being zero or not
	}{
		{"empty object", `{}`, Info{}},
		{"whitespace", " \t\r\n{ \"model\" : \"m\" , \"stream\" :true,\"max_tokens\"\n:\n1024 } \n", Info{Model: "m", Stream: true, MaxTokens: 1024}},
		{"stream false", `{"stream":false}`, Info{}},
		{"nulls are absent", `{"model":null,"stream":null,"max_tokens":null,"metadata":null,"system":null,"messages":null}`, Info{}},
		{"user_id null", `{"metadata":{"user_id":null}}`, Info{}},
		{"negative max_tokens", `{"max_tokens":-5}`, Info{MaxTokens: -5}},
		{"max int64", `{"max_tokens":9223372036854775807}`, Info{MaxTokens: 1<<63 - 1}},
		{"min int64", `{"max_tokens":-9223372036854775808}`, Info{MaxTokens: -1 << 63}},
		{"escaped model", `{"model":"a\"b\\c\/d\ne\u00e9\ud83d\ude00"}`, Info{Model: "a\"b\\c/d\ne\u00e9\U0001F600"}},
		{"lone surrogate", `{"model":"x\ud800y"}`, Info{Model: "x\uFFFDy"}},
		{"invalid utf-8", "{\"model\":\"a\xffb\"}", Info{Model: "a\uFFFDb"}},
		{"escaped key", `{"mod\u0065l":"m","max\u005ftokens":7}`, Info{Model: "m", MaxTokens: 7}},
		{"other fields may repeat", `{"system":"a","x":1,"system":"b","x":2}`, Info{system: []byte(`"x"`)}},
		{"nested keys ignored", `{"x":{"model":"no","metadata":{"user_id":"no"}},"messages":[{"model":"no"}],"model":"yes"}`, Info{Model: "yes", system: []byte(`"x"`)}},
		{"escaped quotes in skipped strings", `{"a":"\"model\":\"no\"\\","model":"yes","b":"\\\\\"}"}`, Info{Model: "yes"}},
		{"legacy user id",
			`{"metadata":{"user_id":"user_ab12_account_0b6f1e2a-8c4d-4e7f-9a1b-2c3d4e5f6a7b_session_5f0c2b1e-7d3a-4c9b-8e6f-1a2b3c4d5e6f"}}`,
			Info{UserID: "user_ab12_account_0b6f1e2a-8c4d-4e7f-9a1b-2c3d4e5f6a7b_session_5f0c2b1e-7d3a-4c9b-8e6f-1a2b3c4d5e6f", SessionID: ccSessionID}},
		{"json user id",
			`{"metadata":{"user_id":` + strconv.Quote(ccUserID) + `}}`,
			Info{UserID: ccUserID, SessionID: ccSessionID}},
		{"system only", `{"system":"be brief"}`, Info{system: []byte(`"x"`)}},
		{"messages only", `{"messages":[{"role":"user","content":"hi"}]}`, Info{system: []byte(`"x"`)}},
		{"empty messages", `{"messages":[]}`, Info{}},
		{"all literal kinds", `{"a":[true,false,null,-1.5e+3,"s",{},[]],"stream":true}`, Info{Stream: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Scan([]byte(tt.body))
			if err != nil {
				t.Fatalf("Scan(%q) error: %v", tt.body, err)
			}
			if (got.PrefixHash() != 0) != (tt.want.PrefixHash() != 0) {
				t.Errorf("PrefixHash = %#x, want zero: %v", got.PrefixHash(), tt.want.PrefixHash() == 0)
			}
			if !sameFields(got, tt.want) {
				t.Errorf("Scan(%q)\n got %+v\nwant %+v", tt.body, got, tt.want)
			}
			checkScan(t, []byte(tt.body))
		})
	}
}

func TestScanErrors(t *testing.T) {
	tests := []struct {
		body    string
		wantErr string // substring of the error
	}{
		{``, "not a JSON object"},
		{`   `, "not a JSON object"},
		{`[]`, "not a JSON object"},
		{`"model"`, "not a JSON object"},
		{`null`, "not a JSON object"},
		{`x{}`, "not a JSON object"},
		{`{`, "offset 1: unexpected end"},
		{`{"model":"m"`, "unexpected end"},
		{`{"model":"m}`, "offset 9: unterminated string"},
		{`{"model":"m\"}`, "unterminated string"},
		{`{"a":}`, "offset 5"},
		{`{"a":1,}`, "looking for object key"},
		{`{,}`, "looking for object key"},
		{`{"a" 1}`, "after object key"},
		{`{"a":1 "b":2}`, "after object value"},
		{`{"a":[1,2}`, "after value"},
		{`{"a":[1 2]}`, "after value"},
		{`{"a":{"b":1]}`, "after value"},
		{`{"a":{"b" 1}}`, "after object key"},
		{`{"a":{1:2}}`, "looking for object key"},
		{`{"a":[1,]}`, "beginning of value"},
		{`{"a":tru}`, "literal true"},
		{`{"a":nul`, "literal null"},
		{`{"a":falsy}`, "literal false"},
		{`{"a":1}x`, "after top-level value"},
		{`{"a":1}{}`, "after top-level value"},
		{`{"a":1}}`, "after top-level value"},
		{`{"a":'x'}`, "beginning of value"},
		{`{"messages":[{"role":"user"},]}`, "beginning of value"},
		{`{"messages":[{"role":"user"}`, "unexpected end"},
		{`{"messages":[{"role":"user"} {}]}`, "after array element"},
		{`{"metadata":{"user_id":"u",}}`, "looking for object key"},
		{`{"metadata":{"user_id" "u"}}`, "after object key"},
		{`{"m\x":1}`, "invalid escape"},
		{`{"stream":"yes"}`, "stream is not a boolean"},
		{`{"stream":1}`, "stream is not a boolean"},
		{`{"max_tokens":1.5}`, "max_tokens is not an integer"},
		{`{"max_tokens":1.0}`, "max_tokens is not an integer"},
		{`{"max_tokens":1e3}`, "max_tokens is not an integer"},
		{`{"max_tokens":"1024"}`, "max_tokens is not an integer"},
		{`{"max_tokens":9223372036854775808}`, "max_tokens is not an integer"},
		{`{"max_tokens":-9223372036854775809}`, "max_tokens is not an integer"},
		{`{"max_tokens":-}`, "max_tokens is not an integer"},
		{`{"model":42}`, "model is not a string"},
		{`{"model":["m"]}`, "model is not a string"},
		{`{"model":"\q"}`, "model contains an invalid escape"},
		{`{"model":"\u12"}`, "model contains an invalid escape"},
		{`{"metadata":"u"}`, "metadata is not an object"},
		{`{"metadata":{"user_id":5}}`, "metadata.user_id is not a string"},
		{`{"messages":{}}`, "messages is not an array"},
		{`{"messages":"hi"}`, "messages is not an array"},
	}
	for _, tt := range tests {
		_, err := Scan([]byte(tt.body))
		if err == nil {
			t.Errorf("Scan(%q) = nil error, want %q", tt.body, tt.wantErr)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("Scan(%q) error = %q, want it to contain %q", tt.body, err, tt.wantErr)
		}
		if err.Error() != strings.ToLower(err.Error()[:1])+err.Error()[1:] {
			t.Errorf("error %q is not lowercase", err)
		}
	}
}

// TestScanTruncated checks that every proper prefix of a valid body is
// rejected: a relay must not mistake a cut-off upload for a request.
func TestScanTruncated(t *testing.T) {
	body := claudeCodeBody(4 << 10)
	if _, err := Scan(body); err != nil {
		t.Fatal(err)
	}
	for n := 0; n < len(body); n++ {
		if _, err := Scan(body[:n]); err == nil {
			t.Fatalf("Scan of %d-byte prefix of a %d-byte body succeeded", n, len(body))
		}
	}
}

func TestScanDepth(t *testing.T) {
	for _, depth := range []int{maxDepth - 1, maxDepth, maxDepth + 1} {
		// depth counts the top-level object, as encoding/json does.
		inner := depth - 1 // containers inside it
		for _, open := range []string{"[", `{"k":`} {
			close := "]"
			if open != "[" {
				close = "}"
			}
			body := []byte(`{"a":` + strings.Repeat(open, inner) + `1` + strings.Repeat(close, inner) + `}`)
			_, err := Scan(body)
			valid := json.Unmarshal(body, new(any)) == nil
			if (err == nil) != valid || valid != (depth <= maxDepth) {
				t.Errorf("depth %d %s: Scan error = %v, encoding/json accepts = %v", depth, open, err, valid)
			}
		}
	}
	// The same limit applies inside messages and metadata.
	deep := `{"messages":[` + strings.Repeat("[", maxDepth-1) + strings.Repeat("]", maxDepth-1) + `]}`
	if _, err := Scan([]byte(deep)); err == nil || !strings.Contains(err.Error(), "exceeded max depth") {
		t.Errorf("deep messages: error = %v, want exceeded max depth", err)
	}
	deep = `{"metadata":{"user_id":"u","x":` + strings.Repeat("[", maxDepth-1) + strings.Repeat("]", maxDepth-1) + `}}`
	if _, err := Scan([]byte(deep)); err == nil || !strings.Contains(err.Error(), "exceeded max depth") {
		t.Errorf("deep metadata: error = %v, want exceeded max depth", err)
	}
}

func TestScanClaudeCodeBody(t *testing.T) {
	for _, size := range []int{4 << 10, 200 << 10} {
		body := claudeCodeBody(size)
		got, err := Scan(body)
		if err != nil {
			t.Fatal(err)
		}
		want := Info{
			Model:     "claude-sonnet-4-5-20250929",
			Stream:    true,
			MaxTokens: 32000,
			UserID:    ccUserID,
			SessionID: ccSessionID,
		}
		if got.PrefixHash() == 0 {
			t.Error("PrefixHash = 0")
		}
		if !sameFields(got, want) {
			t.Errorf("size %d:\n got %+v\nwant %+v", size, got, want)
		}
		checkScan(t, body)
	}
}

func TestPrefixHash(t *testing.T) {
	hash := func(body string) uint64 {
		t.Helper()
		info, err := Scan([]byte(body))
		if err != nil {
			t.Fatalf("Scan(%q): %v", body, err)
		}
		return info.PrefixHash()
	}
	base := hash(`{"system":[{"type":"text","text":"S"}],"messages":[{"role":"user","content":"A"}]}`)
	if base == 0 {
		t.Fatal("PrefixHash = 0 for a body with system and messages")
	}
	same := []string{
		// Later messages and other fields do not matter.
		`{"system":[{"type":"text","text":"S"}],"messages":[{"role":"user","content":"A"},{"role":"assistant","content":"B"}]}`,
		`{"model":"x","messages":[{"role":"user","content":"A"},{"role":"assistant","content":"C"},{"role":"user","content":"D"}],"max_tokens":5,"system":[{"type":"text","text":"S"}]}`,
		`{"system":"old","system":[{"type":"text","text":"S"}],"messages":[{"role":"user","content":"A"}]}`,
		// Tokens are hashed: insignificant whitespace does not count...
		`{"system":[{"type":"text","text":"S"}],"messages":[{"role":"user", "content":"A"}]}`,
		` {"system" : [ {"type":"text" ,"text":"S"} ],"messages":[{"role":"user","content":"A"}]}`,
		// ...nor do cache_control breakpoints, which clients move each turn.
		`{"system":[{"type":"text","text":"S","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"A"}]}`,
		`{"system":[{"cache_control":{"type":"ephemeral","ttl":"1h"}, "type":"text","text":"S"}],"messages":[{"role":"user","content":"A"}]}`,
	}
	for _, body := range same {
		if h := hash(body); h != base {
			t.Errorf("PrefixHash(%s) = %#x, want %#x", body, h, base)
		}
	}
	different := []string{
		`{"system":[{"type":"text","text":"T"}],"messages":[{"role":"user","content":"A"}]}`,
		`{"system":[{"type":"text","text":"S"}],"messages":[{"role":"user","content":"B"}]}`,
		// Key order and nesting count; a cache_control-like text does too.
		`{"system":[{"text":"S","type":"text"}],"messages":[{"role":"user","content":"A"}]}`,
		`{"system":[{"type":"text","text":"S"}],"messages":[{"role":"user","content":["A"]}]}`,
		`{"system":[{"type":"text","text":"S","note":"cache_control"}],"messages":[{"role":"user","content":"A"}]}`,
		`{"system":[{"type":"text","text":"S"}],"messages":[{"role":"user","content":"A","x":[1,2]}]}`,
		`{"system":[{"type":"text","text":"S"}],"messages":[{"role":"user","content":"A","x":[12]}]}`,
		`{"system":[{"type":"text","text":"S"}]}`,
		`{"messages":[{"role":"user","content":"A"}]}`,
	}
	seen := map[uint64]string{base: "base"}
	for _, body := range different {
		h := hash(body)
		if prev, ok := seen[h]; ok {
			t.Errorf("PrefixHash(%s) = %#x, same as %s", body, h, prev)
		}
		seen[h] = body
	}
	// The same bytes as system or as first message must not collide.
	if a, b := hash(`{"system":{"x":1}}`), hash(`{"messages":[{"x":1}]}`); a == b {
		t.Errorf("system-only and message-only bodies with the same bytes hash equal: %#x", a)
	}
	for _, body := range []string{`{}`, `{"system":null}`, `{"messages":[]}`, `{"system":null,"messages":null}`} {
		if h := hash(body); h != 0 {
			t.Errorf("PrefixHash(%s) = %#x, want 0", body, h)
		}
	}
}

func TestSessionFromUserID(t *testing.T) {
	tests := []struct {
		userID, want string
	}{
		{"user_ab12_account_0b6f1e2a-8c4d-4e7f-9a1b-2c3d4e5f6a7b_session_" + ccSessionID, ccSessionID},
		{"user_ab12_account__session_" + ccSessionID, ccSessionID},
		{"user_ab12_account_x_session_a_session_b", "b"},
		{"user_ab12_account_x_session_", ""},
		{"user_ab12_account_x", ""},
		{"ab12_account_x_session_y", ""},
		{ccUserID, ccSessionID},
		{` {"session_id" : "s1"} `, "s1"},
		{`{"session_id":"s\u0031\"x"}`, "s1\"x"},
		{`{"session_id":"a","session_id":"b"}`, "b"},
		{`{"nested":{"session_id":"no"},"session_id":"yes"}`, "yes"},
		{`{"nested":{"session_id":"no"}}`, ""},
		{`{"session_id":""}`, ""},
		{`{"session_id":5}`, ""},
		{`{"session_id":null}`, ""},
		{`{"session_id":"s1"`, ""},
		{`{"session_id":"s1"} x`, ""},
		{`{"session_id":"\q"}`, ""},
		{`["session_id","s1"]`, ""},
		{`x{"session_id":"s1"}`, ""},
		{"", ""},
		{"anonymous", ""},
		{`{"session_id":"` + strings.Repeat("x", 1000) + `"}`, strings.Repeat("x", 1000)},
	}
	for _, tt := range tests {
		if got := SessionFromUserID(tt.userID); got != tt.want {
			t.Errorf("SessionFromUserID(%q) = %q, want %q", tt.userID, got, tt.want)
		}
	}
}

func TestUnquoteMatchesEncodingJSON(t *testing.T) {
	inputs := []string{
		``, `plain`, `\"\\\/\b\f\n\r\t`, `\u0041\u00e9\u4e16`, `\ud83d\ude00`, `\uD83D\uDE00`,
		`\ud83d`, `\ud83dx`, `\ude00\ud83d`, `\ud83d\u0041`, `\ud83d\ud83d\ude00`,
		"\xff", "a\xc3", "\xe4\xb8", "\xed\xa0\x80", "héllo 世界", `\u0000`,
	}
	for _, in := range inputs {
		var want string
		if err := json.Unmarshal([]byte(`"`+in+`"`), &want); err != nil {
			t.Fatalf("encoding/json rejects %q: %v", in, err)
		}
		got, err := unquote([]byte(in))
		if err != nil || got != want {
			t.Errorf("unquote(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{`\`, `\x`, `\u`, `\u12`, `\u12g4`, `\'`} {
		if got, err := unquote([]byte(in)); err == nil {
			t.Errorf("unquote(%q) = %q, want error", in, got)
		}
	}
}

func TestScanAllocs(t *testing.T) {
	tests := []struct {
		name string
		body []byte
		want float64
	}{
		// Model and UserID; SessionID is a substring of UserID.
		{"claude code 200KB", claudeCodeBody(200 << 10), 2},
		{"legacy user id", []byte(`{"model":"claude-opus-4-1","metadata":{"user_id":"user_1_account_2_session_3"},"messages":[{"role":"user","content":"x"}]}`), 2},
		{"no metadata", []byte(`{"model":"claude-opus-4-1","system":"s","messages":[{"role":"user","content":"x"}],"stream":true}`), 1},
		{"nothing to return", []byte(`{"max_tokens":1,"system":"s","messages":[{"role":"user","content":"x"}]}`), 0},
	}
	for _, tt := range tests {
		allocs := testing.AllocsPerRun(20, func() {
			if _, err := Scan(tt.body); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != tt.want {
			t.Errorf("%s: Scan allocates %v times, want %v", tt.name, allocs, tt.want)
		}
	}
	if allocs := testing.AllocsPerRun(20, func() { SessionFromUserID(ccUserID) }); allocs != 0 {
		t.Errorf("SessionFromUserID allocates %v times, want 0", allocs)
	}
}

// checkScan checks Scan against encoding/json on body: a body whose top level
// is not an object must be rejected, and a body that encoding/json decodes
// into a map, with recognised fields of the types Scan requires, must be
// accepted with the same values.
func checkScan(t testing.TB, body []byte) {
	t.Helper()
	info, err := Scan(body)
	if json.Valid(body) && hasDuplicate(body) {
		if !errors.Is(err, ErrDuplicate) {
			t.Fatalf("Scan(%q) = %v; want ErrDuplicate for a repeated recognised field", body, err)
		}
		return
	}
	if trimmed := bytes.TrimLeft(body, " \t\r\n"); len(trimmed) == 0 || trimmed[0] != '{' {
		if err == nil {
			t.Fatalf("Scan(%q) accepted a body whose top level is not an object", body)
		}
		return
	}
	if !json.Valid(body) {
		return
	}
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var m map[string]any
	if d.Decode(&m) != nil {
		return
	}
	want, hashed, ok := expectedInfo(m)
	if !ok {
		return
	}
	if err != nil {
		t.Fatalf("Scan(%q) error %v; encoding/json decodes it", body, err)
	}
	if hashed != (info.PrefixHash() != 0) {
		t.Fatalf("Scan(%q).PrefixHash = %#x; want non-zero: %v", body, info.PrefixHash(), hashed)
	}
	if info.SessionID != SessionFromUserID(info.UserID) {
		t.Fatalf("Scan(%q).SessionID = %q, SessionFromUserID(UserID) = %q", body, info.SessionID, SessionFromUserID(info.UserID))
	}
	info.SessionID = ""
	if !sameFields(info, want) {
		t.Fatalf("Scan(%q)\n got %+v\nwant %+v (encoding/json)", body, info, want)
	}
}

// expectedInfo returns what Scan should report for a body that encoding/json
// decoded into m, whether PrefixHash should be non-zero, and whether the
// recognised fields have the types Scan accepts.
func expectedInfo(m map[string]any) (info Info, hashed, ok bool) {
	switch v := m["model"].(type) {
	case nil:
	case string:
		info.Model = v
	default:
		return info, false, false
	}
	switch v := m["stream"].(type) {
	case nil:
	case bool:
		info.Stream = v
	default:
		return info, false, false
	}
	switch v := m["max_tokens"].(type) {
	case nil:
	case json.Number:
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return info, false, false
		}
		info.MaxTokens = n
	default:
		return info, false, false
	}
	switch v := m["metadata"].(type) {
	case nil:
	case map[string]any:
		switch u := v["user_id"].(type) {
		case nil:
		case string:
			info.UserID = u
		default:
			return info, false, false
		}
	default:
		return info, false, false
	}
	switch v := m["messages"].(type) {
	case nil:
	case []any:
		hashed = len(v) > 0
	default:
		return info, false, false
	}
	if m["system"] != nil {
		hashed = true
	}
	return info, hashed, true
}

// sameFields compares the exported fields of two Infos.
func sameFields(a, b Info) bool {
	a.system, a.first, b.system, b.first = nil, nil, nil, nil
	return reflect.DeepEqual(a, b)
}

func BenchmarkScan(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"4KB", 4 << 10}, {"200KB", 200 << 10}} {
		body := claudeCodeBody(size.n)
		b.Run(size.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Scan(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkUnmarshal is the baseline Scan replaces.
func BenchmarkUnmarshal(b *testing.B) {
	body := claudeCodeBody(200 << 10)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var v struct {
			Model     string `json:"model"`
			Stream    bool   `json:"stream"`
			MaxTokens int64  `json:"max_tokens"`
			Metadata  struct {
				UserID string `json:"user_id"`
			} `json:"metadata"`
			System   json.RawMessage   `json:"system"`
			Messages []json.RawMessage `json:"messages"`
		}
		if err := json.Unmarshal(body, &v); err != nil {
			b.Fatal(err)
		}
	}
}

// hasDuplicate reports whether the valid JSON body is an object that names
// model, stream, max_tokens or metadata twice, or whose metadata object
// names user_id twice (keys compared after unescaping, as Scan does).
func hasDuplicate(body []byte) bool {
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil {
		return false
	}
	if repeats(body, "model", "stream", "max_tokens", "metadata") {
		return true
	}
	if md, ok := top["metadata"]; ok && len(md) > 0 && md[0] == '{' {
		return repeats(md, "user_id")
	}
	return false
}

// repeats reports whether the object obj names one of names more than once
// at its top level.
func repeats(obj []byte, names ...string) bool {
	d := json.NewDecoder(bytes.NewReader(obj))
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		return false
	}
	seen := map[string]bool{}
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return false
		}
		k := tok.(string)
		for _, n := range names {
			if k == n {
				if seen[k] {
					return true
				}
				seen[k] = true
			}
		}
		var skip json.RawMessage
		if d.Decode(&skip) != nil {
			return false
		}
	}
	return false
}

func TestScanDuplicates(t *testing.T) {
	for _, body := range []string{
		`{"model":"a","stream":"not checked","model":"b","stream":true}`,
		`{"model":"claude-haiku-4-5","max_tokens":1,"model":"claude-opus-4-1"}`,
		`{"max_tokens":1,"max_tokens":64000}`,
		`{"stream":false,"stream":true}`,
		`{"mod\u0065l":"a","model":"b"}`,
		`{"metadata":{"user_id":"u1"},"metadata":{"other":1}}`,
		`{"metadata":{"user_id":"u1","user_id":"u2"}}`,
	} {
		_, err := Scan([]byte(body))
		if !errors.Is(err, ErrDuplicate) {
			t.Errorf("Scan(%s) = %v, want ErrDuplicate", body, err)
		}
		checkScan(t, []byte(body))
	}
}

// BenchmarkPrefixHash hashes a 42 KB system prompt, the size of Claude
// Code's. On the machine of docs/perf: 3.5 µs (xxhash, stablehash) against
// 4.0 µs with hash/maphash before it.
func BenchmarkPrefixHash(b *testing.B) {
	body := []byte(`{"system":[{"type":"text","text":"` + strings.Repeat("You are a careful assistant. ", 1500) +
		`","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":[{"type":"text","text":"hello there"}]}]}`)
	info, err := Scan(body)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if info.PrefixHash() == 0 {
			b.Fatal("PrefixHash = 0")
		}
	}
}
