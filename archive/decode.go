package archive

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"

	"github.com/tailsift/tailsift/internal/otlpwire"
	"github.com/tailsift/tailsift/sampler"
	"google.golang.org/protobuf/encoding/protowire"
)

// rowBuilder decodes kept spans into a rowBatch.
//
// It caches decoded scopes across traces: the router interns scopes, so the
// spans of every trace from one service instance share one *sampler.Scope,
// decoded here once. The cache is bounded and starts over when full.
type rowBuilder struct {
	scopes map[*sampler.Scope]*scopeRow
	red    *Redaction // nil: none
	attrs  []kv       // a span's attributes while it is decoded
	m      *Metrics
}

// maxCachedScopes bounds the scope cache: a service fleet's distinct scopes.
const maxCachedScopes = 4096

// newRowBuilder returns a rowBuilder that counts repaired strings in m (nil:
// unregistered metrics).
func newRowBuilder(red *Redaction, m *Metrics) *rowBuilder {
	if m == nil {
		m = NewMetrics(nil)
	}
	return &rowBuilder{scopes: make(map[*sampler.Scope]*scopeRow), red: red, m: m}
}

// appendTrace adds one row per span of k to dst. A span whose bytes do not
// decode (they were validated by the scanner, so this means a bug or memory
// corruption) is returned as an error rather than archived half-empty, and
// none of the trace's rows are added.
func (b *rowBuilder) appendTrace(dst *rowBatch, k *sampler.Kept) error {
	if len(b.scopes) >= maxCachedScopes {
		clear(b.scopes)
	}
	m := dst.mark()
	invalid := dst.invalidUTF8
	defer func() {
		if n := dst.invalidUTF8 - invalid; n > 0 {
			b.m.invalidUTF8.Add(float64(n))
		}
	}()
	trace := uint32(len(dst.traces))
	dst.traces = append(dst.traces, traceRow{
		rootService: dst.addString(k.RootService),
		rootName:    dst.addString(k.RootName),
		reason:      dst.addString(k.Reason),
		durationNs:  k.DurationNs,
		spanCount:   int64(k.SpanCount),
		decidedAt:   k.DecidedAt.UnixMicro(),
		sampleRate:  k.SampleRate,
		hasError:    k.HasError,
		late:        k.Late,
	})
	id := dst.addHex(k.ID[:]) // shared by the rows of spans that carry k.ID
	for i := range k.Spans {
		sp := &k.Spans[i]
		sc, err := b.scope(dst, sp.Scope)
		if err == nil {
			err = b.appendSpan(dst, sp.Raw, sc, trace, k.ID, id)
		}
		if err != nil {
			dst.rollback(m)
			return err
		}
	}
	return nil
}

// scope returns the decoded scope s, whose strings are repaired as dst
// repairs its own (rowBatch.add) and counted there.
func (b *rowBuilder) scope(dst *rowBatch, s *sampler.Scope) (*scopeRow, error) {
	if sr, ok := b.scopes[s]; ok {
		return sr, nil
	}
	sr := &scopeRow{}
	if len(s.Resource) > 0 {
		err := otlpwire.RangeAttrs(s.Resource, 1, func(key []byte, v otlpwire.Value) bool {
			val := dst.validText(v.AppendString(nil))
			if string(key) == "service.name" {
				// Rendered whatever its type; the last one, as the router
				// reads it.
				sr.service = val
			}
			if slot, ok := promotedSlot[string(key)]; ok {
				sr.promote = append(sr.promote, promotion{slot: slot, val: val})
			}
			sr.res = append(sr.res, kvBytes{key: bytes.Clone(dst.validText(key)), val: val})
			return true
		})
		if err != nil {
			return nil, fmt.Errorf("resource: %w", err)
		}
	}
	if sr.service == nil {
		sr.service = dst.validText([]byte(s.Service))
	}
	if len(sr.res) > 0 {
		sr.res = b.red.resource(sortKVBytes(sr.res))
		for _, a := range sr.res {
			sr.resSize += len(a.key) + len(a.val) + 8
		}
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
				sr.scopeName = bytes.Clone(dst.validText(v))
			} else {
				sr.scopeVersion = bytes.Clone(dst.validText(v))
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

// appendSpan decodes one span into a row of dst, in one pass over its
// bytes.
//
//	message Span {
//	  bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; bytes parent_span_id = 4;
//	  string name = 5; SpanKind kind = 6; fixed64 start_time_unix_nano = 7; fixed64 end_time_unix_nano = 8;
//	  repeated KeyValue attributes = 9; uint32 dropped_attributes_count = 10;
//	  repeated Event events = 11; uint32 dropped_events_count = 12;
//	  repeated Link links = 13; uint32 dropped_links_count = 14; Status status = 15; fixed32 flags = 16;
//	}
//
// The fields the router's scanner reads (otlpwire.ScanSpan) are checked as
// it checks them; attributes, events and links of another wire type than
// bytes are skipped, as otlpwire.RangeAttrs skips them.
func (b *rowBuilder) appendSpan(dst *rowBatch, raw []byte, sc *scopeRow, trace uint32, id sampler.TraceID, hexID ref) error {
	dst.spans = append(dst.spans, spanRow{scope: sc, trace: trace})
	r := &dst.spans[len(dst.spans)-1]
	var traceID, spanID []byte
	var start, end uint64
	var kind, status int32
	attrs := b.attrs[:0]
	r.events.lo, r.links.lo = uint32(len(dst.events)), uint32(len(dst.links))
	for m := raw; len(m) > 0; {
		num, typ, n := otlpwire.ConsumeTag(m)
		if n < 0 {
			return malformed("Span", protowire.ParseError(n))
		}
		m = m[n:]
		var err error
		switch num {
		case 1, 2, 3, 4, 5, 9, 11, 13, 15:
			if typ != protowire.BytesType {
				if num == 3 || num >= 9 && num != 15 {
					n = protowire.ConsumeFieldValue(num, typ, m)
					break
				}
				return malformed("Span", fmt.Errorf("field %d has wire type %d", num, typ))
			}
			var v []byte
			if v, n = otlpwire.ConsumeBytes(m); n < 0 {
				break
			}
			switch num {
			case 1:
				traceID = v
			case 2:
				spanID = v
			case 3:
				r.traceState = dst.add(v)
			case 4:
				// An all-zero parent is no parent (pdata reads it so):
				// archived as '', the root spans' parent_span_id.
				if len(bytes.TrimLeft(v, "\x00")) > 0 {
					r.parentID = dst.addHex(v)
				}
			case 5:
				r.name = dst.add(v)
			case 9:
				var key []byte
				var val otlpwire.Value
				if key, val, err = otlpwire.DecodeKeyValue(v); err == nil {
					attrs = b.spanAttr(dst, r, attrs, key, val)
				}
			case 11:
				err = b.appendEvent(dst, v)
			case 13:
				err = b.appendLink(dst, v)
			case 15:
				var msg ref
				if status, msg, err = decodeStatus(dst, v); err == nil {
					r.statusMessage = msg
				}
			}
		case 6:
			if typ != protowire.VarintType {
				return malformed("Span", fmt.Errorf("field %d has wire type %d", num, typ))
			}
			var k uint64
			k, n = protowire.ConsumeVarint(m)
			kind = int32(k)
		case 7, 8:
			if typ != protowire.Fixed64Type {
				return malformed("Span", fmt.Errorf("field %d has wire type %d", num, typ))
			}
			var t uint64
			if t, n = protowire.ConsumeFixed64(m); num == 7 {
				start = t
			} else {
				end = t
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, m)
		}
		if n < 0 {
			return malformed("Span", protowire.ParseError(n))
		}
		if err != nil {
			return fmt.Errorf("span %x: %w", spanID, err)
		}
		m = m[n:]
	}
	b.attrs = attrs
	r.events.hi, r.links.hi = uint32(len(dst.events)), uint32(len(dst.links))
	if string(traceID) == string(id[:]) {
		r.traceID = hexID
	} else {
		r.traceID = dst.addHex(traceID)
	}
	r.spanID = dst.addHex(spanID)
	r.kind, r.status = dst.addEnum(kindNames[:], kind), dst.addEnum(statusNames[:], status)
	r.start, r.end = int64(start), int64(end)
	r.startMicros = r.start / 1e3
	if end > start {
		r.duration = int64(end - start)
	}
	lo := len(dst.kvs)
	dst.kvs = append(dst.kvs, attrs...)
	r.attrs = b.red.kvs(dst, dst.sortKVs(lo))
	for _, p := range sc.promote {
		if r.has&(1<<p.slot) == 0 {
			r.promoted[p.slot] = dst.add(p.val)
			r.has |= 1 << p.slot
		}
	}
	b.red.promoted(dst, r)
	dst.size += dst.rowSize(r)
	return nil
}

// spanAttr stores a span attribute in its promoted column, or appends it to
// attrs, the row's map.
func (b *rowBuilder) spanAttr(dst *rowBatch, r *spanRow, attrs []kv, key []byte, v otlpwire.Value) []kv {
	if slot, ok := promotedSlot[string(key)]; ok {
		r.promoted[slot] = dst.addValue(v)
		r.has |= 1 << slot
		return attrs
	}
	if isHTTPStatusKey(key) {
		if n, ok := v.Int(); ok {
			r.httpStatus = n
			r.has |= hasHTTPStatus
			return attrs
		}
	}
	return append(attrs, kv{key: dst.add(key), val: dst.addValue(v)})
}

func malformed(msg string, err error) error {
	return fmt.Errorf("%w: %s: %v", otlpwire.ErrMalformed, msg, err)
}

// appendMapAttrs stores the attributes in field of msg as a map: sorted by
// key, the last of duplicate keys kept, redacted.
func (b *rowBuilder) appendMapAttrs(dst *rowBatch, msg []byte, field protowire.Number) (span32, error) {
	lo := len(dst.kvs)
	err := otlpwire.RangeAttrs(msg, field, func(key []byte, v otlpwire.Value) bool {
		dst.kvs = append(dst.kvs, kv{key: dst.add(key), val: dst.addValue(v)})
		return true
	})
	return b.red.kvs(dst, dst.sortKVs(lo)), err
}

// appendEvent decodes
//
//	message Event { fixed64 time_unix_nano = 1; string name = 2; repeated KeyValue attributes = 3; uint32 dropped_attributes_count = 4; }
func (b *rowBuilder) appendEvent(dst *rowBatch, msg []byte) error {
	var e eventRow
	var err error
	if e.attrs, err = b.appendMapAttrs(dst, msg, 3); err != nil {
		return err
	}
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return protowire.ParseError(n)
		}
		msg = msg[n:]
		switch {
		case num == 1 && typ == protowire.Fixed64Type:
			var t uint64
			t, n = protowire.ConsumeFixed64(msg)
			e.time = int64(t)
		case num == 2 && typ == protowire.BytesType:
			var v []byte
			v, n = protowire.ConsumeBytes(msg)
			e.name = dst.add(v)
		default:
			n = protowire.ConsumeFieldValue(num, typ, msg)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		msg = msg[n:]
	}
	dst.events = append(dst.events, e)
	return nil
}

// appendLink decodes
//
//	message Link { bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; repeated KeyValue attributes = 4; ... }
func (b *rowBuilder) appendLink(dst *rowBatch, msg []byte) error {
	var l linkRow
	var err error
	if l.attrs, err = b.appendMapAttrs(dst, msg, 4); err != nil {
		return err
	}
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return protowire.ParseError(n)
		}
		msg = msg[n:]
		if typ == protowire.BytesType && num <= 3 {
			var v []byte
			v, n = protowire.ConsumeBytes(msg)
			switch num {
			case 1:
				l.traceID = dst.addHex(v)
			case 2:
				l.spanID = dst.addHex(v)
			case 3:
				l.traceState = dst.add(v)
			}
		} else {
			n = protowire.ConsumeFieldValue(num, typ, msg)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		msg = msg[n:]
	}
	dst.links = append(dst.links, l)
	return nil
}

// decodeStatus decodes
//
//	message Status { reserved 1; string message = 2; StatusCode code = 3; }
func decodeStatus(dst *rowBatch, b []byte) (code int32, msg ref, err error) {
	seenMsg := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, ref{}, malformed("Status", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == 2 && typ == protowire.BytesType:
			var v []byte
			if v, n = protowire.ConsumeBytes(b); n >= 0 && !seenMsg {
				msg, seenMsg = dst.add(v), true
			}
		case num == 3 && typ == protowire.VarintType:
			var c uint64
			c, n = protowire.ConsumeVarint(b)
			code = int32(c)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return 0, ref{}, malformed("Status", protowire.ParseError(n))
		}
		b = b[n:]
	}
	return code, msg, nil
}

// addHex stores id as lowercase hex.
func (b *rowBatch) addHex(id []byte) ref {
	off := len(b.arena)
	b.arena = slices.Grow(b.arena, 2*len(id))[:off+2*len(id)]
	hex.Encode(b.arena[off:], id)
	return b.refFrom(off)
}

// addEnum stores the name of enum value v, or its number for a value names
// does not have (from a newer OTLP version, or a broken producer), so that
// the value is not lost.
func (b *rowBatch) addEnum(names []string, v int32) ref {
	if v >= 0 && int(v) < len(names) {
		return b.addString(names[v])
	}
	off := len(b.arena)
	b.arena = strconv.AppendInt(b.arena, int64(v), 10)
	return b.refFrom(off)
}

// addValue stores an attribute value's text form. Only a string value can
// hold invalid UTF-8: the JSON of arrays and kvlists is repaired as it is
// rendered.
func (b *rowBatch) addValue(v otlpwire.Value) ref {
	if v.Type == otlpwire.ValueString {
		return b.add(v.Str)
	}
	off := len(b.arena)
	b.arena = v.AppendString(b.arena)
	return b.refFrom(off)
}

// appendRow adds a row read back from an archive file (compaction).
func (b *rowBatch) appendRow(r *Row) {
	sc := &scopeRow{service: []byte(r.ServiceName), scopeName: []byte(r.ScopeName), scopeVersion: []byte(r.ScopeVersion)}
	for k, v := range r.ResourceAttributes {
		sc.res = append(sc.res, kvBytes{key: []byte(k), val: []byte(v)})
		sc.resSize += len(k) + len(v) + 8
	}
	sc.res = sortKVBytes(sc.res)
	trace := uint32(len(b.traces))
	b.traces = append(b.traces, traceRow{
		rootService: b.addString(r.TraceRootService),
		rootName:    b.addString(r.TraceRootName),
		reason:      b.addString(r.KeepReason),
		durationNs:  r.TraceDurationNs,
		spanCount:   r.TraceSpanCount,
		decidedAt:   r.DecidedAt,
		sampleRate:  r.SampleRate,
		hasError:    r.TraceHasError,
		late:        r.Late,
	})
	s := spanRow{
		scope:         sc,
		trace:         trace,
		traceID:       b.addString(r.TraceID),
		spanID:        b.addString(r.SpanID),
		parentID:      b.addString(r.ParentSpanID),
		traceState:    b.addString(r.TraceState),
		name:          b.addString(r.Name),
		kind:          b.addString(r.Kind),
		status:        b.addString(r.StatusCode),
		statusMessage: b.addString(r.StatusMessage),
		start:         r.StartTimeUnixNano,
		end:           r.EndTimeUnixNano,
		startMicros:   r.StartTime,
		duration:      r.DurationNs,
	}
	for slot, v := range r.promoted() {
		if v != nil {
			s.promoted[slot] = b.addString(*v)
			s.has |= 1 << slot
		}
	}
	if r.HTTPResponseStatusCode != nil {
		s.httpStatus = *r.HTTPResponseStatusCode
		s.has |= hasHTTPStatus
	}
	s.attrs = b.addMap(r.Attributes)
	s.events.lo = uint32(len(b.events))
	for _, e := range r.Events {
		b.events = append(b.events, eventRow{time: e.TimeUnixNano, name: b.addString(e.Name), attrs: b.addMap(e.Attributes)})
	}
	s.events.hi = uint32(len(b.events))
	s.links.lo = uint32(len(b.links))
	for _, l := range r.Links {
		b.links = append(b.links, linkRow{traceID: b.addString(l.TraceID), spanID: b.addString(l.SpanID),
			traceState: b.addString(l.TraceState), attrs: b.addMap(l.Attributes)})
	}
	s.links.hi = uint32(len(b.links))
	b.spans = append(b.spans, s)
	b.size += b.rowSize(&s)
}

func (b *rowBatch) addMap(m map[string]string) span32 {
	lo := len(b.kvs)
	for k, v := range m {
		b.kvs = append(b.kvs, kv{key: b.addString(k), val: b.addString(v)})
	}
	return b.sortKVs(lo)
}

// sortKVBytes sorts attributes by key and keeps the last of duplicate keys,
// as a map would.
func sortKVBytes(s []kvBytes) []kvBytes {
	slices.SortStableFunc(s, func(x, y kvBytes) int { return bytes.Compare(x.key, y.key) })
	n := 0
	for i := range s {
		if i+1 < len(s) && bytes.Equal(s[i].key, s[i+1].key) {
			continue
		}
		s[n] = s[i]
		n++
	}
	return s[:n]
}
