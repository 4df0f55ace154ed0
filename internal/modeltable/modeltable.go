// Package modeltable maps the Claude model names clients send to the ids
// Amazon Bedrock and Google Vertex AI know the same models by.
//
// Rows are client-model globs (path.Match syntax) and ids; the first
// matching row wins, so operator rules (the Caddyfile's model lines) go in
// front of the built-in ones. Models of the 4.6 generation and later have
// dateless ids that follow one rule on every platform, so a model newer
// than the table is still served when it follows that rule.
package modeltable

import (
	"path"
	"strconv"
	"strings"
)

// Rule maps client model names matching Pattern to ID.
type Rule struct {
	Pattern string
	ID      string
}

// Table is an ordered list of rules.
type Table []Rule

// Lookup returns the id of the first rule matching model.
func (t Table) Lookup(model string) (string, bool) {
	for _, r := range t {
		if ok, _ := path.Match(r.Pattern, model); ok {
			return r.ID, true
		}
	}
	return "", false
}

// Built-in rows. Source: Anthropic's "Model IDs and versioning" and
// "Claude on Amazon Bedrock" documentation pages (platform.claude.com),
// as stored 2026-12-02. Dated models: Bedrock
// anthropic.claude-<name>-<YYYYMMDD>-v1:0, Vertex claude-<name>@<YYYYMMDD>;
// the Claude API's alias without a date points to the same snapshot.
var builtin = []struct{ pattern, bedrock, vertex string }{
	// Opus 4.6 is the last Bedrock id with a -v1 suffix (2026-12-02).
	{"claude-opus-4-6", "anthropic.claude-opus-4-6-v1", "claude-opus-4-6"},
	{"claude-opus-4-5*", "anthropic.claude-opus-4-5-20251101-v1:0", "claude-opus-4-5@20251101"},
	{"claude-opus-4-1*", "anthropic.claude-opus-4-1-20250805-v1:0", "claude-opus-4-1@20250805"},
	{"claude-opus-4-0", "anthropic.claude-opus-4-20250514-v1:0", "claude-opus-4@20250514"},
	{"claude-opus-4-20250514", "anthropic.claude-opus-4-20250514-v1:0", "claude-opus-4@20250514"},
	{"claude-sonnet-4-5*", "anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5@20250929"},
	{"claude-sonnet-4-0", "anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4@20250514"},
	{"claude-sonnet-4-20250514", "anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4@20250514"},
	{"claude-haiku-4-5*", "anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5@20251001"},
	{"claude-3-7-sonnet*", "anthropic.claude-3-7-sonnet-20250219-v1:0", "claude-3-7-sonnet@20250219"},
}

// Models lists the Claude API model names the built-in tables serve, for
// /v1/models when no Anthropic key answers it (2026-12-02).
var Models = []string{
	"claude-opus-4-7", "claude-opus-4-6", "claude-sonnet-4-6",
	"claude-opus-4-5-20251101", "claude-haiku-4-5-20251001", "claude-sonnet-4-5-20250929",
	"claude-opus-4-1-20250805", "claude-opus-4-20250514", "claude-sonnet-4-20250514",
	"claude-3-7-sonnet-20250219",
}

// Bedrock returns the built-in Bedrock table for region: base model ids
// behind the cross-region inference profile of region's geography (us.,
// eu., jp., apac.), which Claude 4 models need for on-demand use.
func Bedrock(region string) Table {
	prefix := BedrockProfile(region)
	t := make(Table, 0, len(builtin)+1)
	for _, b := range builtin {
		t = append(t, Rule{b.pattern, prefix + b.bedrock})
	}
	return t
}

// Vertex returns the built-in Vertex AI table.
func Vertex() Table {
	t := make(Table, 0, len(builtin))
	for _, b := range builtin {
		t = append(t, Rule{b.pattern, b.vertex})
	}
	return t
}

// BedrockProfile is the inference-profile prefix of region's geography,
// "" when it has none known.
func BedrockProfile(region string) string {
	switch {
	case strings.HasPrefix(region, "us-gov-"):
		return "us-gov."
	case strings.HasPrefix(region, "us-"), strings.HasPrefix(region, "ca-"):
		return "us."
	case strings.HasPrefix(region, "eu-"):
		return "eu."
	case region == "ap-northeast-1" || region == "ap-northeast-3":
		return "jp."
	case strings.HasPrefix(region, "ap-"):
		return "apac."
	}
	return ""
}

// Dateless reports whether model is a dateless Claude id of the 4.6
// generation or later ("claude-opus-4-7", "claude-sonnet-5"), which
// Bedrock knows as "anthropic." + model and Vertex AI as model.
func Dateless(model string) bool {
	rest, ok := strings.CutPrefix(model, "claude-")
	if !ok {
		return false
	}
	name, ver, ok := strings.Cut(rest, "-")
	if !ok || (name != "opus" && name != "sonnet" && name != "haiku") {
		return false
	}
	major, minor, _ := strings.Cut(ver, "-")
	ma, err := strconv.Atoi(major)
	if err != nil || ma < 1 || ma > 99 {
		return false
	}
	mi := 0
	if minor != "" {
		if mi, err = strconv.Atoi(minor); err != nil || mi < 0 || mi > 99 {
			return false
		}
	}
	return ma > 4 || ma == 4 && mi >= 6
}
