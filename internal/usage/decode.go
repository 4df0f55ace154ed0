package usage

import (
	"bytes"
	"encoding/json"
	"sync"
)

// valueDecoder decodes the values the scanners read with an encoding/json
// Decoder reused from value to value. The Decoder keeps its decode state,
// scanner stack and field context between values, which json.Unmarshal
// allocates anew for each call, and the values decoded into are kept here
// too, since what is handed to Decode escapes to the heap. Decoding a
// stream's message_start and message_delta events cost 19 allocations
// with json.Unmarshal and costs 1 this way (the model name), a JSON
// message's model and usage 11 and 1 (BenchmarkSSEScannerStream,
// BenchmarkJSONScannerResponse).
//
// The values stay with encoding/json (issue 12). Session 4 measured what
// that costs: 2.9 µs of the 136 µs of Caddy CPU a 4 KB request through
// the overhead bench's site B takes (15 s CPU profile), against B−A of
// about 25 µs; a hand-written decoder was about twice as fast, so it would
// take back about 1.5 µs a request: not what the throughput target is
// missing (docs/perf/overhead.md, "Session 4").
type valueDecoder struct {
	r     bytes.Reader
	dec   *json.Decoder
	dirty bool // the Decoder may hold bytes or an error of an earlier value

	ev    event
	usage usageObject
	model string
	err   errorObject
}

var decoders = sync.Pool{New: func() any {
	d := new(valueDecoder)
	d.dec = json.NewDecoder(&d.r)
	return d
}}

// maxPooledValue bounds the values a pooled decoder reads, since its
// Decoder keeps a buffer as large as the largest value it read. A larger
// value (a rare, oversized event) is decoded by json.Unmarshal.
const maxPooledValue = maxSmallBuf

// getDecoder returns a decoder from the pool; release gives it back.
func getDecoder() *valueDecoder { return decoders.Get().(*valueDecoder) }

// release gives d back to the pool, unless its Decoder was left with an
// error or unread bytes.
func (d *valueDecoder) release() {
	if !d.dirty {
		decoders.Put(d)
	}
}

// decodeObject decodes raw, which must be a JSON object, into v, and
// reports whether that succeeded.
func (d *valueDecoder) decodeObject(raw []byte, v any) bool {
	i := 0
	for i < len(raw) && isSpace(raw[i]) {
		i++
	}
	if i == len(raw) || raw[i] != '{' {
		return false
	}
	return d.decode(raw[i:], v)
}

// decode decodes raw, one JSON value with nothing but space after it, into
// v exactly as json.Unmarshal does, and reports whether that succeeded.
// When it did not, v holds whatever was decoded before the failure.
func (d *valueDecoder) decode(raw []byte, v any) bool {
	for len(raw) > 0 && isSpace(raw[len(raw)-1]) {
		raw = raw[:len(raw)-1]
	}
	if len(raw) == 0 {
		return false // as json.Unmarshal; the Decoder would keep io.EOF
	}
	if len(raw) > maxPooledValue {
		return json.Unmarshal(raw, v) == nil
	}
	d.r.Reset(raw)
	start := d.dec.InputOffset()
	err := d.dec.Decode(v)
	if d.dec.InputOffset()-start != int64(len(raw)) {
		// A syntax error (which the Decoder keeps) or bytes after the
		// value (which json.Unmarshal refuses, and the Decoder would
		// read as the next value): this decoder is not reused.
		d.dirty = true
		return false
	}
	// Having read exactly raw, the Decoder is ready for another value,
	// whether or not this one fit v: a value that does not is read
	// whole before v is filled in.
	return err == nil
}

// errorObject is the error of an error event or a JSON error body.
type errorObject struct {
	Type string `json:"type"`
}

// eventType is an event's "type", as far as the SSE scanner tells events
// apart. It decodes as a string field would, without allocating the
// string.
type eventType uint8

const (
	typeNone         eventType = iota // none, null or ""
	typeOther                         // an event the scanner does not read
	typeMessageStart                  // message_start
	typeMessageDelta                  // message_delta
	typeError                         // error
)

// typeOf is the eventType of an event named name.
func typeOf(name []byte) eventType {
	switch string(name) {
	case "":
		return typeNone
	case "message_start":
		return typeMessageStart
	case "message_delta":
		return typeMessageDelta
	case "error":
		return typeError
	}
	return typeOther
}

// errTypeNotString refuses a "type" that is not a string, as encoding/json
// refuses it for a string field: the event is not read.
var errTypeNotString = &json.UnmarshalTypeError{Value: "non-string", Field: "type"}

func (t *eventType) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil // as for a string field: null changes nothing
	}
	if len(b) < 2 || b[0] != '"' {
		return errTypeNotString
	}
	name := b[1 : len(b)-1]
	if bytes.IndexByte(name, '\\') >= 0 {
		// Escaped (real events never are): unquoted as a string field.
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		name = []byte(s)
	}
	*t = typeOf(name)
	return nil
}
