package main

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/cc-relay/caddy-cc-relay/bench/internal/ccload"
)

func TestMovedCountsTurnsAnotherRelayAnswered(t *testing.T) {
	t0 := time.Unix(0, 0)
	res := func(sec int, session, relay, class string, status int) *ccload.Result {
		return &ccload.Result{Sent: t0.Add(time.Duration(sec) * time.Second), Session: session, Relay: relay, Class: class, Status: status}
	}
	rs := []*ccload.Result{
		res(3, "a", "2", "sonnet", 200), // moved from 1
		res(1, "a", "1", "sonnet", 200), // first turn: not counted
		res(2, "a", "3", "haiku", 200),  // side request: not a turn
		res(4, "a", "2", "sonnet", 200), // stayed
		res(5, "a", "3", "sonnet", 429), // not answered: not a turn
		res(1, "b", "1", "sonnet", 200),
		res(2, "b", "1", "sonnet", 200), // stayed
	}
	if got, want := moved(rs), 1.0/3; got != want {
		t.Fatalf("moved = %v, want %v", got, want)
	}
	if got := moved(nil); got != 0 {
		t.Fatalf("moved(nil) = %v, want 0", got)
	}
}

func TestFindStringLooksIntoNestedObjects(t *testing.T) {
	var v any
	if err := json.Unmarshal([]byte(`{"pool":"p","shared":{"instance":"i1","mode":"local-fallback"}}`), &v); err != nil {
		t.Fatal(err)
	}
	if got := findString(v, "mode", 4); got != "local-fallback" {
		t.Fatalf("findString = %q", got)
	}
	if got := findString(v, "mode", 1); got != "" {
		t.Fatalf("findString beyond depth = %q, want empty", got)
	}
	if got := findString([]any{"mode"}, "mode", 4); got != "" {
		t.Fatalf("findString of an array = %q, want empty", got)
	}
}

func TestClosedLoopWorkersScaleWithTheFactor(t *testing.T) {
	old := *flagFactor
	defer func() { *flagFactor = old }()
	*flagFactor = 1
	one, rate := closedLoopWorkers(quotaOrgs, time.Minute)
	*flagFactor = 4
	four, rate4 := closedLoopWorkers(quotaOrgs, time.Minute)
	if rate != rate4 || rate <= 0 {
		t.Fatalf("admitted rate %v then %v", rate, rate4)
	}
	if four < 3*one {
		t.Fatalf("4x the factor gives %d workers, 1x %d", four, one)
	}
}
