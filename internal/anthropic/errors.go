package anthropic

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// ErrorBody is {"type":"error","error":{"type":typ,"message":msg}}.
func ErrorBody(typ, msg string) []byte {
	b, _ := json.Marshal(wire{Type: "error", Error: detail{Type: typ, Message: msg}})
	return b
}

// AppendErrorEvent appends the SSE error event the API sends when a stream
// fails after it began.
func AppendErrorEvent(dst []byte, typ, msg string) []byte {
	dst = append(dst, "event: error\ndata: "...)
	dst = append(dst, ErrorBody(typ, msg)...)
	return append(dst, '\n', '\n')
}

// ErrorType is the Anthropic error type of an HTTP status the relay answers
// with.
func ErrorType(status int) string {
	switch status {
	case 400:
		return "invalid_request_error"
	case 401:
		return "authentication_error"
	case 403:
		return "permission_error"
	case 404:
		return "not_found_error"
	case 413:
		return "request_too_large"
	case 429:
		return "rate_limit_error"
	case 529:
		return "overloaded_error"
	}
	if status >= 400 && status < 500 {
		return "invalid_request_error"
	}
	return "api_error"
}

// ErrorMessage returns error.message of an Anthropic-shaped body, if it is one.
func ErrorMessage(body []byte) (typ, msg string, ok bool) {
	var w wire
	if json.Unmarshal(body, &w) != nil || w.Type != "error" || w.Error.Type == "" {
		return "", "", false
	}
	return w.Error.Type, w.Error.Message, true
}

// WriteError answers in the Anthropic error JSON shape, with Retry-After in
// seconds when retryAfter is positive.
func WriteError(w http.ResponseWriter, status int, typ, msg string, retryAfter int) {
	b := ErrorBody(typ, msg)
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Content-Length", strconv.Itoa(len(b)))
	if retryAfter > 0 {
		hdr.Set("Retry-After", strconv.Itoa(retryAfter))
	}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// ErrorReason is "error.type: error.message" of an upstream error body, or
// "rejected" when the body is not one. It is neither redacted nor bounded:
// the caller does both.
func ErrorReason(body []byte) string {
	var e wire
	if json.Unmarshal(body, &e) != nil || e.Error.Type == "" {
		return "rejected"
	}
	msg := e.Error.Type
	if e.Error.Message != "" {
		msg += ": " + e.Error.Message
	}
	return msg
}

type wire struct {
	Type  string `json:"type"`
	Error detail `json:"error"`
}

type detail struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}
