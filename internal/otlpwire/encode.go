package otlpwire

import (
	"iter"

	"google.golang.org/protobuf/encoding/protowire"
)

// AppendResourceSpans appends one TracesData.resource_spans entry holding a
// single ScopeSpans with the given encoded spans. Every part is copied as
// bytes; nothing is decoded. resource and scope may be nil.
//
// Sizes are computed first so each length prefix is written once, without
// re-encoding.
func AppendResourceSpans(dst, resource, resourceSchema, scope, scopeSchema []byte, spans iter.Seq[[]byte]) []byte {
	// ScopeSpans { scope = 1; spans = 2; schema_url = 3 }
	ssLen := 0
	if scope != nil {
		ssLen += lenField(len(scope))
	}
	for s := range spans {
		ssLen += lenField(len(s))
	}
	if len(scopeSchema) > 0 {
		ssLen += lenField(len(scopeSchema))
	}
	// ResourceSpans { resource = 1; scope_spans = 2; schema_url = 3 }
	rsLen := lenField(ssLen)
	if resource != nil {
		rsLen += lenField(len(resource))
	}
	if len(resourceSchema) > 0 {
		rsLen += lenField(len(resourceSchema))
	}
	dst = protowire.AppendTag(dst, 1, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(rsLen))
	if resource != nil {
		dst = protowire.AppendTag(dst, 1, protowire.BytesType)
		dst = protowire.AppendBytes(dst, resource)
	}
	dst = protowire.AppendTag(dst, 2, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(ssLen))
	if scope != nil {
		dst = protowire.AppendTag(dst, 1, protowire.BytesType)
		dst = protowire.AppendBytes(dst, scope)
	}
	for s := range spans {
		dst = protowire.AppendTag(dst, 2, protowire.BytesType)
		dst = protowire.AppendBytes(dst, s)
	}
	if len(scopeSchema) > 0 {
		dst = protowire.AppendTag(dst, 3, protowire.BytesType)
		dst = protowire.AppendBytes(dst, scopeSchema)
	}
	if len(resourceSchema) > 0 {
		dst = protowire.AppendTag(dst, 3, protowire.BytesType)
		dst = protowire.AppendBytes(dst, resourceSchema)
	}
	return dst
}

// lenField is the encoded size of a length-delimited field (tag < 16).
func lenField(n int) int { return 1 + protowire.SizeVarint(uint64(n)) + n }
