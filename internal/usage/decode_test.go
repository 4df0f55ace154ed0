package usage

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// decodeInputs are values for decode, valid or not, each decoded after
// the one before by the same pooled decoders.
var decodeInputs = []string{
	`{"input_tokens":1,"output_tokens":2}`,
	`  {"output_tokens":3}  ` + "\n",
	`{"output_tokens":4} x`,
	`{"output_tokens":5}{"output_tokens":6}`,
	`{"output_tokens":`,
	`{"output_tokens":7,}`,
	`{"cache_creation":[1],"output_tokens":8}`,
	`{"output_tokens":9.5,"input_tokens":"1"}`,
	`[1,2]`,
	`"text"`,
	`null`,
	`12`,
	``,
	`   `,
	`{"server_tool_use":{"web_search_requests":2}} ` + strings.Repeat(" ", maxPooledValue),
	`{"pad":"` + strings.Repeat("x", maxPooledValue) + `","output_tokens":10}`,
	`{"output_tokens":11}`,
}

// TestDecodeMatchesUnmarshal checks that decode, reusing decoders from
// value to value, decodes exactly as json.Unmarshal does, whatever the
// value before it left behind.
func TestDecodeMatchesUnmarshal(t *testing.T) {
	for round := range 3 {
		for i, in := range decodeInputs {
			var want, got usageObject
			wantOK := json.Unmarshal([]byte(in), &want) == nil
			d := getDecoder()
			gotOK := d.decode([]byte(in), &got)
			d.release()
			if gotOK != wantOK || (wantOK && !reflect.DeepEqual(got, want)) {
				t.Errorf("round %d, input %d %.40q: decode = %v %+v, json.Unmarshal = %v %+v", round, i, in, gotOK, got, wantOK, want)
			}
			var wantS, gotS string
			wantOK = json.Unmarshal([]byte(in), &wantS) == nil
			d = getDecoder()
			gotOK = d.decode([]byte(in), &gotS)
			d.release()
			if gotOK != wantOK || (wantOK && gotS != wantS) {
				t.Errorf("round %d, input %d %.40q as a string: decode = %v %q, json.Unmarshal = %v %q", round, i, in, gotOK, gotS, wantOK, wantS)
			}
		}
	}
}

// TestDecodeReusesDecoder checks that a decoder is reused after a value
// that fit and after one that did not fit its target, and not after a
// syntax error or bytes after the value.
func TestDecodeReusesDecoder(t *testing.T) {
	for _, tc := range []struct {
		in    string
		reuse bool
	}{
		{`{"output_tokens":1}`, true},
		{``, true},
		{` `, true},
		{` {"output_tokens":1} ` + "\r\n", true},
		{`{"output_tokens":{}}`, true},
		{`[1]`, true},
		{`{"output_tokens":1`, false},
		{`{"output_tokens":1}}`, false},
		{`{"output_tokens":1} {}`, false},
	} {
		d := &valueDecoder{}
		d.dec = json.NewDecoder(&d.r)
		var o usageObject
		d.decode([]byte(tc.in), &o)
		if d.dirty == tc.reuse {
			t.Errorf("%q: dirty = %v, want %v", tc.in, d.dirty, !tc.reuse)
		}
		if !d.dirty {
			// Still decodes as new.
			var next usageObject
			if !d.decode([]byte(`{"output_tokens":2}`), &next) || next.OutputTokens != (count{2, true}) {
				t.Errorf("%q: the next value decodes as %+v", tc.in, next)
			}
		}
	}
}

// FuzzDecodeDiff holds decode, with its reused decoders, to json.Unmarshal
// on any pair of values decoded one after the other.
func FuzzDecodeDiff(f *testing.F) {
	for i, in := range decodeInputs {
		f.Add([]byte(decodeInputs[(i+1)%len(decodeInputs)]), []byte(in))
	}
	f.Fuzz(func(t *testing.T, first, second []byte) {
		d := &valueDecoder{}
		d.dec = json.NewDecoder(&d.r)
		for _, in := range [][]byte{first, second} {
			if d.dirty {
				d = &valueDecoder{}
				d.dec = json.NewDecoder(&d.r)
			}
			var want, got event
			wantOK := json.Unmarshal(in, &want) == nil
			gotOK := d.decode(in, &got)
			if gotOK != wantOK || (wantOK && !reflect.DeepEqual(got, want)) {
				t.Fatalf("%q after %q: decode = %v %+v, json.Unmarshal = %v %+v", in, first, gotOK, got, wantOK, want)
			}
			// The type decodes as the string it stands for would (the
			// outer field hides the embedded event's).
			var asString struct {
				Type string `json:"type"`
				event
			}
			if ok := json.Unmarshal(in, &asString) == nil; ok != wantOK || ok && typeOf([]byte(asString.Type)) != got.Type {
				t.Fatalf("%q: type %v, ok %v; as a string %q, ok %v", in, got.Type, wantOK, asString.Type, ok)
			}
		}
	})
}
