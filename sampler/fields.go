package sampler

import (
	"time"
	"unsafe"

	"github.com/tailsift/tailsift/internal/otlpwire"
	"google.golang.org/protobuf/encoding/protowire"
)

// Fields of the encoded messages the policies read lazily, from
// opentelemetry/proto/trace/v1/trace.proto and resource/v1/resource.proto:
//
//	message Span     { ... string trace_state = 3; ... string name = 5; SpanKind kind = 6; ...
//	                   repeated KeyValue attributes = 9; ... }
//	message Resource { repeated KeyValue attributes = 1; ... }
//
// The scanner already put what every trace needs (root, error, times,
// service.name) into Span; everything else is read from the bytes only when a
// configured policy asks, so a chain of error + probabilistic never pays for
// it.
const (
	fieldSpanTraceID    protowire.Number = 1
	fieldSpanTraceState protowire.Number = 3
	fieldSpanName       protowire.Number = 5
	fieldSpanKind       protowire.Number = 6
	fieldSpanAttrs      protowire.Number = 9
	fieldResourceAttrs  protowire.Number = 1
)

// Attribute keys of the OpenTelemetry semantic conventions that the policies
// know by name. The older http.* names are still emitted by many SDKs.
const (
	attrHTTPStatus    = "http.response.status_code"
	attrHTTPStatusOld = "http.status_code"
	attrHTTPMethod    = "http.request.method"
	attrHTTPMethodOld = "http.method"
	attrHTTPRoute     = "http.route"
	attrGRPCStatus    = "rpc.grpc.status_code"
)

// lastField returns the value of the last occurrence of the length-delimited
// field num in msg (protobuf's last-one-wins rule for singular fields), or
// nil. It skips everything else by length, so it costs one pass over the tags.
func lastField(msg []byte, num protowire.Number) []byte {
	var out []byte
	for len(msg) > 0 {
		n, typ, l := protowire.ConsumeTag(msg)
		if l < 0 {
			return out
		}
		msg = msg[l:]
		if n == num && typ == protowire.BytesType {
			v, l := protowire.ConsumeBytes(msg)
			if l < 0 {
				return out
			}
			out = v
			msg = msg[l:]
			continue
		}
		l = protowire.ConsumeFieldValue(n, typ, msg)
		if l < 0 {
			return out
		}
		msg = msg[l:]
	}
	return out
}

// Name returns the span's name, aliasing Raw. It walks the encoded span; call
// it when a policy needs the name, not per buffered span.
func (s *Span) Name() []byte { return lastField(s.Raw, fieldSpanName) }

// TraceState returns the span's W3C tracestate header value, aliasing Raw.
func (s *Span) TraceState() []byte { return lastField(s.Raw, fieldSpanTraceState) }

// Kind returns the span's SpanKind (0 unspecified, 1 internal, 2 server,
// 3 client, 4 producer, 5 consumer).
func (s *Span) Kind() int32 {
	var kind int32
	for b := s.Raw; len(b) > 0; {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return kind
		}
		b = b[l:]
		if n == fieldSpanKind && typ == protowire.VarintType {
			v, l := protowire.ConsumeVarint(b)
			if l < 0 {
				return kind
			}
			kind = int32(v)
			b = b[l:]
			continue
		}
		l = protowire.ConsumeFieldValue(n, typ, b)
		if l < 0 {
			return kind
		}
		b = b[l:]
	}
	return kind
}

// Attr returns the span attribute key. Str in the value aliases Raw.
func (s *Span) Attr(key string) (otlpwire.Value, bool) {
	return otlpwire.FindAttr(s.Raw, fieldSpanAttrs, key)
}

// ResourceAttr returns the attribute key of the resource the span was sent
// under.
func (s *Span) ResourceAttr(key string) (otlpwire.Value, bool) {
	if s.Scope == nil {
		return otlpwire.Value{}, false
	}
	return otlpwire.FindAttr(s.Scope.Resource, fieldResourceAttrs, key)
}

// httpStatus returns the span's HTTP response status code, under either the
// current or the pre-1.21 semantic-convention name, in one pass over the
// attributes.
func (s *Span) httpStatus() (int64, bool) {
	var code int64
	var found bool
	_ = otlpwire.RangeAttrs(s.Raw, fieldSpanAttrs, func(k []byte, v otlpwire.Value) bool {
		if string(k) == attrHTTPStatus || string(k) == attrHTTPStatusOld {
			code, found = v.Int()
		}
		return true
	})
	return code, found
}

var kindNames = [...]string{"unspecified", "internal", "server", "client", "producer", "consumer"}

// KindName is the lower-case name of a SpanKind, as rules and keys spell it.
func KindName(k int32) string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unspecified"
}

// keySpan is the span that stands for the whole trace in keys and per-route
// settings: the root, or the first span buffered when the root is missing.
func (t *Trace) keySpan() *Span {
	if r := t.Root(); r != nil {
		return r
	}
	if len(t.Spans) > 0 {
		return &t.Spans[0]
	}
	return nil
}

// appendRoute appends the trace's route: the root span's HTTP method and
// http.route ("POST /cart"), or the route alone without a method, or the root
// span's name when it has no http.route (HTTP server spans are named
// "{method} {route}" by convention, so the two usually agree). Nothing is
// appended for a trace without a root: a child's route says nothing about
// the request.
func (t *Trace) appendRoute(dst []byte) []byte {
	r := t.Root()
	if r == nil {
		return dst
	}
	var method, route []byte
	_ = otlpwire.RangeAttrs(r.Raw, fieldSpanAttrs, func(k []byte, v otlpwire.Value) bool {
		switch string(k) {
		case attrHTTPRoute:
			if v.Type == otlpwire.ValueString {
				route = v.Str
			}
		case attrHTTPMethod, attrHTTPMethodOld:
			if v.Type == otlpwire.ValueString {
				method = v.Str
			}
		}
		return true
	})
	if route == nil {
		return append(dst, r.Name()...)
	}
	if method != nil {
		dst = append(dst, method...)
		dst = append(dst, ' ')
	}
	return append(dst, route...)
}

// Route returns the trace's route as appendRoute builds it. It allocates;
// the policies use appendRoute into their own buffers.
func (t *Trace) Route() string { return string(t.appendRoute(nil)) }

// appendStatusClass appends the trace's status class: "1xx".."5xx" from the
// root span's HTTP status code when it has one, otherwise "error" when any
// span has status ERROR and "ok" when none does. A class, not the code, keeps
// key cardinality small.
func (t *Trace) appendStatusClass(dst []byte) []byte {
	if r := t.Root(); r != nil {
		if code, ok := r.httpStatus(); ok && code >= 100 && code < 600 {
			return append(dst, byte('0'+code/100), 'x', 'x')
		}
	}
	if t.HasError() {
		return append(dst, "error"...)
	}
	return append(dst, "ok"...)
}

// Extent is the time from the earliest span start to the latest span end,
// whether or not the root has arrived; 0 when clocks are so skewed that the
// latest end is before the earliest start.
func (t *Trace) Extent() time.Duration {
	if len(t.Spans) == 0 || t.maxEnd < t.minStart {
		return 0
	}
	return time.Duration(t.maxEnd - t.minStart)
}

// stringBytes views s as bytes without copying; the result must not be
// modified. Used to hand service names to matchers that take []byte.
func stringBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }
