// Package vertex speaks Google Vertex AI's Anthropic endpoints on behalf of
// a client that speaks the Anthropic Messages API: rawPredict and
// streamRawPredict take the Messages body (anthropic_version
// vertex-2023-10-16 instead of model) and answer as the Anthropic API
// does, SSE included; requests carry an OAuth2 access token of a service
// account; Google's own error bodies are mapped onto Anthropic's.
//
// The package knows nothing of Caddy or of the key pool.
package vertex

import (
	"github.com/cc-relay/caddy-cc-relay/internal/jsonedit"
)

// Version is the anthropic_version Vertex AI requires in the body.
const Version = "vertex-2023-10-16"

// Scope is the OAuth2 scope the access tokens are asked for.
const Scope = "https://www.googleapis.com/auth/cloud-platform"

// DefaultHost is the Vertex AI endpoint of region; "global" has no
// regional prefix.
func DefaultHost(region string) string {
	if region == "global" {
		return "aiplatform.googleapis.com"
	}
	return region + "-aiplatform.googleapis.com"
}

// Path is the rawPredict (or, with stream, streamRawPredict) path of model
// in project and region.
func Path(project, region, model string, stream bool) string {
	op := ":rawPredict"
	if stream {
		op = ":streamRawPredict"
	}
	return "/v1/projects/" + project + "/locations/" + region + "/publishers/anthropic/models/" + model + op
}

// CountTokensPath is the path of Vertex AI's count-tokens endpoint for
// Anthropic models.
func CountTokensPath(project, region string) string {
	return "/v1/projects/" + project + "/locations/" + region + "/publishers/anthropic/models/count-tokens:rawPredict"
}

var dropModel = []string{"model"}

// TranslateBody appends to dst the rawPredict body for a Messages request
// body: without model, with anthropic_version. stream stays: it picks the
// answer's format on Vertex too.
func TranslateBody(dst, body []byte) ([]byte, bool, error) {
	stream := false
	if v, ok := jsonedit.Get(body, "stream"); ok && string(v) == "true" {
		stream = true
	}
	out, err := jsonedit.Rewrite(dst, body, dropModel, []byte(`"anthropic_version":"`+Version+`"`))
	return out, stream, err
}

// TranslateCountTokens appends the count-tokens body: the model is the
// Vertex model id, and anthropic_version is added.
func TranslateCountTokens(dst, body []byte, modelID string) ([]byte, error) {
	m := jsonedit.AppendString([]byte(`"model":`), modelID)
	return jsonedit.Rewrite(dst, body, nil, []byte(`"anthropic_version":"`+Version+`"`), m)
}
