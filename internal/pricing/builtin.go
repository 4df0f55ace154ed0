package pricing

// usd is a literal price in micro-dollars per million tokens.
func usd(dollars float64) Rate { return Rate(dollars*1e6 + 0.5) }

// full is a price whose five rates are all given.
func full(in, out, w5m, w1h, read float64) Price {
	return Price{Input: usd(in), Output: usd(out), CacheWrite5m: usd(w5m), CacheWrite1h: usd(w1h), CacheRead: usd(read)}
}

// builtin is the built-in price table, most specific patterns first. Each
// row says where its figures come from and when they were read; prices
// change, so `price` lines in the configuration come before these rows.
// Models the table does not know (tiered prices such as Haiku 5.5's, new
// models) have no price until configured.
var builtin = []Rule{
	// Opus 5.5: $4 / $20, from the model comparison table on
	// platform.claude.com/docs/about-claude/models/whats-new-opus-5 (as
	// stored 2026-12-02); cache prices are the standard multipliers, which
	// that page does not list.
	{"claude-opus-5-5*", NewPrice(usd(4), usd(20))},
	// Opus 5, 4.8, 4.7, 4.6, 4.5: $5 / $25, 5m writes $6.25, 1h writes $10,
	// cache hits $0.50, from platform.claude.com/docs/en/about-claude/pricing
	// "Model pricing" (as stored 2026-12-02).
	{"claude-opus-5*", full(5, 25, 6.25, 10, 0.50)},
	{"claude-opus-4-[5-9]*", full(5, 25, 6.25, 10, 0.50)},
	// Opus 4.1, Opus 4 and Opus 3: $15 / $75, $18.75, $30, $1.50, same page
	// and date (Opus 3 from docs.anthropic.com/en/docs/about-claude/pricing
	// as stored 2025).
	{"claude-opus-4*", full(15, 75, 18.75, 30, 1.50)},
	{"claude-3-opus*", full(15, 75, 18.75, 30, 1.50)},
	// Sonnet 5.5 and Sonnet 5: $2 / $10, $2.50, $4, $0.20, from the model
	// overview pages platform.claude.com/docs/zh-CN/models/sonnet-5-5/overview
	// and .../sonnet-5/overview (as stored 2026-12-02).
	{"claude-sonnet-5*", full(2, 10, 2.50, 4, 0.20)},
	// Sonnet 4.x, 3.7 and 3.5: $3 / $15, $3.75, $6, $0.30, from
	// docs.anthropic.com/en/docs/about-claude/pricing "Model pricing" (as
	// stored 2025-2026).
	{"claude-sonnet-4*", full(3, 15, 3.75, 6, 0.30)},
	{"claude-3-7-sonnet*", full(3, 15, 3.75, 6, 0.30)},
	{"claude-3-5-sonnet*", full(3, 15, 3.75, 6, 0.30)},
	// Haiku 4.5: $1 / $5, $1.25, $2, $0.10 (platform.claude.com model
	// overviews, as stored 2026-12-02).
	{"claude-haiku-4-5*", full(1, 5, 1.25, 2, 0.10)},
	// Haiku 3.5: $0.80 / $4, $1, $1.6, $0.08; Haiku 3: $0.25 / $1.25,
	// $0.30, $0.50, $0.03 (docs.anthropic.com/en/docs/about-claude/pricing,
	// as stored 2025).
	{"claude-3-5-haiku*", full(0.80, 4, 1, 1.6, 0.08)},
	{"claude-3-haiku*", full(0.25, 1.25, 0.30, 0.50, 0.03)},
	// Fable 5.1 and Mythos 5.1: $10 / $50, $12.50, $20, $0.25; Fable 5 and
	// Mythos 5: the same with cache hits at $1, from
	// platform.claude.com/docs/en/about-claude/pricing (as stored
	// 2026-12-02).
	{"claude-fable-5-1*", full(10, 50, 12.50, 20, 0.25)},
	{"claude-mythos-5-1*", full(10, 50, 12.50, 20, 0.25)},
	{"claude-fable-5*", full(10, 50, 12.50, 20, 1)},
	{"claude-mythos-5*", full(10, 50, 12.50, 20, 1)},
}
