package router

import (
	"errors"
	"strings"
	"testing"

	"github.com/tailsift/tailsift/bench/gen"
	"github.com/tailsift/tailsift/internal/otlpwire"
	"github.com/tailsift/tailsift/internal/otlpwire/wiretest"
	"github.com/tailsift/tailsift/sampler"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// scopeMessage encodes one span under a resource of the given attributes
// and a scope of the given name.
func scopeMessage(t testing.TB, attrs [][2]string, scope string) []byte {
	t.Helper()
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.SetSchemaUrl("https://opentelemetry.io/schemas/1.26.0")
	for _, kv := range attrs {
		rs.Resource().Attributes().PutStr(kv[0], kv[1])
	}
	ss := rs.ScopeSpans().AppendEmpty()
	ss.Scope().SetName(scope)
	sp := ss.Spans().AppendEmpty()
	sp.SetTraceID([16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	sp.SetSpanID([8]byte{1, 2, 3, 4, 5, 6, 7, 8})
	sp.SetName("op")
	b, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestScannerServiceOfAnyType: a service.name that is not a string names
// the service by its text form, as the archive's service_name renders it,
// so a trace's root service is not empty where its root span's service is
// not.
func TestScannerServiceOfAnyType(t *testing.T) {
	sc, err := NewScanner(EncodingProto)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		put  func(m pcommon.Map)
		want string
	}{
		{"int", func(m pcommon.Map) { m.PutInt("service.name", 42) }, "42"},
		{"bool", func(m pcommon.Map) { m.PutBool("service.name", true) }, "true"},
		{"double", func(m pcommon.Map) { m.PutDouble("service.name", 1.5) }, "1.5"},
		{"array", func(m pcommon.Map) { m.PutEmptySlice("service.name").AppendEmpty().SetStr("a") }, `["a"]`},
		{"string", func(m pcommon.Map) { m.PutStr("service.name", "checkout") }, "checkout"},
		{"absent", func(m pcommon.Map) { m.PutStr("host.name", "h") }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			td := ptrace.NewTraces()
			rs := td.ResourceSpans().AppendEmpty()
			tc.put(rs.Resource().Attributes())
			sp := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
			sp.SetTraceID([16]byte{1})
			sp.SetSpanID([8]byte{1})
			msg, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
			if err != nil {
				t.Fatal(err)
			}
			var src sampler.Pending
			items, err := sc.Scan(msg, &src)
			if err != nil || len(items) != 1 {
				t.Fatalf("scan: %d items, %v", len(items), err)
			}
			if got := items[0].Span.Scope.Service; got != tc.want {
				t.Errorf("service %q, want %q", got, tc.want)
			}
		})
	}
}

// TestScannerInternsScopes: spans under the same resource and scope, in any
// record, share one *sampler.Scope; a resource or scope that differs
// anywhere, even in its last byte, gets its own, with its own service.
func TestScannerInternsScopes(t *testing.T) {
	sc, err := NewScanner(EncodingProto)
	if err != nil {
		t.Fatal(err)
	}
	scopeOf := func(msg []byte) *sampler.Scope {
		t.Helper()
		var src sampler.Pending
		items, err := sc.Scan(msg, &src)
		if err != nil || len(items) != 1 {
			t.Fatalf("scan: %d items, %v", len(items), err)
		}
		return items[0].Span.Scope
	}
	res := [][2]string{{"service.name", "checkout"}, {"host.name", "host-1"}}
	a := scopeOf(scopeMessage(t, res, "lib"))
	if b := scopeOf(scopeMessage(t, res, "lib")); b != a {
		t.Fatal("the same resource and scope in a second record got a second *Scope")
	}
	other := [][2]string{{"service.name", "checkout"}, {"host.name", "host-2"}}
	c := scopeOf(scopeMessage(t, other, "lib"))
	if c == a {
		t.Fatal("resources differing in host.name share a *Scope")
	}
	if d := scopeOf(scopeMessage(t, res, "lic")); d == a {
		t.Fatal("scopes differing in their name's last byte share a *Scope")
	}
	if a.Service != "checkout" || c.Service != "checkout" {
		t.Fatalf("services %q, %q", a.Service, c.Service)
	}
	// The first again, after the others: still the first.
	if e := scopeOf(scopeMessage(t, res, "lib")); e != a {
		t.Fatal("the first scope was not found again after others were added")
	}
	// A resource with no attributes at all is a different one.
	if f := scopeOf(scopeMessage(t, nil, "lib")); f == a || f.Service != "" {
		t.Fatalf("an empty resource matched another (service %q)", f.Service)
	}
}

// BenchmarkScanGenerated scans the messages of the traffic generator, whose
// messages mix many resources and scopes as SDK batch exporters and the
// Collector write them: one lookup of the interned scope per ScopeSpans.
func BenchmarkScanGenerated(b *testing.B) {
	var msgs [][]byte
	spans := 0
	if _, err := gen.Generate(gen.Config{Seed: 1, Traces: 2000}, func(m []byte) error {
		msgs = append(msgs, m)
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	sc, _ := NewScanner(EncodingProto)
	var src sampler.Pending
	for _, m := range msgs {
		items, err := sc.Scan(m, &src)
		if err != nil {
			b.Fatal(err)
		}
		spans += len(items)
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, m := range msgs {
			if _, err := sc.Scan(m, &src); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*spans), "ns/span")
}

// TestScanJSONDepth: an otlp_json record whose values nest up to
// otlpwire.MaxValueDepth levels, even in a link's or an event's attributes,
// is decoded; one nested deeper than maxJSONDepth, up to a million levels,
// is refused as malformed JSON before pdata's recursive decoder sees it.
// Brackets inside strings do not count.
func TestScanJSONDepth(t *testing.T) {
	record := func(value string) []byte {
		return []byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708",` +
			`"name":"[[[{{{\"[[","attributes":[{"key":"a","value":` + value + `}],` +
			`"events":[{"name":"e","attributes":[{"key":"a","value":` + value + `}]}],` +
			`"links":[{"traceId":"0102030405060708090a0b0c0d0e0f11","spanId":"0102030405060709","attributes":[{"key":"a","value":` + value + `}]}]}]}]}]}`)
	}
	sc, err := NewScanner(EncodingJSON)
	if err != nil {
		t.Fatal(err)
	}
	for _, kvlist := range []bool{false, true} {
		items, err := sc.Scan(record(wiretest.NestedJSONValue(otlpwire.MaxValueDepth, kvlist)), nil)
		if err != nil || len(items) != 1 {
			t.Fatalf("kvlist=%v, %d levels: %d items, %v", kvlist, otlpwire.MaxValueDepth, len(items), err)
		}
		for _, depth := range []int{maxJSONDepth, 1_000_000} {
			items, err := sc.Scan(record(wiretest.NestedJSONValue(depth, kvlist)), nil)
			if !errors.Is(err, errBadJSON) || !strings.Contains(err.Error(), "nested deeper than") || len(items) != 0 {
				t.Fatalf("kvlist=%v, %d levels: %d items, err %v", kvlist, depth, len(items), err)
			}
		}
	}
}

// BenchmarkScanJSON scans the generator's traffic as otlp_json, and the
// depth check alone on the same records: the check's share of the scan.
func BenchmarkScanJSON(b *testing.B) {
	var msgs [][]byte
	size := 0
	if _, err := gen.Generate(gen.Config{Seed: 1, Traces: 500, Encoding: gen.EncodingJSON}, func(m []byte) error {
		msgs = append(msgs, m)
		size += len(m)
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	b.Run("scan", func(b *testing.B) {
		sc, _ := NewScanner(EncodingJSON)
		var src sampler.Pending
		b.SetBytes(int64(size))
		b.ReportAllocs()
		for b.Loop() {
			for _, m := range msgs {
				if _, err := sc.Scan(m, &src); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("depth-check", func(b *testing.B) {
		b.SetBytes(int64(size))
		b.ReportAllocs()
		for b.Loop() {
			for _, m := range msgs {
				if jsonDeeperThan(m, maxJSONDepth) {
					b.Fatal("generated record refused")
				}
			}
		}
	})
}
