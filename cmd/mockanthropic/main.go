// Command mockanthropic serves the mock Anthropic Messages API of package
// internal/mockanthropic, printing one line per request so that a demo user
// can watch how a relay spreads requests over keys and organizations.
//
//	go run ./cmd/mockanthropic -listen 127.0.0.1:9099 \
//	    -orgs 'org-a:rpm=50,itpm=40000,otpm=8000;org-b:rpm=50,itpm=40000,otpm=8000' \
//	    -keys 'sk-test-a1=org-a,sk-test-a2=org-a,sk-test-b1=org-b'
//
// Keys are shown by their 1-based position in -keys (key1, key2, …), never by
// their secret.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/mockanthropic"
)

const (
	defaultOrgs = "org-a:rpm=50,itpm=40000,otpm=8000;org-b:rpm=50,itpm=40000,otpm=8000"
	defaultKeys = "sk-test-a1=org-a,sk-test-a2=org-a,sk-test-b1=org-b"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "mockanthropic:", err)
		os.Exit(2)
	}
}

// run serves until ctx is done. ready, if not nil, is told the address
// listened on once requests can be served.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, ready func(addr string)) error {
	fs := flag.NewFlagSet("mockanthropic", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:9099", "address to listen on; loopback only unless you mean otherwise")
	orgsFlag := fs.String("orgs", defaultOrgs,
		"organizations: `ID:rpm=N,itpm=N,otpm=N;ID:…` (a missing or 0 limit is unlimited)")
	keysFlag := fs.String("keys", defaultKeys, "API keys: `SECRET=ORG,SECRET=ORG,…`; shown as key1, key2, … in that order")
	outputTokens := fs.Int64("output-tokens", mockanthropic.DefaultOutputTokens, "output tokens per response (capped at max_tokens)")
	deltas := fs.Int("deltas", mockanthropic.DefaultStreamDeltas, "content_block_delta events per stream")
	deltaDelay := fs.Duration("delta-delay", 0, "pause before each content_block_delta (e.g. 50ms)")
	cacheTTL := fs.Duration("cache-ttl", mockanthropic.DefaultCacheTTL, "prompt cache TTL")
	quiet := fs.Bool("quiet", false, "do not print a line per request")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	orgs, err := parseOrgs(*orgsFlag)
	if err != nil {
		return fmt.Errorf("-orgs: %w", err)
	}
	keys, order, err := parseKeys(*keysFlag, orgs)
	if err != nil {
		return fmt.Errorf("-keys: %w", err)
	}
	if *outputTokens < 1 || *deltas < 1 || *deltaDelay < 0 || *cacheTTL <= 0 {
		return errors.New("-output-tokens and -deltas must be >= 1, -delta-delay >= 0, -cache-ttl > 0")
	}

	names := make(map[string]string, len(order)) // secret → key1, key2, …
	for i, k := range order {
		names[k] = "key" + strconv.Itoa(i+1)
	}
	n := *outputTokens
	cfg := mockanthropic.Config{
		Orgs:         orgs,
		Keys:         keys,
		OutputTokens: func([]byte) int64 { return n },
		StreamDeltas: *deltas,
		DeltaDelay:   *deltaDelay,
		CacheTTL:     *cacheTTL,
		MaxRecords:   1000, // the command reads only counters, not records
	}
	if !*quiet {
		cfg.Log = func(r mockanthropic.Record) { fmt.Fprintln(stdout, formatRecord(r, names)) }
	}
	mock := mockanthropic.New(cfg)

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	if host, _, err := net.SplitHostPort(*listen); err == nil {
		if ip := net.ParseIP(host); (ip == nil && host != "localhost") || (ip != nil && !ip.IsLoopback()) {
			fmt.Fprintf(stderr, "warning: listening on %s, reachable beyond this machine\n", *listen)
		}
	}
	fmt.Fprintf(stderr, "mock Anthropic API on http://%s\n", ln.Addr())
	for _, o := range orgs {
		fmt.Fprintf(stderr, "  %s: rpm=%s itpm=%s otpm=%s\n", o.ID, limit(o.RPM), limit(o.ITPM), limit(o.OTPM))
	}
	for _, k := range order {
		fmt.Fprintf(stderr, "  %s -> %s\n", names[k], keys[k])
	}

	srv := &http.Server{Handler: mock, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	if ready != nil {
		ready(ln.Addr().String())
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdown) // streams still open after 5 s are cut; this is a mock
	printSummary(stderr, mock.Stats(), order, names)
	return nil
}

func limit(n int64) string {
	if n == 0 {
		return "unlimited"
	}
	return strconv.FormatInt(n, 10)
}

// parseOrgs parses "ID:rpm=N,itpm=N,otpm=N;ID:…". Empty entries are skipped;
// a limit left out is 0, unlimited.
func parseOrgs(s string) ([]mockanthropic.Org, error) {
	var orgs []mockanthropic.Org
	seen := map[string]bool{}
	for entry := range strings.SplitSeq(s, ";") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		id, spec, _ := strings.Cut(entry, ":")
		id = strings.TrimSpace(id)
		if id == "" {
			return nil, fmt.Errorf("%q: organization ID missing", entry)
		}
		if seen[id] {
			return nil, fmt.Errorf("organization %q defined twice", id)
		}
		seen[id] = true
		o := mockanthropic.Org{ID: id}
		for field := range strings.SplitSeq(spec, ",") {
			field = strings.TrimSpace(field)
			if field == "" {
				continue
			}
			name, value, ok := strings.Cut(field, "=")
			v, err := strconv.ParseInt(strings.TrimSpace(value), 10, 64)
			if !ok || err != nil || v < 0 {
				return nil, fmt.Errorf("%s: %q is not name=N with N >= 0", id, field)
			}
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "rpm":
				o.RPM = v
			case "itpm":
				o.ITPM = v
			case "otpm":
				o.OTPM = v
			default:
				return nil, fmt.Errorf("%s: unknown limit %q (want rpm, itpm or otpm)", id, name)
			}
		}
		orgs = append(orgs, o)
	}
	if len(orgs) == 0 {
		return nil, errors.New("no organizations")
	}
	return orgs, nil
}

// parseKeys parses "SECRET=ORG,…" and returns the keys and their order.
// Every organization must be one of orgs: a typo should not silently become
// an organization without limits.
func parseKeys(s string, orgs []mockanthropic.Org) (map[string]string, []string, error) {
	known := map[string]bool{}
	for _, o := range orgs {
		known[o.ID] = true
	}
	keys := map[string]string{}
	var order []string
	for entry := range strings.SplitSeq(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		n := len(order) + 1
		secret, org, ok := strings.Cut(entry, "=")
		secret, org = strings.TrimSpace(secret), strings.TrimSpace(org)
		// Errors name the key by position: the secret stays out of logs.
		switch {
		case !ok || secret == "" || org == "":
			return nil, nil, fmt.Errorf("key%d is not SECRET=ORG", n)
		case !known[org]:
			return nil, nil, fmt.Errorf("key%d names organization %q, which -orgs does not define", n, org)
		case keys[secret] != "":
			return nil, nil, fmt.Errorf("key%d repeats an earlier key", n)
		}
		keys[secret] = org
		order = append(order, secret)
	}
	if len(order) == 0 {
		return nil, nil, errors.New("no keys")
	}
	return keys, order, nil
}

// formatRecord renders a request as one line, naming the key by position.
func formatRecord(r mockanthropic.Record, names map[string]string) string {
	key := names[r.Key]
	switch {
	case r.Key == "":
		key = "no-key"
	case key == "":
		key = "unknown-key"
	}
	org := r.Org
	if org == "" {
		org = "-"
	}
	mode := "json"
	if r.Stream {
		mode = "stream"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-11s %-8s %3d %-6s in=%d cache_write=%d cache_read=%d out=%d",
		r.Time.Format("15:04:05.000"), key, org, r.Status, mode,
		r.InputTokens, r.CacheCreationInputTokens, r.CacheReadInputTokens, r.OutputTokens)
	if r.Model != "" {
		b.WriteString(" model=" + printable(r.Model))
	}
	if r.ErrorType != "" {
		b.WriteString(" error=" + r.ErrorType)
	}
	if r.Fault != mockanthropic.StreamOK {
		b.WriteString(" fault=" + r.Fault.String())
	}
	if r.Aborted {
		b.WriteString(" aborted")
	}
	if r.Path != "/v1/messages" {
		b.WriteString(" path=" + printable(r.Path))
	}
	return b.String()
}

// printable returns s, quoted if it holds anything but printable ASCII, so
// that a client-chosen model name or path cannot forge log lines.
func printable(s string) string {
	for i := range len(s) {
		if s[i] <= ' ' || s[i] > '~' {
			return strconv.Quote(s)
		}
	}
	return s
}

// printSummary prints each key's and organization's counters.
func printSummary(w io.Writer, st mockanthropic.Stats, order []string, names map[string]string) {
	line := func(name string, c mockanthropic.Counters) {
		fmt.Fprintf(w, "  %-8s ok=%d 429=%d 401=%d 529=%d in=%d cache_write=%d cache_read=%d out=%d\n", name,
			c.Accepted, c.RateLimited, c.Unauthorized, c.Overloaded,
			c.InputTokens, c.CacheCreationTokens, c.CacheReadTokens, c.OutputTokens)
	}
	fmt.Fprintln(w, "summary:")
	for _, k := range order {
		line(names[k], st.Keys[k])
	}
	ids := make([]string, 0, len(st.Orgs))
	for id := range st.Orgs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		line(id, st.Orgs[id])
	}
}
