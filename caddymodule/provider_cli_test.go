package caddymodule

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/mockanthropic"
)

// claudeCodeVersion is the Claude Code CLI the end-to-end test runs.
const claudeCodeVersion = "2.1.328"

// installClaudeCode installs the CLI with npm into a directory kept across
// runs (the package is large) and returns the claude binary. Without npm
// the test fails: a skipped CLI test proves nothing.
func installClaudeCode(t *testing.T) string {
	t.Helper()
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatalf("npm is required to install the Claude Code CLI %s for this test (apt-get install -y npm): %v", claudeCodeVersion, err)
	}
	dir := filepath.Join(os.TempDir(), "cc-relay-claude-code-"+claudeCodeVersion)
	bin := filepath.Join(dir, "node_modules", ".bin", "claude")
	if out, err := exec.Command(bin, "--version").Output(); err == nil && strings.HasPrefix(string(out), claudeCodeVersion) {
		return bin
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "install", "--no-audit", "--no-fund", "--prefix", dir, "@anthropic-ai/claude-code@"+claudeCodeVersion)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm install @anthropic-ai/claude-code@%s: %v\n%s", claudeCodeVersion, err, out)
	}
	if out, err := exec.Command(bin, "--version").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), claudeCodeVersion) {
		t.Fatalf("claude --version after install: %v %s", err, out)
	}
	return bin
}

// The Claude Code CLI answers through a pool whose only key is Bedrock:
// it speaks the Anthropic API to the relay, the relay speaks Bedrock
// (signed, verified by the mock) and streams back Anthropic SSE.
func TestProviderClaudeCodeCLIViaBedrock(t *testing.T) {
	claude := installClaudeCode(t)
	setProviderEnv(t)
	// The CLI signs nothing and checks no clock, but the mock checks the
	// signature's date against its own: both on the real clock here.
	bm, bURL := newBedrockMock(t, nil, mockanthropic.Config{})
	startRelay(t, relaySite(`prov_cc_cli {
		client_token demo-token dev
		`+bedrockBlock("aws", bURL, "")+"\n\t}", providerProxy))

	home := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, claude, "-p", "hi")
	cmd.Dir = home
	cmd.Env = append(os.Environ(),
		"HOME="+home,
		"ANTHROPIC_BASE_URL="+relayAddr,
		"ANTHROPIC_API_KEY=demo-token",
		"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
		"CLAUDE_CODE_USE_BEDROCK=", "CLAUDE_CODE_USE_VERTEX=",
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("claude -p hi: %v\n%s\nbedrock saw %+v", err, out, bm.Records())
	}
	// The mock's answer is words of its vocabulary.
	if !strings.Contains(string(out), "relay") {
		t.Fatalf("claude printed %q", out)
	}
	recs := bm.Records()
	if len(recs) == 0 {
		t.Fatal("the CLI's request never reached Bedrock")
	}
	t.Logf("claude printed %q; Bedrock served %d requests, model %s", out, len(recs), recs[0].ModelID)
	for _, r := range recs {
		if !r.Verified || r.Status != 0 && r.Status != 200 {
			t.Fatalf("bedrock request %s: verified %v status %d %s", r.Path, r.Verified, r.Status, r.Error)
		}
	}
}
