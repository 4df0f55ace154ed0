package caddymodule

import (
	"context"
	"net/http"
)

// retryAction is what the relay does with one attempt's answer.
type retryAction uint8

const (
	// passOn lets the answer through to the client as it arrives.
	passOn retryAction = iota
	// answerHeld holds the answer back and answers the client from it,
	// since no retry is left: a 429 with the pool's Retry-After, a 401 or
	// 403 as the relay's own 503.
	answerHeld
	// retryOtherKey holds the answer back and tries another key.
	retryOtherKey
	// retryOtherOrg holds the answer back and tries a key of another
	// organization.
	retryOtherOrg
	// clientLeft holds the answer back and ends the request without an
	// answer: a retry was due, but the client is gone.
	clientLeft
)

// holds reports whether the answer is kept from the client.
func (a retryAction) holds() bool { return a != passOn }

// retryDecision is the relay's one retry policy, the counterpart of
// reverse_proxy's LoadBalancing.tryAgain. It decides at the attempt's
// response header whether the answer is held back (the attempt writer asks),
// and again once the held attempt has ended and the pool has learnt from it
// (the request loop asks), with the same answer but for a client that left
// meanwhile. attempt counts the request's attempts, this one included.
//
//   - 429: the organization's limits are spent (or its spend cap): another
//     organization may still serve the request.
//   - 401/403: the upstream refused the key: another key may be accepted.
//     The refused key is disabled, but at most one per request
//     (learnFromRefusal): an outage of the upstream's auth service would
//     otherwise take out one key per attempt.
//   - 5xx and 529 (overloaded): only with retry_overloaded, on another key;
//     without a retry left they pass on as they came, since the relay has
//     nothing to add to them.
//   - Never once a byte reached the client: the first decision is made at
//     the response header, before any byte, and an answer passed on is
//     never retried.
//   - Never past retries: the last attempt's 429/401/403 is still held, so
//     that the relay answers for it (answerHeld).
//   - Never when the client left: nobody is waiting for the answer.
func (h *Handler) retryDecision(ctx context.Context, status, attempt int) retryAction {
	retry := retryOtherKey
	switch {
	case status == http.StatusTooManyRequests:
		retry = retryOtherOrg
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
	case status >= http.StatusInternalServerError && h.RetryOverloaded:
		if attempt > h.retries {
			return passOn
		}
	default:
		return passOn
	}
	if attempt > h.retries {
		return answerHeld
	}
	if ctx.Err() != nil {
		return clientLeft
	}
	return retry
}
