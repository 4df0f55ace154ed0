package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/cc-relay/caddy-cc-relay/internal/mockanthropic"
)

func TestParseOrgs(t *testing.T) {
	orgs, err := parseOrgs(defaultOrgs + "; org-c: ;org-d:rpm=5")
	if err != nil {
		t.Fatal(err)
	}
	want := []mockanthropic.Org{
		{ID: "org-a", RPM: 50, ITPM: 40000, OTPM: 8000},
		{ID: "org-b", RPM: 50, ITPM: 40000, OTPM: 8000},
		{ID: "org-c"},
		{ID: "org-d", RPM: 5},
	}
	if len(orgs) != len(want) {
		t.Fatalf("got %+v", orgs)
	}
	for i := range want {
		if orgs[i] != want[i] {
			t.Errorf("org %d = %+v, want %+v", i, orgs[i], want[i])
		}
	}
	for _, bad := range []string{"", ";", ":rpm=1", "a:rpm=-1", "a:rpm=x", "a:tpm=1", "a:rpm", "a;a"} {
		if _, err := parseOrgs(bad); err == nil {
			t.Errorf("parseOrgs(%q) accepted", bad)
		}
	}
}

func TestParseKeys(t *testing.T) {
	orgs, _ := parseOrgs(defaultOrgs)
	keys, order, err := parseKeys(defaultKeys, orgs)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(order, ",") != "sk-test-a1,sk-test-a2,sk-test-b1" || keys["sk-test-b1"] != "org-b" || len(keys) != 3 {
		t.Fatalf("keys %v order %v", keys, order)
	}
	for _, bad := range []string{"", "sk-1", "=org-a", "sk-1=", "sk-1=org-z", "sk-1=org-a,sk-1=org-b"} {
		_, _, err := parseKeys(bad, orgs)
		if err == nil {
			t.Errorf("parseKeys(%q) accepted", bad)
		} else if strings.Contains(err.Error(), "sk-1") {
			t.Errorf("parseKeys(%q) error shows the secret: %v", bad, err)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the concurrent Log calls.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestServesAndLogsWithoutSecrets(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-output-tokens", "7"}, &stdout, &stderr,
			func(addr string) { addrc <- addr })
	}()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatalf("run: %v", err)
	}

	post := func(key, body string) int {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/messages", strings.NewReader(body))
		req.Header.Set("x-api-key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	body := `{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[{"role":"user","content":"hello"}]}`
	if got := post("sk-test-a2", body); got != http.StatusOK {
		t.Fatalf("status %d", got)
	}
	if got := post("sk-wrong", body); got != http.StatusUnauthorized {
		t.Fatalf("wrong key: status %d", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}

	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("log lines:\n%s", stdout.String())
	}
	for _, want := range []string{"key2", "org-a", " 200 ", "in=2", "out=7", "model=claude-sonnet-4-5"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("line %q lacks %q", lines[0], want)
		}
	}
	if !strings.Contains(lines[1], "unknown-key") || !strings.Contains(lines[1], " 401 ") {
		t.Errorf("line %q", lines[1])
	}
	all := stdout.String() + stderr.String()
	for _, secret := range []string{"sk-test-a1", "sk-test-a2", "sk-test-b1", "sk-wrong"} {
		if strings.Contains(all, secret) {
			t.Errorf("output shows secret %q:\n%s", secret, all)
		}
	}
	if !strings.Contains(stderr.String(), "key2     ok=1") {
		t.Errorf("summary missing:\n%s", stderr.String())
	}
}

func TestFormatRecordQuotesClientText(t *testing.T) {
	line := formatRecord(mockanthropic.Record{Key: "k", Model: "m\nfake line", Path: "/x y"}, map[string]string{"k": "key1"})
	if strings.Contains(line, "\n") || !strings.Contains(line, `path="/x y"`) {
		t.Fatalf("line %q", line)
	}
}
