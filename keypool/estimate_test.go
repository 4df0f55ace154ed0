package keypool

import (
	"math"
	"testing"
)

func TestEstimateBeforeCalibration(t *testing.T) {
	p, _ := newPool(t, Config{Keys: keys("a")})
	for bytes, want := range map[int]int64{4000: 1000, 10: 2, 0: 1, -5: 1} {
		if got := acquire(t, p, Request{Model: sonnet, Bytes: bytes}).Estimate(); got != want {
			t.Errorf("%d bytes: estimate %d, want %d (DefaultTokenEstimateRatio)", bytes, got, want)
		}
	}
	p2, _ := newPool(t, Config{Keys: keys("a"), TokenEstimateRatio: 2.5})
	if got := acquire(t, p2, Request{Model: sonnet, Bytes: 5000}).Estimate(); got != 2000 {
		t.Fatalf("estimate %d, want 2000 at 2.5 bytes/token", got)
	}
}

func TestEstimatorCalibratesPerClass(t *testing.T) {
	p, _ := newPool(t, Config{Keys: keys("a")})
	// Real traffic: 2.5 bytes per prompt token, a little noise.
	truth := func(bytes int, i int) int64 {
		return int64(float64(bytes) / 2.5 * (1 + 0.02*math.Sin(float64(i))))
	}
	relErr := func(est, actual int64) float64 { return math.Abs(float64(est-actual)) / float64(actual) }
	var first, last float64
	for i := 0; i < 40; i++ {
		bytes := 1000 + 997*i
		r := acquire(t, p, Request{Model: sonnet, Bytes: bytes})
		actual := truth(bytes, i)
		e := relErr(r.Estimate(), actual)
		if i == 0 {
			first = e
		}
		last = e
		r.Settle(Result{Status: 200, Usage: Usage{InputTokens: actual, HaveInput: true, OutputTokens: 10, HaveOutput: true}})
	}
	if first < 0.3 || last > 0.05 {
		t.Fatalf("estimate error before calibration %.3f, after %.3f: want it to shrink from ~0.375 to < 0.05", first, last)
	}
	es, ok := p.Snapshot().Estimator["sonnet"]
	if !ok || es.Observations != 40 || !near(es.TokensPerByte, 0.4, 0.01) || !near(es.ChargeableShare, 1, 1e-9) {
		t.Fatalf("estimator snapshot %+v", es)
	}
	if es.ErrorCalibrated >= es.ErrorFixedRatio/4 || !near(es.ErrorFixedRatio, 0.375, 0.03) {
		t.Fatalf("estimator errors: fixed %.3f calibrated %.3f", es.ErrorFixedRatio, es.ErrorCalibrated)
	}
	// Haiku has not been observed: it still uses the configured ratio.
	if got := acquire(t, p, Request{Model: haiku, Bytes: 4000}).Estimate(); got != 1000 {
		t.Fatalf("haiku estimate %d, want 1000 (uncalibrated)", got)
	}
	if _, ok := p.Snapshot().Estimator["haiku"]; ok {
		t.Fatal("haiku estimator reported without observations")
	}
}

// Cache reads are part of the prompt but not charged to ITPM: the
// estimate reserves only the share that is charged.
func TestEstimatorLearnsChargeableShare(t *testing.T) {
	p, _ := newPool(t, Config{Keys: keys("a")})
	for i := 0; i < 30; i++ {
		bytes := 40000
		r := acquire(t, p, Request{Model: sonnet, Bytes: bytes})
		// 10000 prompt tokens: 8000 read from cache, 500 written, 1500 new.
		r.Settle(Result{Status: 200, Usage: Usage{InputTokens: 1500, CacheCreationInputTokens: 500, CacheReadInputTokens: 8000, HaveInput: true}})
	}
	if got := acquire(t, p, Request{Model: sonnet, Bytes: 40000}).Estimate(); got < 1900 || got > 2100 {
		t.Fatalf("estimate %d, want ~2000 (input + cache creation)", got)
	}
	// Usage without any prompt tokens teaches nothing.
	var e estimator
	e.observe(1000, Usage{HaveInput: true})
	e.observe(0, Usage{InputTokens: 5, HaveInput: true})
	if e.n != 0 {
		t.Fatalf("empty observations counted: %+v", e)
	}
}

// weight skips the division once warm; it must give what the division gave.
func TestWeight(t *testing.T) {
	for n := int64(1); n <= 10*warm; n++ {
		if got, want := weight(n), math.Max(alpha, 1/float64(n)); got != want {
			t.Fatalf("weight(%d) = %v, want %v", n, got, want)
		}
	}
}
