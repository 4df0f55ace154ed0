package caddymodule

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// TestREADMECaddyfilesAdapt adapts every complete Caddyfile of README.md
// (those without <placeholders> or elisions): what operators copy must be
// a configuration Caddy accepts.
func TestREADMECaddyfilesAdapt(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```caddyfile\n(.*?)```").FindAllStringSubmatch(string(b), -1)
	adapter := caddyconfig.GetAdapter("caddyfile")
	n := 0
	for _, m := range blocks {
		body := m[1]
		if strings.ContainsAny(body, "<…") || strings.Contains(body, "...") {
			continue
		}
		n++
		if _, warns, err := adapter.Adapt([]byte(body), nil); err != nil {
			t.Errorf("README Caddyfile does not adapt: %v\n%s", err, body)
		} else {
			for _, w := range warns {
				t.Logf("warning: %v", w)
			}
		}
	}
	if n < 3 {
		t.Fatalf("only %d complete Caddyfiles found in README.md", n)
	}
	t.Logf("%d README Caddyfiles adapt", n)
}
