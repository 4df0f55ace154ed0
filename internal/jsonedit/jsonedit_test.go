package jsonedit

import (
	"encoding/json"
	"testing"
)

func TestRewriteDropsAndAdds(t *testing.T) {
	body := []byte(` {"model":"claude-sonnet-4-5","stream":true,"messages":[{"role":"user","content":"a \"}\" b"}],"max_tokens":5,"metadata":{"x":[1,{"y":"}"}]}} `)
	got, err := Rewrite(nil, body, []string{"model", "stream"}, []byte(`"anthropic_version":"bedrock-2023-05-31"`))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"anthropic_version":"bedrock-2023-05-31","messages":[{"role":"user","content":"a \"}\" b"}],"max_tokens":5,"metadata":{"x":[1,{"y":"}"}]}}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if !json.Valid(got) {
		t.Fatal("result is not valid JSON")
	}
}

func TestRewriteReplacesAddedKey(t *testing.T) {
	got, err := Rewrite(nil, []byte(`{"anthropic_version":"x","a":1}`), nil, []byte(`"anthropic_version":"y"`))
	if err != nil || string(got) != `{"anthropic_version":"y","a":1}` {
		t.Fatalf("got %s, %v", got, err)
	}
}

func TestRewriteRejectsNonObjects(t *testing.T) {
	for _, b := range []string{``, `[]`, `{"a":1`, `{"a" 1}`, `{"a":1}x`, `{"a":"unterminated}`, `{"a":{"b":1}`, `{"a":}`} {
		if _, err := Rewrite(nil, []byte(b), nil); err == nil {
			t.Errorf("%q: no error", b)
		}
	}
	if got, err := Rewrite(nil, []byte(`{}`), nil, []byte(`"k":1`)); err != nil || string(got) != `{"k":1}` {
		t.Fatalf("empty object: %s %v", got, err)
	}
}

func TestGet(t *testing.T) {
	v, ok := Get([]byte(`{"stream": true ,"model":"m"}`), "stream")
	if !ok || string(v) != "true" {
		t.Fatalf("got %q %v", v, ok)
	}
	if _, ok := Get([]byte(`{"a":{"stream":true}}`), "stream"); ok {
		t.Fatal("found a nested key")
	}
}
