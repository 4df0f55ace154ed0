package caddymodule

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// The terminal view of 'caddy cc-relay status': per pool a line of facts,
// a table of keys, the reasons of keys out of rotation, and the budgets
// per organization (keys of one organization share them) with bars.

const (
	ansiReset  = "\x1b[0m"
	ansiBold   = "\x1b[1m"
	ansiDim    = "\x1b[2m"
	ansiRed    = "\x1b[31m"
	ansiGreen  = "\x1b[32m"
	ansiYellow = "\x1b[33m"
	ansiBlue   = "\x1b[34m"
	ansiPurple = "\x1b[35m"
)

const barWidth = 20

// painter wraps text in ANSI colour when enabled.
type painter bool

func (p painter) paint(code, s string) string {
	if !p || code == "" || s == "" {
		return s
	}
	return code + s + ansiReset
}

func stateColor(state string) string {
	switch state {
	case "ok":
		return ansiGreen
	case "cooling":
		return ansiYellow
	case "parked":
		return ansiPurple
	case "disabled":
		return ansiRed
	}
	return ""
}

// printStatus writes the pools to w and returns the names of those with
// no key that can serve.
func printStatus(w io.Writer, pools []PoolStatus, now time.Time, color bool) (blocked []string) {
	p := painter(color)
	for i, ps := range pools {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if !printPool(w, ps, now, p) {
			blocked = append(blocked, ps.Name)
		}
	}
	if len(blocked) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, p.paint(ansiBold+ansiRed, "no key can serve in pool "+strings.Join(blocked, ", ")))
	}
	return blocked
}

// printShared writes where a pool with redis keeps its state, and with
// how many instances; nothing for a pool without redis.
func printShared(w io.Writer, ps PoolStatus, p painter) {
	if ps.Mode == "" || ps.Mode == keypool.SharedModeLocal.String() {
		return
	}
	mode := p.paint(ansiGreen, ps.Mode)
	if ps.Mode != keypool.SharedModeShared.String() {
		mode = p.paint(ansiBold+ansiYellow, ps.Mode)
	}
	fmt.Fprintf(w, "  %s %s · instance %s · %d instances alive\n", p.paint(ansiDim, "redis"), mode, ps.Instance, ps.InstancesAlive)
}

// printPool writes one pool; it reports whether some key can serve.
func printPool(w io.Writer, ps PoolStatus, now time.Time, p painter) bool {
	ready := 0
	for _, k := range ps.Keys {
		if k.State == "ok" {
			ready++
		}
	}
	verdict := p.paint(ansiGreen, fmt.Sprintf("%d of %d keys ready", ready, len(ps.Keys)))
	if ready == 0 {
		verdict = p.paint(ansiBold+ansiRed, "no key can serve")
	}
	fmt.Fprintf(w, "%s %s — %s · strategy %s · waiting %d · pinned sessions %d\n",
		p.paint(ansiDim, "pool"), p.paint(ansiBold, ps.Name), verdict, ps.Strategy, ps.Waiting, ps.StickySessions)
	printShared(w, ps, p)

	t := &textTable{color: p, right: map[int]bool{4: true, 5: true, 6: true, 7: true, 8: true, 9: true, 10: true, 11: true}}
	t.row("", "KEY", "", "ORG", "", "STATE", "", "UNTIL", "", "IN FLIGHT", "", "SESSIONS", "", "REQUESTS", "", "OK", "", "429", "", "FAILED", "", "INPUT", "", "OUTPUT")
	var tot keypool.Totals
	inFlight := 0
	for _, k := range ps.Keys {
		until := ""
		if k.Until != nil {
			until = k.Until.UTC().Format("15:04:05") + " UTC"
			if d := k.Until.Sub(now); d > 0 {
				until += " (in " + shortDuration(d) + ")"
			}
		}
		tt := k.Totals
		t.row("", k.Name, "", k.Org, stateColor(k.State), k.State, "", until,
			"", strconv.Itoa(k.InFlight), "", strconv.Itoa(k.Sticky),
			"", count(tt.Requests), "", count(tt.Succeeded), "", count(tt.RateLimited), "", count(tt.Failed),
			"", count(tt.InputTokens), "", count(tt.OutputTokens))
		inFlight += k.InFlight
		tot.Requests += tt.Requests
		tot.Succeeded += tt.Succeeded
		tot.RateLimited += tt.RateLimited
		tot.Failed += tt.Failed
		tot.InputTokens += tt.InputTokens
		tot.OutputTokens += tt.OutputTokens
	}
	t.row(ansiBold, "total", "", "", "", "", "", "", ansiBold, strconv.Itoa(inFlight), ansiBold, strconv.Itoa(ps.StickySessions),
		ansiBold, count(tot.Requests), ansiBold, count(tot.Succeeded), ansiBold, count(tot.RateLimited), ansiBold, count(tot.Failed),
		ansiBold, count(tot.InputTokens), ansiBold, count(tot.OutputTokens))
	t.write(w, "  ")

	// Why keys are out of rotation.
	reasons := textTable{color: p}
	for _, k := range ps.Keys {
		if k.Reason != "" {
			reasons.row("", k.Name, stateColor(k.State), k.Reason)
		}
	}
	if len(reasons.rows) > 0 {
		fmt.Fprintln(w, "  "+p.paint(ansiDim, "reasons"))
		reasons.write(w, "    ")
	}

	// Budgets, once per organization: its keys share them.
	budgets := textTable{color: p, right: map[int]bool{3: true}}
	seen := map[string]bool{}
	for _, k := range ps.Keys {
		if seen[k.Org] || len(k.Budgets) == 0 {
			continue
		}
		seen[k.Org] = true
		var members []string
		for _, m := range ps.Keys {
			if m.Org == k.Org {
				members = append(members, m.Name)
			}
		}
		budgets.heading(ansiBold, "org "+k.Org, ansiDim, "("+strings.Join(members, ", ")+")")
		for _, b := range k.Budgets {
			class := b.Class
			if !limitKnown(b) {
				note := "no limit known yet"
				if b.CoolingUntil != nil {
					note += " · cooling: " + b.CoolReason
				}
				budgets.row("", "  "+class, "", "", ansiDim, note)
				continue
			}
			for j, x := range []struct {
				label string
				bs    keypool.BucketSnapshot
			}{{"requests", b.Requests}, {"input", b.InputTokens}, {"output", b.OutputTokens}} {
				bar, used, code, src := budgetBar(x.bs)
				noteCode, note := ansiDim, src
				if j == 0 && b.CoolingUntil != nil {
					noteCode, note = ansiYellow, strings.TrimSpace(src+" · cooling: "+b.CoolReason)
				}
				budgets.row("", "  "+class, "", x.label, code, bar, "", used, noteCode, note)
				class = ""
			}
		}
	}
	if len(budgets.rows) > 0 {
		fmt.Fprintln(w, "  "+p.paint(ansiDim, "budgets per minute, used / limit"))
		budgets.write(w, "    ")
	}
	printClients(w, ps.Clients, p)
	return ready > 0
}

// printClients shows each configured client: in flight, its own
// per-minute limits that are set, and its spend against its budget.
func printClients(w io.Writer, clients []keypool.ClientSnapshot, p painter) {
	if len(clients) == 0 {
		return
	}
	t := &textTable{color: p, right: map[int]bool{1: true, 2: true, 5: true}}
	t.row("", "CLIENT", "", "IN FLIGHT", "", "WEIGHT", "", "LIMITS", "", "BUDGET", "", "SPENT", "", "RESETS")
	for _, c := range clients {
		inFlight := strconv.Itoa(c.InFlight)
		if c.MaxConcurrent > 0 {
			inFlight += "/" + strconv.Itoa(c.MaxConcurrent)
		}
		var limits []string
		for _, x := range []struct {
			label string
			bs    keypool.BucketSnapshot
		}{{"rpm", c.Requests}, {"itpm", c.InputTokens}, {"otpm", c.OutputTokens}} {
			if x.bs.Configured > 0 {
				_, used, _, _ := budgetBar(x.bs)
				limits = append(limits, x.label+" "+used)
			}
		}
		bar, barCode, spent := "", "", fmt.Sprintf("$%.2f", c.Spend.SpentUSD)
		if c.Spend.BudgetUSD != nil && *c.Spend.BudgetUSD > 0 {
			bar, barCode = shareBar(c.Spend.SpentUSD / *c.Spend.BudgetUSD)
			spent += fmt.Sprintf(" / $%.2f %s", *c.Spend.BudgetUSD, c.Spend.Period)
		}
		t.row("", c.Name, "", inFlight, "", strconv.Itoa(c.Weight), "", strings.Join(limits, " · "),
			barCode, bar, "", spent, ansiDim, c.Spend.Resets.UTC().Format("2006-01-02 15:04 UTC"))
	}
	fmt.Fprintln(w, "  "+p.paint(ansiDim, "clients: spend this period"))
	t.write(w, "    ")
}

// limitKnown reports whether any budget of b has a limit, configured or
// learned.
func limitKnown(b keypool.BudgetSnapshot) bool {
	for _, x := range []keypool.BucketSnapshot{b.Requests, b.InputTokens, b.OutputTokens} {
		if x.Configured > 0 || x.Learned > 0 {
			return true
		}
	}
	return false
}

// budgetBar draws one budget: the bar, "used / limit", the bar's colour
// and where the limit comes from.
func budgetBar(b keypool.BucketSnapshot) (bar, used, code, source string) {
	limit, source := b.Configured, "configured"
	if limit <= 0 {
		limit, source = b.Learned, "learned"
	}
	if limit <= 0 {
		return "[" + strings.Repeat(" ", barWidth) + "]", "–", "", "no limit known"
	}
	if b.Remaining == -1 {
		return "[" + strings.Repeat(" ", barWidth) + "]", "? / " + count(limit), "", source
	}
	u := limit - b.Remaining
	bar, code = shareBar(float64(u) / float64(limit))
	return bar, count(u) + " / " + count(limit), code, source
}

// shareBar draws a used share (0 to 1) as a bar, with its colour: red from
// 95%, yellow from 75%, else green.
func shareBar(share float64) (bar, code string) {
	share = math.Min(1, math.Max(0, share))
	n := int(math.Round(share * barWidth))
	bar = "[" + strings.Repeat("#", n) + strings.Repeat("-", barWidth-n) + "]"
	switch {
	case share >= 0.95:
		code = ansiRed
	case share >= 0.75:
		code = ansiYellow
	default:
		code = ansiGreen
	}
	return bar, code
}

// count prints a number short: 1234, 12.3k, 1.2M.
func count(n int64) string {
	a := math.Abs(float64(n))
	trim := func(f float64, prec int, unit string) string {
		s := strconv.FormatFloat(f, 'f', prec, 64)
		return strings.TrimSuffix(s, ".0") + unit
	}
	switch {
	case a >= 1e9:
		return trim(float64(n)/1e9, 1, "G")
	case a >= 1e6:
		return trim(float64(n)/1e6, 1, "M")
	case a >= 1e4:
		return trim(float64(n)/1e3, 1, "k")
	}
	return strconv.FormatInt(n, 10)
}

func shortDuration(d time.Duration) string {
	switch {
	case d < 90*time.Second:
		return strconv.Itoa(int(math.Ceil(d.Seconds()))) + "s"
	case d < 90*time.Minute:
		return strconv.Itoa(int(math.Round(d.Minutes()))) + "m"
	case d < 48*time.Hour:
		return strconv.Itoa(int(math.Round(d.Hours()))) + "h"
	}
	return strconv.Itoa(int(math.Round(d.Hours()/24))) + "d"
}

// textTable aligns cells by their visible width, so that colour codes
// (added when the table is written) never shift a column.
type textTable struct {
	color painter
	rows  [][]cell
	span  map[int]bool // rows written as they are, outside the columns
	right map[int]bool // right-aligned columns
}

type cell struct{ code, text string }

// row adds a row from (colour code, text) pairs.
func (t *textTable) row(pairs ...string) {
	r := make([]cell, 0, len(pairs)/2)
	for i := 0; i+1 < len(pairs); i += 2 {
		r = append(r, cell{pairs[i], pairs[i+1]})
	}
	t.rows = append(t.rows, r)
}

// heading adds a row that is written as it is, not in columns.
func (t *textTable) heading(pairs ...string) {
	if t.span == nil {
		t.span = map[int]bool{}
	}
	t.span[len(t.rows)] = true
	t.row(pairs...)
}

func (t *textTable) write(w io.Writer, indent string) {
	var widths []int
	for n, r := range t.rows {
		if t.span[n] {
			continue
		}
		for i, c := range r {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(c.text))
		}
	}
	for n, r := range t.rows {
		var b strings.Builder
		b.WriteString(indent)
		if t.span[n] {
			for i, c := range r {
				if i > 0 {
					b.WriteString(" ")
				}
				b.WriteString(t.color.paint(c.code, c.text))
			}
			fmt.Fprintln(w, b.String())
			continue
		}
		for i, c := range r {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c.text))
			text := t.color.paint(c.code, c.text)
			switch {
			case t.right[i]:
				b.WriteString(pad + text)
			case i < len(r)-1:
				b.WriteString(text + pad)
			default:
				b.WriteString(text)
			}
			if i < len(r)-1 {
				b.WriteString("  ")
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}
