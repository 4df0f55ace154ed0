package bedrock

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/cc-relay/caddy-cc-relay/internal/anthropic"
)

// StatusOverloaded is the status Anthropic's API answers when it is
// overloaded; Bedrock says 503 ServiceUnavailableException.
const StatusOverloaded = 529

// mapException returns the Anthropic status and error type for a Bedrock
// exception name ("ThrottlingException", or as an event-stream header
// "throttlingException"); for an unknown name, status decides.
func mapException(name string, status int) (int, string) {
	switch strings.ToLower(name) {
	case "throttlingexception", "servicequotaexceededexception", "toomanyrequestsexception":
		return http.StatusTooManyRequests, "rate_limit_error"
	case "validationexception":
		return http.StatusBadRequest, "invalid_request_error"
	case "accessdeniedexception":
		return http.StatusForbidden, "permission_error"
	case "unrecognizedclientexception", "invalidsignatureexception", "incompletesignatureexception",
		"expiredtokenexception", "missingauthenticationtokenexception", "invalidclienttokenid", "signaturedoesnotmatch":
		return http.StatusUnauthorized, "authentication_error"
	case "resourcenotfoundexception":
		return http.StatusNotFound, "not_found_error"
	case "serviceunavailableexception", "modelnotreadyexception":
		return StatusOverloaded, "overloaded_error"
	case "internalserverexception", "modelstreamerrorexception", "modelerrorexception", "modeltimeoutexception":
		return http.StatusInternalServerError, "api_error"
	}
	switch {
	case status == http.StatusServiceUnavailable:
		return StatusOverloaded, "overloaded_error"
	case status == 0:
		return http.StatusInternalServerError, "api_error"
	case status >= 500:
		return status, "api_error"
	}
	return status, anthropic.ErrorType(status)
}

// ErrorName is the exception name of a Bedrock error answer: the
// x-amzn-ErrorType header ("ThrottlingException:http://..."), else the
// body's __type ("com.amazon...#ThrottlingException").
func ErrorName(h http.Header, body []byte) string {
	if v := h.Get("X-Amzn-Errortype"); v != "" {
		name, _, _ := strings.Cut(v, ":")
		return name
	}
	var b struct {
		Type string `json:"__type"`
	}
	if json.Unmarshal(body, &b) == nil && b.Type != "" {
		if i := strings.LastIndexByte(b.Type, '#'); i >= 0 {
			return b.Type[i+1:]
		}
		return b.Type
	}
	return ""
}

// MapError translates a Bedrock error answer into the status and body the
// Anthropic API would have answered: ThrottlingException 429
// rate_limit_error, ValidationException 400 invalid_request_error,
// AccessDeniedException 403 permission_error, ServiceUnavailableException
// 529 overloaded_error, and so on. The message is Bedrock's.
func MapError(status int, h http.Header, body []byte) (int, []byte) {
	name := ErrorName(h, body)
	code, typ := mapException(name, status)
	msg := messageOf(body)
	if msg == "" {
		msg = name
		if msg == "" {
			msg = http.StatusText(status)
		}
	}
	return code, anthropic.ErrorBody(typ, "Amazon Bedrock: "+msg)
}

// messageOf reads message (or Message) from a Bedrock error body, bounded.
func messageOf(body []byte) string {
	var b struct {
		Message  string `json:"message"`
		Message2 string `json:"Message"`
	}
	if json.Unmarshal(body, &b) != nil {
		return ""
	}
	msg := b.Message
	if msg == "" {
		msg = b.Message2
	}
	if len(msg) > 500 {
		msg = msg[:500]
	}
	return msg
}
