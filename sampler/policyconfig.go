package sampler

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// DefaultPolicy is the chain used when no policy is configured: every error
// trace, every trace of 2s or more, and 5% of the rest.
func DefaultPolicy() Policy {
	lat, err := NewLatencyPolicy(2 * time.Second)
	if err != nil {
		panic("BUG: " + err.Error())
	}
	prob, err := NewProbabilisticPolicy(0.05)
	if err != nil {
		panic("BUG: " + err.Error())
	}
	return Chain{ErrorPolicy{}, lat, prob}
}

// ParseOption adjusts ParsePolicies; for tests and wiring.
type ParseOption func(*parseOpts)

type parseOpts struct{ clock Clock }

// WithClock sets the clock of the dynamic policy and the budget (default:
// the wall clock). Pass the sampler's DecisionClock, so that completion, the
// dynamic policy's intervals and the cost cap's rate all run on one clock.
func WithClock(c Clock) ParseOption { return func(o *parseOpts) { o.clock = c } }

// ParsePolicies builds the policy described by a YAML document:
//
//	policies:            # ordered; the first policy that decides wins (Chain)
//	  - type: error      # http_5xx: bool, grpc_codes: [int]
//	  - type: latency    # threshold, whole_trace, per_service {svc: dur}, per_route {"svc route": dur}
//	  - type: rules      # rules: [{name, scope: any|root, match, action: keep|drop|sample, rate}]
//	  - type: dynamic    # key: [fields], target_rate, interval, max_keys, new_key_traces
//	  - type: probabilistic  # rate
//	head_sampling:
//	  honour_tracestate: true  # wraps the chain in HeadSampling
//	budget:              # wraps everything in a Budget (the result is then a *Budget, for SetShare)
//	  spans_per_second: 20000  # or bytes_per_second; adjust_interval, burst, key_window,
//	                           # max_error_keys, reserve, strict_priority
//
// Without a policies list the chain is DefaultPolicy's. Every problem is
// reported, one per line, each naming its key path and what is allowed:
//
//	policies[2].threshold: "abc" is not a duration
//
// A rule's match is a mapping whose keys all must hold for one span:
// span_name, service, kind, span_count, duration (each an operator
// mapping, or a bare string meaning equals), attr and resource (mappings
// from attribute key to an operator mapping), and the combinators all and
// any (lists of matches) and not (a match). Operators: equals, prefix,
// regex, gt, gte, lt, lte, eq, exists.
func ParsePolicies(data []byte, opts ...ParseOption) (Policy, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("policies: %w", err)
	}
	return ParsePolicyNode(&doc, opts...)
}

// ParsePolicyNode is ParsePolicies for a document already parsed, e.g. the
// sampling section of a larger configuration file.
func ParsePolicyNode(n *yaml.Node, opts ...ParseOption) (Policy, error) {
	o := parseOpts{clock: SystemClock{}}
	for _, f := range opts {
		f(&o)
	}
	p := &parser{opts: o}
	pol := p.top(n)
	if err := errors.Join(p.errs...); err != nil {
		return nil, err
	}
	return pol, nil
}

type parser struct {
	opts parseOpts
	errs []error
}

func (p *parser) errf(path, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
}

// mapping returns n's key/value pairs, reporting a non-mapping or a key
// not in allowed.
func (p *parser) mapping(n *yaml.Node, path string, allowed ...string) map[string]*yaml.Node {
	if n.Kind != yaml.MappingNode {
		p.errf(path, "must be a mapping (line %d)", n.Line)
		return nil
	}
	out := make(map[string]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i].Value
		if allowed != nil && !slices.Contains(allowed, k) {
			p.errf(join(path, k), "unknown key; allowed: %s", strings.Join(allowed, ", "))
			continue
		}
		if _, dup := out[k]; dup {
			p.errf(join(path, k), "given twice")
		}
		out[k] = n.Content[i+1]
	}
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (p *parser) top(n *yaml.Node) Policy {
	if n.Kind == 0 {
		return DefaultPolicy() // empty document
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return DefaultPolicy()
		}
		n = n.Content[0]
	}
	m := p.mapping(n, "", "policies", "head_sampling", "budget")
	if m == nil {
		return nil
	}
	var pol Policy = DefaultPolicy()
	if list := m["policies"]; list != nil {
		pol = p.policies(list)
	}
	if hs := m["head_sampling"]; hs != nil {
		hm := p.mapping(hs, "head_sampling", "honour_tracestate")
		if v := hm["honour_tracestate"]; v != nil && p.boolean(v, "head_sampling.honour_tracestate") {
			pol = HeadSampling{Inner: pol}
		}
	}
	if b := m["budget"]; b != nil {
		pol = p.budget(b, pol)
	}
	return pol
}

func (p *parser) policies(n *yaml.Node) Policy {
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		p.errf("policies", "must be a non-empty list of policies")
		return nil
	}
	var chain Chain
	for i, pn := range n.Content {
		path := fmt.Sprintf("policies[%d]", i)
		if pn.Kind != yaml.MappingNode {
			p.errf(path, "must be a mapping with a type")
			continue
		}
		typ := ""
		for j := 0; j+1 < len(pn.Content); j += 2 {
			if pn.Content[j].Value == "type" {
				typ = pn.Content[j+1].Value
			}
		}
		var pol Policy
		switch typ {
		case "error":
			pol = p.errorPolicy(pn, path)
		case "latency":
			pol = p.latency(pn, path)
		case "rules":
			pol = p.rules(pn, path)
		case "dynamic":
			pol = p.dynamic(pn, path)
		case "probabilistic":
			m := p.mapping(pn, path, "type", "rate")
			if r := m["rate"]; r != nil {
				if pr, err := NewProbabilisticPolicy(p.float(r, path+".rate")); err != nil {
					p.errf(path+".rate", "must be in (0, 1], got %s", r.Value)
				} else {
					pol = pr
				}
			} else {
				p.errf(path+".rate", "required")
			}
		default:
			p.errf(path+".type", "%q is not a policy type; allowed: error, latency, rules, dynamic, probabilistic", typ)
		}
		if pol != nil {
			chain = append(chain, pol)
		}
	}
	return chain
}

func (p *parser) errorPolicy(n *yaml.Node, path string) Policy {
	m := p.mapping(n, path, "type", "http_5xx", "grpc_codes")
	var e ErrorPolicy
	if v := m["http_5xx"]; v != nil {
		e.HTTP5xx = p.boolean(v, path+".http_5xx")
	}
	if v := m["grpc_codes"]; v != nil {
		if v.Kind != yaml.SequenceNode {
			p.errf(path+".grpc_codes", "must be a list of gRPC status codes (0..16)")
		} else {
			for i, c := range v.Content {
				code, err := strconv.ParseInt(c.Value, 10, 64)
				if err != nil || code < 0 || code > 16 {
					p.errf(fmt.Sprintf("%s.grpc_codes[%d]", path, i), "%q is not a gRPC status code (0..16)", c.Value)
					continue
				}
				e.GRPCCodes = append(e.GRPCCodes, code)
			}
		}
	}
	return e
}

func (p *parser) latency(n *yaml.Node, path string) Policy {
	m := p.mapping(n, path, "type", "threshold", "whole_trace", "per_service", "per_route")
	var cfg LatencyConfig
	if v := m["threshold"]; v != nil {
		cfg.Threshold = p.duration(v, path+".threshold")
	} else {
		p.errf(path+".threshold", "required, e.g. 2s")
	}
	if v := m["whole_trace"]; v != nil {
		cfg.WholeTrace = p.boolean(v, path+".whole_trace")
	}
	for _, key := range []string{"per_service", "per_route"} {
		v := m[key]
		if v == nil {
			continue
		}
		durs := map[string]time.Duration{}
		for k, dv := range p.mapping(v, path+"."+key) {
			durs[k] = p.duration(dv, fmt.Sprintf("%s.%s[%q]", path, key, k))
		}
		if key == "per_service" {
			cfg.PerService = durs
		} else {
			cfg.PerRoute = durs
		}
	}
	pol, err := NewLatency(cfg)
	if err != nil {
		if len(p.errs) == 0 {
			p.errf(path, "%v", err)
		}
		return nil
	}
	return pol
}

func (p *parser) dynamic(n *yaml.Node, path string) Policy {
	m := p.mapping(n, path, "type", "key", "target_rate", "interval", "max_keys", "new_key_traces")
	var cfg DynamicConfig
	if v := m["key"]; v != nil && v.Kind == yaml.SequenceNode {
		for _, k := range v.Content {
			cfg.Key = append(cfg.Key, k.Value)
		}
	} else {
		p.errf(path+".key", "required: a list of service, route, status_class, span_name, kind, attr:<key>, resource:<key>")
	}
	if v := m["target_rate"]; v != nil {
		cfg.TargetRate = p.float(v, path+".target_rate")
	} else {
		p.errf(path+".target_rate", "required, in (0, 1]")
	}
	if v := m["interval"]; v != nil {
		cfg.Interval = p.duration(v, path+".interval")
	}
	if v := m["max_keys"]; v != nil {
		cfg.MaxKeys = p.integer(v, path+".max_keys")
	}
	if v := m["new_key_traces"]; v != nil {
		cfg.NewKeyTraces = p.integer(v, path+".new_key_traces")
	}
	if cfg.Key == nil || cfg.TargetRate == 0 {
		return nil
	}
	pol, err := NewDynamic(cfg, p.opts.clock)
	if err != nil {
		p.errf(path+"."+strings.SplitN(err.Error(), ":", 2)[0], "%s", strings.TrimSpace(strings.SplitN(err.Error(), ":", 2)[1]))
		return nil
	}
	return pol
}

func (p *parser) budget(n *yaml.Node, inner Policy) Policy {
	const path = "budget"
	m := p.mapping(n, path, "spans_per_second", "bytes_per_second", "adjust_interval", "burst",
		"key_window", "max_error_keys", "reserve", "strict_priority")
	var cfg BudgetConfig
	for k, v := range m {
		switch k {
		case "spans_per_second":
			cfg.SpansPerSecond = p.float(v, path+"."+k)
		case "bytes_per_second":
			cfg.BytesPerSecond = p.float(v, path+"."+k)
		case "adjust_interval":
			cfg.AdjustInterval = p.duration(v, path+"."+k)
		case "burst":
			cfg.Burst = p.duration(v, path+"."+k)
		case "key_window":
			cfg.KeyWindow = p.duration(v, path+"."+k)
		case "max_error_keys":
			cfg.MaxErrorKeys = p.integer(v, path+"."+k)
		case "reserve":
			cfg.Reserve = p.float(v, path+"."+k)
		case "strict_priority":
			cfg.StrictPriority = p.boolean(v, path+"."+k)
		}
	}
	if inner == nil {
		return nil
	}
	b, err := NewBudget(cfg, inner, p.opts.clock)
	if err != nil {
		p.errs = append(p.errs, err)
		return nil
	}
	return b
}

func (p *parser) rules(n *yaml.Node, path string) Policy {
	m := p.mapping(n, path, "type", "rules")
	list := m["rules"]
	if list == nil || list.Kind != yaml.SequenceNode || len(list.Content) == 0 {
		p.errf(path+".rules", "must be a non-empty list of rules")
		return nil
	}
	var rules []Rule
	for i, rn := range list.Content {
		rpath := fmt.Sprintf("%s.rules[%d]", path, i)
		rm := p.mapping(rn, rpath, "name", "scope", "match", "action", "rate")
		if rm == nil {
			continue
		}
		r := Rule{Name: p.str(rm["name"], rpath+".name")}
		switch s := p.str(rm["scope"], rpath+".scope"); s {
		case "", "any":
			r.Scope = AnySpan
		case "root":
			r.Scope = RootSpan
		default:
			p.errf(rpath+".scope", "%q is not a scope; allowed: any, root", s)
		}
		switch a := p.str(rm["action"], rpath+".action"); a {
		case "keep":
			r.Action = ActionKeep
		case "drop":
			r.Action = ActionDrop
		case "sample":
			r.Action = ActionSample
			if v := rm["rate"]; v != nil {
				r.Probability = p.float(v, rpath+".rate")
			} else {
				p.errf(rpath+".rate", "required with action sample, in (0, 1]")
			}
		default:
			p.errf(rpath+".action", "%q is not an action; allowed: keep, drop, sample", a)
		}
		if v := rm["match"]; v != nil {
			r.Match = p.match(v, rpath+".match")
		} else {
			p.errf(rpath+".match", "required")
		}
		rules = append(rules, r)
	}
	if len(p.errs) > 0 {
		return nil
	}
	pol, err := NewRulesPolicy(rules)
	if err != nil {
		// NewRulesPolicy names paths relative to the policy.
		for _, line := range strings.Split(err.Error(), "\n") {
			p.errs = append(p.errs, errors.New(path+"."+line))
		}
		return nil
	}
	return pol
}

var leafFields = map[string]Field{
	"span_name": FieldSpanName, "service": FieldService, "kind": FieldKind,
	"span_count": FieldSpanCount, "duration": FieldDuration,
}

// match parses a match mapping; several keys mean all of them.
func (p *parser) match(n *yaml.Node, path string) Match {
	m := p.mapping(n, path, "all", "any", "not", "span_name", "service", "kind", "span_count", "duration", "attr", "resource")
	var all []Match
	// Walk in document order so compiled conditions follow the file.
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i].Value, n.Content[i+1]
		if m[k] != v {
			continue
		}
		kpath := join(path, k)
		switch k {
		case "all", "any":
			if v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
				p.errf(kpath, "must be a non-empty list of matches")
				continue
			}
			list := make([]Match, 0, len(v.Content))
			for j, c := range v.Content {
				list = append(list, p.match(c, fmt.Sprintf("%s[%d]", kpath, j)))
			}
			if k == "all" {
				all = append(all, Match{All: list})
			} else {
				all = append(all, Match{Any: list})
			}
		case "not":
			sub := p.match(v, kpath)
			all = append(all, Match{Not: &sub})
		case "attr", "resource":
			f := FieldSpanAttr
			if k == "resource" {
				f = FieldResourceAttr
			}
			for ak, av := range p.mapping(v, kpath) {
				all = append(all, p.ops(av, fmt.Sprintf("%s[%q]", kpath, ak), f, ak)...)
			}
		default:
			all = append(all, p.ops(v, kpath, leafFields[k], "")...)
		}
	}
	if len(all) == 1 {
		return all[0]
	}
	if len(all) == 0 {
		p.errf(path, "must hold at least one condition")
	}
	return Match{All: all}
}

var opByName = map[string]Op{
	"equals": OpEquals, "prefix": OpPrefix, "regex": OpRegex, "gt": OpGT, "gte": OpGTE,
	"lt": OpLT, "lte": OpLTE, "eq": OpEQ, "exists": OpExists,
}

// ops parses an operator mapping (or a bare scalar, meaning equals) into
// one leaf per operator.
func (p *parser) ops(n *yaml.Node, path string, f Field, key string) []Match {
	if n.Kind == yaml.ScalarNode {
		return []Match{{Field: f, Key: key, Op: OpEquals, Value: n.Value}}
	}
	m := p.mapping(n, path, "equals", "prefix", "regex", "gt", "gte", "lt", "lte", "eq", "exists")
	var out []Match
	for i := 0; i+1 < len(n.Content); i += 2 {
		name, v := n.Content[i].Value, n.Content[i+1]
		if m[name] != v {
			continue
		}
		op := opByName[name]
		l := Match{Field: f, Key: key, Op: op}
		opath := join(path, name)
		switch {
		case op == OpExists:
			if !p.boolean(v, opath) {
				p.errf(opath, "only exists: true is meaningful; use not for absence")
			}
		case op.numeric() && f == FieldDuration:
			l.Number = float64(p.duration(v, opath))
		case op.numeric():
			l.Number = p.float(v, opath)
		default:
			l.Value = v.Value
		}
		out = append(out, l)
	}
	if len(out) == 0 {
		p.errf(path, "needs an operator; allowed: equals, prefix, regex, gt, gte, lt, lte, eq, exists")
	}
	return out
}

func (p *parser) str(n *yaml.Node, path string) string {
	if n == nil {
		return ""
	}
	if n.Kind != yaml.ScalarNode {
		p.errf(path, "must be a string")
		return ""
	}
	return n.Value
}

func (p *parser) duration(n *yaml.Node, path string) time.Duration {
	d, err := time.ParseDuration(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil {
		p.errf(path, "%q is not a duration (e.g. 500ms, 2s)", n.Value)
		return 0
	}
	if d <= 0 {
		p.errf(path, "must be positive, got %s", n.Value)
	}
	return d
}

func (p *parser) float(n *yaml.Node, path string) float64 {
	f, err := strconv.ParseFloat(n.Value, 64)
	if n.Kind != yaml.ScalarNode || err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		p.errf(path, "%q is not a number", n.Value)
		return 0
	}
	return f
}

func (p *parser) integer(n *yaml.Node, path string) int {
	i, err := strconv.Atoi(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil {
		p.errf(path, "%q is not an integer", n.Value)
	}
	return i
}

func (p *parser) boolean(n *yaml.Node, path string) bool {
	var b bool
	if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
		p.errf(path, "%q is not true or false", n.Value)
	}
	return b
}
