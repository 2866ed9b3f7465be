package sampler

import (
	"time"

	"github.com/tailsift/tailsift/internal/otlpwire"
)

// Trace is the unit a policy decides on: every span buffered for one trace ID.
// Policies read it on the shard goroutine and must not retain it.
type Trace struct {
	ID    TraceID
	Spans []Span

	FirstSeen time.Time // when the node buffered the first span
	LastSeen  time.Time // when the node buffered the latest span
	// Complete is when the trace became complete by the completion clock
	// (its last span a quiet period old, or its first the maximum wait),
	// or when it was decided if that came first. With record time as the
	// clock it is when the trace is decided live, however fast a backlog
	// is read: policies that measure time (the dynamic policy, the cost
	// cap) read it, so a backlog is decided as the same traffic live.
	// Zero for traces not decided by a sampler: policies then read their
	// clock.
	Complete time.Time
	Bytes    int // encoded bytes of Spans

	root     int32 // index of the first root span in Spans, -1 when none
	hasError bool
	minStart int64
	maxEnd   int64
	// shard decides the trace, of shards (0 of 0 outside a sampler):
	// each shard's decision times run in order, but not in step with
	// the other shards'.
	shard, shards int32
}

func (t *Trace) reset(id TraceID, now time.Time) {
	*t = Trace{ID: id, Spans: t.Spans[:0], FirstSeen: now, LastSeen: now, root: -1}
}

func (t *Trace) add(s Span, now time.Time) {
	if s.Root() && t.root < 0 {
		t.root = int32(len(t.Spans))
	}
	if s.Error() {
		t.hasError = true
	}
	if len(t.Spans) == 0 || s.Start < t.minStart {
		t.minStart = s.Start
	}
	if len(t.Spans) == 0 || s.End > t.maxEnd {
		t.maxEnd = s.End
	}
	t.Spans = append(t.Spans, s)
	t.Bytes += len(s.Raw)
	if now.After(t.LastSeen) {
		t.LastSeen = now
	}
}

// Root returns the trace's root span, or nil when none has arrived.
func (t *Trace) Root() *Span {
	if t.root < 0 {
		return nil
	}
	return &t.Spans[t.root]
}

// HasError reports whether any span has status ERROR.
func (t *Trace) HasError() bool { return t.hasError }

// Duration is the root span's duration when the root is present, otherwise
// the extent from the earliest start to the latest end of the spans seen.
func (t *Trace) Duration() time.Duration {
	if r := t.Root(); r != nil {
		return time.Duration(r.Duration())
	}
	if t.maxEnd < t.minStart {
		return 0
	}
	return time.Duration(t.maxEnd - t.minStart)
}

// Start is the earliest span start, in Unix nanoseconds.
func (t *Trace) Start() int64 { return t.minStart }

// RootService is the root span's service.name, or the first span's when the
// root is missing.
func (t *Trace) RootService() string {
	if r := t.Root(); r != nil {
		return r.Scope.Service
	}
	if len(t.Spans) > 0 {
		return t.Spans[0].Scope.Service
	}
	return ""
}

// RootName is the root span's name, or "" when the root is missing. It
// decodes the root span's bytes, so call it once per kept trace, not per
// span.
func (t *Trace) RootName() string {
	r := t.Root()
	if r == nil {
		return ""
	}
	var si otlpwire.SpanInfo
	if otlpwire.ScanSpan(r.Raw, &si) != nil {
		return ""
	}
	return string(si.Name)
}

// decisionTime is t.Complete in Unix nanoseconds, or clock's time when
// the trace carries none.
func (t *Trace) decisionTime(clock Clock) int64 {
	if !t.Complete.IsZero() {
		return t.Complete.UnixNano()
	}
	return clock.Now().UnixNano()
}
