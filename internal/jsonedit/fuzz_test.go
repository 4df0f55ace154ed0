package jsonedit

import (
	"encoding/json"
	"testing"
)

// Rewrite never panics, and what it accepts as an object stays valid JSON
// when the input was.
func FuzzRewrite(f *testing.F) {
	for _, s := range []string{`{"model":"m","stream":true,"a":[1,{"b":"}"}]}`, `{}`, `{"a":"\"","b":1e5}`, `[`, `{"a":`, `{"a":"\\`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := Rewrite(nil, body, []string{"model", "stream"}, []byte(`"anthropic_version":"x"`))
		if err == nil && json.Valid(body) && !json.Valid(out) {
			t.Fatalf("valid %s became invalid %s", body, out)
		}
	})
}
