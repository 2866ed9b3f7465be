package sampler

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"sync"

	"github.com/tailsift/tailsift/internal/otlpwire"
)

// Field is what a rule condition looks at.
type Field uint8

// Fields a condition can test. Span-level fields are read from the span being
// tested; SpanCount is the same for every span of the trace.
const (
	FieldSpanName     Field = iota + 1 // the span's name
	FieldService                       // the span's resource service.name
	FieldKind                          // "server", "client", "internal", "producer", "consumer", "unspecified"
	FieldSpanCount                     // spans buffered for the trace
	FieldDuration                      // the span's duration, numeric ops in nanoseconds
	FieldSpanAttr                      // the span attribute named by Key
	FieldResourceAttr                  // the resource attribute named by Key
)

var fieldNames = map[Field]string{
	FieldSpanName: "span_name", FieldService: "service", FieldKind: "kind", FieldSpanCount: "span_count",
	FieldDuration: "duration", FieldSpanAttr: "attr", FieldResourceAttr: "resource",
}

func (f Field) String() string { return fieldNames[f] }

// Op is how a condition compares the field with its operand.
type Op uint8

// Comparisons. The string ops compare the value's text form (numbers as Go
// formats them); the numeric ops compare numbers, and fail on a value that is
// not one. Exists only asks whether the field is present.
const (
	OpEquals Op = iota + 1
	OpPrefix
	OpRegex
	OpGT
	OpGTE
	OpLT
	OpLTE
	OpEQ
	OpExists
)

var opNames = map[Op]string{
	OpEquals: "equals", OpPrefix: "prefix", OpRegex: "regex", OpGT: "gt", OpGTE: "gte",
	OpLT: "lt", OpLTE: "lte", OpEQ: "eq", OpExists: "exists",
}

func (o Op) String() string { return opNames[o] }

func (o Op) numeric() bool { return o >= OpGT && o <= OpEQ }

// Match is a condition on one span of a trace, as data: either a
// combinator (exactly one of All, Any, Not) or a leaf (Field and Op). It is
// compiled once by NewRulesPolicy.
type Match struct {
	All []Match // every one holds for the same span; empty All is true
	Any []Match // at least one holds for the same span
	Not *Match  // does not hold

	Field  Field
	Key    string  // attribute key, for FieldSpanAttr and FieldResourceAttr
	Op     Op      //
	Value  string  // operand of the string ops (a regular expression for OpRegex)
	Number float64 // operand of the numeric ops (nanoseconds for FieldDuration)
}

// MatchScope says which spans a rule's condition is tested against.
type MatchScope uint8

const (
	// AnySpan matches when one span satisfies the whole condition.
	AnySpan MatchScope = iota
	// RootSpan tests the root span only; a trace without a root does not
	// match.
	RootSpan
)

// Action is what a matching rule does.
type Action uint8

const (
	// ActionKeep keeps the trace at sample rate 1.
	ActionKeep Action = iota + 1
	// ActionDrop drops the trace.
	ActionDrop
	// ActionSample keeps the trace with Rule.Probability, deterministically
	// by trace ID (the rule of ProbabilisticPolicy), and drops it otherwise.
	ActionSample
)

// Rule is one entry of a RulesPolicy.
type Rule struct {
	Name        string // in the reason, "rule/<name>"; must be unique and not empty
	Scope       MatchScope
	Match       Match
	Action      Action
	Probability float64 // for ActionSample, in (0, 1]
}

// RulesPolicy tries its rules in order; the first whose condition holds
// decides. A trace no rule matches is left Undecided for the next policy.
//
// Conditions read span names, kinds and attributes from the encoded spans as
// they are tested, and stop at the first matching span, so a rule costs in
// proportion to the spans it must look at: a RootSpan rule reads one span, an
// AnySpan rule that matches nothing reads them all. Resource conditions are
// evaluated once per distinct resource, not per span, since the spans of one
// ScopeSpans share their resource.
type RulesPolicy struct {
	rules []compiledRule
	nRes  int // resource leaves, for the per-evaluation memo
	pool  sync.Pool
}

type compiledRule struct {
	name      string
	scope     MatchScope
	cond      cond
	action    Action
	threshold uint64 // ActionSample: keep when Randomness >= threshold
	rate      float64
	reason    string
}

// NewRulesPolicy compiles rules, checking every one and reporting all
// problems.
func NewRulesPolicy(rules []Rule) (*RulesPolicy, error) {
	p := &RulesPolicy{}
	var errs []error
	seen := map[string]bool{}
	for i, r := range rules {
		where := fmt.Sprintf("rules[%d]", i)
		if r.Name == "" {
			errs = append(errs, fmt.Errorf("%s.name: must not be empty", where))
		} else if seen[r.Name] {
			errs = append(errs, fmt.Errorf("%s.name: %q is used twice", where, r.Name))
		}
		seen[r.Name] = true
		c, err := p.compile(&r.Match, where+".match")
		if err != nil {
			errs = append(errs, err)
		}
		cr := compiledRule{name: r.Name, scope: r.Scope, cond: c, action: r.Action, rate: 1, reason: "rule/" + r.Name}
		switch r.Action {
		case ActionKeep, ActionDrop:
		case ActionSample:
			if !(r.Probability > 0 && r.Probability <= 1) {
				errs = append(errs, fmt.Errorf("%s.rate: must be in (0, 1], got %v", where, r.Probability))
				break
			}
			cr.threshold = probThreshold(r.Probability)
			cr.rate = 1 / r.Probability
		default:
			errs = append(errs, fmt.Errorf("%s.action: must be keep, drop or sample", where))
		}
		if r.Scope != AnySpan && r.Scope != RootSpan {
			errs = append(errs, fmt.Errorf("%s.scope: must be any or root", where))
		}
		p.rules = append(p.rules, cr)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	p.pool.New = func() any { return &evalCtx{res: make([]resMemo, p.nRes)} }
	return p, nil
}

// probThreshold is the rejection threshold of probability p on the 56-bit
// randomness of a trace ID (see ProbabilisticPolicy).
func probThreshold(p float64) uint64 {
	if p >= 1 {
		return 0
	}
	return uint64((1 - p) * maxRandomness)
}

// Name implements Policy.
func (p *RulesPolicy) Name() string { return "rules" }

// Decide implements Policy.
func (p *RulesPolicy) Decide(t *Trace) Verdict {
	e := p.pool.Get().(*evalCtx)
	e.t = t
	clear(e.res)
	defer func() {
		e.t = nil
		p.pool.Put(e)
	}()
	for i := range p.rules {
		r := &p.rules[i]
		if !r.matches(e, t) {
			continue
		}
		switch r.action {
		case ActionKeep:
			return Verdict{Decision: Keep, SampleRate: 1, Reason: r.reason}
		case ActionSample:
			if Randomness(t.ID) >= r.threshold {
				return Verdict{Decision: Keep, SampleRate: r.rate, Reason: r.reason}
			}
		}
		return Verdict{Decision: Drop, Reason: r.reason}
	}
	return Verdict{}
}

func (r *compiledRule) matches(e *evalCtx, t *Trace) bool {
	if r.scope == RootSpan {
		root := t.Root()
		return root != nil && r.cond.eval(e, root)
	}
	for i := range t.Spans {
		if r.cond.eval(e, &t.Spans[i]) {
			return true
		}
	}
	return false
}

// evalCtx is the scratch state of one Decide call, pooled so deciding does
// not allocate.
type evalCtx struct {
	t       *Trace
	scratch []byte
	res     []resMemo
}

// resMemo remembers one resource leaf's result for the last Scope it saw.
type resMemo struct {
	scope  *Scope
	result bool
}

// cond is a compiled Match.
type cond interface {
	eval(e *evalCtx, s *Span) bool
}

type allCond []cond
type anyCond []cond
type notCond struct{ c cond }

func (c allCond) eval(e *evalCtx, s *Span) bool {
	for _, x := range c {
		if !x.eval(e, s) {
			return false
		}
	}
	return true
}

func (c anyCond) eval(e *evalCtx, s *Span) bool {
	for _, x := range c {
		if x.eval(e, s) {
			return true
		}
	}
	return false
}

func (c notCond) eval(e *evalCtx, s *Span) bool { return !c.c.eval(e, s) }

// leaf tests one field with one comparison.
type leaf struct {
	field Field
	key   string
	op    Op
	str   []byte
	re    *regexp.Regexp
	num   float64
	memo  int // index into evalCtx.res, resource leaves only
}

func (p *RulesPolicy) compile(m *Match, where string) (cond, error) {
	n := 0
	if m.All != nil {
		n++
	}
	if m.Any != nil {
		n++
	}
	if m.Not != nil {
		n++
	}
	if m.Field != 0 {
		n++
	}
	if n != 1 {
		return nil, fmt.Errorf("%s: must be exactly one of all, any, not or a field condition", where)
	}
	var errs []error
	switch {
	case m.All != nil || m.Any != nil:
		list, name := m.All, "all"
		if m.Any != nil {
			list, name = m.Any, "any"
		}
		cs := make([]cond, 0, len(list))
		for i := range list {
			c, err := p.compile(&list[i], fmt.Sprintf("%s.%s[%d]", where, name, i))
			errs = append(errs, err)
			cs = append(cs, c)
		}
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		if name == "all" {
			return allCond(cs), nil
		}
		return anyCond(cs), nil
	case m.Not != nil:
		c, err := p.compile(m.Not, where+".not")
		if err != nil {
			return nil, err
		}
		return notCond{c}, nil
	}
	return p.compileLeaf(m, where)
}

func (p *RulesPolicy) compileLeaf(m *Match, where string) (cond, error) {
	l := &leaf{field: m.Field, key: m.Key, op: m.Op, str: []byte(m.Value), num: m.Number, memo: -1}
	where += "." + m.Field.String()
	switch m.Field {
	case FieldSpanAttr, FieldResourceAttr:
		if m.Key == "" {
			return nil, fmt.Errorf("%s: needs an attribute key", where)
		}
		where += "." + m.Key
		if m.Field == FieldResourceAttr {
			l.memo = p.nRes
			p.nRes++
		}
	case FieldSpanName, FieldService, FieldKind:
		if m.Op.numeric() {
			return nil, fmt.Errorf("%s: %s is numeric; allowed: equals, prefix, regex, exists", where, m.Op)
		}
	case FieldSpanCount, FieldDuration:
		if !m.Op.numeric() && m.Op != OpExists {
			return nil, fmt.Errorf("%s: %s is not numeric; allowed: gt, gte, lt, lte, eq", where, m.Op)
		}
	default:
		return nil, fmt.Errorf("%s: unknown field %d", where, m.Field)
	}
	switch m.Op {
	case OpRegex:
		re, err := regexp.Compile(m.Value)
		if err != nil {
			return nil, fmt.Errorf("%s.regex: %q does not compile: %v", where, m.Value, err)
		}
		l.re = re
	case OpEquals, OpPrefix, OpGT, OpGTE, OpLT, OpLTE, OpEQ, OpExists:
		if m.Op.numeric() && math.IsNaN(m.Number) {
			return nil, fmt.Errorf("%s.%s: NaN is not a number to compare with", where, m.Op)
		}
	default:
		return nil, fmt.Errorf("%s: unknown op %d", where, m.Op)
	}
	return l, nil
}

func (l *leaf) eval(e *evalCtx, s *Span) bool {
	switch l.field {
	case FieldSpanName:
		return l.test(e, otlpwire.Value{Type: otlpwire.ValueString, Str: s.Name()}, true)
	case FieldService:
		svc := ""
		if s.Scope != nil {
			svc = s.Scope.Service
		}
		return l.test(e, otlpwire.Value{Type: otlpwire.ValueString, Str: stringBytes(svc)}, svc != "")
	case FieldKind:
		return l.test(e, otlpwire.Value{Type: otlpwire.ValueString, Str: stringBytes(KindName(s.Kind()))}, true)
	case FieldSpanCount:
		return l.test(e, otlpwire.Value{Type: otlpwire.ValueInt, Num: uint64(len(e.t.Spans))}, true)
	case FieldDuration:
		return l.test(e, otlpwire.Value{Type: otlpwire.ValueInt, Num: uint64(s.Duration())}, true)
	case FieldSpanAttr:
		v, ok := s.Attr(l.key)
		return l.test(e, v, ok)
	case FieldResourceAttr:
		m := &e.res[l.memo]
		if m.scope != nil && m.scope == s.Scope {
			return m.result
		}
		v, ok := s.ResourceAttr(l.key)
		r := l.test(e, v, ok)
		m.scope, m.result = s.Scope, r
		return r
	}
	return false
}

// test compares a field's value; present is false when the field is absent,
// in which case only a negated condition can hold.
func (l *leaf) test(e *evalCtx, v otlpwire.Value, present bool) bool {
	if !present {
		return false
	}
	switch l.op {
	case OpExists:
		return true
	case OpEquals, OpPrefix, OpRegex:
		text := v.Str
		if v.Type != otlpwire.ValueString {
			e.scratch = v.AppendString(e.scratch[:0])
			text = e.scratch
		}
		switch l.op {
		case OpEquals:
			return bytes.Equal(text, l.str)
		case OpPrefix:
			return bytes.HasPrefix(text, l.str)
		}
		return l.re.Match(text)
	}
	f, ok := v.Float()
	if !ok {
		return false
	}
	switch l.op {
	case OpGT:
		return f > l.num
	case OpGTE:
		return f >= l.num
	case OpLT:
		return f < l.num
	case OpLTE:
		return f <= l.num
	case OpEQ:
		return f == l.num
	}
	return false
}

// String describes a Match for error messages and tests.
func (m Match) String() string {
	switch {
	case m.All != nil:
		return fmt.Sprintf("all%v", m.All)
	case m.Any != nil:
		return fmt.Sprintf("any%v", m.Any)
	case m.Not != nil:
		return "not(" + m.Not.String() + ")"
	}
	f := m.Field.String()
	if m.Key != "" {
		f += "." + m.Key
	}
	if m.Op.numeric() {
		return f + " " + m.Op.String() + " " + strconv.FormatFloat(m.Number, 'g', -1, 64)
	}
	return f + " " + m.Op.String() + " " + strconv.Quote(m.Value)
}

var _ Policy = (*RulesPolicy)(nil)
