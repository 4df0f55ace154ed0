// Package usage reads the token usage of an Anthropic Messages API response
// while the response streams through a relay.
//
// A relay feeds every chunk of the upstream response body to an SSEScanner
// (for text/event-stream responses) or a JSONScanner (for JSON responses) as
// it forwards the chunk to the client. The scanners find the few small values
// that carry usage — the message_start, message_delta and error events of a
// stream, the top-level "usage", "model" and "error" members of a JSON body —
// and decode each with encoding/json. The framing around those values (the
// event-stream lines, the top-level object) is read by hand, so that the
// scanners use constant memory however long the response is, skip what they
// do not read without copying it, and give the same result however the body
// is split into chunks.
package usage

import (
	"strconv"
)

// Usage is the token usage of one Messages API response, cumulative.
type Usage struct {
	InputTokens              int64
	CacheCreationInputTokens int64
	CacheReadInputTokens     int64
	OutputTokens             int64

	// CacheCreation splits CacheCreationInputTokens by the lifetime of the
	// cache entries written (usage.cache_creation), which are priced
	// differently; zero when the upstream does not report it.
	CacheCreation CacheCreation

	// ServerToolUse counts the server-side tool calls of the response
	// (usage.server_tool_use), which are billed per call.
	ServerToolUse ServerToolUse

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

// CacheCreation is usage.cache_creation: the input tokens written to the
// prompt cache, by the lifetime of the entry.
type CacheCreation struct {
	Ephemeral5mInputTokens int64
	Ephemeral1hInputTokens int64
}

// ServerToolUse is usage.server_tool_use.
type ServerToolUse struct {
	WebSearchRequests int64
	WebFetchRequests  int64
}

// count is a usage count as the Messages API sends it, an integer. Any
// other value (null, a fraction, a string, an object) is no count: it
// leaves the count as it was and the rest of the usage object readable.
// A later duplicate member wins, as encoding/json decodes.
type count struct {
	n  int64
	ok bool
}

func (c *count) UnmarshalJSON(b []byte) error {
	n, err := strconv.ParseInt(string(b), 10, 64)
	*c = count{n, err == nil}
	return nil
}

// set stores c in *dst if c is present, and reports whether it was.
func (c count) set(dst *int64) bool {
	if c.ok {
		*dst = c.n
	}
	return c.ok
}

// usageObject is a usage object as the Messages API sends it, in a
// message_start event's message, a message_delta event or a JSON body.
type usageObject struct {
	InputTokens              count `json:"input_tokens"`
	CacheCreationInputTokens count `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     count `json:"cache_read_input_tokens"`
	OutputTokens             count `json:"output_tokens"`
	CacheCreation            struct {
		Ephemeral5mInputTokens count `json:"ephemeral_5m_input_tokens"`
		Ephemeral1hInputTokens count `json:"ephemeral_1h_input_tokens"`
	} `json:"cache_creation"`
	ServerToolUse struct {
		WebSearchRequests count `json:"web_search_requests"`
		WebFetchRequests  count `json:"web_fetch_requests"`
	} `json:"server_tool_use"`
}

// apply sets on u the counts present in o and leaves the others alone:
// Messages API counts are cumulative, so the latest value of each count is
// the total.
func (o *usageObject) apply(u *Usage) {
	in := o.InputTokens.set(&u.InputTokens)
	in = o.CacheCreationInputTokens.set(&u.CacheCreationInputTokens) || in
	in = o.CacheReadInputTokens.set(&u.CacheReadInputTokens) || in
	if in {
		u.HaveInput = true
	}
	if o.OutputTokens.set(&u.OutputTokens) {
		u.HaveOutput = true
	}
	o.CacheCreation.Ephemeral5mInputTokens.set(&u.CacheCreation.Ephemeral5mInputTokens)
	o.CacheCreation.Ephemeral1hInputTokens.set(&u.CacheCreation.Ephemeral1hInputTokens)
	o.ServerToolUse.WebSearchRequests.set(&u.ServerToolUse.WebSearchRequests)
	o.ServerToolUse.WebFetchRequests.set(&u.ServerToolUse.WebFetchRequests)
}

// clearCounts zeroes u's counts and have-flags, for a usage object that
// replaces rather than updates them.
func (u *Usage) clearCounts() {
	u.InputTokens, u.CacheCreationInputTokens, u.CacheReadInputTokens, u.OutputTokens = 0, 0, 0, 0
	u.CacheCreation, u.ServerToolUse = CacheCreation{}, ServerToolUse{}
	u.HaveInput, u.HaveOutput = false, false
}

// isSpace reports whether c is JSON whitespace (which is also what may
// surround an event-stream value).
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r'
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
