package sampler

import (
	"sync/atomic"
)

// TraceID is a W3C trace ID as it travels on the wire: 16 raw bytes.
type TraceID [16]byte

// Span flags, set by the scanner from the fields it reads. They are the only
// per-span facts the default policies need, so deciding a trace never decodes
// its spans again.
const (
	FlagRoot  uint8 = 1 << iota // parent_span_id is empty
	FlagError                   // status.code == STATUS_CODE_ERROR
)

// Span is one buffered span, kept as the bytes it arrived in.
//
// Raw is the encoded opentelemetry.proto.trace.v1.Span message. It is a
// subslice of the Kafka record (or peer batch) that carried it, so buffering a
// span copies nothing; the record's memory is released when its last span is.
// In a Trace handed to a policy, Raw may lack the trace_id field and the
// time fields (the shard buffers spans without them, see traceIDAt and
// timesIn; the times are in Start and End); spans leaving the shard, kept
// or handed over, have them back.
// The struct is 64 bytes on 64-bit platforms (TestSpanSize): keep it that way, it is the
// per-span overhead that bounds how many spans a node can hold.
type Span struct {
	Raw   []byte   // encoded Span message, owned by nobody: never modify
	Scope *Scope   // resource and instrumentation scope the span was sent under
	Src   *Pending // input unit to settle once this span reaches a final state
	Start int64    // start_time_unix_nano
	End   int64    // end_time_unix_nano
	Flags uint8
	// TimesAt is one more than where in Raw the start and end time fields
	// begin, next to each other (otlpwire.SpanInfo.TimesAt), 0 when not
	// known. The shard buffers a span without them where they hold Start
	// and End, and puts them back when the span leaves it.
	TimesAt uint16
}

// Root reports whether the span has no parent.
func (s *Span) Root() bool { return s.Flags&FlagRoot != 0 }

// Error reports whether the span's status is ERROR.
func (s *Span) Error() bool { return s.Flags&FlagError != 0 }

// Duration is End-Start in nanoseconds, or 0 when the clock went backwards.
func (s *Span) Duration() int64 {
	if s.End < s.Start {
		return 0
	}
	return s.End - s.Start
}

// Scope is the context shared by every span of one ScopeSpans message: the
// encoded Resource and InstrumentationScope, kept as bytes like the spans.
// One is allocated per ScopeSpans, not per span.
type Scope struct {
	Resource          []byte // encoded opentelemetry.proto.resource.v1.Resource, may be nil
	ResourceSchemaURL string
	Scope             []byte // encoded InstrumentationScope, may be nil
	ScopeSchemaURL    string
	Service           string // resource attribute service.name, "" when absent
}

// Pending counts the spans of one input unit (a Kafka record, or a batch a
// peer forwarded) that have not reached a final state: dropped, or kept and
// durable in the archive. The unit may be acknowledged (a Kafka offset
// committed, a peer batch acked) only once Settled reports true.
//
// The zero value is settled. Add must be called, with the unit's span count,
// before any of its spans is handed on.
type Pending struct {
	n atomic.Int64
	// TS is when the unit was written (the Kafka record timestamp, unix
	// nanoseconds), or 0 when unknown. With an input clock configured, it
	// is the spans' arrival time.
	TS int64
}

// Add raises the count by n.
func (p *Pending) Add(n int) { p.n.Add(int64(n)) }

// Done settles one span.
func (p *Pending) Done() {
	if p.n.Add(-1) < 0 {
		panic("BUG: sampler.Pending settled more spans than it was given")
	}
}

// Settled reports whether every span of the unit reached a final state.
func (p *Pending) Settled() bool { return p.n.Load() == 0 }

// Item is a span on its way to the shard that owns its trace.
type Item struct {
	TraceID TraceID
	Span    Span
}
