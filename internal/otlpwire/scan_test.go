package otlpwire

import (
	"bytes"
	"encoding/binary"
	"google.golang.org/protobuf/encoding/protowire"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// collect is a Visitor that copies what Scan reports.
type collect struct {
	scopes []ScopeInfo
	spans  []SpanInfo
}

func (c *collect) Scope(s *ScopeInfo) { c.scopes = append(c.scopes, *s) }
func (c *collect) Span(s *SpanInfo)   { c.spans = append(c.spans, *s) }

// testTraces builds a realistic message: several resources and scopes, roots
// and children, errors, attributes of every kind, events and links.
func testTraces(r *rand.Rand, resources, spansPer int) ptrace.Traces {
	td := ptrace.NewTraces()
	for i := 0; i < resources; i++ {
		rs := td.ResourceSpans().AppendEmpty()
		rs.SetSchemaUrl("https://opentelemetry.io/schemas/1.26.0")
		ra := rs.Resource().Attributes()
		ra.PutStr("service.name", []string{"frontend", "checkout", "payment"}[i%3])
		ra.PutStr("k8s.namespace.name", "prod")
		ra.PutInt("process.pid", int64(r.IntN(1<<20)))
		for s := 0; s < 2; s++ {
			ss := rs.ScopeSpans().AppendEmpty()
			ss.Scope().SetName("io.opentelemetry.http")
			ss.Scope().SetVersion("1.2.3")
			for k := 0; k < spansPer; k++ {
				sp := ss.Spans().AppendEmpty()
				var tid [16]byte
				var sid, pid [8]byte
				binary.LittleEndian.PutUint64(tid[:8], r.Uint64())
				binary.LittleEndian.PutUint64(tid[8:], r.Uint64())
				binary.LittleEndian.PutUint64(sid[:], r.Uint64()|1)
				sp.SetTraceID(tid)
				sp.SetSpanID(sid)
				if k%4 != 0 {
					binary.LittleEndian.PutUint64(pid[:], r.Uint64()|1)
					sp.SetParentSpanID(pid)
				}
				sp.SetName("GET /api/items")
				sp.SetKind(ptrace.SpanKind(k % 6))
				start := uint64(1_700_000_000_000_000_000) + r.Uint64N(1e12)
				sp.SetStartTimestamp(pcommon.Timestamp(start))
				sp.SetEndTimestamp(pcommon.Timestamp(start + r.Uint64N(5e9)))
				sp.TraceState().FromRaw("ot=th:c")
				a := sp.Attributes()
				a.PutStr("http.request.method", "GET")
				a.PutInt("http.response.status_code", 200+int64(k%4)*100)
				a.PutDouble("ratio", 0.25)
				a.PutBool("cache.hit", k%2 == 0)
				a.PutEmptyBytes("blob").FromRaw([]byte{1, 2, 3})
				a.PutEmptySlice("tags").AppendEmpty().SetStr("x")
				a.PutEmptyMap("m").PutStr("k", "v")
				if k%5 == 0 {
					sp.Status().SetCode(ptrace.StatusCodeError)
					sp.Status().SetMessage("boom")
				} else if k%5 == 1 {
					sp.Status().SetCode(ptrace.StatusCodeOk)
				}
				ev := sp.Events().AppendEmpty()
				ev.SetName("exception")
				ev.Attributes().PutStr("exception.type", "IOError")
				ln := sp.Links().AppendEmpty()
				ln.SetTraceID(tid)
				ln.SetSpanID(sid)
			}
		}
	}
	return td
}

func marshal(t testing.TB, td ptrace.Traces) []byte {
	t.Helper()
	b, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pdataSpans flattens a pdata decode in wire order.
func pdataSpans(td ptrace.Traces) []ptrace.Span {
	var out []ptrace.Span
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		rs := td.ResourceSpans().At(i)
		for j := 0; j < rs.ScopeSpans().Len(); j++ {
			ss := rs.ScopeSpans().At(j)
			for k := 0; k < ss.Spans().Len(); k++ {
				out = append(out, ss.Spans().At(k))
			}
		}
	}
	return out
}

// forbidden reports whether buf, or a length-delimited field in it, holds
// what the protobuf wire format forbids but pdata's decoder lets through in
// fields it skips: the deprecated group wire types (pdata does not check
// that they close), a varint longer than ten bytes or 64 bits (pdata drops
// the excess bits), a field number of 0 or above 2^29-1 (pdata truncates
// it). OTLP is proto3 and its encoders write none of these; Scan refuses
// them, rightly.
func forbidden(buf []byte) bool {
	refused := func(n int) bool {
		e := protowire.ParseError(n).Error()
		return strings.Contains(e, "overflow") || strings.Contains(e, "invalid field number")
	}
	for len(buf) > 0 {
		_, typ, n := protowire.ConsumeTag(buf)
		if n < 0 {
			return refused(n)
		}
		if typ == protowire.StartGroupType || typ == protowire.EndGroupType {
			return true
		}
		buf = buf[n:]
		if typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(buf)
			if m < 0 {
				return refused(m)
			}
			if forbidden(v) {
				return true
			}
			buf = buf[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(0, typ, buf)
		if m < 0 {
			return refused(m)
		}
		buf = buf[m:]
	}
	return false
}

// agree checks that Scan and pdata read the same fields from buf. It
// returns false when pdata rejects buf.
func agree(t *testing.T, buf []byte) bool {
	t.Helper()
	td, perr := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(buf)
	var c collect
	serr := Scan(buf, &c)
	if perr != nil {
		return false
	}
	if serr != nil {
		if forbidden(buf) {
			return false
		}
		t.Fatalf("pdata accepts the message but Scan fails: %v", serr)
	}
	want := pdataSpans(td)
	if len(c.spans) != len(want) {
		t.Fatalf("Scan found %d spans, pdata %d", len(c.spans), len(want))
	}
	for i, w := range want {
		g := c.spans[i]
		checkTimesAt(t, i, &g)
		tid, sid, pid := w.TraceID(), w.SpanID(), w.ParentSpanID()
		if !bytes.Equal(padID(g.TraceID, 16), tid[:]) || !bytes.Equal(padID(g.SpanID, 8), sid[:]) ||
			!bytes.Equal(padID(g.ParentID, 8), pid[:]) {
			t.Fatalf("span %d ids: scan %x/%x/%x, pdata %x/%x/%x", i, g.TraceID, g.SpanID, g.ParentID, tid, sid, pid)
		}
		if string(g.Name) != w.Name() || g.Kind != int32(w.Kind()) ||
			g.Start != uint64(w.StartTimestamp()) || g.End != uint64(w.EndTimestamp()) ||
			g.StatusCode != int32(w.Status().Code()) {
			t.Fatalf("span %d: scan %q kind=%d %d..%d status=%d; pdata %q kind=%d %d..%d status=%d", i,
				g.Name, g.Kind, g.Start, g.End, g.StatusCode,
				w.Name(), w.Kind(), w.StartTimestamp(), w.EndTimestamp(), w.Status().Code())
		}
		// The raw bytes must be exactly one Span: pdata decodes them alone.
		one := ptrace.NewTraces()
		w.CopyTo(one.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans().AppendEmpty())
		if !bytes.Contains(buf, g.Raw) {
			t.Fatalf("span %d raw bytes are not a slice of the message", i)
		}
	}
	return true
}

// checkTimesAt checks what SpanInfo.TimesAt promises: where it points, the
// two time fields, one-byte tags and 8 bytes each, in either order, holding
// Start and End.
func checkTimesAt(t *testing.T, i int, g *SpanInfo) {
	t.Helper()
	at := g.TimesAt
	if at < 0 {
		return
	}
	if at+18 > len(g.Raw) {
		t.Fatalf("span %d: TimesAt %d past the span's %d bytes", i, at, len(g.Raw))
	}
	f := g.Raw[at : at+18]
	a, b := binary.LittleEndian.Uint64(f[1:9]), binary.LittleEndian.Uint64(f[10:18])
	startFirst := f[0] == 0x39 && f[9] == 0x41 && a == g.Start && b == g.End
	endFirst := f[0] == 0x41 && f[9] == 0x39 && a == g.End && b == g.Start
	if !startFirst && !endFirst {
		t.Fatalf("span %d: at TimesAt %d, % x; want the time fields of %d..%d", i, at, f, g.Start, g.End)
	}
}

// padID maps a wrong-length ID the way pdata does: pdata rejects wrong
// lengths, so only valid ones reach the comparison; empty reads as zero.
func padID(b []byte, n int) []byte {
	if len(b) == 0 {
		return make([]byte, n)
	}
	return b
}

func TestScanMatchesPdata(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, shape := range []struct{ resources, spans int }{{1, 1}, {3, 10}, {10, 50}} {
		buf := marshal(t, testTraces(r, shape.resources, shape.spans))
		if !agree(t, buf) {
			t.Fatal("pdata rejected its own encoding")
		}
		// pdata writes both times, next to each other.
		var c collect
		if err := Scan(buf, &c); err != nil {
			t.Fatal(err)
		}
		for i := range c.spans {
			if c.spans[i].TimesAt < 0 {
				t.Fatalf("span %d: time fields not found in pdata's encoding", i)
			}
		}
	}
}

// TestScanTimesAt covers the forms around the time fields: either order,
// apart, repeated, absent, or written with a multi-byte tag.
func TestScanTimesAt(t *testing.T) {
	ts := func(tag byte, v uint64) []byte { return binary.LittleEndian.AppendUint64([]byte{tag}, v) }
	name := []byte{0x2a, 1, 'x'}
	cases := []struct {
		name string
		raw  []byte
		at   int
	}{
		{"start, end", slices.Concat(name, ts(0x39, 5), ts(0x41, 9)), 3},
		{"end, start", slices.Concat(ts(0x41, 9), ts(0x39, 5), name), 0},
		{"apart", slices.Concat(ts(0x39, 5), name, ts(0x41, 9)), -1},
		{"start only", slices.Concat(name, ts(0x39, 5)), -1},
		{"start repeated, the last next to end", slices.Concat(ts(0x39, 1), name, ts(0x39, 5), ts(0x41, 9)), 12},
		{"start repeated after the pair", slices.Concat(ts(0x39, 5), ts(0x41, 9), name, ts(0x39, 7)), -1},
		{"end with a two-byte tag", slices.Concat(ts(0x39, 5), []byte{0xc1, 0x00}, ts(0x41, 9)[1:]), -1},
	}
	for _, tc := range cases {
		var si SpanInfo
		if err := ScanSpan(tc.raw, &si); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if si.TimesAt != tc.at {
			t.Errorf("%s: TimesAt %d, want %d", tc.name, si.TimesAt, tc.at)
		}
		checkTimesAt(t, 0, &si)
	}
}

func TestScanScopes(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	td := testTraces(r, 2, 3)
	buf := marshal(t, td)
	var c collect
	if err := Scan(buf, &c); err != nil {
		t.Fatal(err)
	}
	if len(c.scopes) != 4 {
		t.Fatalf("got %d scopes, want 4", len(c.scopes))
	}
	v, ok := FindAttr(c.scopes[0].Resource, 1, "service.name")
	if !ok || v.String() != "frontend" {
		t.Fatalf("service.name = %q, %v", v.String(), ok)
	}
	if string(c.scopes[0].ResourceSchemaURL) != "https://opentelemetry.io/schemas/1.26.0" {
		t.Fatalf("schema url %q", c.scopes[0].ResourceSchemaURL)
	}
}

func TestScanRejectsCorruptInput(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	good := marshal(t, testTraces(r, 2, 5))
	cases := []struct {
		name string
		buf  []byte
	}{
		{"truncated", good[:len(good)-7]},
		{"length past end", append([]byte{0x0a, 0xff, 0x01}, good[:10]...)},
		{"bad tag", []byte{0x00}},
		{"json", []byte(`{"resourceSpans":[]}`)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := Scan(tc.buf, &collect{}); err == nil {
				t.Fatal("Scan accepted corrupt input")
			}
		})
	}
}

func TestAttrValues(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	buf := marshal(t, testTraces(r, 1, 1))
	var c collect
	if err := Scan(buf, &c); err != nil {
		t.Fatal(err)
	}
	raw := c.spans[0].Raw
	check := func(key, want string) {
		t.Helper()
		v, ok := FindAttr(raw, 9, key)
		if !ok || v.String() != want {
			t.Fatalf("%s = %q (found %v), want %q", key, v.String(), ok, want)
		}
	}
	check("http.request.method", "GET")
	check("http.response.status_code", "200")
	check("ratio", "0.25")
	check("cache.hit", "true")
	check("blob", "AQID")
	check("tags", `["x"]`)
	check("m", `{"k":"v"}`)
	if _, ok := FindAttr(raw, 9, "absent"); ok {
		t.Fatal("found an absent key")
	}
}

// FuzzScan checks, for any input: Scan never panics; when pdata can decode
// the input, Scan decodes it too and reads the same trace ID, span ID,
// parent, name, kind, times and status for every span, and every Raw it
// reports is a subslice of the input. (Scan may accept inputs pdata rejects:
// it does not validate fields it does not read.)
func FuzzScan(f *testing.F) {
	r := rand.New(rand.NewPCG(9, 10))
	f.Add(marshal(f, testTraces(r, 1, 1)))
	f.Add(marshal(f, testTraces(r, 2, 3)))
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x02, 0x12, 0x00})
	f.Fuzz(func(t *testing.T, buf []byte) {
		agree(t, buf)
	})
}

var benchSink int

// BenchmarkScan measures the hot-path scan: every span's IDs, times, status,
// with reused scratch space as the router scans.
func BenchmarkScan(b *testing.B) {
	r := rand.New(rand.NewPCG(11, 12))
	buf := marshal(b, testTraces(r, 5, 10)) // 100 spans
	var c countSpans
	if err := Scan(buf, &c); err != nil {
		b.Fatal(err)
	}
	spans := c.n
	var s Scratch
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.n = 0
		if err := s.Scan(buf, &c); err != nil {
			b.Fatal(err)
		}
	}
	benchSink += c.n
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*spans), "ns/span")
}

// BenchmarkPdataUnmarshal is the full decode the scan avoids, for comparison.
func BenchmarkPdataUnmarshal(b *testing.B) {
	r := rand.New(rand.NewPCG(11, 12))
	buf := marshal(b, testTraces(r, 5, 10))
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		td, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(buf)
		if err != nil {
			b.Fatal(err)
		}
		benchSink += td.SpanCount()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/span")
}

type countSpans struct{ n int }

func (c *countSpans) Scope(*ScopeInfo) {}
func (c *countSpans) Span(s *SpanInfo) { c.n += len(s.TraceID) >> 4 }

// BenchmarkFindAttr measures a policy's attribute lookup: one present and
// one absent key in every span of the BenchmarkScan message.
func BenchmarkFindAttr(b *testing.B) {
	r := rand.New(rand.NewPCG(11, 12))
	var c collect
	if err := Scan(marshal(b, testTraces(r, 5, 10)), &c); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		for i := range c.spans {
			if v, ok := FindAttr(c.spans[i].Raw, 9, "http.response.status_code"); ok {
				benchSink += int(v.Num)
			}
			if _, ok := FindAttr(c.spans[i].Raw, 9, "absent"); ok {
				b.Fatal("found an absent key")
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(c.spans)), "ns/span")
}
