package otlpwire_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tailsift/tailsift/internal/otlpwire"
	"github.com/tailsift/tailsift/internal/otlpwire/wiretest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// jsonDepth is how deeply arrays and objects nest in the JSON text s.
func jsonDepth(t *testing.T, s string) int {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	depth, deepest := 0, 0
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		switch tok {
		case json.Delim('['), json.Delim('{'):
			depth++
			deepest = max(deepest, depth)
		case json.Delim(']'), json.Delim('}'):
			depth--
		}
	}
	return deepest
}

// TestValueDepthLimit: a value nested up to MaxValueDepth levels renders
// whole; one nested deeper, up to a million levels (9 MB), renders as valid
// JSON of MaxValueDepth levels with TruncatedValue in place of the rest,
// without overflowing the stack.
func TestValueDepthLimit(t *testing.T) {
	if !json.Valid([]byte(otlpwire.TruncatedValue)) ||
		!strings.Contains(otlpwire.TruncatedValue, " "+strconv.Itoa(otlpwire.MaxValueDepth)+" ") {
		t.Fatalf("TruncatedValue %s is not a JSON string naming the limit %d", otlpwire.TruncatedValue, otlpwire.MaxValueDepth)
	}
	for _, kvlist := range []bool{false, true} {
		for _, depth := range []int{1, otlpwire.MaxValueDepth, otlpwire.MaxValueDepth + 1, 1_000_000} {
			v, err := otlpwire.DecodeValue(wiretest.NestedValue(depth, kvlist))
			if err != nil {
				t.Fatal(err)
			}
			s := v.String()
			if !json.Valid([]byte(s)) {
				t.Fatalf("kvlist=%v depth %d: not valid JSON: %.200s", kvlist, depth, s)
			}
			truncated := strings.Count(s, otlpwire.TruncatedValue)
			if depth <= otlpwire.MaxValueDepth {
				if truncated != 0 || !strings.Contains(s, `"bottom"`) || jsonDepth(t, s) != depth {
					t.Errorf("kvlist=%v depth %d: rendered %.300s", kvlist, depth, s)
				}
				continue
			}
			if truncated != 1 || strings.Contains(s, `"bottom"`) || jsonDepth(t, s) != otlpwire.MaxValueDepth {
				t.Errorf("kvlist=%v depth %d: %d markers, %d levels in %.300s", kvlist, depth, truncated, jsonDepth(t, s), s)
			}
		}
	}
}

// TestValueJSONIsValid: arrays and kvlists render as JSON that any reader
// accepts, whatever their strings hold: quotes, backslashes, control
// characters and invalid UTF-8 (replaced by U+FFFD).
func TestValueJSONIsValid(t *testing.T) {
	td := ptrace.NewTraces()
	sp := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	sp.SetTraceID(pcommon.TraceID{1})
	sp.SetSpanID(pcommon.SpanID{1})
	strs := []string{"q\"b\\s/", "nl\n cr\r tab\t bell\a nul\x00 del\x7f", "bad \xff\xfe end", "é ☃ 𝄞", "\u2028"}
	want := []string{"q\"b\\s/", "nl\n cr\r tab\t bell\a nul\x00 del\x7f", "bad \ufffd\ufffd end", "é ☃ 𝄞", "\u2028"}
	arr := sp.Attributes().PutEmptySlice("arr")
	m := sp.Attributes().PutEmptyMap("map")
	for i, s := range strs {
		arr.AppendEmpty().SetStr(s)
		m.PutStr("k"+strconv.Itoa(i)+s, s)
	}
	raw, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		t.Fatal(err)
	}
	var spanRaw []byte
	if err := otlpwire.Scan(raw, visitSpans(func(s *otlpwire.SpanInfo) { spanRaw = s.Raw })); err != nil {
		t.Fatal(err)
	}
	a, _ := otlpwire.FindAttr(spanRaw, 9, "arr")
	var gotArr []string
	if err := json.Unmarshal([]byte(a.String()), &gotArr); err != nil {
		t.Fatalf("array %s: %v", a.String(), err)
	}
	o, _ := otlpwire.FindAttr(spanRaw, 9, "map")
	var gotMap map[string]string
	if err := json.Unmarshal([]byte(o.String()), &gotMap); err != nil {
		t.Fatalf("kvlist %s: %v", o.String(), err)
	}
	for i, w := range want {
		if gotArr[i] != w {
			t.Errorf("array element %d = %q, want %q", i, gotArr[i], w)
		}
		if k := "k" + strconv.Itoa(i) + w; gotMap[k] != w {
			t.Errorf("kvlist[%q] = %q, want %q (all: %q)", k, gotMap[k], w, gotMap)
		}
	}
}

func TestAppendValidUTF8(t *testing.T) {
	for in, want := range map[string]string{
		"":                  "",
		"plain ascii":       "plain ascii",
		"é ☃ 𝄞":             "é ☃ 𝄞",
		"\xff":              "\ufffd",
		"a\xc3(b":           "a\ufffd(b",          // truncated 2-byte sequence
		"\xed\xa0\x80":      "\ufffd\ufffd\ufffd", // a UTF-16 surrogate, not UTF-8
		"\xf0\x9f\x98":      "\ufffd\ufffd\ufffd", // truncated 4-byte sequence
		"ok\xe2\x82\xacend": "ok€end",
	} {
		if got := string(otlpwire.AppendValidUTF8(nil, []byte(in))); got != want {
			t.Errorf("AppendValidUTF8(%q) = %q, want %q", in, got, want)
		}
	}
}

type visitSpans func(*otlpwire.SpanInfo)

func (visitSpans) Scope(*otlpwire.ScopeInfo)   {}
func (f visitSpans) Span(s *otlpwire.SpanInfo) { f(s) }

// FuzzValueString checks, for any encoded AnyValue: rendering never panics;
// an array or kvlist renders as valid JSON of at most MaxValueDepth levels;
// and every value but a plain string (which the archive repairs itself)
// renders as valid UTF-8.
func FuzzValueString(f *testing.F) {
	for _, kv := range []bool{false, true} {
		f.Add(wiretest.NestedValue(3, kv))
		f.Add(wiretest.NestedValue(otlpwire.MaxValueDepth+2, kv))
	}
	f.Add([]byte{0x2a, 0x03, 0x0a, 0x01, 0xff})       // an array of one truncated value
	f.Add([]byte{0x3a, 0x02, 0xff, 0xfe})             // bytes
	f.Add([]byte{0x21, 0, 0, 0, 0, 0, 0, 0xf8, 0x7f}) // NaN
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := otlpwire.DecodeValue(b)
		if err != nil {
			return
		}
		s := v.String()
		if v.Type != otlpwire.ValueString && !utf8.ValidString(s) {
			t.Fatalf("type %d rendered as invalid UTF-8: %q", v.Type, s)
		}
		if v.Type == otlpwire.ValueArray || v.Type == otlpwire.ValueKVList {
			if !json.Valid([]byte(s)) {
				t.Fatalf("not valid JSON: %q", s)
			}
			if d := jsonDepth(t, s); d > otlpwire.MaxValueDepth {
				t.Fatalf("%d levels rendered", d)
			}
		}
	})
}
