package otlpwire

import (
	"math"
	"strconv"

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
// and bools in Go's format, bytes as hex, arrays and kvlists as JSON.
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
		return appendHex(dst, v.Str)
	case ValueArray:
		return appendArrayJSON(dst, v.Str)
	case ValueKVList:
		return appendKVListJSON(dst, v.Str)
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

func appendJSONString(dst, s []byte) []byte {
	return strconv.AppendQuote(dst, string(s))
}

func appendValueJSON(dst []byte, v Value) []byte {
	switch v.Type {
	case ValueString, ValueBytes:
		if v.Type == ValueBytes {
			return appendJSONString(dst, appendHex(nil, v.Str))
		}
		return appendJSONString(dst, v.Str)
	case ValueEmpty:
		return append(dst, "null"...)
	case ValueDouble:
		f := math.Float64frombits(v.Num)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return appendJSONString(dst, []byte(strconv.FormatFloat(f, 'g', -1, 64)))
		}
	}
	return v.AppendString(dst)
}

// ArrayValue { repeated AnyValue values = 1; }
func appendArrayJSON(dst, b []byte) []byte {
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
			dst = appendValueJSON(dst, v)
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

// KeyValueList { repeated KeyValue values = 1; }
func appendKVListJSON(dst, b []byte) []byte {
	dst = append(dst, '{')
	first := true
	_ = RangeAttrs(b, 1, func(k []byte, v Value) bool {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendJSONString(dst, k)
		dst = append(dst, ':')
		dst = appendValueJSON(dst, v)
		return true
	})
	return append(dst, '}')
}
