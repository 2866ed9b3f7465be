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
	// TimesAt is where in Raw the start_time_unix_nano and end_time_unix_nano
	// fields begin when they are next to each other, in either order, each
	// a one-byte tag and 8 bytes (18 bytes in all), and are the fields Start
	// and End were read from; -1 otherwise. A buffer can leave them out and
	// put them back from Start and End.
	TimesAt int
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
			if _, n = bytes2(b); n == 0 {
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
			raw, n := bytes2(b)
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
// On error, what si holds is unspecified.
//
//	message Span {
//	  bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; bytes parent_span_id = 4;
//	  string name = 5; SpanKind kind = 6; fixed64 start_time_unix_nano = 7; fixed64 end_time_unix_nano = 8;
//	  repeated KeyValue attributes = 9; ... Status status = 15; fixed32 flags = 16;
//	}
//	message Status { reserved 1; string message = 2; StatusCode code = 3; }
func ScanSpan(raw []byte, si *SpanInfo) error {
	*si = SpanInfo{Raw: raw, TimesAt: -1}
	startAt, endAt := -1, -1 // where the fields Start and End were read from begin
	for i := 0; i < len(raw); {
		var num protowire.Number
		var val []byte
		var x uint64
		// Fast paths for the forms encoders write: one-byte tags, lengths
		// below 16 KiB. spanField takes every other form.
		switch c := raw[i]; {
		case c&7 == byte(protowire.BytesType) && c >= 1<<3 && c < 0x80 && i+1 < len(raw):
			j, l := i+2, int(raw[i+1])
			if l >= 0x80 {
				if j >= len(raw) || raw[j] >= 0x80 {
					break
				}
				l = l&0x7f | int(raw[j])<<7
				j++
			}
			if l > len(raw)-j || uint32(c>>3-6) <= 8-6 { // kind, start and end are not bytes
				break
			}
			num, val, i = protowire.Number(c>>3), raw[j:j+l], j+l
			goto store
		case c == 7<<3|byte(protowire.Fixed64Type) && i+9 <= len(raw):
			si.Start = binary.LittleEndian.Uint64(raw[i+1:])
			startAt = i
			i += 9
			continue
		case c == 8<<3|byte(protowire.Fixed64Type) && i+9 <= len(raw):
			si.End = binary.LittleEndian.Uint64(raw[i+1:])
			endAt = i
			i += 9
			continue
		case c == 6<<3|byte(protowire.VarintType) && i+1 < len(raw) && raw[i+1] < 0x80:
			si.Kind = int32(raw[i+1])
			i += 2
			continue
		}
		{
			n, err := 0, error(nil)
			if num, val, x, n, err = spanField(raw[i:]); err != nil {
				return err
			}
			i += n
		}
	store:
		switch num {
		case 1:
			si.TraceID = val
		case 2:
			si.SpanID = val
		case 4:
			si.ParentID = val
		case 5:
			si.Name = val
		case 6:
			si.Kind = int32(x)
		case 7:
			si.Start, startAt = x, -1 // not in the one-byte-tag form
		case 8:
			si.End, endAt = x, -1
		case 15:
			code, err := statusCode(val)
			if err != nil {
				return err
			}
			si.StatusCode = code
		}
	}
	if startAt >= 0 && endAt >= 0 && (endAt == startAt+9 || startAt == endAt+9) {
		si.TimesAt = min(startAt, endAt)
	}
	return nil
}

// spanField decodes one field of a Span in any form, for ScanSpan: its
// number, its value (val for a length-delimited field ScanSpan reads, x for
// a number) and its size. The wire type of a field ScanSpan reads is
// checked before its value, so a mismatch is reported as such.
func spanField(b []byte) (num protowire.Number, val []byte, x uint64, size int, err error) {
	num, typ, n := consumeTag(b)
	if n < 0 {
		return 0, nil, 0, 0, malformed("Span", protowire.ParseError(n))
	}
	size = n
	b = b[n:]
	want := protowire.Type(-1) // a field ScanSpan skips
	switch num {
	case 1, 2, 4, 5, 15:
		want = protowire.BytesType
	case 6:
		want = protowire.VarintType
	case 7, 8:
		want = protowire.Fixed64Type
	}
	switch {
	case want < 0:
		n = consumeFieldValue(num, typ, b)
	case typ != want:
		return 0, nil, 0, 0, malformedField("Span", num, typ)
	case typ == protowire.BytesType:
		val, n = consumeBytes(b)
	case typ == protowire.VarintType:
		x, n = consumeVarint(b)
	default:
		x, n = consumeFixed64(b)
	}
	if n < 0 {
		return 0, nil, 0, 0, malformed("Span", protowire.ParseError(n))
	}
	return num, val, x, size + n, nil
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
		} else {
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
