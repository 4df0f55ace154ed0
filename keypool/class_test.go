package keypool

import (
	"fmt"
	"strings"
	"testing"
)

// sdkModels is the Model constant list of the official Go SDK,
// github.com/anthropics/anthropic-sdk-go/v2 v2.17.0 (message.go), copied
// so that the main module does not depend on the SDK.
var sdkModels = []string{
	"claude-fable-5-2", "claude-mythos-5-2", "claude-haiku-5-5", "claude-sonnet-5-5",
	"claude-fable-5-1", "claude-opus-5-5", "claude-mythos-5-1", "claude-sonnet-5",
	"claude-fable-5", "claude-mythos-5", "claude-opus-5", "claude-opus-4-8",
	"claude-opus-4-7", "claude-mythos-preview", "claude-opus-4-6", "claude-sonnet-4-6",
	"claude-haiku-4-5", "claude-haiku-4-5-20251001", "claude-opus-4-5", "claude-opus-4-5-20251101",
}

func TestModelFamilyOfTheSDKModels(t *testing.T) {
	for _, m := range sdkModels {
		// The family is the word after "claude-" in today's names.
		want, _, _ := strings.Cut(strings.TrimPrefix(m, "claude-"), "-")
		if got := ModelFamily(m); got != want {
			t.Errorf("ModelFamily(%q) = %q, want %q", m, got, want)
		}
	}
}

func TestModelFamilyShapes(t *testing.T) {
	for m, want := range map[string]string{
		// claude-<family>-<version>
		"claude-sonnet-4-5-20250929": "sonnet",
		"claude-fable-5":             "fable",
		"claude-mythos-5":            "mythos",
		"claude-mythos-preview":      "mythos",
		// claude-<version>-<family>
		"claude-3-7-sonnet-20250219": "sonnet",
		"claude-3-5-haiku-latest":    "haiku",
		"claude-3-opus-20240229":     "opus",
		"claude-instant-1.2":         "instant",
		// provider spellings
		"anthropic.claude-3-5-sonnet-20241022-v2:0": "sonnet",
		"claude-3-opus@20240229":                    "opus",
		"us.anthropic.claude-fable-5-v1:0":          "fable",
		"Claude-Opus-4-1":                           "opus",
		// no family word
		"claude-2.1":       "default",
		"claude-latest":    "default",
		"claude-":          "default",
		"claude-3-5-12345": "default",
		"":                 "default",
		"gpt-4o":           "default",
		"my-sonnet-proxy":  "sonnet", // no claude- shape: the three known words still count
		"claude-" + strings.Repeat("x", 30) + "-5": "default",
	} {
		if got := ModelFamily(m); got != want {
			t.Errorf("ModelFamily(%q) = %q, want %q", m, got, want)
		}
	}
}

// Families the pool has not heard of get budgets of their own: the
// upstream limits each family separately.
func TestNewFamiliesHaveTheirOwnBudget(t *testing.T) {
	p, _ := newPool(t, Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{RPM: 1}}}})
	for _, m := range []string{"claude-fable-5", "claude-mythos-5", "claude-sonnet-5"} {
		if r := acquire(t, p, Request{Model: m}); r.Class() != ModelFamily(m) {
			t.Fatalf("%s: class %q", m, r.Class())
		}
	}
	refused(t, p, Request{Model: "claude-fable-5-1"})
}

// A flood of made-up model names creates at most maxFamilyClasses
// classes; the rest share "default". Rule classes still work.
func TestModelClassesAreBounded(t *testing.T) {
	p, _ := newPool(t, Config{Keys: keys("a"), ModelClasses: []ClassRule{{Pattern: "special-*", Class: "special"}}})
	for i := range 1000 {
		r := acquire(t, p, Request{Model: fmt.Sprintf("claude-%s-5", familyName(i))})
		r.Settle(Result{Status: 0})
	}
	r := acquire(t, p, Request{Model: "special-1"})
	if r.Class() != "special" {
		t.Fatalf("rule class %q", r.Class())
	}
	p.st.mu.Lock()
	n := len(p.st.cnames)
	p.st.mu.Unlock()
	if n > maxFamilyClasses+2 {
		t.Fatalf("%d classes after a flood of names, want at most %d", n, maxFamilyClasses+2)
	}
	if r := acquire(t, p, Request{Model: "claude-zzzzzz-5"}); r.Class() != "default" {
		t.Fatalf("overflow class %q, want default", r.Class())
	}
}

// familyName spells i in letters.
func familyName(i int) string {
	b := []byte("fam")
	for ; i > 0; i /= 26 {
		b = append(b, byte('a'+i%26))
	}
	return string(b)
}

func TestModelClassesHaveSeparateBudgets(t *testing.T) {
	p, _ := newPool(t, Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{RPM: 2, ITPM: 1000}}}})
	for i := 0; i < 2; i++ {
		r := acquire(t, p, Request{Model: sonnet, Bytes: 400})
		if r.Class() != "sonnet" {
			t.Fatalf("class %q", r.Class())
		}
	}
	refused(t, p, Request{Model: sonnet})
	// Haiku has its own budget; draining it leaves Sonnet's alone.
	for i := 0; i < 2; i++ {
		if r := acquire(t, p, Request{Model: haiku, Bytes: 2000}); r.Class() != "haiku" {
			t.Fatalf("class %q", r.Class())
		}
	}
	refused(t, p, Request{Model: haiku})
	wantLevel(t, p, "a", sonnet, kindInput, 800, 1e-9)
	wantLevel(t, p, "a", haiku, kindInput, 0, 1e-9)
	acquire(t, p, Request{Model: opus})
	if r := acquire(t, p, Request{Model: "gpt-5"}); r.Class() != "default" {
		t.Fatalf("class %q", r.Class())
	}
	if got := len(p.Snapshot().Keys[0].Budgets); got != 4 {
		t.Fatalf("%d budgets, want 4 (sonnet, haiku, opus, default)", got)
	}
}

func TestModelFamily(t *testing.T) {
	for m, want := range map[string]string{
		"claude-opus-4-1-20250805":   "opus",
		"claude-3-opus-20240229":     "opus",
		"claude-sonnet-4-5-20250929": "sonnet",
		"claude-3-7-sonnet-latest":   "sonnet",
		"claude-3-5-haiku-20241022":  "haiku",
		"claude-haiku-4-5":           "haiku",
		"":                           "default",
		"mistral":                    "default",
	} {
		if got := ModelFamily(m); got != want {
			t.Errorf("ModelFamily(%q) = %q, want %q", m, got, want)
		}
	}
}

func TestModelClassRulesOverride(t *testing.T) {
	p, _ := newPool(t, Config{
		Keys: []KeyConfig{{Name: "a", Limits: Limits{RPM: 2}}},
		ModelClasses: []ClassRule{
			{Pattern: "claude-3-7-*", Class: "legacy"},
			{Pattern: "my-finetune-*", Class: "sonnet"},
			{Pattern: "claude-haiku-4*", Class: "fast"},
		},
	})
	for m, want := range map[string]string{
		"claude-3-7-sonnet-latest": "legacy",
		"my-finetune-v2":           "sonnet",
		"claude-haiku-4-5":         "fast",
		"claude-3-5-haiku-latest":  "haiku",
		"claude-sonnet-4-5":        "sonnet",
	} {
		r := acquire(t, p, Request{Model: m})
		if r.Class() != want {
			t.Errorf("%s: class %q, want %q", m, r.Class(), want)
		}
		r.Settle(Result{Status: 0}) // refund: no request counted
	}
	// my-finetune shares the Sonnet budget.
	acquire(t, p, Request{Model: "my-finetune-v2"})
	acquire(t, p, Request{Model: sonnet})
	refused(t, p, Request{Model: "claude-sonnet-4"})
	refused(t, p, Request{Model: "my-finetune-v3"})
	acquire(t, p, Request{Model: "claude-3-7-sonnet-latest"})
}
