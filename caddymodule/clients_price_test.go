package caddymodule

import (
	"testing"

	"github.com/cc-relay/caddy-cc-relay/internal/pricing"
	"github.com/cc-relay/caddy-cc-relay/internal/usage"
)

// A stream's cache writes are priced by their lifetime: the usage
// scanner's cache_creation breakdown reaches the pricing, so a 1-hour write
// costs the 1-hour rate, not the 5-minute one.
func TestClientCostUsesCacheLifetimes(t *testing.T) {
	var s usage.SSEScanner
	s.Write([]byte("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{" +
		"\"input_tokens\":10,\"cache_creation_input_tokens\":3000,\"cache_read_input_tokens\":0," +
		"\"cache_creation\":{\"ephemeral_5m_input_tokens\":1000,\"ephemeral_1h_input_tokens\":2000}," +
		"\"output_tokens\":1}}}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":20}}\n\n"))
	u := toPricing(s.Usage())
	if u.CacheCreation5m != 1000 || u.CacheCreation1h != 2000 {
		t.Fatalf("breakdown not carried: %+v", u)
	}
	// $1 in, $5 out per MTok: 5m writes at $1.25, 1h writes at $2.
	price := pricing.NewPrice(1_000_000, 5_000_000).WithDefaults(false, false, false)
	want := pricing.PicoUSD(10*1_000_000 + 20*5_000_000 + 1000*1_250_000 + 2000*2_000_000)
	if got := price.Cost(u); got != want {
		t.Fatalf("cost %v, want %v", got, want)
	}
}
