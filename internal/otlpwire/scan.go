package otlpwire

import (
	"encoding/binary"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// ErrMalformed is wrapped by every error Scan returns for bytes that are not
// a valid encoding.
var ErrMalformed = errors.New("malformed OTLP protobuf")

// Status codes of opentelemetry.proto.trace.v1.Status.StatusCode.
const (
	StatusUnset = 0
	StatusOK    = 1
	StatusError = 2
)

// ScopeInfo is what Scan reports once per ScopeSpans: the encoded resource and
// instrumentation scope that every following span belongs to. The slices alias
// the scanned buffer.
type ScopeInfo struct {
	Resource          []byte // encoded Resource, nil when absent
	ResourceSchemaURL []byte
	Scope             []byte // encoded InstrumentationScope, nil when absent
	ScopeSchemaURL    []byte
}

// SpanInfo is what Scan reports per span. The slices alias the scanned buffer
// and are valid only during the callback unless the caller keeps the buffer.
type SpanInfo struct {
	Raw        []byte // the whole encoded Span message
	TraceID    []byte // 16 bytes when valid
	SpanID     []byte // 8 bytes when valid
	ParentID   []byte // empty for a root span
	Name       []byte
	Start, End uint64
	Kind       int32
	StatusCode int32
}

// Visitor receives what Scan finds. Scope is called before the spans of each
// ScopeSpans; Span once per span, in wire order.
type Visitor interface {
	Scope(s *ScopeInfo)
	Span(s *SpanInfo)
}

// Scan walks an encoded TracesData (wire-identical to
// ExportTraceServiceRequest) and reports every span to v.
//
//	message TracesData   { repeated ResourceSpans resource_spans = 1; }
//	message ResourceSpans{ Resource resource = 1; repeated ScopeSpans scope_spans = 2; string schema_url = 3; }
//	message ScopeSpans   { InstrumentationScope scope = 1; repeated Span spans = 2; string schema_url = 3; }
//
// Scan validates the structure it walks (tags, lengths, wire types of the
// fields it reads) and returns an error wrapping ErrMalformed at the first
// fault. It may already have reported spans by then: callers that must not
// act on part of a bad message collect first and commit after a nil error.
// Span contents beyond the fields in SpanInfo are not validated here.
//
// Scan needs scratch space that escapes to the heap through v: two small
// allocations per call. A caller scanning many messages keeps a Scratch and
// calls its Scan, which allocates nothing.
func Scan(buf []byte, v Visitor) error {
	var s Scratch
	return s.Scan(buf, v)
}

// Scratch is the reusable state of a scan. The zero value is ready; one
// Scratch must not be used by two scans at once.
type Scratch struct {
	si SpanInfo
	sc ScopeInfo
}

// Scan is the package's Scan using s for its scratch space.
func (s *Scratch) Scan(buf []byte, v Visitor) error {
	si, sc := &s.si, &s.sc
	for len(buf) > 0 {
		num, typ, n := consumeTag(buf)
		if n < 0 {
			return malformed("TracesData", protowire.ParseError(n))
		}
		buf = buf[n:]
		if num == 1 && typ == protowire.BytesType {
			rs, n := consumeBytes(buf)
			if n < 0 {
				return malformed("TracesData.resource_spans", protowire.ParseError(n))
			}
			buf = buf[n:]
			if err := scanResourceSpans(rs, v, sc, si); err != nil {
				return err
			}
			continue
		}
		n = consumeFieldValue(num, typ, buf)
		if n < 0 {
			return malformed("TracesData", protowire.ParseError(n))
		}
		buf = buf[n:]
	}
	return nil
}

func scanResourceSpans(buf []byte, v Visitor, sc *ScopeInfo, si *SpanInfo) error {
	// The resource and schema_url may follow the scope_spans on the wire, so
	// find them first, then walk the scope_spans, from the first one on.
	var resource, schema []byte
	first := -1
	for b := buf; len(b) > 0; {
		at := len(buf) - len(b)
		num, typ, n := consumeTag(b)
		if n < 0 {
			return malformed("ResourceSpans", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			resource, n = consumeBytes(b)
		case num == 3 && typ == protowire.BytesType:
			schema, n = consumeBytes(b)
		case num == 2 && typ == protowire.BytesType:
			if first < 0 {
				first = at
			}
			n = consumeFieldValue(num, typ, b)
		default:
			n = consumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return malformed("ResourceSpans", protowire.ParseError(n))
		}
		b = b[n:]
	}
	if first < 0 {
		return nil
	}
	// The structure is valid: this walk cannot fail.
	for b := buf[first:]; len(b) > 0; {
		num, typ, n := consumeTag(b)
		b = b[n:]
		if num == 2 && typ == protowire.BytesType {
			ss, n := consumeBytes(b)
			b = b[n:]
			*sc = ScopeInfo{Resource: resource, ResourceSchemaURL: schema}
			if err := scanScopeSpans(ss, v, sc, si); err != nil {
				return err
			}
			continue
		}
		b = b[consumeFieldValue(num, typ, b):]
	}
	return nil
}

func scanScopeSpans(buf []byte, v Visitor, sc *ScopeInfo, si *SpanInfo) error {
	first := -1
	for b := buf; len(b) > 0; {
		at := len(buf) - len(b)
		num, typ, n := tag1(b)
		if n == 0 {
			if num, typ, n = consumeTag(b); n < 0 {
				return malformed("ScopeSpans", protowire.ParseError(n))
			}
		}
		b = b[n:]
		switch {
		case num == 2 && typ == protowire.BytesType:
			if first < 0 {
				first = at
			}
			if n = skip1(typ, b); n == 0 {
				n = consumeFieldValue(num, typ, b)
			}
		case num == 1 && typ == protowire.BytesType:
			sc.Scope, n = consumeBytes(b)
		case num == 3 && typ == protowire.BytesType:
			sc.ScopeSchemaURL, n = consumeBytes(b)
		default:
			n = consumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return malformed("ScopeSpans", protowire.ParseError(n))
		}
		b = b[n:]
	}
	if first < 0 {
		return nil
	}
	v.Scope(sc)
	// The structure is valid: this walk cannot fail.
	for b := buf[first:]; len(b) > 0; {
		num, typ, n := tag1(b)
		if n == 0 {
			num, typ, n = consumeTag(b)
		}
		b = b[n:]
		if num == 2 && typ == protowire.BytesType {
			raw, n := bytes1(b)
			if n == 0 {
				raw, n = consumeBytes(b)
			}
			b = b[n:]
			if err := ScanSpan(raw, si); err != nil {
				return err
			}
			v.Span(si)
			continue
		}
		b = b[consumeFieldValue(num, typ, b):]
	}
	return nil
}

// ScanSpan reads the routing and sampling fields of one encoded Span into si.
//
//	message Span {
//	  bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; bytes parent_span_id = 4;
//	  string name = 5; SpanKind kind = 6; fixed64 start_time_unix_nano = 7; fixed64 end_time_unix_nano = 8;
//	  repeated KeyValue attributes = 9; ... Status status = 15; fixed32 flags = 16;
//	}
//	message Status { reserved 1; string message = 2; StatusCode code = 3; }
func ScanSpan(raw []byte, si *SpanInfo) error {
	*si = SpanInfo{Raw: raw}
	for b := raw; len(b) > 0; {
		num, typ, n := tag1(b)
		if n == 0 {
			if num, typ, n = consumeTag(b); n < 0 {
				return malformed("Span", protowire.ParseError(n))
			}
		}
		b = b[n:]
		switch num {
		case 1, 2, 4, 5, 15:
			if typ != protowire.BytesType {
				return malformedField("Span", num, typ)
			}
			val, n := bytes1(b)
			if n == 0 {
				if val, n = consumeBytes(b); n < 0 {
					return malformed("Span", protowire.ParseError(n))
				}
			}
			b = b[n:]
			switch num {
			case 1:
				si.TraceID = val
			case 2:
				si.SpanID = val
			case 4:
				si.ParentID = val
			case 5:
				si.Name = val
			case 15:
				code, err := statusCode(val)
				if err != nil {
					return err
				}
				si.StatusCode = code
			}
			continue
		case 6:
			if typ != protowire.VarintType {
				return malformedField("Span", num, typ)
			}
			var k uint64
			if len(b) > 0 && b[0] < 0x80 {
				k, n = uint64(b[0]), 1
			} else {
				k, n = consumeVarint(b)
			}
			si.Kind = int32(k)
		case 7, 8:
			if typ != protowire.Fixed64Type {
				return malformedField("Span", num, typ)
			}
			var t uint64
			if len(b) >= 8 {
				t, n = binary.LittleEndian.Uint64(b), 8
			} else {
				t, n = consumeFixed64(b)
			}
			if num == 7 {
				si.Start = t
			} else {
				si.End = t
			}
		default:
			if n = skip1(typ, b); n == 0 {
				n = consumeFieldValue(num, typ, b)
			}
		}
		if n < 0 {
			return malformed("Span", protowire.ParseError(n))
		}
		b = b[n:]
	}
	return nil
}

func statusCode(b []byte) (int32, error) {
	var code int32
	for len(b) > 0 {
		num, typ, n := tag1(b)
		if n == 0 {
			if num, typ, n = consumeTag(b); n < 0 {
				return 0, malformed("Status", protowire.ParseError(n))
			}
		}
		b = b[n:]
		if num == 3 && typ == protowire.VarintType {
			var c uint64
			if len(b) > 0 && b[0] < 0x80 {
				c, n = uint64(b[0]), 1
			} else {
				c, n = consumeVarint(b)
			}
			code = int32(c)
		} else if n = skip1(typ, b); n == 0 {
			n = consumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return 0, malformed("Status", protowire.ParseError(n))
		}
		b = b[n:]
	}
	return code, nil
}

func malformed(msg string, err error) error {
	return fmt.Errorf("%w: %s: %v", ErrMalformed, msg, err)
}

func malformedField(msg string, num protowire.Number, typ protowire.Type) error {
	return fmt.Errorf("%w: %s field %d has wire type %d", ErrMalformed, msg, num, typ)
}
