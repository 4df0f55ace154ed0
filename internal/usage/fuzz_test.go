package usage

import "testing"

// FuzzSSEScanner checks that SSEScanner never panics and that splitting the
// stream into two Writes at any point gives the same usage as one Write.
func FuzzSSEScanner(f *testing.F) {
	for _, tt := range sseTests {
		if len(tt.stream) < 4<<10 {
			for _, stream := range lineEndings(tt.stream) {
				f.Add([]byte(stream), uint(len(stream)/2))
			}
		}
	}
	f.Fuzz(func(t *testing.T, stream []byte, split uint) {
		var whole SSEScanner
		whole.Write(stream)
		var parts SSEScanner
		i := int(split % uint(len(stream)+1))
		parts.Write(stream[:i])
		parts.Write(stream[i:])
		if whole.Usage() != parts.Usage() {
			t.Fatalf("split at %d of %q:\n got %+v\nwant %+v", i, stream, parts.Usage(), whole.Usage())
		}
	})
}

// FuzzJSONScanner checks that JSONScanner never panics, that splitting the
// body into two Writes at any point gives the same usage as one Write, and
// that it agrees with encoding/json on the counts in a top-level usage
// object and, for a valid body, on the model and error type.
func FuzzJSONScanner(f *testing.F) {
	for _, tt := range jsonTests {
		if len(tt.body) < 4<<10 {
			f.Add([]byte(tt.body), uint(len(tt.body)/2))
		}
	}
	f.Fuzz(func(t *testing.T, body []byte, split uint) {
		var whole JSONScanner
		whole.Write(body)
		checkHeldBuffer(t, &whole)
		var parts JSONScanner
		i := int(split % uint(len(body)+1))
		parts.Write(body[:i])
		checkHeldBuffer(t, &parts)
		parts.Write(body[i:])
		checkHeldBuffer(t, &parts)
		if whole.Usage() != parts.Usage() {
			t.Fatalf("split at %d of %q:\n got %+v\nwant %+v", i, body, parts.Usage(), whole.Usage())
		}
		checkJSONScanner(t, body)
		checkJSONScannerStrings(t, body)
	})
}
