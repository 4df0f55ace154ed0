package keypool

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// settlePool has one key with limits on every budget, so every charge and
// refund shows in a level.
func settlePool(t *testing.T) *Pool {
	p, _ := newPool(t, Config{Keys: []KeyConfig{{Name: "a", Limits: Limits{RPM: 100, ITPM: 100000, OTPM: 10000}}}})
	return p
}

func wantLevels(t *testing.T, p *Pool, req, in, out float64) {
	t.Helper()
	wantLevel(t, p, "a", sonnet, kindRequests, req, 1e-9)
	wantLevel(t, p, "a", sonnet, kindInput, in, 1e-9)
	wantLevel(t, p, "a", sonnet, kindOutput, out, 1e-9)
}

func TestSettleChargesUsage(t *testing.T) {
	p := settlePool(t)
	r := acquire(t, p, Request{Model: sonnet, Bytes: 4000})
	if r.Estimate() != 1000 || r.KeyIndex() != 0 || r.KeyName() != "a" || r.Class() != "sonnet" {
		t.Fatalf("reservation %d %d %q %q", r.Estimate(), r.KeyIndex(), r.KeyName(), r.Class())
	}
	wantLevels(t, p, 99, 99000, 10000)
	if n := inFlight(p, "a"); n != 1 {
		t.Fatalf("in flight %d", n)
	}
	r.Settle(Result{Status: 200, Usage: Usage{
		InputTokens: 300, CacheCreationInputTokens: 200, CacheReadInputTokens: 5000,
		OutputTokens: 150, HaveInput: true, HaveOutput: true,
	}})
	// ITPM: input + cache creation, not cache reads. OTPM: output.
	wantLevels(t, p, 99, 99500, 9850)
	tot := p.Snapshot().Keys[0].Totals
	want := Totals{Requests: 1, Succeeded: 1, InputTokens: 300, CacheCreationTokens: 200, CacheReadTokens: 5000, OutputTokens: 150}
	if tot != want {
		t.Fatalf("totals %+v, want %+v", tot, want)
	}
	if n := inFlight(p, "a"); n != 0 {
		t.Fatalf("in flight %d after Settle", n)
	}
	// Settling again changes nothing.
	r.Settle(Result{Status: 200, Usage: Usage{InputTokens: 9999, OutputTokens: 9999, HaveInput: true, HaveOutput: true}})
	r.Settle(Result{Status: 0})
	wantLevels(t, p, 99, 99500, 9850)
	if tot := p.Snapshot().Keys[0].Totals; tot != want {
		t.Fatalf("totals after a second Settle %+v", tot)
	}
	if n := inFlight(p, "a"); n != 0 {
		t.Fatalf("in flight %d after a second Settle", n)
	}
	// A zero Reservation settles as a no-op.
	var zero Reservation
	zero.Settle(ok200())
	var nilRes *Reservation
	nilRes.Settle(ok200())
}

func TestChargeProgressivelyThenSettle(t *testing.T) {
	p := settlePool(t)
	r := acquire(t, p, Request{Model: sonnet, Bytes: 4000})
	// message_start: input known, output 1 so far.
	r.Charge(Usage{InputTokens: 2000, CacheCreationInputTokens: 500, CacheReadInputTokens: 100, OutputTokens: 1, HaveInput: true, HaveOutput: true})
	wantLevels(t, p, 99, 97500, 9999)
	// message_delta usage is cumulative.
	r.Charge(Usage{OutputTokens: 50, HaveOutput: true})
	wantLevels(t, p, 99, 97500, 9950)
	r.Charge(Usage{OutputTokens: 40, HaveOutput: true}) // never goes back
	r.Charge(Usage{InputTokens: 2000, CacheCreationInputTokens: 500, OutputTokens: 120, HaveInput: true, HaveOutput: true})
	wantLevels(t, p, 99, 97500, 9880)
	// Settle repeats the final cumulative usage: nothing is charged twice.
	r.Settle(Result{Status: 200, Usage: Usage{InputTokens: 2000, CacheCreationInputTokens: 500, CacheReadInputTokens: 100, OutputTokens: 120, HaveInput: true, HaveOutput: true}})
	wantLevels(t, p, 99, 97500, 9880)
	tot := p.Snapshot().Keys[0].Totals
	if tot.InputTokens != 2000 || tot.CacheCreationTokens != 500 || tot.CacheReadTokens != 100 || tot.OutputTokens != 120 {
		t.Fatalf("totals %+v", tot)
	}
	// Charge after Settle is ignored.
	r.Charge(Usage{OutputTokens: 500, HaveOutput: true})
	wantLevels(t, p, 99, 97500, 9880)
}

// message_delta carries cumulative input too; when it grows (server tools
// add input during the turn) the growth is charged.
func TestChargeCumulativeInputGrowth(t *testing.T) {
	p := settlePool(t)
	r := acquire(t, p, Request{Model: sonnet, Bytes: 4000})
	r.Charge(Usage{InputTokens: 800, HaveInput: true, OutputTokens: 1, HaveOutput: true})
	wantLevels(t, p, 99, 99200, 9999)
	r.Charge(Usage{InputTokens: 3000, CacheCreationInputTokens: 100, CacheReadInputTokens: 50, OutputTokens: 60, HaveInput: true, HaveOutput: true})
	wantLevels(t, p, 99, 96900, 9940)
	r.Settle(Result{Status: 200, Usage: Usage{InputTokens: 3000, CacheCreationInputTokens: 100, CacheReadInputTokens: 50, OutputTokens: 60, HaveInput: true, HaveOutput: true}})
	wantLevels(t, p, 99, 96900, 9940)
	tot := p.Snapshot().Keys[0].Totals
	if tot.InputTokens != 3000 || tot.CacheCreationTokens != 100 || tot.CacheReadTokens != 50 {
		t.Fatalf("totals %+v", tot)
	}
}

func TestSettleRefunds(t *testing.T) {
	for _, c := range []struct {
		status  int
		req, in float64 // levels after Settle
	}{
		{0, 100, 100000},   // no response: the upstream never counted it
		{500, 100, 100000}, // upstream error
		{502, 100, 100000},
		{529, 100, 100000}, // overloaded: not the key's fault
		{400, 99, 100000},  // rejected: the request counts, its input not
		{401, 99, 100000},
		{413, 99, 100000},
		{429, 99, 100000},
		{200, 99, 99000}, // success without usage: the estimate stands
	} {
		p := settlePool(t)
		r := acquire(t, p, Request{Model: sonnet, Bytes: 4000})
		r.Settle(Result{Status: c.status})
		if got := level(t, p, "a", sonnet, kindRequests); got != c.req {
			t.Errorf("status %d: requests %v, want %v", c.status, got, c.req)
		}
		if got := level(t, p, "a", sonnet, kindInput); got != c.in {
			t.Errorf("status %d: input %v, want %v", c.status, got, c.in)
		}
		if n := inFlight(p, "a"); n != 0 {
			t.Errorf("status %d: in flight %d", c.status, n)
		}
		tot := p.Snapshot().Keys[0].Totals
		if ok := c.status == 200; tot.Succeeded != b2i(ok) || tot.Failed != b2i(!ok) {
			t.Errorf("status %d: totals %+v", c.status, tot)
		}
		// Settling twice does not refund twice.
		r.Settle(Result{Status: c.status})
		if got := level(t, p, "a", sonnet, kindRequests); got != c.req {
			t.Errorf("status %d: second Settle moved requests to %v", c.status, got)
		}
	}
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// A stream cut short still charges what was produced, and the input it
// reported: the upstream counted them.
func TestSettleAfterPartialStream(t *testing.T) {
	p := settlePool(t)
	r := acquire(t, p, Request{Model: sonnet, Bytes: 4000})
	r.Charge(Usage{InputTokens: 1500, HaveInput: true, OutputTokens: 1, HaveOutput: true})
	r.Charge(Usage{OutputTokens: 77, HaveOutput: true})
	r.Settle(Result{Status: 0}) // client went away mid-stream
	wantLevels(t, p, 99, 98500, 9923)
}

func TestInFlightReturnsToZeroUnderConcurrency(t *testing.T) {
	p, _ := newPool(t, Config{Keys: keys("a", "b", "c")})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				var r Reservation
				if err := p.Acquire(context.Background(), &Request{Model: sonnet, Bytes: 100}, &r); err != nil {
					t.Error(err)
					return
				}
				r.Charge(Usage{InputTokens: 10, HaveInput: true})
				r.Settle(Result{Status: []int{200, 0, 500, 400}[i%4], Usage: Usage{OutputTokens: 5, HaveOutput: true}})
				r.Settle(ok200())
			}
		}()
	}
	wg.Wait()
	var total int64
	for _, k := range p.Snapshot().Keys {
		if k.InFlight != 0 {
			t.Fatalf("key %s: %d in flight", k.Name, k.InFlight)
		}
		total += k.Totals.Requests
		if k.Totals.Succeeded+k.Totals.Failed != k.Totals.Requests {
			t.Fatalf("key %s: totals %+v", k.Name, k.Totals)
		}
	}
	if total != 1600 {
		t.Fatalf("%d requests counted, want 1600", total)
	}
}

// Passive requests (not Messages) get a key but spend no budget.
func TestPassiveRequestChargesNothing(t *testing.T) {
	p := settlePool(t)
	r := acquire(t, p, Request{Model: sonnet, Bytes: 4000, Passive: true})
	wantLevels(t, p, 100, 100000, 10000)
	r.Settle(Result{Status: 500})
	wantLevels(t, p, 100, 100000, 10000)
	if n := inFlight(p, "a"); n != 0 {
		t.Fatalf("in flight %d", n)
	}
}

// Reservation accessors may be called while other requests create model
// classes.
func TestReservationAccessorsRaceFree(t *testing.T) {
	var rules []ClassRule
	for i := 0; i < 64; i++ {
		rules = append(rules, ClassRule{Pattern: fmt.Sprintf("model-%d", i), Class: fmt.Sprintf("class-%d", i)})
	}
	p, _ := newPool(t, Config{Keys: keys("a", "b"), ModelClasses: rules})
	r := acquire(t, p, Request{Model: sonnet})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, rule := range rules {
			var x Reservation
			if err := p.Acquire(context.Background(), &Request{Model: rule.Pattern}, &x); err != nil {
				t.Error(err)
				return
			}
			x.Settle(ok200())
		}
	}()
	for i := 0; i < 64; i++ {
		if r.Class() != "sonnet" || r.KeyName() == "" || r.Estimate() != 1 {
			t.Fatal("accessors")
		}
	}
	<-done
}

// count_tokens and models answers carry their own limits' headers: they
// must not correct, cool or drain the Messages budgets.
func TestPassiveHeadersLeaveBudgetsAlone(t *testing.T) {
	p := settlePool(t)
	r := acquire(t, p, Request{Model: sonnet, Bytes: 4000, Passive: true})
	h := noHeaders()
	h.RetryAfter, h.HasRetryAfter = 30*time.Second, true
	h.Requests = Limit{Limit: 100, Remaining: 0}
	h.InputTokens = Limit{Limit: 100000, Remaining: 0}
	r.ObserveHeaders(429, h)
	r.Settle(Result{Status: 429})
	wantLevels(t, p, 100, 100000, 10000)
	if ks := p.Snapshot().Keys[0]; ks.State != "ok" {
		t.Fatalf("a passive 429 cooled the key: %+v", ks)
	}
}
