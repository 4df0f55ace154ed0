package keypool

import (
	"fmt"
	"math"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/pricing"
)

// ClientLimitError refuses a request over one of its client's own limits.
type ClientLimitError struct {
	Client string
	// Limit is "rpm", "itpm", "otpm", "max_concurrent" or "budget".
	Limit string
	// Max is the configured limit (requests or tokens per minute, requests
	// in flight); 0 for the budget.
	Max int64
	// RetryAfter is when the limit will admit the request.
	RetryAfter time.Duration

	// For the budget: what it is, for which period, what was spent and is
	// reserved by requests in flight, what this request may cost, and when
	// the period ends.
	Budget, Spent, Reserved, Need pricing.PicoUSD
	Period                        Period
	Resets                        time.Time
}

func (e *ClientLimitError) Error() string {
	switch e.Limit {
	case "max_concurrent":
		return fmt.Sprintf("client %q already has %d requests in flight, its max_concurrent limit; retry when one has finished", e.Client, e.Max)
	case "budget":
		resets := e.Resets.UTC().Format(time.RFC3339)
		if e.Spent >= e.Budget {
			return fmt.Sprintf("client %q has spent %s of its %s %s budget; the budget resets at %s",
				e.Client, e.Spent, e.Budget, e.Period.adjective(), resets)
		}
		return fmt.Sprintf("client %q has %s of its %s %s budget left (%s spent, %s reserved by requests in flight), less than this request may cost (%s); retry when requests in flight have finished, or after the budget resets at %s",
			e.Client, e.Budget-e.Spent-e.Reserved, e.Budget, e.Period.adjective(), e.Spent, e.Reserved, e.Need, resets)
	}
	what := map[string]string{"rpm": "requests", "itpm": "input tokens", "otpm": "output tokens"}[e.Limit]
	return fmt.Sprintf("client %q is over its own %s limit of %d %s per minute; retry in %ds",
		e.Client, e.Limit, e.Max, what, int64(math.Ceil(e.RetryAfter.Seconds())))
}

// ModelNotAllowedError refuses a model the client may not use.
type ModelNotAllowedError struct {
	Client, Model string
	// NoPrice: the client has a budget and the model has no price, so its
	// cost could not be counted.
	NoPrice bool
}

func (e *ModelNotAllowedError) Error() string {
	if e.NoPrice {
		return fmt.Sprintf("client %q has a budget and model %q has no price on this relay", e.Client, e.Model)
	}
	return fmt.Sprintf("client %q may not use model %q", e.Client, e.Model)
}
