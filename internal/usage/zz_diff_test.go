package usage

import (
	"bytes"
	"encoding/json"
	"strconv"
	"testing"
)

func refApply(u *Usage, raw []byte, reset bool) {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil || m == nil {
		return
	}
	if reset {
		u.InputTokens, u.CacheCreationInputTokens, u.CacheReadInputTokens, u.OutputTokens = 0, 0, 0, 0
		u.HaveInput, u.HaveOutput = false, false
	}
	set := func(key string, dst *int64) bool {
		v, ok := m[key]
		if !ok {
			return false
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
		if err != nil {
			return false
		}
		*dst = n
		return true
	}
	in := set("input_tokens", &u.InputTokens)
	in = set("cache_creation_input_tokens", &u.CacheCreationInputTokens) || in
	in = set("cache_read_input_tokens", &u.CacheReadInputTokens) || in
	if in {
		u.HaveInput = true
	}
	if set("output_tokens", &u.OutputTokens) {
		u.HaveOutput = true
	}
}

func FuzzApplyUsageDiff(f *testing.F) {
	for _, s := range []string{`{"input_tokens":12,"output_tokens":3}`, `{"input_tokens":1,"input_tokens":"x"}`,
		`{"cache_creation":{"a":1},"cache_read_input_tokens":-5 , "output_tokens" : 9223372036854775807}`,
		`{"input\u005ftokens":7}`, `null`, `[1]`, `{"output_tokens":1.0}`, `{"output_tokens":99999999999999999999}`, `{}`, `{"a":[{"b":"}"}],"input_tokens":0}`} {
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, raw []byte, reset bool) {
		a := Usage{InputTokens: 1, OutputTokens: 2, HaveInput: true}
		b := a
		applyUsage(&a, raw, reset)
		refApply(&b, raw, reset)
		if a != b {
			t.Fatalf("%q: got %+v want %+v", raw, a, b)
		}
	})
}
