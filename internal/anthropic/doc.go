// Package anthropic is the Anthropic Messages API's wire format as the
// relay meets it: what the upstream sends besides the body the client
// reads, and what the relay answers in the upstream's own shape. A reader
// asking "what does the upstream send" starts here.
//
// Where each part of the protocol lives:
//
//   - the request a client sends (model, max_tokens, the prompt prefix):
//     internal/reqscan, a hand-written scanner that beats the JSON
//     libraries on large bodies by 3x and more (its package doc has the
//     numbers);
//   - usage in responses (SSE events and JSON bodies): internal/usage;
//   - rate-limit headers (anthropic-ratelimit-*, retry-after,
//     anthropic-organization-id): here, parsed into plain values that
//     keypool takes as they are (keypool.RateLimitHeaders is an alias of
//     RateLimitHeaders, so the pool never reads HTTP);
//   - error bodies and SSE error events, both the upstream's and the
//     relay's own answers, and the spend-cap 429: here.
//
// The request scanner and the usage scanners stay packages of their own:
// each is a streaming scanner with its own tests, benchmarks and fuzz
// targets, and neither needs the rest of this package.
//
// Providers' own error formats (internal/bedrock, internal/vertex) are
// translated into these shapes so a client sees one API whatever upstream
// served it.
package anthropic
