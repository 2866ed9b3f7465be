package sampler

import "fmt"

// Decision is a policy's answer for one trace.
type Decision uint8

const (
	// Undecided passes the trace to the next policy in the chain.
	Undecided Decision = iota
	// Keep archives the trace with the verdict's sample rate.
	Keep
	// Drop discards the trace.
	Drop
)

func (d Decision) String() string {
	switch d {
	case Keep:
		return "keep"
	case Drop:
		return "drop"
	}
	return "undecided"
}

// Verdict is what a policy returns. SampleRate is the adjusted count of a
// kept trace, the inverse of the probability that a trace like it is kept, so
// that summing it over kept traces estimates how many there were in all.
type Verdict struct {
	Decision   Decision
	SampleRate float64
	Reason     string
}

// Policy decides on one whole trace. Decide runs on a shard goroutine, must be
// safe to call from several shards at once, must not retain t, and must not
// block: it is a pure function of the trace (and of state the policy guards
// itself). Errors belong to construction, so Decide has none.
type Policy interface {
	Name() string
	Decide(t *Trace) Verdict
}

// Chain applies policies in order; the first that does not answer Undecided
// decides. A trace no policy decides is dropped with reason "no-policy".
type Chain []Policy

// Name implements Policy.
func (c Chain) Name() string { return "chain" }

// Decide implements Policy.
func (c Chain) Decide(t *Trace) Verdict {
	for _, p := range c {
		if v := p.Decide(t); v.Decision != Undecided {
			if v.Decision == Keep && !(v.SampleRate >= 1) {
				panic(fmt.Sprintf("BUG: policy %s kept a trace with sample rate %v", p.Name(), v.SampleRate))
			}
			return v
		}
	}
	return Verdict{Decision: Drop, Reason: "no-policy"}
}

var _ Policy = Chain(nil)
