// Package bedrock speaks Amazon Bedrock's InvokeModel API on behalf of a
// client that speaks the Anthropic Messages API: it translates a Messages
// request into InvokeModel / InvokeModelWithResponseStream, signs it with
// AWS Signature Version 4 (the official aws-sdk-go-v2 signer), turns the
// AWS event-stream answer back into the server-sent events the Anthropic
// API would have sent, and maps Bedrock's errors onto Anthropic's.
//
// The package knows nothing of Caddy or of the key pool.
package bedrock

import (
	"strings"

	"github.com/cc-relay/caddy-cc-relay/internal/jsonedit"
)

// Version is the anthropic_version Bedrock requires in the body.
const Version = "bedrock-2023-05-31"

// Service is the SigV4 signing name of the Bedrock runtime.
const Service = "bedrock"

// DefaultHost is the Bedrock runtime endpoint of region.
func DefaultHost(region string) string {
	return "bedrock-runtime." + region + ".amazonaws.com"
}

// Path returns the request path of InvokeModel (or, with stream,
// InvokeModelWithResponseStream) for modelID, unescaped and escaped as the
// AWS SDK escapes it (a ':' in a model id or an ARN's '/' become %3A and
// %2F: the id is one path segment).
func Path(modelID string, stream bool) (path, rawPath string) {
	op := "/invoke"
	if stream {
		op = "/invoke-with-response-stream"
	}
	return "/model/" + modelID + op, "/model/" + escapeSegment(modelID) + op
}

// escapeSegment escapes s as one path segment the way the SDK's
// httpbinding does: every byte but the unreserved ones as %XX.
func escapeSegment(s string) string {
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+8)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b = append(b, c)
			continue
		}
		b = append(b, '%', hex[c>>4], hex[c&15])
	}
	return string(b)
}

// dropped are the Messages body's members InvokeModel does not take: the
// model is in the path and streaming is the operation.
var dropped = []string{"model", "stream"}

// TranslateBody appends to dst the InvokeModel body for a Messages request
// body: without model and stream, with anthropic_version and, when the
// client sent anthropic-beta headers, their values as anthropic_beta. It
// reports whether the client asked for a stream.
func TranslateBody(dst, body []byte, betas []string) ([]byte, bool, error) {
	stream := false
	if v, ok := jsonedit.Get(body, "stream"); ok && string(v) == "true" {
		stream = true
	}
	add := [][]byte{[]byte(`"anthropic_version":"` + Version + `"`)}
	if len(betas) > 0 {
		b := []byte(`"anthropic_beta":[`)
		for i, v := range betas {
			if i > 0 {
				b = append(b, ',')
			}
			b = jsonedit.AppendString(b, v)
		}
		add = append(add, append(b, ']'))
	}
	out, err := jsonedit.Rewrite(dst, body, dropped, add...)
	return out, stream, err
}

// Betas splits anthropic-beta header values ("a,b", "c") into their items.
func Betas(values []string) []string {
	var out []string
	for _, v := range values {
		for item := range strings.SplitSeq(v, ",") {
			if item = strings.TrimSpace(item); item != "" {
				out = append(out, item)
			}
		}
	}
	return out
}
