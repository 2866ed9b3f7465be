package archive

import (
	"fmt"

	"github.com/tailsift/tailsift/internal/otlpwire"
	"github.com/tailsift/tailsift/sampler"
	"google.golang.org/protobuf/encoding/protowire"
)

// scopeRow is what every span of one sampler.Scope shares, decoded once.
type scopeRow struct {
	service      string
	resAttrs     map[string]string
	scopeName    string
	scopeVersion string
	promote      []func(*Row) // resource attributes that fill promoted columns
}

// rowBuilder turns kept spans into Rows.
//
// It caches decoded scopes across traces: the router interns scopes, so the
// spans of every trace from one service instance share one *sampler.Scope,
// decoded here once. It also interns span names and attribute keys, which
// repeat on most rows, so a row allocates for its values and IDs only. Both
// caches are bounded and start over when full.
type rowBuilder struct {
	scopes  map[*sampler.Scope]*scopeRow
	strs    map[string]string // interned names and keys
	hex     []byte
	trace   sampler.TraceID // the trace being built,
	traceID string          // and its hex, shared by its rows
	red     *Redaction      // nil: none
}

// Bounds of the rowBuilder caches: a service fleet's distinct scopes, and
// span names plus attribute keys of a well-instrumented application.
const (
	maxCachedScopes  = 4096
	maxInternStrings = 16384
	maxInternLen     = 128 // longer strings are rarely repeated
)

func newRowBuilder(red *Redaction) *rowBuilder {
	return &rowBuilder{scopes: make(map[*sampler.Scope]*scopeRow), strs: make(map[string]string), red: red}
}

// intern returns b as a string, shared with earlier calls for the same bytes.
func (b *rowBuilder) intern(v []byte) string {
	if len(v) > maxInternLen {
		return string(v)
	}
	if s, ok := b.strs[string(v)]; ok {
		return s
	}
	if len(b.strs) >= maxInternStrings {
		clear(b.strs)
	}
	s := string(v)
	b.strs[s] = s
	return s
}

// appendRows appends one Row per span of k. A span whose bytes do not decode
// (they were validated by the scanner, so this means a bug or memory
// corruption) is returned as an error rather than archived half-empty.
func (b *rowBuilder) appendRows(dst []Row, k *sampler.Kept) ([]Row, error) {
	if len(b.scopes) >= maxCachedScopes {
		clear(b.scopes)
	}
	b.trace, b.traceID = k.ID, b.hexString(k.ID[:])
	for i := range k.Spans {
		sp := &k.Spans[i]
		sc, err := b.scope(sp.Scope)
		if err != nil {
			return dst, err
		}
		dst = append(dst, Row{})
		r := &dst[len(dst)-1]
		if err := b.decodeSpan(sp.Raw, r); err != nil {
			return dst[:len(dst)-1], err
		}
		r.ServiceName = sc.service
		r.ResourceAttributes = sc.resAttrs
		r.ScopeName, r.ScopeVersion = sc.scopeName, sc.scopeVersion
		for _, p := range sc.promote {
			p(r)
		}
		b.red.applyRow(r)
		r.TraceRootService = k.RootService
		r.TraceRootName = k.RootName
		r.TraceDurationNs = k.DurationNs
		r.TraceSpanCount = int64(k.SpanCount)
		r.TraceHasError = k.HasError
		r.SampleRate = k.SampleRate
		r.KeepReason = k.Reason
		r.DecidedAt = k.DecidedAt.UnixMicro()
		r.Late = k.Late
	}
	return dst, nil
}

func (b *rowBuilder) scope(s *sampler.Scope) (*scopeRow, error) {
	if sr, ok := b.scopes[s]; ok {
		return sr, nil
	}
	sr := &scopeRow{service: s.Service}
	if len(s.Resource) > 0 {
		sr.resAttrs = map[string]string{}
		err := otlpwire.RangeAttrs(s.Resource, 1, func(key []byte, v otlpwire.Value) bool {
			k := string(key)
			if f, ok := promotedString[k]; ok {
				val := v.String()
				sr.promote = append(sr.promote, func(r *Row) {
					if p := f(r); *p == nil {
						*p = &val
					}
				})
			}
			sr.resAttrs[k] = v.String()
			return true
		})
		if err != nil {
			return nil, fmt.Errorf("resource: %w", err)
		}
		b.red.apply(sr.resAttrs)
	}
	for m := s.Scope; len(m) > 0; {
		num, typ, n := protowire.ConsumeTag(m)
		if n < 0 {
			return nil, fmt.Errorf("instrumentation scope: %w", protowire.ParseError(n))
		}
		m = m[n:]
		if (num == 1 || num == 2) && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(m)
			if n < 0 {
				return nil, fmt.Errorf("instrumentation scope: %w", protowire.ParseError(n))
			}
			if num == 1 {
				sr.scopeName = string(v)
			} else {
				sr.scopeVersion = string(v)
			}
			m = m[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, m)
		if n < 0 {
			return nil, fmt.Errorf("instrumentation scope: %w", protowire.ParseError(n))
		}
		m = m[n:]
	}
	b.scopes[s] = sr
	return sr, nil
}

func (b *rowBuilder) hexString(id []byte) string {
	if len(id) == 0 {
		return ""
	}
	b.hex = otlpwire.AppendHex(b.hex[:0], id)
	return string(b.hex)
}

// decodeSpan fills the span's own columns from its encoded bytes.
//
//	message Span {
//	  bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; bytes parent_span_id = 4;
//	  string name = 5; SpanKind kind = 6; fixed64 start_time_unix_nano = 7; fixed64 end_time_unix_nano = 8;
//	  repeated KeyValue attributes = 9; uint32 dropped_attributes_count = 10;
//	  repeated Event events = 11; uint32 dropped_events_count = 12;
//	  repeated Link links = 13; uint32 dropped_links_count = 14; Status status = 15; fixed32 flags = 16;
//	}
func (b *rowBuilder) decodeSpan(raw []byte, r *Row) error {
	var si otlpwire.SpanInfo
	if err := otlpwire.ScanSpan(raw, &si); err != nil {
		return err
	}
	if string(si.TraceID) == string(b.trace[:]) {
		r.TraceID = b.traceID
	} else {
		r.TraceID = b.hexString(si.TraceID)
	}
	r.SpanID = b.hexString(si.SpanID)
	r.ParentSpanID = b.hexString(si.ParentID)
	r.Name = b.intern(si.Name)
	if int(si.Kind) < len(kindNames) && si.Kind >= 0 {
		r.Kind = kindNames[si.Kind]
	} else {
		r.Kind = kindNames[0]
	}
	if int(si.StatusCode) < len(statusNames) && si.StatusCode >= 0 {
		r.StatusCode = statusNames[si.StatusCode]
	} else {
		r.StatusCode = statusNames[0]
	}
	r.StartTimeUnixNano = int64(si.Start)
	r.EndTimeUnixNano = int64(si.End)
	r.StartTime = r.StartTimeUnixNano / 1e3
	if si.End > si.Start {
		r.DurationNs = int64(si.End - si.Start)
	}
	if err := b.addAttrs(raw, r); err != nil {
		return fmt.Errorf("span %s: %w", r.SpanID, err)
	}
	// Another pass for what the scanner skips: trace state, events,
	// links, status message. ScanSpan validated the framing.
	for m := raw; len(m) > 0; {
		num, typ, n := protowire.ConsumeTag(m)
		m = m[n:]
		if typ != protowire.BytesType {
			m = m[protowire.ConsumeFieldValue(num, typ, m):]
			continue
		}
		v, n := protowire.ConsumeBytes(m)
		m = m[n:]
		var err error
		switch num {
		case 3:
			r.TraceState = string(v)
		case 11:
			var e Event
			e, err = decodeEvent(v)
			r.Events = append(r.Events, e)
		case 13:
			var l Link
			l, err = b.decodeLink(v)
			r.Links = append(r.Links, l)
		case 15:
			r.StatusMessage, err = statusMessage(v)
		}
		if err != nil {
			return fmt.Errorf("span %s: %w", r.SpanID, err)
		}
	}
	return nil
}

// addAttrs stores the span's attributes (Span field 9) in their promoted
// columns or the row's map, in one pass over the encoded span.
func (b *rowBuilder) addAttrs(span []byte, r *Row) error {
	return otlpwire.RangeAttrs(span, 9, func(key []byte, v otlpwire.Value) bool {
		if f, ok := promotedString[string(key)]; ok {
			s := v.String()
			*f(r) = &s
			return true
		}
		if f, ok := promotedInt[string(key)]; ok {
			if n, ok := v.Int(); ok {
				*f(r) = &n
				return true
			}
		}
		if r.Attributes == nil {
			r.Attributes = make(map[string]string, 8)
		}
		r.Attributes[b.intern(key)] = v.String()
		return true
	})
}

func attrMap(msg []byte, field protowire.Number) (map[string]string, error) {
	var m map[string]string
	err := otlpwire.RangeAttrs(msg, field, func(key []byte, v otlpwire.Value) bool {
		if m == nil {
			m = make(map[string]string, 4)
		}
		m[string(key)] = v.String()
		return true
	})
	return m, err
}

// decodeEvent decodes
//
//	message Event { fixed64 time_unix_nano = 1; string name = 2; repeated KeyValue attributes = 3; uint32 dropped_attributes_count = 4; }
func decodeEvent(b []byte) (Event, error) {
	var e Event
	var err error
	if e.Attributes, err = attrMap(b, 3); err != nil {
		return e, err
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return e, protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.Fixed64Type:
			var t uint64
			t, n = protowire.ConsumeFixed64(b)
			e.TimeUnixNano = int64(t)
		case num == 2 && typ == protowire.BytesType:
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			e.Name = string(v)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return e, protowire.ParseError(n)
		}
		b = b[n:]
	}
	return e, nil
}

// decodeLink decodes
//
//	message Link { bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; repeated KeyValue attributes = 4; ... }
func (rb *rowBuilder) decodeLink(b []byte) (Link, error) {
	var l Link
	var err error
	if l.Attributes, err = attrMap(b, 4); err != nil {
		return l, err
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return l, protowire.ParseError(n)
		}
		b = b[n:]
		if typ == protowire.BytesType && num <= 3 {
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			switch num {
			case 1:
				l.TraceID = rb.hexString(v)
			case 2:
				l.SpanID = rb.hexString(v)
			case 3:
				l.TraceState = string(v)
			}
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return l, protowire.ParseError(n)
		}
		b = b[n:]
	}
	return l, nil
}

// statusMessage decodes Status.message (field 2).
func statusMessage(b []byte) (string, error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", protowire.ParseError(n)
		}
		b = b[n:]
		if num == 2 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return "", protowire.ParseError(n)
			}
			return string(v), nil
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return "", protowire.ParseError(n)
		}
		b = b[n:]
	}
	return "", nil
}
