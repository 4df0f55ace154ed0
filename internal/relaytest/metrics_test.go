package relaytest

import (
	"strings"
	"testing"
)

func TestParseMetrics(t *testing.T) {
	text := `# HELP caddy_cc_relay_requests_total Requests.
# TYPE caddy_cc_relay_requests_total counter
caddy_cc_relay_requests_total{pool="p",key="a",outcome="ok"} 3
caddy_cc_relay_requests_total{pool="p",key="b,\"c\"",outcome="ok"} 4
# HELP caddy_cc_relay_wait_seconds Wait.
# TYPE caddy_cc_relay_wait_seconds histogram
caddy_cc_relay_wait_seconds_bucket{pool="p",le="0.1"} 1
caddy_cc_relay_wait_seconds_bucket{pool="p",le="+Inf"} 2
caddy_cc_relay_wait_seconds_sum{pool="p"} 0.25
caddy_cc_relay_wait_seconds_count{pool="p"} 2
`
	s, err := ParseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if got := FindSamples(s, "caddy_cc_relay_requests_total", map[string]string{"key": `b,"c"`}); len(got) != 1 || got[0].Value != 4 {
		t.Errorf("escaped label value: got %v", got)
	}
	if got := FindSamples(s, "caddy_cc_relay_requests_total", map[string]string{"pool": "p"}); len(got) != 2 {
		t.Errorf("by pool: %d samples, want 2", len(got))
	}
	if got := FindSamples(s, "caddy_cc_relay_wait_seconds_count", nil); len(got) != 1 || got[0].Value != 2 {
		t.Errorf("histogram count: got %v", got)
	}
	if got := FindSamples(s, "caddy_cc_relay_wait_seconds_bucket", map[string]string{"le": "+Inf"}); len(got) != 1 || got[0].Value != 2 {
		t.Errorf("histogram +Inf bucket: got %v", got)
	}
	if _, err := ParseMetrics(strings.NewReader("not a metric line {\n")); err == nil {
		t.Error("malformed text parsed without error")
	}
}

func TestFreePort(t *testing.T) {
	for range 20 {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if p <= 0 || reservedPorts[p] {
			t.Fatalf("FreePort() = %d", p)
		}
	}
}
