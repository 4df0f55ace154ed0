// Package usage reads the token usage of an Anthropic Messages API response
// while the response streams through a relay.
//
// A relay feeds every chunk of the upstream response body to an SSEScanner
// (for text/event-stream responses) or a JSONScanner (for JSON responses) as
// it forwards the chunk to the client. The scanners copy only the few small
// values that carry usage, so they use constant memory however long the
// response is, and they give the same result however the body is split into
// chunks.
package usage

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// Usage is the token usage of one Messages API response, cumulative.
type Usage struct {
	InputTokens              int64
	CacheCreationInputTokens int64
	CacheReadInputTokens     int64
	OutputTokens             int64

	// Model is the model named by the response, if seen.
	Model string

	// HaveInput reports whether input-side usage (input_tokens or one of
	// the cache token counts) was seen: in a message_start or
	// message_delta event, or in a JSON body's usage.
	HaveInput bool

	// HaveOutput reports whether output_tokens was seen.
	HaveOutput bool

	// ErrorType is the error.type of an SSE "error" event or of a JSON
	// error body, such as "overloaded_error", or "" if none was seen.
	ErrorType string
}

// applyUsage sets the counts present in raw, a JSON usage object, on u, and
// leaves the others alone: Messages API counts are cumulative, so the latest
// value of each count is the total. If reset is true, all counts and
// have-flags are cleared first, so that u reflects raw alone. A count is
// present if its member is an integer; null and other types are ignored.
// If raw is not a JSON object, u is unchanged.
func applyUsage(u *Usage, raw []byte, reset bool) {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil || m == nil {
		return
	}
	if reset {
		u.InputTokens, u.CacheCreationInputTokens, u.CacheReadInputTokens, u.OutputTokens = 0, 0, 0, 0
		u.HaveInput, u.HaveOutput = false, false
	}
	// Look keys up exactly, rather than through a struct, because
	// encoding/json matches struct fields case-insensitively.
	in := setCount(m, "input_tokens", &u.InputTokens)
	in = setCount(m, "cache_creation_input_tokens", &u.CacheCreationInputTokens) || in
	in = setCount(m, "cache_read_input_tokens", &u.CacheReadInputTokens) || in
	if in {
		u.HaveInput = true
	}
	if setCount(m, "output_tokens", &u.OutputTokens) {
		u.HaveOutput = true
	}
}

// setCount stores m[key] in *dst and reports true if it is an integer.
func setCount(m map[string]json.RawMessage, key string, dst *int64) bool {
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

// appendBounded appends p to buf unless that would make buf longer than
// limit, in which case it reports false and leaves buf alone. It grows buf
// itself, rather than leaving that to append, so that the capacity never
// exceeds limit either.
func appendBounded(buf, p []byte, limit int) ([]byte, bool) {
	n := len(buf) + len(p)
	if n > limit {
		return buf, false
	}
	if n > cap(buf) {
		c := min(max(2*cap(buf), n, 512), limit)
		nb := make([]byte, len(buf), c)
		copy(nb, buf)
		buf = nb
	}
	return append(buf, p...), true
}
