// Package anthropic is the Anthropic Messages API's wire format as the
// relay meets it: what the upstream sends besides the body the client
// reads, and what the relay answers in the upstream's own shape.
//
// Where each part of the protocol lives:
//
//   - the request a client sends (model, max_tokens, the prompt prefix):
//     internal/reqscan, a hand-written scanner measured 3x faster than the
//     JSON libraries on large bodies (its package doc has the numbers);
//   - usage in responses (SSE events and JSON bodies): internal/usage;
//   - error bodies and SSE error events, both the upstream's and the
//     relay's own answers, and the spend-cap 429: here.
//
// Providers' own error formats (internal/bedrock, internal/vertex) are
// translated into these shapes so a client sees one API whatever upstream
// served it.
package anthropic
