package sampler

import (
	"fmt"
	"strconv"
)

// ProbabilisticPolicy keeps a fixed share of traces, chosen by trace ID so
// every node (and every OpenTelemetry SDK using the same rule) makes the same
// choice for the same trace.
//
// The rule is OpenTelemetry's consistent probability sampling: the last 7
// bytes of the trace ID are the 56-bit randomness value R, and a trace is kept
// when R >= T, where the rejection threshold T = (1-p) * 2^56. This is how
// TraceIdRatioBased samplers that emit the tracestate `th` key decide, so a
// trace head-sampled at a lower probability upstream is also kept here.
type ProbabilisticPolicy struct {
	threshold uint64 // keep when randomness >= threshold
	rate      float64
	reason    string
}

const maxRandomness = 1 << 56

// NewProbabilisticPolicy keeps the share p (0 < p <= 1) of traces.
func NewProbabilisticPolicy(p float64) (*ProbabilisticPolicy, error) {
	if !(p > 0 && p <= 1) {
		return nil, fmt.Errorf("sampling probability must be in (0, 1], got %v", p)
	}
	return &ProbabilisticPolicy{
		threshold: uint64((1 - p) * maxRandomness),
		rate:      1 / p,
		reason:    "probabilistic/" + strconv.FormatFloat(p*100, 'g', 4, 64) + "%",
	}, nil
}

// Randomness returns the 56-bit randomness value of a trace ID.
func Randomness(id TraceID) uint64 {
	var r uint64
	for _, b := range id[9:] {
		r = r<<8 | uint64(b)
	}
	return r
}

// Name implements Policy.
func (p *ProbabilisticPolicy) Name() string { return "probabilistic" }

// Decide implements Policy.
func (p *ProbabilisticPolicy) Decide(t *Trace) Verdict {
	if Randomness(t.ID) >= p.threshold {
		return Verdict{Decision: Keep, SampleRate: p.rate, Reason: p.reason}
	}
	return Verdict{Decision: Drop, Reason: "probabilistic"}
}

var _ Policy = (*ProbabilisticPolicy)(nil)
