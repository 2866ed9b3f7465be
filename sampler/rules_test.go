package sampler

import (
	"math"
	"strings"
	"testing"
)

func leafM(f Field, key string, op Op, v string, n float64) Match {
	return Match{Field: f, Key: key, Op: op, Value: v, Number: n}
}

func TestRulesMatch(t *testing.T) {
	health := sp{name: "GET /health", kind: 2, dur: ms, attrs: []kv{{"http.route", "/health"}, {"http.response.status_code", 200}}}
	checkout := sp{name: "POST /cart", kind: 2, service: "checkout", dur: 300 * ms,
		attrs: []kv{{"http.route", "/cart"}, {"user.tier", "gold"}, {"retries", 3}, {"ratio", 0.5}},
		res:   []kv{{"deployment.environment", "prod"}}}
	dbChild := sp{name: "SELECT", child: true, kind: 3, service: "checkout", dur: 2 * ms, attrs: []kv{{"db.system", "postgres"}},
		res: []kv{{"deployment.environment", "prod"}}}
	tests := []struct {
		name  string
		scope MatchScope
		m     Match
		spans []sp
		want  bool
	}{
		{"span name prefix", AnySpan, leafM(FieldSpanName, "", OpPrefix, "GET /health", 0), []sp{health}, true},
		{"span name equals miss", AnySpan, leafM(FieldSpanName, "", OpEquals, "GET /healthz", 0), []sp{health}, false},
		{"regex", AnySpan, leafM(FieldSpanName, "", OpRegex, `^(GET|HEAD) /health`, 0), []sp{health}, true},
		{"service", AnySpan, leafM(FieldService, "", OpEquals, "checkout", 0), []sp{checkout}, true},
		{"kind server", RootSpan, leafM(FieldKind, "", OpEquals, "server", 0), []sp{checkout}, true},
		{"kind client on any span", AnySpan, leafM(FieldKind, "", OpEquals, "client", 0), []sp{checkout, dbChild}, true},
		{"kind client on root only", RootSpan, leafM(FieldKind, "", OpEquals, "client", 0), []sp{checkout, dbChild}, false},
		{"attr equals", AnySpan, leafM(FieldSpanAttr, "user.tier", OpEquals, "gold", 0), []sp{checkout}, true},
		{"int attr equals as text", AnySpan, leafM(FieldSpanAttr, "retries", OpEquals, "3", 0), []sp{checkout}, true},
		{"int attr gt", AnySpan, leafM(FieldSpanAttr, "retries", OpGT, "", 2), []sp{checkout}, true},
		{"int attr gte at bound", AnySpan, leafM(FieldSpanAttr, "retries", OpGTE, "", 3), []sp{checkout}, true},
		{"int attr lt fails", AnySpan, leafM(FieldSpanAttr, "retries", OpLT, "", 3), []sp{checkout}, false},
		{"double attr lte", AnySpan, leafM(FieldSpanAttr, "ratio", OpLTE, "", 0.5), []sp{checkout}, true},
		{"numeric eq", AnySpan, leafM(FieldSpanAttr, "http.response.status_code", OpEQ, "", 200), []sp{health}, true},
		{"numeric op on a string attr", AnySpan, leafM(FieldSpanAttr, "user.tier", OpGT, "", 0), []sp{checkout}, false},
		{"missing attr", AnySpan, leafM(FieldSpanAttr, "nope", OpEquals, "", 0), []sp{checkout}, false},
		{"exists", AnySpan, leafM(FieldSpanAttr, "db.system", OpExists, "", 0), []sp{checkout, dbChild}, true},
		{"resource attr", AnySpan, leafM(FieldResourceAttr, "deployment.environment", OpEquals, "prod", 0), []sp{checkout, dbChild}, true},
		{"resource attr missing", AnySpan, leafM(FieldResourceAttr, "deployment.environment", OpEquals, "prod", 0), []sp{health}, false},
		{"span count", AnySpan, leafM(FieldSpanCount, "", OpGTE, "", 2), []sp{checkout, dbChild}, true},
		{"span count under", AnySpan, leafM(FieldSpanCount, "", OpGT, "", 2), []sp{checkout, dbChild}, false},
		{"duration", RootSpan, leafM(FieldDuration, "", OpGT, "", float64(250*ms)), []sp{checkout}, true},
		{"all on one span", AnySpan, Match{All: []Match{
			leafM(FieldService, "", OpEquals, "checkout", 0), leafM(FieldKind, "", OpEquals, "client", 0)}}, []sp{checkout, dbChild}, true},
		{"all must hold on the same span", AnySpan, Match{All: []Match{
			leafM(FieldSpanAttr, "user.tier", OpEquals, "gold", 0), leafM(FieldKind, "", OpEquals, "client", 0)}}, []sp{checkout, dbChild}, false},
		{"any", AnySpan, Match{Any: []Match{
			leafM(FieldSpanName, "", OpEquals, "x", 0), leafM(FieldSpanName, "", OpEquals, "SELECT", 0)}}, []sp{checkout, dbChild}, true},
		{"not", RootSpan, Match{Not: &Match{Field: FieldSpanName, Op: OpPrefix, Value: "GET /health"}}, []sp{checkout}, true},
		{"not on missing attr holds", RootSpan, Match{Not: &Match{Field: FieldSpanAttr, Key: "nope", Op: OpExists}}, []sp{checkout}, true},
		{"root scope without a root", RootSpan, leafM(FieldService, "", OpEquals, "checkout", 0), []sp{dbChild}, false},
		{"any scope without a root", AnySpan, leafM(FieldService, "", OpEquals, "checkout", 0), []sp{dbChild}, true},
		{"empty trace", AnySpan, leafM(FieldSpanCount, "", OpGTE, "", 0), nil, false},
		{"empty all is true", RootSpan, Match{All: []Match{}}, []sp{health}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewRulesPolicy([]Rule{{Name: "r", Scope: tc.scope, Match: tc.m, Action: ActionKeep}})
			if err != nil {
				t.Fatal(err)
			}
			v := p.Decide(build(tid(1), tc.spans...))
			if got := v.Decision == Keep; got != tc.want {
				t.Fatalf("%v matched = %v, want %v", tc.m, got, tc.want)
			}
		})
	}
}

func TestRulesOrderAndActions(t *testing.T) {
	p, err := NewRulesPolicy([]Rule{
		{Name: "drop-health", Match: leafM(FieldSpanName, "", OpPrefix, "GET /health", 0), Action: ActionDrop},
		{Name: "gold", Match: leafM(FieldSpanAttr, "user.tier", OpEquals, "gold", 0), Action: ActionKeep},
		{Name: "tenth", Match: leafM(FieldService, "", OpEquals, "web", 0), Action: ActionSample, Probability: 0.1},
	})
	if err != nil {
		t.Fatal(err)
	}
	checkVerdict(t, p.Decide(build(tid(1), sp{name: "GET /health", attrs: []kv{{"user.tier", "gold"}}})), Drop, "rule/drop-health")
	checkVerdict(t, p.Decide(build(tid(1), sp{name: "x", attrs: []kv{{"user.tier", "gold"}}})), Keep, "rule/gold")
	checkVerdict(t, p.Decide(build(tid(1), sp{name: "x", service: "api"})), Undecided, "")

	// Sampling is by trace ID randomness, and the kept rates add up.
	const n = 20_000
	sum, kept := 0.0, 0
	for i := range n {
		r := uint64(i) * (maxRandomness / n)
		v := p.Decide(build(idWithRandomness(r), sp{name: "x", service: "web"}))
		if v.Decision == Keep {
			kept++
			sum += v.SampleRate
			if r < probThreshold(0.1) {
				t.Fatalf("kept randomness %x under the threshold", r)
			}
		} else if v.Reason != "rule/tenth" {
			t.Fatalf("dropped with reason %q", v.Reason)
		}
	}
	if math.Abs(sum-n)/n > 0.01 || kept < n/10-1 || kept > n/10+1 {
		t.Errorf("sampled %d of %d, SUM(rate) %.0f", kept, n, sum)
	}
}

func TestRulesValidation(t *testing.T) {
	tests := []struct {
		name  string
		rules []Rule
		want  string
	}{
		{"no name", []Rule{{Match: Match{All: []Match{}}, Action: ActionKeep}}, "rules[0].name: must not be empty"},
		{"duplicate", []Rule{{Name: "a", Match: Match{All: []Match{}}, Action: ActionKeep}, {Name: "a", Match: Match{All: []Match{}}, Action: ActionKeep}}, `rules[1].name: "a" is used twice`},
		{"bad regex", []Rule{{Name: "a", Match: leafM(FieldSpanName, "", OpRegex, "(", 0), Action: ActionKeep}}, "rules[0].match.span_name.regex"},
		{"numeric op on name", []Rule{{Name: "a", Match: leafM(FieldSpanName, "", OpGT, "", 1), Action: ActionKeep}}, "is numeric"},
		{"string op on count", []Rule{{Name: "a", Match: leafM(FieldSpanCount, "", OpPrefix, "1", 0), Action: ActionKeep}}, "is not numeric"},
		{"attr without key", []Rule{{Name: "a", Match: leafM(FieldSpanAttr, "", OpExists, "", 0), Action: ActionKeep}}, "needs an attribute key"},
		{"two kinds at once", []Rule{{Name: "a", Match: Match{Any: []Match{}, Field: FieldSpanName, Op: OpEquals}, Action: ActionKeep}}, "exactly one of"},
		{"sample without rate", []Rule{{Name: "a", Match: Match{All: []Match{}}, Action: ActionSample}}, "rules[0].rate: must be in (0, 1]"},
		{"no action", []Rule{{Name: "a", Match: Match{All: []Match{}}}}, "rules[0].action"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewRulesPolicy(tc.rules)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
