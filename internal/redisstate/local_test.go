package redisstate

import (
	"testing"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// The fallback budgets on their own, timed by a fake clock: a 1/N share of
// each limit, starting from what Redis last reported.
func TestLocalShareStartsFromLastSharedLevel(t *testing.T) {
	clk := clock.NewFake(time.Unix(1e9, 0))
	var l localBudgets
	l.init(clk)
	b := keypool.SharedBudget{Org: "cfg:a", Class: "sonnet", Caps: [3]float64{60, 0, 0}}
	// Redis said: 12 of 60 requests left, input limit 6000 learned, 600 left.
	l.remember(b, [3]float64{12, 600, 0}, [3]bool{true, true, false}, [3]float64{60, 6000, 0})
	l.enter(3, "e1")
	a := l.reserve(b, [3]float64{1, 100, 0}, [3]float64{1, 100, 0})
	if a.Outcome != keypool.SharedAdmitted || a.Mode != keypool.SharedModeLocalFallback {
		t.Fatalf("%+v", a)
	}
	if a.Caps != [3]float64{20, 2000, 0} {
		t.Fatalf("share capacities %v, want a third of 60 and of the learned 6000", a.Caps)
	}
	if a.Levels[0] != 12.0/3-1 || a.Levels[1] != 600.0/3-100 {
		t.Fatalf("levels %v, want a third of what was left, charged", a.Levels)
	}
	// 3 requests left; the 4th waits for the share's refill (20/min: 3 s).
	for range 3 {
		if a := l.reserve(b, [3]float64{1, 0, 0}, [3]float64{1, 0, 0}); a.Outcome != keypool.SharedAdmitted {
			t.Fatalf("%+v", a)
		}
	}
	a = l.reserve(b, [3]float64{1, 0, 0}, [3]float64{1, 0, 0})
	if a.Outcome != keypool.SharedWait || a.Wait != 3*time.Second {
		t.Fatalf("empty share: %+v, want a 3 s wait", a)
	}
	clk.Advance(3 * time.Second)
	if a := l.reserve(b, [3]float64{1, 0, 0}, [3]float64{1, 0, 0}); a.Outcome != keypool.SharedAdmitted {
		t.Fatalf("after the share's refill: %+v", a)
	}
	// Redis restarted empty (a new epoch): what was spent and not
	// refilled, from the last shared level on, is the debt charged on
	// rejoin.
	d := l.debts("e2")
	if len(d) != 1 || d[0].Delta[0] != 20 || d[0].Budget != b {
		t.Fatalf("debts %+v, want the whole 20 of the share", d)
	}
	// Redis kept its state: it is charged what was spent during the
	// outage, 5 requests and 100 input tokens, nothing more.
	d = l.debts("e1")
	if len(d) != 1 || d[0].Delta != [3]float64{5, 100, 0} || d[0].Budget != b {
		t.Fatalf("debts %+v, want the 5 requests and 100 tokens spent", d)
	}
	l.reset()
	if d := l.debts("e1"); len(d) != 0 {
		t.Fatalf("debts after reset: %+v", d)
	}
}

func TestLocalSyncOnlyLowersAndParksCooldownsApply(t *testing.T) {
	clk := clock.NewFake(time.Unix(1e9, 0))
	var l localBudgets
	l.init(clk)
	l.enter(2, "e1")
	b := keypool.SharedBudget{Org: "cfg:a", Class: "opus", Caps: [3]float64{100, 0, 0}}
	r := l.sync(keypool.SharedSync{Budget: b, Limit: [3]int64{-1, 8000, -1}, Remaining: [3]int64{80, 10000, -1}, Gran: [3]float64{1, 1000, 1}})
	if r.Levels[0] != 40 || !r.Moved[0] {
		t.Fatalf("requests: %+v, want half of 80 remaining", r)
	}
	if r.Caps[1] != 4000 || r.Levels[1] != 4000 || r.Moved[1] {
		t.Fatalf("input: %+v, want the learned limit's half and no raise", r)
	}
	l.cool(b, clk.Now().Add(time.Minute).UnixNano(), "upstream 429")
	if a := l.reserve(b, [3]float64{1, 0, 0}, [3]float64{1, 0, 0}); a.Outcome != keypool.SharedCooling || a.Reason != "upstream 429" {
		t.Fatalf("%+v", a)
	}
	l.park("cfg:a", clk.Now().Add(time.Hour).UnixNano(), "spend cap")
	if a := l.reserve(b, [3]float64{1, 0, 0}, [3]float64{1, 0, 0}); a.Outcome != keypool.SharedParked {
		t.Fatalf("%+v", a)
	}
	l.unpark("cfg:a")
	if a := l.reserve(b, [3]float64{1, 0, 0}, [3]float64{1, 0, 0}); a.Outcome != keypool.SharedAdmitted {
		t.Fatalf("after unpark: %+v", a)
	}
}
