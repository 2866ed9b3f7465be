package sampler

// ErrorPolicy keeps every trace that has a span with status ERROR, at sample
// rate 1: error traces are never sampled away unless the cost cap forces it.
type ErrorPolicy struct{}

// Name implements Policy.
func (ErrorPolicy) Name() string { return "error" }

// Decide implements Policy.
func (ErrorPolicy) Decide(t *Trace) Verdict {
	if t.HasError() {
		return Verdict{Decision: Keep, SampleRate: 1, Reason: "error"}
	}
	return Verdict{}
}

var _ Policy = ErrorPolicy{}
