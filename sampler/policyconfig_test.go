package sampler

import (
	"strings"
	"testing"
	"time"
)

const exampleConfig = `
policies:
  - type: error
    http_5xx: true
    grpc_codes: [13, 14]
  - type: latency
    threshold: 2s
    per_route: {"checkout POST /cart": 500ms}
  - type: rules
    rules:
      - name: drop-health
        match: {span_name: {prefix: "GET /health"}}
        action: drop
      - name: gold
        scope: root
        match:
          attr: {user.tier: gold}
          not: {service: internal}
        action: keep
      - name: big
        match:
          any:
            - span_count: {gt: 500}
            - duration: {gte: 10s}
        action: sample
        rate: 0.5
  - type: dynamic
    key: [service, route, status_class]
    target_rate: 0.05
  - type: probabilistic
    rate: 0.05
budget:
  spans_per_second: 20000
head_sampling:
  honour_tracestate: true
`

func TestParsePoliciesExample(t *testing.T) {
	clk := newFakeClock()
	pol, err := ParsePolicies([]byte(exampleConfig), WithClock(clk))
	if err != nil {
		t.Fatal(err)
	}
	b, ok := pol.(*Budget)
	if !ok {
		t.Fatalf("got %T, want *Budget outermost", pol)
	}
	b.SetShare(4)
	hs, ok := b.inner.(HeadSampling)
	if !ok {
		t.Fatalf("inside the budget: %T, want HeadSampling", b.inner)
	}
	chain := hs.Inner.(Chain)
	var names []string
	for _, p := range chain {
		names = append(names, p.Name())
	}
	if got := strings.Join(names, ","); got != "error,latency,rules,dynamic,probabilistic" {
		t.Fatalf("chain %s", got)
	}
	cases := []struct {
		name   string
		spans  []sp
		want   Decision
		reason string
	}{
		{"grpc internal", []sp{{name: "r", attrs: []kv{{"rpc.grpc.status_code", 13}}}}, Keep, "error/grpc"},
		{"slow cart", []sp{{name: "POST /cart", service: "checkout", dur: 600 * ms}}, Keep, "latency>=500ms"},
		{"health", []sp{{name: "GET /health/live"}}, Drop, "rule/drop-health"},
		{"gold", []sp{{name: "r", service: "web", attrs: []kv{{"user.tier", "gold"}}}}, Keep, "rule/gold"},
		{"gold but internal", []sp{{name: "r", service: "internal", attrs: []kv{{"user.tier", "gold"}}}}, Keep, "dynamic"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkVerdict(t, chain.Decide(build(idWithRandomness(maxRandomness-1), tc.spans...)), tc.want, tc.reason)
		})
	}
}

func TestParsePoliciesErrors(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"bad duration", "policies:\n  - type: error\n  - type: error\n  - type: latency\n    threshold: abc\n",
			`policies[2].threshold: "abc" is not a duration`},
		{"unknown type", "policies:\n  - type: fancy\n", `policies[0].type: "fancy" is not a policy type; allowed: error, latency, rules, dynamic, probabilistic`},
		{"unknown key", "policies:\n  - type: latency\n    threshold: 1s\n    thresold: 2s\n", "policies[0].thresold: unknown key; allowed: type, threshold"},
		{"rate out of range", "policies:\n  - type: probabilistic\n    rate: 5\n", "policies[0].rate: must be in (0, 1], got 5"},
		{"missing rate", "policies:\n  - type: probabilistic\n", "policies[0].rate: required"},
		{"bad rule action", "policies:\n  - type: rules\n    rules:\n      - name: a\n        match: {service: x}\n        action: maybe\n",
			`policies[0].rules[0].action: "maybe" is not an action; allowed: keep, drop, sample`},
		{"bad op", "policies:\n  - type: rules\n    rules:\n      - name: a\n        match: {service: {like: x}}\n        action: keep\n",
			"policies[0].rules[0].match.service.like: unknown key; allowed: equals, prefix"},
		{"bad regex", "policies:\n  - type: rules\n    rules:\n      - name: a\n        match: {span_name: {regex: \"(\"}}\n        action: keep\n",
			"policies[0].rules[0].match.span_name.regex"},
		{"bad key field", "policies:\n  - type: dynamic\n    key: [colour]\n    target_rate: 0.1\n",
			`policies[0].key[0]: "colour" is not a key field; allowed: service`},
		{"budget both", "budget:\n  spans_per_second: 10\n  bytes_per_second: 10\n", "budget: set exactly one of spans_per_second and bytes_per_second"},
		{"budget unknown", "budget:\n  spans: 10\n", "budget.spans: unknown key"},
		{"head sampling bool", "head_sampling:\n  honour_tracestate: sometimes\n", `head_sampling.honour_tracestate: "sometimes" is not true or false`},
		{"top-level typo", "policy: []\n", "policy: unknown key; allowed: policies, head_sampling, budget"},
		{"empty list", "policies: []\n", "policies: must be a non-empty list"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePolicies([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error:\n%v\nwant it to contain %q", err, tc.want)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.Contains(line, ": ") {
					t.Errorf("error line %q does not name its key", line)
				}
			}
		})
	}
}

func TestParsePoliciesDefault(t *testing.T) {
	for _, doc := range []string{"", "budget:\n  spans_per_second: 100\n"} {
		pol, err := ParsePolicies([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		if b, ok := pol.(*Budget); ok {
			pol = b.inner
		}
		c, ok := pol.(Chain)
		if !ok || len(c) != 3 || c[1].(*LatencyPolicy).Threshold != 2*time.Second {
			t.Fatalf("%q: got %#v, want the default chain", doc, pol)
		}
	}
}
