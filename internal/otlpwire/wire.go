package otlpwire

import (
	"encoding/binary"

	"google.golang.org/protobuf/encoding/protowire"
)

// The scan spends most of its time on tags and lengths of one or two bytes.
// protowire's functions handle every form and are too large for the compiler
// to inline, so a call per tag and per length cost more than the decoding
// itself. The short forms are decoded here by functions small enough to
// inline, which return n == 0 for any other form; the caller then calls the
// matching consume function, which is protowire's, so results and error
// codes are exactly protowire's.

// tag1 decodes a one-byte tag: field numbers 1 to 15.
func tag1(b []byte) (protowire.Number, protowire.Type, int) {
	if len(b) > 0 && b[0] >= 1<<3 && b[0] < 0x80 {
		return protowire.Number(b[0] >> 3), protowire.Type(b[0] & 7), 1
	}
	return 0, 0, 0
}

// bytes2 decodes a length-delimited value shorter than 16 KiB, with a
// length of one or two bytes. The slice's capacity runs to the end of b, as
// protowire's does.
func bytes2(b []byte) ([]byte, int) {
	if len(b) > 1 {
		n, l := 1, int(b[0])
		if l >= 0x80 {
			if b[1] >= 0x80 {
				return nil, 0
			}
			n, l = 2, l&0x7f|int(b[1])<<7
		}
		if l <= len(b)-n {
			return b[n : n+l], n + l
		}
	}
	return nil, 0
}

// consumeTag is protowire.ConsumeTag, with two-byte tags (field numbers 16
// to 2047, such as Span.flags) decoded here.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	if num, typ, n := tag1(b); n > 0 {
		return num, typ, n
	}
	// A zero second byte is a padded one-byte tag, maybe of the invalid
	// field 0: left to protowire.
	if len(b) > 1 && b[0] >= 0x80 && b[1]-1 < 0x7f {
		v := uint64(b[0]&0x7f) | uint64(b[1])<<7
		return protowire.Number(v >> 3), protowire.Type(v & 7), 2
	}
	return protowire.ConsumeTag(b)
}

// ConsumeTag is consumeTag, for decoders of OTLP messages outside this
// package (the archive's).
func ConsumeTag(b []byte) (protowire.Number, protowire.Type, int) { return consumeTag(b) }

// ConsumeBytes is consumeBytes, for decoders of OTLP messages outside this
// package.
func ConsumeBytes(b []byte) ([]byte, int) { return consumeBytes(b) }

// consumeVarint is protowire.ConsumeVarint.
func consumeVarint(b []byte) (uint64, int) {
	if len(b) > 0 && b[0] < 0x80 {
		return uint64(b[0]), 1
	}
	return protowire.ConsumeVarint(b)
}

// consumeFixed64 is protowire.ConsumeFixed64.
func consumeFixed64(b []byte) (uint64, int) {
	if len(b) >= 8 {
		return binary.LittleEndian.Uint64(b), 8
	}
	return protowire.ConsumeFixed64(b)
}

// consumeBytes is protowire.ConsumeBytes, with lengths below 16 KiB (most
// spans, long attribute values) decoded here.
func consumeBytes(b []byte) ([]byte, int) {
	if v, n := bytes2(b); n > 0 {
		return v, n
	}
	return protowire.ConsumeBytes(b)
}

// consumeFieldValue is protowire.ConsumeFieldValue: the size of the value
// of a field the caller skips.
func consumeFieldValue(num protowire.Number, typ protowire.Type, b []byte) int {
	switch typ {
	case protowire.BytesType:
		_, n := consumeBytes(b)
		return n
	case protowire.VarintType:
		if len(b) > 0 && b[0] < 0x80 {
			return 1
		}
	case protowire.Fixed64Type:
		if len(b) >= 8 {
			return 8
		}
	case protowire.Fixed32Type:
		if len(b) >= 4 {
			return 4
		}
	}
	return protowire.ConsumeFieldValue(num, typ, b)
}
