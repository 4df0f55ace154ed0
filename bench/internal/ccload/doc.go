// Package ccload is the Claude-Code-like load the relay benchmarks in bench/
// share: generated Messages requests (independent ones and growing
// conversations), a client that retries 429s and 529s as Claude Code does
// and records every request's outcome, the mock Anthropic upstream
// (internal/mockanthropic) with organizations, keys and limits that counts
// what it accepted, and the arithmetic of quota use. bench/quota drives it
// against relays in one process, bench/cluster against relay processes
// sharing Redis behind a load balancer.
package ccload
