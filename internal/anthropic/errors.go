package anthropic

import "encoding/json"

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

type wire struct {
	Type  string `json:"type"`
	Error detail `json:"error"`
}

type detail struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}
