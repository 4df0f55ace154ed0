// Package relaytest holds what the module's tests and the benchmarks in
// bench/ (a module of its own) share: free local ports and reading the
// Prometheus text that Caddy's /metrics serves. One copy here instead of one
// per test package and per benchmark command.
package relaytest
