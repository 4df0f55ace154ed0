package caddymodule

import (
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

const alertRules = "../docs/prometheus/cc-relay.rules.yml"

// TestAlertRulesUseRealMetrics checks every metric the alert rules name
// against the relay's collectors, and the label values they match
// against the values the relay sets.
func TestAlertRulesUseRealMetrics(t *testing.T) {
	src, err := os.ReadFile(alertRules)
	if err != nil {
		t.Fatal(err)
	}
	var known []string
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range collectors {
			c.Describe(ch)
		}
		close(ch)
	}()
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			known = append(known, m[1])
		}
	}
	used := regexp.MustCompile(`caddy_cc_relay_[a-z_]+`).FindAllString(string(src), -1)
	if len(used) == 0 {
		t.Fatal("the rules name no metric")
	}
	for _, name := range used {
		if !slices.Contains(known, name) {
			t.Errorf("the alert rules use %s, which the relay does not export (it has %v)", name, known)
		}
	}
	for _, state := range regexp.MustCompile(`state="([a-z]+)"`).FindAllStringSubmatch(string(src), -1) {
		if !slices.Contains(keyStates[:], state[1]) {
			t.Errorf("the alert rules match key state %q; the relay has %v", state[1], keyStates)
		}
	}
	// The upstream's 429 is counted as outcome "upstream_429" (attemptwriter.go).
	if !strings.Contains(string(src), `outcome="upstream_429"`) {
		t.Error(`the 429 share rule does not match outcome="upstream_429"`)
	}
}

// TestAlertRulesWithPromtool checks the rules and runs their unit tests
// (cc-relay.rules_test.yml) with Prometheus's own promtool.
func TestAlertRulesWithPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("the alert rule tests need promtool: apt-get install prometheus (Debian), or put promtool from a Prometheus release on PATH")
	}
	for _, args := range [][]string{{"check", "rules", "cc-relay.rules.yml"}, {"test", "rules", "cc-relay.rules_test.yml"}} {
		cmd := exec.CommandContext(t.Context(), promtool, args...)
		cmd.Dir = "../docs/prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
