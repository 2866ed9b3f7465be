package sampler

import (
	"sync/atomic"
	"time"
	"unsafe"
)

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

	// acct is the sampler's count of the memory kept traces hold outside
	// its buffer (Sampler.Full), and held what k adds to it (Hold).
	acct *atomic.Int64
	held int64
}

// spanOverhead is what a span of a Kept holds besides its encoded bytes.
const spanOverhead = int64(unsafe.Sizeof(Span{}))

// heldBytes is the memory k's spans hold: their bytes and Span values.
func (k *Kept) heldBytes() int64 {
	n := int64(len(k.Spans)) * spanOverhead
	for i := range k.Spans {
		n += int64(len(k.Spans[i].Raw))
	}
	return n
}

// Held is what k counts against the sampler's memory bound now.
func (k *Kept) Held() int64 { return k.held }

// Hold sets what k counts against the sampler's memory bound to n bytes.
// The sampler counts a Kept's spans as it sends it out; the archive, which
// holds kept traces until it writes a row group of them and needs memory
// for the rows, raises the count to what the rows take, and sets it to 0
// once they are written and the spans' bytes are no longer held. Until
// then they hold memory as buffered spans do, so the bound pauses input
// for them too. Not safe for concurrent use on one Kept.
func (k *Kept) Hold(n int64) {
	if k.acct == nil {
		return
	}
	k.acct.Add(n - k.held)
	k.held = n
}

// Release settles every span of k. Call once, after k is durable.
func (k *Kept) Release() {
	k.Hold(0)
	for i := range k.Spans {
		if src := k.Spans[i].Src; src != nil {
			src.Done()
		}
	}
	k.Spans = nil
}
