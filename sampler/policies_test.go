package sampler

import (
	"testing"
	"time"
)

const ms = int64(time.Millisecond)

func TestErrorPolicy(t *testing.T) {
	id := tid(1)
	opts := ErrorPolicy{HTTP5xx: true, GRPCCodes: []int64{2, 13, 14}}
	tests := []struct {
		name   string
		p      ErrorPolicy
		spans  []sp
		want   Decision
		reason string
	}{
		{"status error in a child", ErrorPolicy{}, []sp{{name: "r"}, {name: "c", child: true, status: 2}}, Keep, "error"},
		{"status ok", ErrorPolicy{}, []sp{{name: "r", status: 1}}, Undecided, ""},
		{"missing status", ErrorPolicy{}, []sp{{name: "r"}}, Undecided, ""},
		{"no root, error child", ErrorPolicy{}, []sp{{name: "c", child: true, status: 2}}, Keep, "error"},
		{"empty trace", opts, nil, Undecided, ""},
		{"5xx ignored unless configured", ErrorPolicy{}, []sp{{name: "r", attrs: []kv{{"http.response.status_code", 503}}}}, Undecided, ""},
		{"http 503", opts, []sp{{name: "r"}, {name: "c", child: true, attrs: []kv{{"http.response.status_code", 503}}}}, Keep, "error/http_5xx"},
		{"old http.status_code as string", opts, []sp{{name: "r", attrs: []kv{{"http.status_code", "500"}}}}, Keep, "error/http_5xx"},
		{"http 404", opts, []sp{{name: "r", attrs: []kv{{"http.response.status_code", 404}}}}, Undecided, ""},
		{"http 600 is not 5xx", opts, []sp{{name: "r", attrs: []kv{{"http.response.status_code", 600}}}}, Undecided, ""},
		{"grpc UNAVAILABLE", opts, []sp{{name: "r", attrs: []kv{{"rpc.grpc.status_code", 14}}}}, Keep, "error/grpc"},
		{"grpc NOT_FOUND not in set", opts, []sp{{name: "r", attrs: []kv{{"rpc.grpc.status_code", 5}}}}, Undecided, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkVerdict(t, tc.p.Decide(build(id, tc.spans...)), tc.want, tc.reason)
		})
	}
}

func TestLatencyPolicy(t *testing.T) {
	id := tid(1)
	def, _ := NewLatencyPolicy(time.Second)
	whole, _ := NewLatency(LatencyConfig{Threshold: time.Second, WholeTrace: true})
	over, err := NewLatency(LatencyConfig{
		Threshold:  time.Second,
		PerService: map[string]time.Duration{"batch": time.Minute},
		PerRoute:   map[string]time.Duration{"checkout POST /cart": 100 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	cart := []kv{{"http.request.method", "POST"}, {"http.route", "/cart"}}
	tests := []struct {
		name   string
		p      *LatencyPolicy
		spans  []sp
		want   Decision
		reason string
	}{
		{"root slow", def, []sp{{name: "r", dur: 2000 * ms}}, Keep, "latency>=1s"},
		{"root exactly at threshold", def, []sp{{name: "r", dur: 1000 * ms}}, Keep, ""},
		{"root fast, slow async child", def, []sp{{name: "r", dur: 10 * ms}, {child: true, start: 5 * ms, dur: 3000 * ms}}, Undecided, ""},
		{"whole trace catches the async child", whole, []sp{{name: "r", dur: 10 * ms}, {child: true, start: 5 * ms, dur: 3000 * ms}}, Keep, ""},
		{"no root: extent of children", def, []sp{{child: true, start: 0, dur: 10 * ms}, {child: true, start: 1500 * ms, dur: 10 * ms}}, Keep, ""},
		{"clock skew end < start", def, []sp{{name: "r", start: 5000 * ms, dur: -4000 * ms}}, Undecided, ""},
		{"clock skew, no root", def, []sp{{child: true, start: 5000 * ms, dur: -4000 * ms}}, Undecided, ""},
		{"zero duration", def, []sp{{name: "r"}}, Undecided, ""},
		{"empty trace", def, nil, Undecided, ""},
		{"per route override", over, []sp{{name: "POST /cart", service: "checkout", dur: 200 * ms, attrs: cart}}, Keep, "latency>=100ms"},
		{"per route, other service", over, []sp{{name: "POST /cart", service: "web", dur: 200 * ms, attrs: cart}}, Undecided, ""},
		{"per route by span name", over, []sp{{name: "POST /cart", service: "checkout", dur: 200 * ms}}, Keep, "latency>=100ms"},
		{"per service override", over, []sp{{name: "r", service: "batch", dur: 30000 * ms}}, Undecided, ""},
		{"per service, over", over, []sp{{name: "r", service: "batch", dur: 61000 * ms}}, Keep, "latency>=1m0s"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkVerdict(t, tc.p.Decide(build(id, tc.spans...)), tc.want, tc.reason)
		})
	}
	if _, err := NewLatency(LatencyConfig{Threshold: time.Second, PerRoute: map[string]time.Duration{"x": 0}}); err == nil {
		t.Error("zero per-route threshold accepted")
	}
}

// bigTrace is a 10,000-span trace: one root and children, the last of
// which carries what the conditions look for.
func bigTrace(id TraceID) *Trace {
	spans := make([]sp, 10_000)
	spans[0] = sp{name: "GET /big", dur: 10 * ms}
	for i := 1; i < len(spans); i++ {
		spans[i] = sp{name: "db.query", child: true, kind: 3, start: int64(i), dur: ms,
			attrs: []kv{{"db.system", "postgres"}, {"db.rows", i}}}
	}
	spans[len(spans)-1].attrs = append(spans[len(spans)-1].attrs, kv{"needle", true})
	spans[len(spans)-1].status = 2
	return build(id, spans...)
}

func TestPoliciesOnLargeTrace(t *testing.T) {
	tr := bigTrace(tid(3))
	checkVerdict(t, ErrorPolicy{}.Decide(tr), Keep, "error")
	rules, err := NewRulesPolicy([]Rule{{Name: "needle", Match: Match{Field: FieldSpanAttr, Key: "needle", Op: OpExists}, Action: ActionKeep}})
	if err != nil {
		t.Fatal(err)
	}
	checkVerdict(t, rules.Decide(tr), Keep, "rule/needle")
	whole, _ := NewLatency(LatencyConfig{Threshold: 10 * time.Millisecond, WholeTrace: true})
	checkVerdict(t, whole.Decide(tr), Keep, "")
}
