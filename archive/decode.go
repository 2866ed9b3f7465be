package archive

import (
	"bytes"
	"fmt"
	"slices"

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
}

// maxCachedScopes bounds the scope cache: a service fleet's distinct scopes.
const maxCachedScopes = 4096

func newRowBuilder(red *Redaction) *rowBuilder {
	return &rowBuilder{scopes: make(map[*sampler.Scope]*scopeRow), red: red}
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
		sc, err := b.scope(sp.Scope)
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

func (b *rowBuilder) scope(s *sampler.Scope) (*scopeRow, error) {
	if sr, ok := b.scopes[s]; ok {
		return sr, nil
	}
	sr := &scopeRow{service: []byte(s.Service)}
	if len(s.Resource) > 0 {
		err := otlpwire.RangeAttrs(s.Resource, 1, func(key []byte, v otlpwire.Value) bool {
			val := v.AppendString(nil)
			if slot, ok := promotedSlot[string(key)]; ok {
				sr.promote = append(sr.promote, promotion{slot: slot, val: val})
			}
			sr.res = append(sr.res, kvBytes{key: bytes.Clone(key), val: val})
			return true
		})
		if err != nil {
			return nil, fmt.Errorf("resource: %w", err)
		}
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
				sr.scopeName = bytes.Clone(v)
			} else {
				sr.scopeVersion = bytes.Clone(v)
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

// appendSpan decodes one span into a row of dst.
//
//	message Span {
//	  bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; bytes parent_span_id = 4;
//	  string name = 5; SpanKind kind = 6; fixed64 start_time_unix_nano = 7; fixed64 end_time_unix_nano = 8;
//	  repeated KeyValue attributes = 9; uint32 dropped_attributes_count = 10;
//	  repeated Event events = 11; uint32 dropped_events_count = 12;
//	  repeated Link links = 13; uint32 dropped_links_count = 14; Status status = 15; fixed32 flags = 16;
//	}
func (b *rowBuilder) appendSpan(dst *rowBatch, raw []byte, sc *scopeRow, trace uint32, id sampler.TraceID, hexID ref) error {
	var si otlpwire.SpanInfo
	if err := otlpwire.ScanSpan(raw, &si); err != nil {
		return err
	}
	dst.spans = append(dst.spans, spanRow{scope: sc, trace: trace})
	r := &dst.spans[len(dst.spans)-1]
	if string(si.TraceID) == string(id[:]) {
		r.traceID = hexID
	} else {
		r.traceID = dst.addHex(si.TraceID)
	}
	r.spanID = dst.addHex(si.SpanID)
	r.parentID = dst.addHex(si.ParentID)
	r.name = dst.add(si.Name)
	kind, status := kindNames[0], statusNames[0]
	if si.Kind >= 0 && int(si.Kind) < len(kindNames) {
		kind = kindNames[si.Kind]
	}
	if si.StatusCode >= 0 && int(si.StatusCode) < len(statusNames) {
		status = statusNames[si.StatusCode]
	}
	r.kind, r.status = dst.addString(kind), dst.addString(status)
	r.start, r.end = int64(si.Start), int64(si.End)
	r.startMicros = r.start / 1e3
	if si.End > si.Start {
		r.duration = int64(si.End - si.Start)
	}
	if err := b.appendAttrs(dst, raw, r); err != nil {
		return fmt.Errorf("span %s: %w", dst.str(r.spanID), err)
	}
	// Another pass for what the scanner skips: trace state, events,
	// links, status message. ScanSpan validated the framing.
	r.events.lo, r.links.lo = uint32(len(dst.events)), uint32(len(dst.links))
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
			r.traceState = dst.add(v)
		case 11:
			err = b.appendEvent(dst, v)
		case 13:
			err = b.appendLink(dst, v)
		case 15:
			r.statusMessage, err = statusMessage(dst, v)
		}
		if err != nil {
			return fmt.Errorf("span %s: %w", dst.str(r.spanID), err)
		}
	}
	r.events.hi, r.links.hi = uint32(len(dst.events)), uint32(len(dst.links))
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

// appendAttrs stores the span's attributes (Span field 9) in their promoted
// columns or the row's map, in one pass over the encoded span.
func (b *rowBuilder) appendAttrs(dst *rowBatch, span []byte, r *spanRow) error {
	lo := len(dst.kvs)
	err := otlpwire.RangeAttrs(span, 9, func(key []byte, v otlpwire.Value) bool {
		if slot, ok := promotedSlot[string(key)]; ok {
			r.promoted[slot] = dst.addValue(v)
			r.has |= 1 << slot
			return true
		}
		if isHTTPStatusKey(key) {
			if n, ok := v.Int(); ok {
				r.httpStatus = n
				r.has |= hasHTTPStatus
				return true
			}
		}
		dst.kvs = append(dst.kvs, kv{key: dst.add(key), val: dst.addValue(v)})
		return true
	})
	r.attrs = b.red.kvs(dst, dst.sortKVs(lo))
	return err
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

// statusMessage decodes Status.message (field 2).
func statusMessage(dst *rowBatch, b []byte) (ref, error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ref{}, protowire.ParseError(n)
		}
		b = b[n:]
		if num == 2 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return ref{}, protowire.ParseError(n)
			}
			return dst.add(v), nil
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return ref{}, protowire.ParseError(n)
		}
		b = b[n:]
	}
	return ref{}, nil
}

// addHex stores id as lowercase hex.
func (b *rowBatch) addHex(id []byte) ref {
	off := len(b.arena)
	b.arena = otlpwire.AppendHex(b.arena, id)
	return b.refFrom(off)
}

// addValue stores an attribute value's text form.
func (b *rowBatch) addValue(v otlpwire.Value) ref {
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
