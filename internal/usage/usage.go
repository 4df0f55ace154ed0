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

// scanUsage reads the integer members named by usageKeys from raw, which
// must be one valid JSON object (else it reports false and sets nothing),
// without allocating. Keys match exactly, after unescaping; a later
// duplicate wins, as with encoding/json.
func scanUsage(raw []byte, vals *[4]int64, have *[4]bool) bool {
	if !json.Valid(raw) {
		return false
	}
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return false
	}
	i++
	for {
		i = skipSpace(raw, i)
		if raw[i] == '}' {
			return true
		}
		// A key: raw is valid JSON, so it is a string here.
		end := stringEnd(raw, i)
		key := raw[i+1 : end-1]
		i = skipSpace(raw, end)
		i = skipSpace(raw, i+1) // ':'
		vend := valueEnd(raw, i)
		idx := -1
		for k, name := range usageKeys {
			if string(key) == name {
				idx = k
				break
			}
		}
		if idx < 0 && bytes.IndexByte(key, '\\') >= 0 {
			var name string
			if err := json.Unmarshal(append(append([]byte{'"'}, key...), '"'), &name); err == nil {
				for k, n := range usageKeys {
					if name == n {
						idx = k
					}
				}
			}
		}
		if idx >= 0 {
			have[idx] = false
			if n, ok := parseInt(raw[i:vend]); ok {
				vals[idx], have[idx] = n, true
			}
		}
		i = skipSpace(raw, vend)
		if raw[i] == ',' {
			i++
		}
	}
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
	if !neg && n > 1<<63-1 {
		return 0, false
	}
	if neg {
		return -int64(n), true
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
