package ccload

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// Sessions runs n Claude Code sessions side by side on cl until end: each sends
// its conversation's next turn, waits for the answer (retrying as Claude
// Code does), sometimes makes a Haiku side request, "runs the tool" for
// 0.3-2 s, and starts a new conversation after 15-40 turns. Content and
// think times come from per-slot seeds derived from seed, so every variant
// with the same seed sees the same conversations.
func Sessions(ctx context.Context, cl *Client, n int, seed uint64, end time.Time, stat *SessionStats) {
	var wg sync.WaitGroup
	for slot := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(slot)+500))
			jitter := rand.New(rand.NewPCG(seed, uint64(slot)+900))
			for time.Now().Before(end) && ctx.Err() == nil {
				c := NewConversation(r)
				stat.add(&stat.Started, 1)
				for !c.Done() && time.Now().Before(end) {
					req := c.Next()
					res := cl.Do(ctx, req, jitter)
					for !res.OK() {
						if res.Abandon || ctx.Err() != nil || !time.Now().Before(end) {
							return
						}
						// Claude Code gave up on this turn; the user asks again.
						if !SleepUntil(ctx, time.Now().Add(time.Second)) {
							return
						}
						res = cl.Do(ctx, req, jitter)
					}
					stat.add(&stat.Turns, 1)
					c.Advance(req)
					if r.IntN(10) == 0 {
						cl.Do(ctx, c.SideRequest(), jitter)
					}
					think := time.Duration(300+r.IntN(1700)) * time.Millisecond
					if !SleepUntil(ctx, time.Now().Add(think)) {
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

// SessionStats counts the conversations Sessions started and the turns
// answered.
type SessionStats struct {
	mu             sync.Mutex
	Started, Turns int
}

func (s *SessionStats) add(p *int, n int) {
	s.mu.Lock()
	*p += n
	s.mu.Unlock()
}

// SleepUntil waits for t or ctx; false when ctx ended first.
func SleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}
