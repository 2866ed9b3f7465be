package sampler

import (
	"fmt"
	"time"
)

// LatencyPolicy keeps traces whose duration (the root span's, or the whole
// trace's extent when the root is missing) is at least Threshold.
type LatencyPolicy struct {
	Threshold time.Duration
	reason    string
}

// NewLatencyPolicy returns a LatencyPolicy; the threshold must be positive.
func NewLatencyPolicy(threshold time.Duration) (*LatencyPolicy, error) {
	if threshold <= 0 {
		return nil, fmt.Errorf("latency threshold must be positive, got %v", threshold)
	}
	return &LatencyPolicy{Threshold: threshold, reason: "latency>=" + threshold.String()}, nil
}

// Name implements Policy.
func (p *LatencyPolicy) Name() string { return "latency" }

// Decide implements Policy.
func (p *LatencyPolicy) Decide(t *Trace) Verdict {
	if t.Duration() >= p.Threshold {
		return Verdict{Decision: Keep, SampleRate: 1, Reason: p.reason}
	}
	return Verdict{}
}

var _ Policy = (*LatencyPolicy)(nil)
