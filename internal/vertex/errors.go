package vertex

import (
	"encoding/json"
	"net/http"

	"github.com/cc-relay/caddy-cc-relay/internal/anthropic"
)

// googleError is Google's error body, {"error":{"code","message","status"}};
// some endpoints wrap it in a one-element array.
type googleError struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
	} `json:"error"`
}

func parseGoogle(body []byte) (googleError, bool) {
	var g googleError
	if json.Unmarshal(body, &g) == nil && (g.Error.Status != "" || g.Error.Code != 0) {
		return g, true
	}
	var arr []googleError
	if json.Unmarshal(body, &arr) == nil && len(arr) > 0 && (arr[0].Error.Status != "" || arr[0].Error.Code != 0) {
		return arr[0], true
	}
	return g, false
}

// MapError translates a Vertex AI error answer into Anthropic's shape. An
// answer already in Anthropic's shape (the model's own errors pass through
// Vertex) is kept as it is. RESOURCE_EXHAUSTED becomes 429
// rate_limit_error, UNAVAILABLE 529 overloaded_error, PERMISSION_DENIED
// 403 permission_error, UNAUTHENTICATED 401 authentication_error,
// INVALID_ARGUMENT 400 invalid_request_error, NOT_FOUND 404.
func MapError(status int, body []byte) (int, []byte, bool) {
	if _, _, ok := anthropic.ErrorMessage(body); ok {
		return status, body, false
	}
	g, ok := parseGoogle(body)
	code, typ := status, anthropic.ErrorType(status)
	switch g.Error.Status {
	case "RESOURCE_EXHAUSTED":
		code, typ = http.StatusTooManyRequests, "rate_limit_error"
	case "INVALID_ARGUMENT", "FAILED_PRECONDITION", "OUT_OF_RANGE":
		code, typ = http.StatusBadRequest, "invalid_request_error"
	case "UNAUTHENTICATED":
		code, typ = http.StatusUnauthorized, "authentication_error"
	case "PERMISSION_DENIED":
		code, typ = http.StatusForbidden, "permission_error"
	case "NOT_FOUND":
		code, typ = http.StatusNotFound, "not_found_error"
	case "UNAVAILABLE":
		code, typ = 529, "overloaded_error"
	case "INTERNAL", "UNKNOWN", "DEADLINE_EXCEEDED":
		typ = "api_error"
	default:
		if status == http.StatusServiceUnavailable {
			code, typ = 529, "overloaded_error"
		}
	}
	msg := g.Error.Message
	if !ok || msg == "" {
		msg = http.StatusText(status)
	}
	if len(msg) > 500 {
		msg = msg[:500]
	}
	return code, anthropic.ErrorBody(typ, "Vertex AI: "+msg), true
}
