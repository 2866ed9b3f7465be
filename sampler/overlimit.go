package sampler

import "time"

// A trace with more spans than Config.MaxSpansPerTrace is decided when it
// reaches the limit, on the piece buffered so far: the limit bounds the
// memory one trace holds, not which traces are kept. The piece need not
// hold what would keep the trace. Its root (often the span that records
// the error, and the last to end) usually arrives last, and spans read
// from several Kafka partitions arrive in no order of their writing, so
// even an error on the first span written may come after the limit.
//
// So a trace dropped at the span limit is remembered as a partialDrop,
// with what the policy saw of it, and its later spans are buffered again
// as a new piece rather than dropped as late. Each piece is decided as a
// trace is, with the pieces dropped before folded in (partialDrop.fold):
// while the policy still drops, the trace stays dropped; once it keeps (an
// error span, the trace now long enough, a rule that matches), the trace
// is kept from that piece on, its later spans follow as late spans of a
// kept trace, and the spans of the pieces dropped before are counted as
// lost (tailsift_sampler_overlimit_spans_lost_total). They were settled
// when dropped; the decision records how many (Kept.Lost) for anything
// that would read them again from Kafka.

// partialDrop is what is known of a trace dropped at the span limit.
type partialDrop struct {
	id               TraceID
	first            int64 // Unix nanoseconds: when the first piece's first span arrived
	minStart, maxEnd int64
	hasError         bool
	spans            int // spans dropped so far, over all pieces
	bytes            int64
}

// fold adds what the dropped pieces showed to t, the next piece, before
// the policy decides it: the trace's extent, and an error (a policy that
// dropped an error trace drops it again).
func (p *partialDrop) fold(t *Trace) {
	if p.first < t.FirstSeen.UnixNano() {
		t.FirstSeen = time.Unix(0, p.first)
	}
	t.minStart = min(t.minStart, p.minStart)
	t.maxEnd = max(t.maxEnd, p.maxEnd)
	t.hasError = t.hasError || p.hasError
}

// add records t, a piece just dropped.
func (p *partialDrop) add(t *Trace) {
	if p.spans == 0 {
		p.first, p.minStart, p.maxEnd = t.FirstSeen.UnixNano(), t.minStart, t.maxEnd
	}
	p.minStart = min(p.minStart, t.minStart)
	p.maxEnd = max(p.maxEnd, t.maxEnd)
	p.hasError = p.hasError || t.hasError
	p.spans += len(t.Spans)
	p.bytes += int64(t.Bytes)
}
