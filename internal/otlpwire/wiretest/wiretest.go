// Package wiretest builds hostile OTLP input for tests: attribute values
// nested far deeper than any real producer nests them, in protobuf and in
// OTLP/JSON, and records whose spans carry such values.
package wiretest

import (
	"slices"
	"strings"

	"github.com/tailsift/tailsift/internal/otlpwire"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"google.golang.org/protobuf/encoding/protowire"
)

// NestedValue returns an encoded AnyValue of depth levels of arrays (or of
// kvlists, each of one key "k") around the string "bottom".
//
//	message AnyValue { oneof value { string string_value = 1; ArrayValue array_value = 5; KeyValueList kvlist_value = 6; ... } }
//	message ArrayValue { repeated AnyValue values = 1; }
//	message KeyValueList { repeated KeyValue values = 1; }
//	message KeyValue { string key = 1; AnyValue value = 2; }
//
// It is built from the inside out, back to front, so a million levels take
// one pass.
func NestedValue(depth int, kvlist bool) []byte {
	inner := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte("bottom"))
	rev := slices.Clone(inner)
	slices.Reverse(rev)
	var p []byte
	for range depth {
		n := len(rev)
		p = p[:0]
		if kvlist {
			kv := 3 + 1 + protowire.SizeVarint(uint64(n)) + n
			list := 1 + protowire.SizeVarint(uint64(kv)) + kv
			p = protowire.AppendVarint(append(p, 6<<3|2), uint64(list))
			p = protowire.AppendVarint(append(p, 1<<3|2), uint64(kv))
			p = protowire.AppendVarint(append(p, 1<<3|2, 1, 'k', 2<<3|2), uint64(n))
		} else {
			arr := 1 + protowire.SizeVarint(uint64(n)) + n
			p = protowire.AppendVarint(append(p, 5<<3|2), uint64(arr))
			p = protowire.AppendVarint(append(p, 1<<3|2), uint64(n))
		}
		for i := len(p) - 1; i >= 0; i-- {
			rev = append(rev, p[i])
		}
	}
	slices.Reverse(rev)
	return rev
}

// NestedJSONValue is NestedValue in OTLP/JSON.
func NestedJSONValue(depth int, kvlist bool) string {
	open, close := `{"arrayValue":{"values":[`, `]}}`
	if kvlist {
		open, close = `{"kvlistValue":{"values":[{"key":"k","value":`, `}]}}`
	}
	return strings.Repeat(open, depth) + `{"stringValue":"bottom"}` + strings.Repeat(close, depth)
}

// WithAttr returns td encoded as TracesData, with one more attribute,
// key = value (an encoded AnyValue), on every span: the values pdata would
// take too deep a stack to build and encode.
func WithAttr(td ptrace.Traces, key string, value []byte) ([]byte, error) {
	attr := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte(key))
	attr = protowire.AppendBytes(protowire.AppendTag(attr, 2, protowire.BytesType), value)
	return WithFields(td, protowire.AppendBytes(protowire.AppendTag(nil, 9, protowire.BytesType), attr))
}

// WithFields returns td encoded as TracesData, with the encoded Span fields
// fields appended to every span: fields pdata would not write, such as a
// parent_span_id of zeros, or an attribute nested a million levels deep.
func WithFields(td ptrace.Traces, fields []byte) ([]byte, error) {
	raw, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		return nil, err
	}
	var c collector
	if err := otlpwire.Scan(raw, &c); err != nil {
		return nil, err
	}
	var out []byte
	for _, s := range c.scopes {
		out = otlpwire.AppendResourceSpans(out, s.info.Resource, s.info.ResourceSchemaURL, s.info.Scope,
			s.info.ScopeSchemaURL, func(yield func([]byte) bool) {
				for _, sp := range s.spans {
					if !yield(append(slices.Clip(sp), fields...)) {
						return
					}
				}
			})
	}
	return out, nil
}

type scope struct {
	info  otlpwire.ScopeInfo
	spans [][]byte
}

type collector struct{ scopes []scope }

func (c *collector) Scope(s *otlpwire.ScopeInfo) { c.scopes = append(c.scopes, scope{info: *s}) }
func (c *collector) Span(s *otlpwire.SpanInfo) {
	last := &c.scopes[len(c.scopes)-1]
	last.spans = append(last.spans, s.Raw)
}
