package sampler

import (
	"bytes"
	"testing"
	"time"

	"github.com/tailsift/tailsift/internal/otlpwire"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// TestEncodedSpansMatchPdata checks the tests' span encoder against pdata:
// the same span marshalled by pdata and scanned by otlpwire reads the same
// through the policies' accessors.
func TestEncodedSpansMatchPdata(t *testing.T) {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "checkout")
	s := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	s.SetTraceID(pcommon.TraceID(tid(1)))
	s.SetSpanID(pcommon.SpanID{1, 2, 3, 4, 5, 6, 0, 1})
	s.SetName("POST /cart")
	s.SetKind(ptrace.SpanKindServer)
	s.TraceState().FromRaw("ot=th:c")
	s.SetStartTimestamp(1)
	s.SetEndTimestamp(11)
	s.Attributes().PutStr("http.route", "/cart")
	s.Attributes().PutInt("http.response.status_code", 503)
	raw, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		t.Fatal(err)
	}
	var c struct{ collector }
	if err := otlpwire.Scan(raw, &c); err != nil || len(c.spans) != 1 {
		t.Fatalf("scan: %v, %d spans", err, len(c.spans))
	}
	fromPdata := Span{Raw: c.spans[0], Scope: &Scope{Resource: c.res, Service: "checkout"}}
	ours := build(tid(1), sp{name: "POST /cart", kind: 2, tracestate: "ot=th:c", service: "checkout", start: 1, dur: 10,
		attrs: []kv{{"http.route", "/cart"}, {"http.response.status_code", 503}}}).Spans[0]
	for _, s := range []*Span{&fromPdata, &ours} {
		code, _ := s.httpStatus()
		route, _ := s.Attr("http.route")
		svc, _ := s.ResourceAttr("service.name")
		if string(s.Name()) != "POST /cart" || s.Kind() != 2 || string(s.TraceState()) != "ot=th:c" ||
			code != 503 || route.String() != "/cart" || svc.String() != "checkout" {
			t.Errorf("span read as name %q kind %d ts %q code %d route %q svc %q",
				s.Name(), s.Kind(), s.TraceState(), code, route.String(), svc.String())
		}
	}
	var a, b otlpwire.SpanInfo
	if otlpwire.ScanSpan(fromPdata.Raw, &a) != nil || otlpwire.ScanSpan(ours.Raw, &b) != nil ||
		!bytes.Equal(a.TraceID, b.TraceID) || a.Start != b.Start || a.End != b.End {
		t.Errorf("scanned differently: %+v vs %+v", a, b)
	}
}

type collector struct {
	res   []byte
	spans [][]byte
}

func (c *collector) Scope(s *otlpwire.ScopeInfo) { c.res = s.Resource }
func (c *collector) Span(s *otlpwire.SpanInfo)   { c.spans = append(c.spans, s.Raw) }

var benchVerdict Verdict

// benchTrace is a typical request: a server root and 19 children with a
// handful of attributes each.
func benchTrace() *Trace {
	spans := make([]sp, 20)
	spans[0] = sp{name: "POST /cart", kind: 2, service: "checkout", dur: 120 * ms, tracestate: "ot=th:c",
		attrs: []kv{{"http.request.method", "POST"}, {"http.route", "/cart"}, {"http.response.status_code", 200}, {"user.tier", "silver"}},
		res:   []kv{{"deployment.environment", "prod"}, {"host.name", "node-17"}}}
	for i := 1; i < len(spans); i++ {
		spans[i] = sp{name: "SELECT cart", child: true, kind: 3, service: "checkout", start: int64(i) * ms, dur: ms,
			attrs: []kv{{"db.system", "postgres"}, {"db.statement", "SELECT * FROM cart WHERE id = $1"}, {"net.peer.port", 5432}},
			res:   []kv{{"deployment.environment", "prod"}, {"host.name", "node-17"}}}
	}
	return build(tid(7), spans...)
}

func benchDecide(b *testing.B, p Policy, tr *Trace) {
	b.Helper()
	b.ReportAllocs()
	b.SetBytes(int64(tr.Bytes))
	for i := 0; b.Loop(); i++ {
		tr.ID[15] = byte(i)
		tr.ID[14] = byte(i >> 8)
		benchVerdict = p.Decide(tr)
	}
}

func BenchmarkDecide(b *testing.B) {
	tr := benchTrace()
	big := bigTrace(tid(8))
	lat, _ := NewLatencyPolicy(2 * time.Second)
	latRoute, _ := NewLatency(LatencyConfig{Threshold: 2 * time.Second, PerRoute: map[string]time.Duration{"checkout POST /cart": time.Second}})
	prob, _ := NewProbabilisticPolicy(0.05)
	rules, _ := NewRulesPolicy([]Rule{
		{Name: "health", Scope: RootSpan, Match: leafM(FieldSpanName, "", OpPrefix, "GET /health", 0), Action: ActionDrop},
		{Name: "prod-gold", Match: Match{All: []Match{
			leafM(FieldResourceAttr, "deployment.environment", OpEquals, "prod", 0),
			leafM(FieldSpanAttr, "user.tier", OpEquals, "gold", 0)}}, Action: ActionKeep},
		{Name: "slow-db", Match: Match{All: []Match{
			leafM(FieldKind, "", OpEquals, "client", 0),
			leafM(FieldDuration, "", OpGT, "", float64(100*ms))}}, Action: ActionKeep},
	})
	dyn, _ := NewDynamic(DynamicConfig{Key: []string{"service", "route", "status_class"}, TargetRate: 0.05}, nil)
	head := HeadSampling{Inner: prob}
	budget, _ := NewBudget(BudgetConfig{SpansPerSecond: 1e6}, Chain{ErrorPolicy{}, prob, fixedPolicy{Verdict{Decision: Keep, SampleRate: 1, Reason: "rest"}}}, nil)
	cases := []struct {
		name string
		p    Policy
	}{
		{"error", ErrorPolicy{}},
		{"error+http+grpc", ErrorPolicy{HTTP5xx: true, GRPCCodes: []int64{13, 14}}},
		{"latency", lat},
		{"latency/per_route", latRoute},
		{"probabilistic", prob},
		{"rules/3-no-match", rules},
		{"dynamic", dyn},
		{"head_sampling", head},
		{"budget", budget},
		{"default_chain", DefaultPolicy()},
	}
	for _, c := range cases {
		b.Run(c.name+"/20-spans", func(b *testing.B) { benchDecide(b, c.p, tr) })
	}
	for _, c := range cases[:7] {
		b.Run(c.name+"/10000-spans", func(b *testing.B) { benchDecide(b, c.p, big) })
	}
}
