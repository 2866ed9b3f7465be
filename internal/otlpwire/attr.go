package otlpwire

import (
	"encoding/base64"
	"math"
	"strconv"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// ValueType is the kind of an AnyValue.
type ValueType uint8

// AnyValue kinds, named for the oneof fields of
//
//	message AnyValue { oneof value { string string_value = 1; bool bool_value = 2; int64 int_value = 3;
//	  double double_value = 4; ArrayValue array_value = 5; KeyValueList kvlist_value = 6; bytes bytes_value = 7; } }
const (
	ValueEmpty ValueType = iota
	ValueString
	ValueBool
	ValueInt
	ValueDouble
	ValueArray
	ValueKVList
	ValueBytes
)

// Value is an AnyValue read at the wire level. Str aliases the scanned buffer
// for strings, bytes, arrays and kvlists (the latter two still encoded).
type Value struct {
	Type ValueType
	Str  []byte
	Num  uint64 // bool (0/1), int64 bits, or float64 bits
}

// Int returns the value as an int64 for ints, bools and doubles.
func (v Value) Int() (int64, bool) {
	switch v.Type {
	case ValueInt, ValueBool:
		return int64(v.Num), true
	case ValueDouble:
		return int64(math.Float64frombits(v.Num)), true
	case ValueString:
		i, err := strconv.ParseInt(string(v.Str), 10, 64)
		return i, err == nil
	}
	return 0, false
}

// Float returns the value as a float64 for numbers.
func (v Value) Float() (float64, bool) {
	switch v.Type {
	case ValueDouble:
		return math.Float64frombits(v.Num), true
	case ValueInt:
		return float64(int64(v.Num)), true
	case ValueString:
		f, err := strconv.ParseFloat(string(v.Str), 64)
		return f, err == nil
	}
	return 0, false
}

// AppendString appends the value's text form: strings as they are, numbers
// and bools in Go's format, bytes in standard base64 with padding (as OTLP/JSON
// writes them), arrays and kvlists as JSON.
func (v Value) AppendString(dst []byte) []byte {
	switch v.Type {
	case ValueString:
		return append(dst, v.Str...)
	case ValueBool:
		return strconv.AppendBool(dst, v.Num != 0)
	case ValueInt:
		return strconv.AppendInt(dst, int64(v.Num), 10)
	case ValueDouble:
		return strconv.AppendFloat(dst, math.Float64frombits(v.Num), 'g', -1, 64)
	case ValueBytes:
		return base64.StdEncoding.AppendEncode(dst, v.Str)
	case ValueArray:
		return appendArrayJSON(dst, v.Str, 1)
	case ValueKVList:
		return appendKVListJSON(dst, v.Str, 1)
	}
	return dst
}

// String returns the value's text form (see AppendString).
func (v Value) String() string {
	if v.Type == ValueString {
		return string(v.Str)
	}
	return string(v.AppendString(nil))
}

// bytesValueTypes are the AnyValue fields that are length-delimited.
var bytesValueTypes = [8]ValueType{1: ValueString, 5: ValueArray, 6: ValueKVList, 7: ValueBytes}

// DecodeValue reads an encoded AnyValue.
func DecodeValue(b []byte) (Value, error) {
	var v Value
	for len(b) > 0 {
		num, typ, n := tag1(b)
		if n == 0 {
			if num, typ, n = consumeTag(b); n < 0 {
				return v, malformed("AnyValue", protowire.ParseError(n))
			}
		}
		b = b[n:]
		switch {
		case typ == protowire.BytesType && num < 8 && bytesValueTypes[num] != ValueEmpty:
			v.Type = bytesValueTypes[num]
			if v.Str, n = bytes2(b); n == 0 {
				v.Str, n = consumeBytes(b)
			}
		case num == 2 && typ == protowire.VarintType:
			v.Type = ValueBool
			v.Num, n = consumeVarint(b)
			if v.Num != 0 {
				v.Num = 1
			}
		case num == 3 && typ == protowire.VarintType:
			v.Type = ValueInt
			v.Num, n = consumeVarint(b)
		case num == 4 && typ == protowire.Fixed64Type:
			v.Type = ValueDouble
			v.Num, n = consumeFixed64(b)
		default:
			n = consumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return v, malformed("AnyValue", protowire.ParseError(n))
		}
		b = b[n:]
	}
	return v, nil
}

// RangeAttrs calls fn for each KeyValue in the repeated field `field` of the
// encoded message msg, stopping early when fn returns false.
//
//	message KeyValue { string key = 1; AnyValue value = 2; }
//
// Attributes are field 9 of Span, 1 of Resource, 3 of InstrumentationScope,
// 3 of Span.Event and 4 of Span.Link.
func RangeAttrs(msg []byte, field protowire.Number, fn func(key []byte, v Value) bool) error {
	for len(msg) > 0 {
		num, typ, n := tag1(msg)
		if n == 0 {
			if num, typ, n = consumeTag(msg); n < 0 {
				return malformed("attributes", protowire.ParseError(n))
			}
		}
		msg = msg[n:]
		if num != field || typ != protowire.BytesType {
			if _, n = bytes2(msg); typ != protowire.BytesType || n == 0 {
				n = consumeFieldValue(num, typ, msg)
			}
			if n < 0 {
				return malformed("attributes", protowire.ParseError(n))
			}
			msg = msg[n:]
			continue
		}
		kv, n := bytes2(msg)
		if n == 0 {
			if kv, n = consumeBytes(msg); n < 0 {
				return malformed("KeyValue", protowire.ParseError(n))
			}
		}
		msg = msg[n:]
		key, val, err := DecodeKeyValue(kv)
		if err != nil {
			return err
		}
		if !fn(key, val) {
			return nil
		}
	}
	return nil
}

// FindAttr returns the value of attribute key in the repeated KeyValue field
// `field` of msg. The last occurrence wins, as in pdata.
func FindAttr(msg []byte, field protowire.Number, key string) (Value, bool) {
	var out Value
	var found bool
	_ = RangeAttrs(msg, field, func(k []byte, v Value) bool {
		if string(k) == key {
			out, found = v, true
		}
		return true
	})
	return out, found
}

// DecodeKeyValue decodes one attribute,
//
//	message KeyValue { string key = 1; AnyValue value = 2; }
//
// as RangeAttrs does for each element of a repeated KeyValue field.
func DecodeKeyValue(kv []byte) (key []byte, val Value, err error) {
	for len(kv) > 0 {
		num, typ, n := tag1(kv)
		if n == 0 {
			if num, typ, n = consumeTag(kv); n < 0 {
				return nil, val, malformed("KeyValue", protowire.ParseError(n))
			}
		}
		kv = kv[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			if key, n = bytes2(kv); n == 0 {
				key, n = consumeBytes(kv)
			}
		case num == 2 && typ == protowire.BytesType:
			vb, m := bytes2(kv)
			if m == 0 {
				vb, m = consumeBytes(kv)
			}
			if n = m; n < 0 {
				break
			}
			// Most values are one string, as short as this.
			if len(vb) >= 2 && vb[0] == 1<<3|byte(protowire.BytesType) && int(vb[1]) == len(vb)-2 {
				val = Value{Type: ValueString, Str: vb[2:]}
			} else if val, err = DecodeValue(vb); err != nil {
				return nil, val, err
			}
		default:
			n = consumeFieldValue(num, typ, kv)
		}
		if n < 0 {
			return nil, val, malformed("KeyValue", protowire.ParseError(n))
		}
		kv = kv[n:]
	}
	return key, val, nil
}

const hexDigits = "0123456789abcdef"

func appendHex(dst, b []byte) []byte {
	for _, c := range b {
		dst = append(dst, hexDigits[c>>4], hexDigits[c&0xf])
	}
	return dst
}

// AppendHex appends b as lowercase hex, the form trace and span IDs take in
// the archive.
func AppendHex(dst, b []byte) []byte { return appendHex(dst, b) }

// MaxValueDepth is how many levels of arrays and kvlists an attribute value
// is rendered to: the outermost array or kvlist is level 1. An array or
// kvlist nested deeper is rendered as the JSON string TruncatedValue.
//
// Rendering recurses once per level, and a goroutine that overflows its
// stack cannot be recovered: without a bound, one record nesting a value a
// million levels deep (9.5 MB of protobuf) would crash the node on every
// restart, since it is never committed. Real values nest a few levels.
const MaxValueDepth = 64

// TruncatedValue stands for an array or kvlist nested deeper than
// MaxValueDepth in a rendered value. It is a JSON string, so the rendering
// stays valid JSON.
const TruncatedValue = `"[truncated: nested deeper than 64 levels]"`

// appendValueJSON appends v as a JSON value; level is the nesting level an
// array or kvlist v would have.
func appendValueJSON(dst []byte, v Value, level int) []byte {
	switch v.Type {
	case ValueString:
		return appendJSONString(dst, v.Str)
	case ValueBytes:
		dst = append(dst, '"')
		return append(base64.StdEncoding.AppendEncode(dst, v.Str), '"')
	case ValueEmpty:
		return append(dst, "null"...)
	case ValueDouble:
		f := math.Float64frombits(v.Num)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return appendJSONString(dst, strconv.AppendFloat(nil, f, 'g', -1, 64))
		}
	case ValueArray, ValueKVList:
		if level > MaxValueDepth {
			return append(dst, TruncatedValue...)
		}
		if v.Type == ValueArray {
			return appendArrayJSON(dst, v.Str, level)
		}
		return appendKVListJSON(dst, v.Str, level)
	}
	return v.AppendString(dst)
}

// appendArrayJSON appends the array at nesting level `level`,
//
//	message ArrayValue { repeated AnyValue values = 1; }
func appendArrayJSON(dst, b []byte, level int) []byte {
	dst = append(dst, '[')
	first := true
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			break
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			vb, n := protowire.ConsumeBytes(b)
			if n < 0 {
				break
			}
			b = b[n:]
			v, err := DecodeValue(vb)
			if err != nil {
				break
			}
			if !first {
				dst = append(dst, ',')
			}
			first = false
			dst = appendValueJSON(dst, v, level+1)
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			break
		}
		b = b[n:]
	}
	return append(dst, ']')
}

// appendKVListJSON appends the kvlist at nesting level `level` as a JSON
// object,
//
//	message KeyValueList { repeated KeyValue values = 1; }
func appendKVListJSON(dst, b []byte, level int) []byte {
	dst = append(dst, '{')
	first := true
	_ = RangeAttrs(b, 1, func(k []byte, v Value) bool {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendJSONString(dst, k)
		dst = append(dst, ':')
		dst = appendValueJSON(dst, v, level+1)
		return true
	})
	return append(dst, '}')
}

// appendJSONString appends s as a JSON string (RFC 8259): quotes,
// backslashes and control characters escaped, each invalid UTF-8 byte
// replaced by U+FFFD, so that every JSON reader accepts the result.
func appendJSONString(dst, s []byte) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRune(s[i:])
			if r == utf8.RuneError && n == 1 {
				dst = append(dst, "\ufffd"...)
			} else {
				dst = append(dst, s[i:i+n]...)
			}
			i += n
			continue
		}
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			dst = append(dst, c)
		}
		i++
	}
	return append(dst, '"')
}

// AppendValidUTF8 appends s with each byte that is not part of a valid
// UTF-8 sequence replaced by U+FFFD, as Go's range over a string reads it.
func AppendValidUTF8(dst, s []byte) []byte {
	for len(s) > 0 {
		r, n := utf8.DecodeRune(s)
		if r == utf8.RuneError && n == 1 {
			dst = utf8.AppendRune(dst, utf8.RuneError)
		} else {
			dst = append(dst, s[:n]...)
		}
		s = s[n:]
	}
	return dst
}
