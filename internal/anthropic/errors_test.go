package anthropic

import (
	"net/http/httptest"
	"testing"
)

func TestShapes(t *testing.T) {
	if got := string(ErrorBody("rate_limit_error", `slow "down"`)); got != `{"type":"error","error":{"type":"rate_limit_error","message":"slow \"down\""}}` {
		t.Fatal(got)
	}
	if got := string(AppendErrorEvent([]byte("x"), "api_error", "m")); got != "xevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"m\"}}\n\n" {
		t.Fatal(got)
	}
	for status, want := range map[int]string{400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
		404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error", 418: "invalid_request_error", 502: "api_error"} {
		if ErrorType(status) != want {
			t.Errorf("%d: %s", status, ErrorType(status))
		}
	}
	if typ, msg, ok := ErrorMessage(ErrorBody("x", "y")); !ok || typ != "x" || msg != "y" {
		t.Fatal("round trip")
	}
	if _, _, ok := ErrorMessage([]byte(`{"error":{"code":429}}`)); ok {
		t.Fatal("a Google error taken for Anthropic's")
	}
}

func TestWriteError(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteError(rec, 429, "rate_limit_error", "slow down", 7)
	if rec.Code != 429 || rec.Header().Get("Retry-After") != "7" || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("%d %v", rec.Code, rec.Header())
	}
	if typ, msg, ok := ErrorMessage(rec.Body.Bytes()); !ok || typ != "rate_limit_error" || msg != "slow down" {
		t.Fatalf("body %s", rec.Body)
	}
	rec = httptest.NewRecorder()
	WriteError(rec, 400, "invalid_request_error", "x", 0)
	if rec.Header().Get("Retry-After") != "" {
		t.Fatal("Retry-After without a delay")
	}
}

func TestErrorReason(t *testing.T) {
	for body, want := range map[string]string{
		`{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}`: "authentication_error: invalid x-api-key",
		`{"type":"error","error":{"type":"permission_error"}}`:                                   "permission_error",
		`<html>bad gateway</html>`: "rejected",
		``:                         "rejected",
	} {
		if got := ErrorReason([]byte(body)); got != want {
			t.Errorf("ErrorReason(%q) = %q, want %q", body, got, want)
		}
	}
}
