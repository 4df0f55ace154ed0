package pricing

import (
	"math"
	"testing"
)

func mustRate(t *testing.T, s string) Rate {
	t.Helper()
	r, err := ParseRate(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestParseRateAndUSD(t *testing.T) {
	for s, want := range map[string]Rate{"3": 3_000_000, "0.30": 300_000, "$18.75": 18_750_000, "0.000001": 1, "12.": -1, ".5": 500_000} {
		got, err := ParseRate(s)
		if want < 0 {
			if err == nil {
				t.Errorf("ParseRate(%q) = %d, want an error", s, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "1e3", "0.0000001", "abc", "1.2.3", "99999999999999999999"} {
		if _, err := ParseRate(bad); err == nil {
			t.Errorf("ParseRate(%q) accepted", bad)
		}
	}
	for s, want := range map[string]PicoUSD{"10": 10 * PerUSD, "$0.5": PerUSD / 2, "0.000000000001": 1} {
		if got, err := ParseUSD(s); err != nil || got != want {
			t.Errorf("ParseUSD(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	if _, err := ParseUSD("0.0000000000001"); err == nil {
		t.Error("ParseUSD accepted a sub-picodollar amount")
	}
	if got := (PerUSD*12 + PerUSD/2).String(); got != "$12.50" {
		t.Errorf("String = %q", got)
	}
	if got := PicoUSD(375_000_000).String(); got != "$0.000375" {
		t.Errorf("String = %q", got)
	}
	if got := PicoUSD(-PerUSD).String(); got != "-$1.00" {
		t.Errorf("String = %q", got)
	}
}

// TestCostEveryField prices each usage field on its own and together.
func TestCostEveryField(t *testing.T) {
	p := full(3, 15, 3.75, 6, 0.30) // Sonnet 4.x
	for _, c := range []struct {
		name string
		u    Usage
		want PicoUSD
	}{
		{"input", Usage{InputTokens: 1000}, 3_000_000_000},             // 1000 × $3/M = $0.003
		{"output", Usage{OutputTokens: 1000}, 15_000_000_000},          // $0.015
		{"cache read", Usage{CacheReadInputTokens: 1000}, 300_000_000}, // $0.0003
		{"cache write, no breakdown: 5m price", Usage{CacheCreationInputTokens: 1000}, 3_750_000_000},
		{"cache write, 5m breakdown", Usage{CacheCreationInputTokens: 1000, CacheCreation5m: 1000}, 3_750_000_000},
		{"cache write, 1h breakdown", Usage{CacheCreationInputTokens: 1000, CacheCreation1h: 1000}, 6_000_000_000},
		{"cache write, mixed", Usage{CacheCreationInputTokens: 1000, CacheCreation5m: 400, CacheCreation1h: 600}, 400*3_750_000 + 600*6_000_000},
		{"breakdown without total", Usage{CacheCreation5m: 10, CacheCreation1h: 20}, 10*3_750_000 + 20*6_000_000},
		{"one token of each", Usage{InputTokens: 1, OutputTokens: 1, CacheCreationInputTokens: 2, CacheCreation1h: 1, CacheReadInputTokens: 1},
			3_000_000 + 15_000_000 + 3_750_000 + 6_000_000 + 300_000},
		{"negative counts are nothing", Usage{InputTokens: -5, OutputTokens: -1}, 0},
	} {
		if got := p.Cost(c.u); got != c.want {
			t.Errorf("%s: cost %d (%s), want %d (%s)", c.name, got, got, c.want, c.want)
		}
	}
}

func TestCostExactToTheToken(t *testing.T) {
	p := NewPrice(mustRate(t, "5"), mustRate(t, "25"))
	var sum PicoUSD
	var u Usage
	for i := 0; i < 1000; i++ {
		one := Usage{InputTokens: 1, OutputTokens: 3, CacheReadInputTokens: 7, CacheCreationInputTokens: 2}
		sum += p.Cost(one)
		u.Add(one)
	}
	if total := p.Cost(u); total != sum {
		t.Fatalf("cost of the sum %d != sum of costs %d", total, sum)
	}
	// 1000 × (5 + 75 + 3.5 + 12.5) = 96000 micro-dollars.
	if sum != 96_000*1_000_000 {
		t.Fatalf("sum %s", sum)
	}
	// Absurd counts are clamped rather than overflowing, at the dearest
	// price accepted, and totals saturate.
	top, err := ParseRate("1000")
	if err != nil {
		t.Fatal(err)
	}
	huge := Usage{InputTokens: 1 << 62, OutputTokens: 1 << 62, CacheCreationInputTokens: 1 << 62, CacheCreation1h: 1 << 61, CacheReadInputTokens: 1 << 62}
	c := Price{top, top, top, top, top}.Cost(huge)
	if c <= 0 {
		t.Fatalf("overflowed: %d", c)
	}
	if s := c.Plus(c).Plus(c).Plus(c).Plus(c); s != math.MaxInt64 {
		t.Fatalf("sum %d did not saturate", s)
	}
	if _, err := ParseRate("5000"); err == nil {
		t.Fatal("a price that could overflow a cost was accepted")
	}
}

func TestDefaultCachePrices(t *testing.T) {
	p := NewPrice(mustRate(t, "3"), mustRate(t, "15"))
	if p.CacheWrite5m != 3_750_000 || p.CacheWrite1h != 6_000_000 || p.CacheRead != 300_000 {
		t.Fatalf("defaults %+v", p)
	}
	// Only the unset ones are derived.
	q := Price{Input: 1_000_000, Output: 5_000_000, CacheRead: 7}.WithDefaults(false, false, true)
	if q.CacheRead != 7 || q.CacheWrite5m != 1_250_000 {
		t.Fatalf("partial defaults %+v", q)
	}
}

func TestBuiltinTable(t *testing.T) {
	tab, err := NewTable(nil)
	if err != nil {
		t.Fatal(err)
	}
	for model, want := range map[string][2]Rate{
		"claude-opus-4-5-20251101":   {5_000_000, 25_000_000},
		"claude-opus-4-7":            {5_000_000, 25_000_000},
		"claude-opus-5":              {5_000_000, 25_000_000},
		"claude-opus-5-5":            {4_000_000, 20_000_000},
		"claude-opus-4-1-20250805":   {15_000_000, 75_000_000},
		"claude-opus-4-20250514":     {15_000_000, 75_000_000},
		"claude-sonnet-5":            {2_000_000, 10_000_000},
		"claude-sonnet-5-5":          {2_000_000, 10_000_000},
		"claude-sonnet-4-5-20250929": {3_000_000, 15_000_000},
		"claude-sonnet-4-20250514":   {3_000_000, 15_000_000},
		"claude-3-7-sonnet-20250219": {3_000_000, 15_000_000},
		"claude-haiku-4-5-20251001":  {1_000_000, 5_000_000},
		"claude-3-5-haiku-20241022":  {800_000, 4_000_000},
	} {
		p, ok := tab.Lookup(model)
		if !ok || p.Input != want[0] || p.Output != want[1] {
			t.Errorf("%s: %+v %v, want %v", model, p, ok, want)
		}
		if ok && (p.CacheWrite5m != (p.Input*5+2)/4 || p.CacheWrite1h != 2*p.Input) {
			t.Errorf("%s: cache writes %+v are not 1.25×/2× input", model, p)
		}
	}
	if _, ok := tab.Lookup("gpt-4o"); ok {
		t.Error("an unknown model has a price")
	}
}

func TestOverridesComeFirst(t *testing.T) {
	tab, err := NewTable([]Rule{
		{"claude-sonnet-4-5*", NewPrice(1, 2)},
		{"claude-sonnet-*", NewPrice(3, 4)},
		{"claude-sonnet-4-5*", NewPrice(5, 6)}, // never reached: first match wins
	})
	if err != nil {
		t.Fatal(err)
	}
	// Twice over, alternating: the remembered last lookup answers only
	// for its own model.
	for i := 0; i < 2; i++ {
		if p, _ := tab.Lookup("claude-sonnet-4-5-20250929"); p.Input != 1 {
			t.Errorf("first match did not win: %+v", p)
		}
		if p, _ := tab.Lookup("claude-sonnet-4-20250514"); p.Input != 3 {
			t.Errorf("override did not beat the built-in row: %+v", p)
		}
		if p, _ := tab.Lookup("claude-haiku-4-5"); p.Input != 1_000_000 {
			t.Errorf("built-in row lost: %+v", p)
		}
		if _, ok := tab.Lookup("unknown"); ok {
			t.Error("unknown model priced")
		}
	}
	if _, err := NewTable([]Rule{{"claude-[", NewPrice(1, 1)}}); err == nil {
		t.Error("a bad pattern was accepted")
	}
}

func TestWorstCase(t *testing.T) {
	p := full(3, 15, 3.75, 6, 0.30)
	// 1000 prompt tokens at the 5m write price, 100 output tokens.
	if got, want := p.WorstCase(1000, 100, false), PicoUSD(1000*3_750_000+100*15_000_000); got != want {
		t.Errorf("worst case %d, want %d", got, want)
	}
	if got, want := p.WorstCase(1000, 0, true), PicoUSD(1000*6_000_000); got != want {
		t.Errorf("worst case with 1h writes %d, want %d", got, want)
	}
	// The worst case bounds every way the same prompt can be billed.
	for _, u := range []Usage{
		{InputTokens: 1000, OutputTokens: 100},
		{CacheCreationInputTokens: 1000, OutputTokens: 100},
		{InputTokens: 10, CacheReadInputTokens: 990, OutputTokens: 100},
	} {
		if p.Cost(u) > p.WorstCase(1000, 100, false) {
			t.Errorf("%+v costs more than the worst case", u)
		}
	}
}
