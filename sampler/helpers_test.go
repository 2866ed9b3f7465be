package sampler

import (
	"math"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// Test traces are built from real OTLP encodings: each spec is encoded as an
// opentelemetry.proto.trace.v1.Span (and its Resource) with protowire, the
// same bytes the router's scanner hands the sampler.
// TestEncodedSpansMatchPdata checks the encoder against pdata.

// kv is an attribute; v is a string, int, int64, float64 or bool.
type kv struct {
	k string
	v any
}

// sp describes one span of a test trace.
type sp struct {
	name       string
	child      bool  // has a parent; otherwise a root span
	kind       int32 // SpanKind
	start, dur int64 // ns; end = start + dur (negative dur: clock skew)
	status     int32 // 0 unset, 1 ok, 2 error
	tracestate string
	service    string
	attrs      []kv
	res        []kv // extra resource attributes
}

func appendAnyValue(b []byte, v any) []byte {
	var inner []byte
	switch x := v.(type) {
	case string:
		inner = protowire.AppendTag(inner, 1, protowire.BytesType)
		inner = protowire.AppendString(inner, x)
	case bool:
		inner = protowire.AppendTag(inner, 2, protowire.VarintType)
		inner = protowire.AppendVarint(inner, protowire.EncodeBool(x))
	case int:
		inner = protowire.AppendTag(inner, 3, protowire.VarintType)
		inner = protowire.AppendVarint(inner, uint64(x))
	case int64:
		inner = protowire.AppendTag(inner, 3, protowire.VarintType)
		inner = protowire.AppendVarint(inner, uint64(x))
	case float64:
		inner = protowire.AppendTag(inner, 4, protowire.Fixed64Type)
		inner = protowire.AppendFixed64(inner, math.Float64bits(x))
	default:
		panic("unsupported attribute type")
	}
	return protowire.AppendBytes(b, inner)
}

// appendKVs appends attributes as repeated KeyValue field num.
func appendKVs(b []byte, num protowire.Number, attrs []kv) []byte {
	for _, a := range attrs {
		var e []byte
		e = protowire.AppendTag(e, 1, protowire.BytesType)
		e = protowire.AppendString(e, a.k)
		e = protowire.AppendTag(e, 2, protowire.BytesType)
		e = appendAnyValue(e, a.v)
		b = protowire.AppendTag(b, num, protowire.BytesType)
		b = protowire.AppendBytes(b, e)
	}
	return b
}

func encodeSpan(id TraceID, n int, s sp) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, id[:])
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte{1, 2, 3, 4, 5, 6, byte(n >> 8), byte(n) | 1})
	if s.tracestate != "" {
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendString(b, s.tracestate)
	}
	if s.child {
		b = protowire.AppendTag(b, 4, protowire.BytesType)
		b = protowire.AppendBytes(b, []byte{9, 9, 9, 9, 9, 9, 9, 9})
	}
	b = protowire.AppendTag(b, 5, protowire.BytesType)
	b = protowire.AppendString(b, s.name)
	if s.kind != 0 {
		b = protowire.AppendTag(b, 6, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(s.kind))
	}
	b = protowire.AppendTag(b, 7, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, uint64(s.start))
	b = protowire.AppendTag(b, 8, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, uint64(s.start+s.dur))
	b = appendKVs(b, 9, s.attrs)
	if s.status != 0 {
		var st []byte
		st = protowire.AppendTag(st, 3, protowire.VarintType)
		st = protowire.AppendVarint(st, uint64(s.status))
		b = protowire.AppendTag(b, 15, protowire.BytesType)
		b = protowire.AppendBytes(b, st)
	}
	return b
}

// scopeCache shares one *Scope per (service, resource attrs), as the scanner
// shares one per ScopeSpans.
type scopeCache struct {
	mu sync.Mutex
	m  map[string]*Scope
}

var scopes = scopeCache{m: map[string]*Scope{}}

func (c *scopeCache) get(service string, res []kv) *Scope {
	var res0 []byte
	if service != "" {
		res0 = appendKVs(res0, 1, []kv{{"service.name", service}})
	}
	res0 = appendKVs(res0, 1, res)
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.m[string(res0)]; s != nil {
		return s
	}
	s := &Scope{Resource: res0, Service: service}
	c.m[string(res0)] = s
	return s
}

// build makes a Trace of spans as the shard would buffer them.
func build(id TraceID, spans ...sp) *Trace {
	t := &Trace{}
	t.reset(id, time.Unix(1_700_000_000, 0))
	for i, s := range spans {
		if s.service == "" {
			s.service = "svc"
		}
		var f uint8
		if !s.child {
			f |= FlagRoot
		}
		if s.status == 2 {
			f |= FlagError
		}
		t.add(Span{
			Raw:   encodeSpan(id, i, s),
			Scope: scopes.get(s.service, s.res),
			Start: s.start,
			End:   s.start + s.dur,
			Flags: f,
		}, time.Unix(1_700_000_000, 0))
	}
	return t
}

// idWithRandomness returns a trace ID whose 56-bit randomness is r.
func idWithRandomness(r uint64) TraceID {
	var id TraceID
	id[0] = 1
	for i := 15; i >= 9; i-- {
		id[i] = byte(r)
		r >>= 8
	}
	return id
}

// fakeClock is a Clock tests move by hand; safe for concurrent use.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func checkVerdict(t *testing.T, got Verdict, want Decision, reason string) {
	t.Helper()
	if got.Decision != want || (reason != "" && got.Reason != reason) {
		t.Fatalf("verdict = %v %q (rate %v), want %v %q", got.Decision, got.Reason, got.SampleRate, want, reason)
	}
	if got.Decision == Keep && !(got.SampleRate >= 1) {
		t.Fatalf("kept with sample rate %v", got.SampleRate)
	}
}
