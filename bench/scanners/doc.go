// Package scanners measures internal/reqscan against general-purpose JSON
// libraries at the one job the relay gives it: reading "model", "stream",
// "max_tokens" and "metadata"."user_id" from a Claude Code request body of
// hundreds of kilobytes. It holds only benchmarks:
//
//	cd bench && go test -run '^$' -bench . -benchmem ./scanners/
//
// The libraries are dependencies of this benchmark module only, never of
// the plugin.
package scanners
