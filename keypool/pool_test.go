package keypool

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
)

func TestNewPoolValidation(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no keys", Config{}, "no keys"},
		{"unnamed", Config{Keys: []KeyConfig{{}}}, "without a name"},
		{"duplicate", Config{Keys: keys("a", "b", "a")}, `duplicate key name "a"`},
		{"negative rpm", Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{RPM: -1}}}}, "negative"},
		{"negative itpm", Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{ITPM: -1}}}}, "negative"},
		{"negative otpm", Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{OTPM: -5}}}}, "negative"},
		{"negative weight", Config{Keys: []KeyConfig{{Name: "a", Weight: -2}}}, "negative"},
		{"org conflict", Config{Keys: []KeyConfig{
			{Name: "a", Org: "X", Limits: Limits{RPM: 50, ITPM: 1000}},
			{Name: "b", Org: "X", Limits: Limits{ITPM: 2000}},
		}}, `keys "a" and "b" of org "X" configure different input_tokens limits`},
		{"bad class pattern", Config{Keys: keys("a"), ModelClasses: []ClassRule{{Pattern: "[", Class: "x"}}}, "model_class"},
		{"empty class", Config{Keys: keys("a"), ModelClasses: []ClassRule{{Pattern: "x*"}}}, "model_class"},
	} {
		st := NewState(clock.NewFake(t0))
		// A failing configuration changes nothing in the state.
		good, err := newPoolOn(st, Config{Keys: keys("keep")})
		if err != nil {
			t.Fatal(err)
		}
		orgs := len(st.orgs)
		p, err := newPoolOn(st, c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: NewPool = %v, %v; want error containing %q", c.name, p, err, c.want)
			continue
		}
		if len(st.keys) != 1 || len(st.orgs) != orgs || st.keys["keep"].refs != 1 {
			t.Errorf("%s: a failed NewPool changed the state: %d keys, %d orgs (had %d)", c.name, len(st.keys), len(st.orgs), orgs)
		}
		good.Close()
	}
	// keypool has no defaults: what the caller must set is refused when
	// missing, and names what is missing.
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no ratio", Config{Keys: keys("a"), DefaultCooldown: time.Second, SpendCapPark: time.Hour}, "token estimate ratio"},
		{"NaN ratio", Config{Keys: keys("a"), TokenEstimateRatio: math.NaN(), DefaultCooldown: time.Second, SpendCapPark: time.Hour}, "token estimate ratio"},
		{"sticky without ttl", Config{Keys: keys("a"), Sticky: true, StickyMaxSessions: 5, TokenEstimateRatio: 4, DefaultCooldown: time.Second, SpendCapPark: time.Hour}, "sticky"},
		{"no cooldown", Config{Keys: keys("a"), TokenEstimateRatio: 4, SpendCapPark: time.Hour}, "default cooldown"},
		{"no park", Config{Keys: keys("a"), TokenEstimateRatio: 4, DefaultCooldown: time.Second}, "spend cap park"},
	} {
		if _, err := NewState(clock.NewFake(t0)).NewPool(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: NewPool error %v, want one naming %q", c.name, err, c.want)
		}
	}
	if _, err := NewState(clock.NewFake(t0)).NewPool(Config{Keys: keys("a"), TokenEstimateRatio: 4, DefaultCooldown: time.Second, SpendCapPark: time.Hour}); err != nil {
		t.Errorf("a config setting every number (not sticky) was refused: %v", err)
	}
	// Same limits on several keys of one org, or limits on one of them, are fine.
	st := NewState(clock.NewFake(t0))
	if _, err := newPoolOn(st, Config{Keys: []KeyConfig{
		{Name: "a", Org: "X", Limits: Limits{RPM: 50}},
		{Name: "b", Org: "X", Limits: Limits{RPM: 50, ITPM: 100}},
		{Name: "c", Org: "X"},
		{Name: "d", Limits: Limits{RPM: 7}},
		{Name: "e", Limits: Limits{RPM: 8}},
	}}); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
}
