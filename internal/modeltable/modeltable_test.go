package modeltable

import "testing"

func TestBedrock(t *testing.T) {
	tb := Bedrock("us-east-1")
	for model, want := range map[string]string{
		"claude-sonnet-4-5":          "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
		"claude-sonnet-4-5-20250929": "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
		"claude-opus-4-1-20250805":   "us.anthropic.claude-opus-4-1-20250805-v1:0",
		"claude-opus-4-20250514":     "us.anthropic.claude-opus-4-20250514-v1:0",
		"claude-haiku-4-5":           "us.anthropic.claude-haiku-4-5-20251001-v1:0",
		"claude-opus-4-6":            "us.anthropic.claude-opus-4-6-v1",
	} {
		if got, ok := tb.Lookup(model); !ok || got != want {
			t.Errorf("%s: %q %v, want %q", model, got, ok, want)
		}
	}
	if _, ok := tb.Lookup("gpt-4o"); ok {
		t.Fatal("a foreign model mapped")
	}
	if got, _ := Bedrock("eu-central-1").Lookup("claude-haiku-4-5"); got != "eu.anthropic.claude-haiku-4-5-20251001-v1:0" {
		t.Fatal(got)
	}
}

func TestVertex(t *testing.T) {
	if got, _ := Vertex().Lookup("claude-sonnet-4-5"); got != "claude-sonnet-4-5@20250929" {
		t.Fatal(got)
	}
	if got, _ := Vertex().Lookup("claude-opus-4-0"); got != "claude-opus-4@20250514" {
		t.Fatal(got)
	}
}

func TestOverrideFirst(t *testing.T) {
	tb := append(Table{{"claude-sonnet-4-5*", "arn:aws:bedrock:us-east-1:1:application-inference-profile/x"}}, Bedrock("us-east-1")...)
	if got, _ := tb.Lookup("claude-sonnet-4-5"); got != "arn:aws:bedrock:us-east-1:1:application-inference-profile/x" {
		t.Fatal(got)
	}
}

func TestDateless(t *testing.T) {
	for model, want := range map[string]bool{
		"claude-opus-4-7": true, "claude-sonnet-4-6": true, "claude-sonnet-5": true, "claude-sonnet-5-5": true,
		"claude-opus-4-5": false, "claude-sonnet-4-5-20250929": false, "claude-3-7-sonnet": false,
		"claude-foo-5": false, "gpt-5": false, "claude-opus-x": false,
	} {
		if Dateless(model) != want {
			t.Errorf("%s: %v", model, !want)
		}
	}
}
