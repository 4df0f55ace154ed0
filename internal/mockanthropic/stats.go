package mockanthropic

import "time"

// Counters are cumulative request and token counts.
type Counters struct {
	Accepted     int64 // requests admitted and answered 200
	RateLimited  int64 // requests answered 429 rate_limit_error
	Unauthorized int64 // requests answered 401 authentication_error
	Overloaded   int64 // requests answered 529 overloaded_error
	Invalid      int64 // authenticated requests answered 400 or 413

	// InputTokens is what admitted requests charged to ITPM:
	// input_tokens + cache_creation_input_tokens.
	InputTokens         int64
	CacheReadTokens     int64 // cache_read_input_tokens, not charged to ITPM
	CacheCreationTokens int64 // cache_creation_input_tokens, part of InputTokens
	OutputTokens        int64 // output tokens produced, charged to OTPM
}

// Record describes one finished request.
type Record struct {
	Time      time.Time // arrival, on the configured clock
	RequestID string    // the request-id response header
	// Key is the API key the request presented: the secret itself, since
	// Stats exist for tests; print it only in redacted form.
	Key   string
	Org   string // organization ID of Key; empty if the key is unknown
	Path  string
	Model string
	// Stream reports whether the request asked for a stream.
	Stream bool
	// Status is the HTTP status sent; 200 for streams cut by a fault.
	Status int
	// ErrorType is the error JSON's error.type, or for a stream ended by
	// StreamErrorEvent "overloaded_error"; empty on success.
	ErrorType string

	InputTokens              int64 // usage.input_tokens
	CacheCreationInputTokens int64 // usage.cache_creation_input_tokens
	CacheReadInputTokens     int64 // usage.cache_read_input_tokens
	OutputTokens             int64 // output tokens produced (and charged)

	Fault   StreamFault // fault injected into this stream, StreamOK if none
	Aborted bool        // the client went away before the response was complete
}

// Stats is a snapshot of the server's counters.
type Stats struct {
	Total Counters
	// Orgs holds counters per organization ID.
	Orgs map[string]Counters
	// Keys holds counters per configured API key secret.
	Keys map[string]Counters
	// InFlight is the number of admitted requests whose response is not yet
	// finished; PeakInFlight is its highest value so far.
	InFlight, PeakInFlight int
	// Requests are the most recent finished requests, oldest first, at most
	// Config.MaxRecords of them.
	Requests []Record
}

// recordRing keeps the most recent records: it grows up to max and then
// overwrites the oldest, so a long load run neither grows memory without
// bound nor copies on every request.
type recordRing struct {
	max  int
	buf  []Record
	next int // once full, where the next record goes (the oldest one)
}

func (r *recordRing) add(rec Record) {
	switch {
	case r.max <= 0:
	case len(r.buf) < r.max:
		r.buf = append(r.buf, rec)
	default:
		r.buf[r.next] = rec
		r.next = (r.next + 1) % r.max
	}
}

// all returns a copy of the records, oldest first.
func (r *recordRing) all() []Record {
	out := make([]Record, 0, len(r.buf))
	out = append(out, r.buf[r.next:]...)
	return append(out, r.buf[:r.next]...)
}
