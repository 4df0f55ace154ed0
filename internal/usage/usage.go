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
	"unicode/utf8"
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
	if json.Valid(raw) {
		applyValidUsage(u, raw, reset)
	}
}

// applyValidUsage is applyUsage for raw known to be valid JSON or nil, such
// as a member of an object already validated, which need not be checked
// again.
func applyValidUsage(u *Usage, raw []byte, reset bool) {
	var vals [4]int64
	var have [4]bool
	if !scanUsage(raw, &vals, &have) {
		return
	}
	if reset {
		u.InputTokens, u.CacheCreationInputTokens, u.CacheReadInputTokens, u.OutputTokens = 0, 0, 0, 0
		u.HaveInput, u.HaveOutput = false, false
	}
	dst := [4]*int64{&u.InputTokens, &u.CacheCreationInputTokens, &u.CacheReadInputTokens, &u.OutputTokens}
	for i := range vals {
		if have[i] {
			*dst[i] = vals[i]
		}
	}
	if have[0] || have[1] || have[2] {
		u.HaveInput = true
	}
	if have[3] {
		u.HaveOutput = true
	}
}

var usageKeys = [4]string{"input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens"}

// scanUsage reads the integer members named by usageKeys from raw, valid
// JSON or nil, without allocating. If raw is not an object it reports false
// and sets nothing. Keys match exactly, after unescaping; a later duplicate
// wins, as with encoding/json.
func scanUsage(raw []byte, vals *[4]int64, have *[4]bool) bool {
	m, ok := objectMembers(raw)
	if !ok {
		return false
	}
	for key, val, more := m.next(); more; key, val, more = m.next() {
		if idx := keyIndex(key, usageKeys[:], false); idx >= 0 {
			have[idx] = false
			if n, ok := parseInt(val); ok {
				vals[idx], have[idx] = n, true
			}
		}
	}
	return true
}

// members walks the members of a JSON object that json.Valid accepted.
// Validity is what keeps it small: it only has to find where each key and
// value ends, never to check them.
type members struct {
	b []byte
	i int // the index after the previous value, or after the '{'
}

// objectMembers returns a walk over raw, which must be valid JSON, or false
// if raw is not an object.
func objectMembers(raw []byte) (members, bool) {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return members{}, false
	}
	return members{b: raw, i: i + 1}, true
}

// next returns the next member's key, quotes included, and its value, or
// false at the end of the object.
func (m *members) next() (key, val []byte, ok bool) {
	i := skipSpace(m.b, m.i)
	if m.b[i] == ',' {
		i = skipSpace(m.b, i+1)
	}
	if m.b[i] == '}' {
		return nil, nil, false
	}
	end := stringEnd(m.b, i)
	key = m.b[i:end]
	i = skipSpace(m.b, skipSpace(m.b, end)+1) // past the ':'
	m.i = valueEnd(m.b, i)
	return key, m.b[i:m.i], true
}

// keyIndex returns the index in names of the name that key, a valid JSON
// string, matches once unescaped, or -1. With fold, names match under
// Unicode case folding, as encoding/json matches struct fields: "TYPE"
// matches "type", and "me\u017f\u017fage", with long s's, matches
// "message". Without fold, they match exactly, as map keys do.
func keyIndex(key []byte, names []string, fold bool) int {
	k, ok := unquote(key)
	if !ok {
		return -1
	}
	for i, name := range names {
		if string(k) == name || fold && bytes.EqualFold(k, []byte(name)) {
			return i
		}
	}
	return -1
}

// unquote returns the contents of s, a valid JSON string, as encoding/json
// decodes them. The usual string has no escapes and is valid UTF-8, so its
// contents are returned in place; any other is decoded by encoding/json,
// which allocates, to get escapes and invalid UTF-8 (replaced by U+FFFD)
// exactly right.
func unquote(s []byte) ([]byte, bool) {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return nil, false
	}
	c := s[1 : len(s)-1]
	if bytes.IndexByte(c, '\\') < 0 && utf8.Valid(c) {
		return c, true
	}
	var str string
	if json.Unmarshal(s, &str) != nil {
		return nil, false
	}
	return []byte(str), true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// stringEnd returns the index after the string starting at b[i] == '"'.
func stringEnd(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(b)
}

// valueEnd returns the index after the (valid) JSON value at b[i].
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				j = stringEnd(b, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return len(b)
	}
	j := i
	for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && !isSpace(b[j]) {
		j++
	}
	return j
}

// parseInt parses an integer literal (no fraction or exponent) that fits
// in an int64, as strconv.ParseInt on the trimmed bytes would.
func parseInt(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	neg := b[0] == '-'
	if neg || b[0] == '+' {
		b = b[1:]
		if len(b) == 0 {
			return 0, false
		}
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		if n > (1<<64-1-9)/10 {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	if neg {
		if n > 1<<63 {
			return 0, false
		}
		return -int64(n), true // for 1<<63, math.MinInt64, as the conversion wraps
	}
	if n > 1<<63-1 {
		return 0, false
	}
	return int64(n), true
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
