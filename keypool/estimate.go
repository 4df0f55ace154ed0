package keypool

import "math"

// DefaultTokenEstimateRatio is request-body bytes per input token assumed
// before any usage has been observed. Messages API bodies are JSON with
// mostly English text and code; about 4 bytes per token over the whole body
// (text plus JSON framing) is a fair first guess, and the estimator replaces
// it with observed figures as soon as responses report usage.
const DefaultTokenEstimateRatio = 4.0

// estimator learns, per model class, how many prompt tokens a byte of
// request body turns into, and what share of them the upstream charges
// against the input-token limit (cache reads are not charged).
type estimator struct {
	n          int64   // observations
	perByte    float64 // prompt tokens (input + cache creation + cache read) per body byte
	chargeable float64 // share of prompt tokens that are input or cache creation
	// Mean absolute relative error of the prompt-token estimate, before
	// calibration (fixed ratio) and with it, for reports.
	errFixed, errCalibrated float64
	// Mean output tokens of a successful response, over nOut of them.
	nOut    int64
	outMean float64
}

// alpha bounds how fast the estimator follows changes once warmed up.
const alpha = 0.05

func (e *estimator) estimate(bytes int, ratio float64) float64 {
	if bytes <= 0 {
		return 1
	}
	if e.n == 0 {
		return float64(bytes) / ratio
	}
	return max(1, float64(bytes)*e.perByte*e.chargeable)
}

// whole estimates the request's whole prompt, as charged when none of it
// is in the cache.
func (e *estimator) whole(bytes int, ratio float64) float64 {
	if bytes <= 0 {
		return 1
	}
	if e.n == 0 {
		return float64(bytes) / ratio
	}
	return max(1, float64(bytes)*e.perByte)
}

// weight is the share a new observation gets after n of them (n >= 1):
// an average of the first ones, then alpha. The steady state takes no
// division (Settle runs it for every request): 1/n <= alpha exactly when
// n >= warm, since 1/warm rounds to the same float as alpha.
func weight(n int64) float64 {
	if n >= warm {
		return alpha
	}
	return math.Max(alpha, 1/float64(n))
}

// warm is the observation count from which weight is alpha. It does not
// compile if 1/alpha is not a whole number; TestWeight checks the rest.
const warm = int64(1 / alpha)

// observeOutput learns a successful response's output length.
func (e *estimator) observeOutput(n float64) {
	e.nOut++
	e.outMean += weight(e.nOut) * (n - e.outMean)
}

// margin is the share by which admission pads the estimate: three times
// the calibrated estimate's mean error (about its spread), at most 50%.
// Uncalibrated estimates get none: their error is not known yet.
func (e *estimator) margin() float64 {
	if e.n == 0 {
		return 0
	}
	return min(3*e.errCalibrated, 0.5)
}

func (e *estimator) observe(bytes int, u Usage) {
	if bytes <= 0 {
		return
	}
	total := float64(u.InputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens)
	if total <= 0 || total > float64(bytes)+inputSlack {
		// More prompt tokens than the body could hold is not a figure to
		// learn from (a broken upstream, or a document referenced by id):
		// one such report would skew every organization's estimate.
		return
	}
	perByte := total / float64(bytes)
	charge := float64(u.InputTokens+u.CacheCreationInputTokens) / total
	// Track estimate errors on the prompt size (what a body can tell).
	fixed := float64(bytes) / DefaultTokenEstimateRatio
	cal := fixed
	if e.n > 0 {
		cal = float64(bytes) * e.perByte
	}
	// The first observations average; later ones follow with weight alpha.
	e.n++
	a := weight(e.n)
	e.perByte += a * (perByte - e.perByte)
	e.chargeable += a * (charge - e.chargeable)
	// One division for both relative errors (Settle runs this for every
	// request under the pool's lock); they are means of errors, an ulp
	// either way is nothing.
	inv := 1 / total
	e.errFixed += a * (math.Abs(fixed-total)*inv - e.errFixed)
	e.errCalibrated += a * (math.Abs(cal-total)*inv - e.errCalibrated)
}
