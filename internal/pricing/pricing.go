// Package pricing prices Anthropic Messages API usage exactly.
//
// Prices are USD per million tokens. Internally a price is held in
// micro-dollars per million tokens, which is the same number as
// picodollars (1e-12 USD) per token; a cost is an int64 count of
// picodollars. A token count times a price is then exact integer
// arithmetic: spend is exact to the token, and an int64 holds about
// 9.2 million dollars, far above any budget period's spend. Decimal prices
// with up to six digits after the point (0.000001 USD per million tokens)
// are represented exactly.
package pricing

import (
	"fmt"
	"math"
	"math/big"
	"path"
	"strings"
	"sync/atomic"
)

// PicoUSD is an amount of money in picodollars (1e-12 USD).
type PicoUSD int64

// PerUSD is the number of picodollars in one dollar.
const PerUSD PicoUSD = 1_000_000_000_000

// Plus is p + q, saturating at the int64 bounds: no usage an upstream
// reports can wrap a spend total around.
func (p PicoUSD) Plus(q PicoUSD) PicoUSD {
	s := p + q
	switch {
	case q > 0 && s < p:
		return math.MaxInt64
	case q < 0 && s > p:
		return math.MinInt64
	}
	return s
}

// USD returns the amount in dollars, for display and metrics.
func (p PicoUSD) USD() float64 { return float64(p) / float64(PerUSD) }

// String formats the amount as dollars with as many decimals as it needs
// (at least two): "$12.50", "$0.000375".
func (p PicoUSD) String() string {
	neg := p < 0
	u := uint64(p)
	if neg {
		u = uint64(-p)
	}
	whole, frac := u/uint64(PerUSD), u%uint64(PerUSD)
	f := strings.TrimRight(fmt.Sprintf("%012d", frac), "0")
	for len(f) < 2 {
		f += "0"
	}
	s := fmt.Sprintf("$%d.%s", whole, f)
	if neg {
		s = "-" + s
	}
	return s
}

// ParseUSD reads a decimal dollar amount ("12", "0.5", "$3.75") exactly,
// with at most twelve digits after the point. Negative amounts, exponents
// and amounts too large for a PicoUSD are errors.
func ParseUSD(s string) (PicoUSD, error) {
	v, err := parseDecimal(strings.TrimPrefix(strings.TrimSpace(s), "$"), 12)
	if err != nil {
		return 0, fmt.Errorf("bad dollar amount %q: %v", s, err)
	}
	return PicoUSD(v), nil
}

// parseDecimal reads a non-negative decimal with at most places digits
// after the point, scaled by 10^places.
func parseDecimal(s string, places int) (int64, error) {
	if s == "" {
		return 0, fmt.Errorf("empty")
	}
	whole, frac, dot := strings.Cut(s, ".")
	if dot && frac == "" || whole == "" && frac == "" {
		return 0, fmt.Errorf("not a decimal number")
	}
	if len(frac) > places {
		return 0, fmt.Errorf("more than %d digits after the point", places)
	}
	for _, c := range whole + frac {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("not a non-negative decimal number")
		}
	}
	n := new(big.Int)
	n.SetString(whole+frac+strings.Repeat("0", places-len(frac)), 10)
	if !n.IsInt64() {
		return 0, fmt.Errorf("too large")
	}
	return n.Int64(), nil
}

// Rate is a price per million tokens in micro-dollars, which equals
// picodollars per token.
type Rate int64

// ParseRate reads a decimal USD-per-million-tokens price ("3", "0.30").
func ParseRate(s string) (Rate, error) {
	v, err := parseDecimal(strings.TrimPrefix(strings.TrimSpace(s), "$"), 6)
	if err != nil {
		return 0, fmt.Errorf("bad price %q: %v", s, err)
	}
	if v > maxRate {
		return 0, fmt.Errorf("bad price %q: too large", s)
	}
	return Rate(v), nil
}

// maxTokens bounds a token count priced at once: counts beyond it (no
// real response has them) are clamped so that cost arithmetic cannot
// overflow whatever the upstream reports.
const maxTokens = 1 << 30

// maxRate bounds a price (about $1000 per million tokens) so that a cost,
// five kinds of maxTokens each, fits an int64.
const maxRate = math.MaxInt64 / (maxTokens * 8)

// USDPerMTok returns the rate as USD per million tokens.
func (r Rate) USDPerMTok() float64 { return float64(r) / 1e6 }

// String formats the rate as USD per million tokens.
func (r Rate) String() string { return PicoUSD(int64(r) * 1_000_000).String() }

// times is n tokens at rate r.
func (r Rate) times(n int64) PicoUSD {
	n = min(max(n, 0), maxTokens)
	return PicoUSD(int64(r) * n)
}

// Price is what one model costs per million tokens, by kind of token.
type Price struct {
	Input        Rate
	Output       Rate
	CacheWrite5m Rate // cache_creation with the default 5-minute lifetime
	CacheWrite1h Rate // cache_creation with the 1-hour lifetime
	CacheRead    Rate
}

// WithDefaults fills in unset cache prices from the input price: writes
// cost 1.25× (5 minutes) and 2× (1 hour), reads 0.1×, as Anthropic prices
// prompt caching. A fraction of a micro-dollar rounds to the nearest.
func (p Price) WithDefaults(have5m, have1h, haveRead bool) Price {
	if !have5m {
		p.CacheWrite5m = (p.Input*5 + 2) / 4
	}
	if !have1h {
		p.CacheWrite1h = p.Input * 2
	}
	if !haveRead {
		p.CacheRead = (p.Input + 5) / 10
	}
	return p
}

// NewPrice is a price from input and output rates with the default cache
// prices.
func NewPrice(input, output Rate) Price {
	return Price{Input: input, Output: output}.WithDefaults(false, false, false)
}

// Usage is the token usage of one response, as the upstream reports it.
type Usage struct {
	InputTokens  int64
	OutputTokens int64
	// CacheCreationInputTokens is usage.cache_creation_input_tokens, all
	// cache writes whatever their lifetime.
	CacheCreationInputTokens int64
	// CacheCreation5m and CacheCreation1h are the breakdown by lifetime
	// (usage.cache_creation.ephemeral_5m_input_tokens and
	// ephemeral_1h_input_tokens), 0 when the response has none.
	CacheCreation5m      int64
	CacheCreation1h      int64
	CacheReadInputTokens int64
}

// Add adds v's counts to u.
func (u *Usage) Add(v Usage) {
	u.InputTokens += max(v.InputTokens, 0)
	u.OutputTokens += max(v.OutputTokens, 0)
	u.CacheCreationInputTokens += max(v.CacheCreationInputTokens, 0)
	u.CacheCreation5m += max(v.CacheCreation5m, 0)
	u.CacheCreation1h += max(v.CacheCreation1h, 0)
	u.CacheReadInputTokens += max(v.CacheReadInputTokens, 0)
}

// Cost prices u exactly. Cache writes of the 1-hour lifetime cost the 1h
// price; every other cache write (the 5-minute breakdown, and all of them
// when the response has no breakdown) costs the 5-minute price. The total
// cache write count is the larger of cache_creation_input_tokens and the
// breakdown's sum, so neither a missing total nor a missing breakdown
// loses tokens.
func (p Price) Cost(u Usage) PicoUSD {
	oneHour := max(u.CacheCreation1h, 0)
	writes := max(u.CacheCreationInputTokens, max(u.CacheCreation5m, 0)+oneHour)
	return p.Input.times(u.InputTokens) +
		p.Output.times(u.OutputTokens) +
		p.CacheWrite5m.times(writes-oneHour) +
		p.CacheWrite1h.times(oneHour) +
		p.CacheRead.times(u.CacheReadInputTokens)
}

// MaxPromptRate is the highest price a prompt token can cost: the input
// price or a cache write, including 1-hour writes when oneHour is set.
func (p Price) MaxPromptRate(oneHour bool) Rate {
	r := max(p.Input, p.CacheWrite5m)
	if oneHour {
		r = max(r, p.CacheWrite1h)
	}
	return r
}

// WorstCase is the most a request can cost: promptTokens all billed at the
// highest prompt price and maxOutput output tokens.
func (p Price) WorstCase(promptTokens, maxOutput int64, oneHour bool) PicoUSD {
	return p.MaxPromptRate(oneHour).times(promptTokens) + p.Output.times(maxOutput)
}

// Rule prices the models whose names match Pattern (path.Match syntax).
type Rule struct {
	Pattern string
	Price   Price
}

// Table looks up model prices: the configured rules first, then the
// built-in ones; the first match wins.
type Table struct {
	rules []Rule
	// last remembers the latest lookup: a relay sees few model names,
	// and a lookup otherwise matches the name against each rule.
	last atomic.Pointer[lookup]
}

type lookup struct {
	model string
	price Price
	ok    bool
}

// NewTable returns a table of the given rules in front of the built-in
// ones. A pattern path.Match rejects is an error.
func NewTable(rules []Rule) (*Table, error) {
	for _, r := range rules {
		if _, err := path.Match(r.Pattern, ""); err != nil {
			return nil, fmt.Errorf("bad model pattern %q: %v", r.Pattern, err)
		}
	}
	t := &Table{rules: make([]Rule, 0, len(rules)+len(builtin))}
	t.rules = append(append(t.rules, rules...), builtin...)
	return t, nil
}

// Lookup returns the price of model, and false when no rule matches.
func (t *Table) Lookup(model string) (Price, bool) {
	if t == nil {
		return Price{}, false
	}
	if l := t.last.Load(); l != nil && l.model == model {
		return l.price, l.ok
	}
	l := &lookup{model: model}
	for _, r := range t.rules {
		if ok, _ := path.Match(r.Pattern, model); ok {
			l.price, l.ok = r.Price, true
			break
		}
	}
	t.last.Store(l)
	return l.price, l.ok
}

// Rules returns the table's rules in lookup order.
func (t *Table) Rules() []Rule { return append([]Rule(nil), t.rules...) }
