package sampler

import "time"

// Kept is a trace the sampler decided to keep, on its way to the archive.
//
// The archive owns it once received and must call Release exactly once, after
// the spans are durable (in object storage, or in the local spool). Release
// is what lets the router commit the Kafka offsets behind these spans, so a
// Kept that is never released holds back the consumer group: by design, since
// losing it would lose spans.
type Kept struct {
	ID         TraceID
	Spans      []Span
	SampleRate float64   // adjusted count: 1/probability the trace was kept
	Reason     string    // the policy (and rule) that kept it
	DecidedAt  time.Time // when the decision was made
	Late       bool      // spans that arrived after the trace was decided

	// Summary of the whole trace at decision time; the same for late spans of
	// the trace, so every archived row of a trace carries one set of values.
	RootService string
	RootName    string
	Start       int64 // earliest span start, Unix nanoseconds
	DurationNs  int64
	SpanCount   int
	HasError    bool

	// Partial: the trace was decided on a piece of it, when it reached
	// the span limit, or on a later piece after the pieces before were
	// dropped. Lost counts the spans of those dropped pieces: settled, so
	// not in the archive, but still in Kafka.
	Partial bool
	Lost    int
}

// Release settles every span of k. Call once, after k is durable.
func (k *Kept) Release() {
	for i := range k.Spans {
		if src := k.Spans[i].Src; src != nil {
			src.Done()
		}
	}
	k.Spans = nil
}
