package router

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/tailsift/tailsift/internal/otlpwire"
	"github.com/tailsift/tailsift/sampler"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"google.golang.org/protobuf/encoding/protowire"
)

// Encodings a topic can carry, named as the OpenTelemetry Collector's
// kafkaexporter names them.
const (
	EncodingProto = "otlp_proto" // serialized ExportTraceServiceRequest
	EncodingJSON  = "otlp_json"  // its OTLP/JSON form
)

// Kinds of bad input, the label values of tailsift_router_malformed_messages_total
// and tailsift_router_invalid_spans_total.
const (
	badProto     = "protobuf"
	badJSON      = "json"
	badOversized = "oversized"
	badTraceID   = "trace_id"
	badSpanID    = "span_id"
)

// Scanner turns one Kafka record value into sampler items. It reuses its
// buffers: the items it returns are valid until the next call.
//
// Spans with an invalid trace ID (not 16 bytes, or all zero) or span ID (not
// 8 bytes, or all zero) are skipped and counted; a record that is not valid
// OTLP yields no items at all, so one bad message never half-enters the
// pipeline.
type Scanner struct {
	encoding string
	items    []sampler.Item
	scope    *sampler.Scope
	src      *sampler.Pending
	scopes   map[string]*sampler.Scope // interned scopes, by scopeKey
	key      []byte                    // scratch for scopeKey
	wire     otlpwire.Scratch
	invalid  [2]int // trace_id, span_id faults in the last record
	skewed   [3]int // spans of the last record with implausible times, by skewKinds
	now      int64  // unix nanos, set per Scan
}

// Times further than these from the node's clock are counted as skewed.
// Skewed spans are kept (their data is still real), but the count tells
// operators a producer's clock or encoding is off.
const (
	maxFuture = int64(time.Hour)
	maxPast   = int64(30 * 24 * time.Hour)
)

// skewKinds label tailsift_router_skewed_spans_total, in Scanner.skewed order.
var skewKinds = [3]string{"future", "past", "end_before_start"}

// NewScanner returns a scanner for the given encoding.
func NewScanner(encoding string) (*Scanner, error) {
	switch encoding {
	case "", EncodingProto:
		encoding = EncodingProto
	case EncodingJSON:
	default:
		return nil, fmt.Errorf("unknown encoding %q (allowed: %s, %s)", encoding, EncodingProto, EncodingJSON)
	}
	return &Scanner{encoding: encoding, scopes: make(map[string]*sampler.Scope)}, nil
}

// errBadJSON marks a value that is not OTLP/JSON.
var errBadJSON = errors.New("malformed OTLP/JSON")

// Scan reads value and returns its valid spans, each settling src.
func (s *Scanner) Scan(value []byte, src *sampler.Pending) ([]sampler.Item, error) {
	s.items = s.items[:0]
	s.src = src
	s.scope = nil
	s.invalid = [2]int{}
	s.skewed = [3]int{}
	s.now = time.Now().UnixNano()
	if s.encoding == EncodingJSON {
		if jsonDeeperThan(value, maxJSONDepth) {
			return nil, fmt.Errorf("%w: nested deeper than %d levels", errBadJSON, maxJSONDepth)
		}
		td, err := (&ptrace.JSONUnmarshaler{}).UnmarshalTraces(value)
		if err != nil {
			return nil, fmt.Errorf("%w: %s", errBadJSON, withoutPayload(err))
		}
		if value, err = (&ptrace.ProtoMarshaler{}).MarshalTraces(td); err != nil {
			return nil, fmt.Errorf("%w: re-encoding: %s", errBadJSON, withoutPayload(err))
		}
	}
	if err := s.wire.Scan(value, s); err != nil {
		s.items = s.items[:0]
		return nil, err
	}
	return s.items, nil
}

// maxJSONDepth is the deepest nesting of objects and arrays an otlp_json
// record may have: what an attribute of a span link needs (12 levels) with
// a value of kvlists nested otlpwire.MaxValueDepth levels (4 levels each),
// and some room. pdata's decoder recurses once per level, so a record
// nested a million levels deep would take a goroutine stack of hundreds of
// megabytes, or overflow it; such a record is not decoded but counted as
// malformed.
const maxJSONDepth = 16 + 4*otlpwire.MaxValueDepth

// jsonDeeperThan reports whether objects and arrays nest deeper than limit
// in the JSON text b, brackets inside strings aside. It reads each byte
// once and decodes nothing.
func jsonDeeperThan(b []byte, limit int) bool {
	depth := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '{', '[':
			if depth++; depth > limit {
				return true
			}
		case '}', ']':
			depth--
		case '"':
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
		}
	}
	return false
}

// withoutPayload is err's text up to where the JSON decoder starts quoting
// the input ("but found X, error found in #10 byte of ...|<bytes>|...,
// bigger context ...|<bytes>|..."): a record's bytes may hold secrets,
// and they go to logs and metrics' readers who may not see the data.
func withoutPayload(err error) string {
	s := err.Error()
	for _, quote := range []string{", but found", ", error found in", "bigger context"} {
		if i := strings.Index(s, quote); i >= 0 {
			s = s[:i]
		}
	}
	return s
}

// maxScopes bounds the interned scopes. A fleet has a few thousand distinct
// resources (service, host, pod); past the bound the table starts over, which
// costs one decode per scope and never correctness.
const maxScopes = 10_000

// Scope implements otlpwire.Visitor.
//
// Scopes are interned by content: every ScopeSpans with the same resource
// and instrumentation scope, in any record, shares one *sampler.Scope. So
// the bytes are copied and service.name looked up once per distinct scope,
// not once per ScopeSpans; the Scope never aliases the Kafka record, so a
// buffered span does not keep its record alive; and the archive, which
// decodes each Scope once, sees few distinct ones. The lookup allocates
// nothing.
func (s *Scanner) Scope(si *otlpwire.ScopeInfo) {
	s.key = appendScopeKey(s.key[:0], si)
	if sc, ok := s.scopes[string(s.key)]; ok {
		s.scope = sc
		return
	}
	sc := &sampler.Scope{
		Resource:          bytes.Clone(si.Resource),
		ResourceSchemaURL: string(si.ResourceSchemaURL),
		Scope:             bytes.Clone(si.Scope),
		ScopeSchemaURL:    string(si.ScopeSchemaURL),
	}
	// Any type is rendered as text, as the archive's service_name is, so
	// that a trace's root service agrees with its root span's service.
	if v, ok := otlpwire.FindAttr(si.Resource, 1, "service.name"); ok {
		sc.Service = v.String()
	}
	if len(s.scopes) >= maxScopes {
		clear(s.scopes)
	}
	s.scopes[string(s.key)] = sc
	s.scope = sc
}

// appendScopeKey appends the identity of a scope: its four fields, each
// length-prefixed so that no two different scopes share a key, and whether
// the resource and scope messages are present (nil) or present but empty,
// which re-encoding preserves.
func appendScopeKey(dst []byte, si *otlpwire.ScopeInfo) []byte {
	dst = append(dst, presence(si.Resource)|presence(si.Scope)<<1)
	for _, f := range [...][]byte{si.Resource, si.ResourceSchemaURL, si.Scope, si.ScopeSchemaURL} {
		dst = protowire.AppendBytes(dst, f)
	}
	return dst
}

func presence(b []byte) byte {
	if b == nil {
		return 0
	}
	return 1
}

// Span implements otlpwire.Visitor.
func (s *Scanner) Span(si *otlpwire.SpanInfo) {
	if len(si.TraceID) != 16 || allZero(si.TraceID) {
		s.invalid[0]++
		return
	}
	if len(si.SpanID) != 8 || allZero(si.SpanID) {
		s.invalid[1]++
		return
	}
	switch st := int64(si.Start); {
	case st > s.now+maxFuture:
		s.skewed[0]++
	case st < s.now-maxPast:
		s.skewed[1]++
	case si.End < si.Start:
		s.skewed[2]++
	}
	var flags uint8
	if len(si.ParentID) == 0 || allZero(si.ParentID) {
		flags |= sampler.FlagRoot
	}
	if si.StatusCode == otlpwire.StatusError {
		flags |= sampler.FlagError
	}
	s.items = append(s.items, sampler.Item{
		TraceID: sampler.TraceID(si.TraceID),
		Span: sampler.Span{
			Raw:     si.Raw,
			Scope:   s.scope,
			Src:     s.src,
			Start:   int64(si.Start),
			End:     int64(si.End),
			Flags:   flags,
			TimesAt: timesAt(si.TimesAt),
		},
	})
}

// timesAt is sampler.Span.TimesAt for otlpwire.SpanInfo.TimesAt at.
func timesAt(at int) uint16 {
	if at < 0 || at >= math.MaxUint16 {
		return 0
	}
	return uint16(at + 1)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
