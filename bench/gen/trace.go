package gen

import (
	"math"
	"math/rand/v2"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"
)

// What a span does; it decides the kind, scope, name and attributes.
const (
	opServer   uint8 = iota // HTTP SERVER span
	opClient                // HTTP CLIENT span calling another service
	opDB                    // CLIENT span to the service's database
	opInternal              // INTERNAL span
	opProduce               // PRODUCER span publishing to the service's topic
	opConsume               // CONSUMER span processing a published message
)

var opKind = [...]ptrace.SpanKind{
	opServer:   ptrace.SpanKindServer,
	opClient:   ptrace.SpanKindClient,
	opDB:       ptrace.SpanKindClient,
	opInternal: ptrace.SpanKindInternal,
	opProduce:  ptrace.SpanKindProducer,
	opConsume:  ptrace.SpanKindConsumer,
}

var opScope = [...]uint8{
	opServer:   scopeHTTP,
	opClient:   scopeHTTP,
	opDB:       scopeDB,
	opInternal: scopeApp,
	opProduce:  scopeMessaging,
	opConsume:  scopeMessaging,
}

// span is one generated span waiting to be put in a message. It holds
// indices into the catalog rather than strings, so a trace's spans are
// small and built without allocation.
type span struct {
	traceID    [16]byte
	id, parent [8]byte
	start, end uint64 // unix nanoseconds
	svc        int32  // service the span belongs to
	peer       int32  // service called (opClient) or topic owner (opProduce, opConsume)
	op         uint8
	inst       uint8 // host of svc
	detail     uint8 // route (opServer, opClient), query (opDB) or internal name
	path       uint8 // url.path variant
	status     uint16
	errMsg     int8 // index into errorMessages, -1 if the span is not an error
	exception  bool // carries an exception event
}

// traceGen builds traces one at a time. It owns the random source, so the
// order of its calls is part of the output's determinism.
type traceGen struct {
	cfg   Config
	r     *rand.Rand
	svcs  []service
	next  uint64  // start of the next root, unix nanoseconds
	step  int64   // the next root starts 0..step ns after this one
	skew  float64 // exponent of the span-count distribution; see size
	free  [][]span
	par   []int32 // parent index of each span of the trace being built
	open  []int32 // spans that may get children
	truth *Truth
}

func newTraceGen(cfg Config) *traceGen {
	// Roots start 0..2ms apart, but spread over no more than about two
	// minutes, so that a big run's last traces are not far in the future.
	step := int64(2 * time.Millisecond)
	if cfg.Traces > 0 {
		step = min(step, int64(4*time.Minute)/int64(cfg.Traces))
	}
	return &traceGen{
		cfg:   cfg,
		r:     rand.New(rand.NewPCG(uint64(cfg.Seed), 0x7a11_5f7_9e3779b9)),
		svcs:  catalog(cfg.Services),
		next:  uint64(cfg.Start.UnixNano()),
		step:  max(step, 1),
		skew:  sizeSkew(cfg.SpansPerTrace),
		truth: newTruth(),
	}
}

// Span counts are skewed as in real traffic: one trace in 20 is a lone
// root span (a health check, a cache hit); the others have 2..3*mean
// spans, most of them few, drawn from a power of a uniform variable.
// sizeSkew picks skew so the mean comes out at SpansPerTrace.
func sizeSkew(mean int) float64 {
	if mean <= 2 {
		return 0 // unused: size handles small means directly
	}
	target := (float64(mean) - 0.05) / 0.95 // mean of the traces that are not lone roots
	// size returns 2 + floor(U^skew * (3*mean-1)), whose mean is about
	// 1.5 + (3*mean-1)/(skew+1).
	e := (target - 1.5) / float64(3*mean-1)
	return 1/e - 1
}

// size draws the number of spans of the next trace.
func (g *traceGen) size() int {
	m := g.cfg.SpansPerTrace
	switch {
	case m == 1 || g.r.IntN(20) == 0:
		return 1
	case m == 2:
		return 2
	}
	hi := 3 * m
	n := 2 + int(math.Pow(g.r.Float64(), g.skew)*float64(hi-1))
	return min(n, hi)
}

// id fills b with random bytes, never all zero: a zero ID is invalid in OTLP.
func (g *traceGen) id(b []byte) {
	for {
		var v uint64
		for i := range b {
			if i%8 == 0 {
				v = g.r.Uint64()
			}
			b[i] = byte(v)
			v >>= 8
		}
		for _, c := range b {
			if c != 0 {
				return
			}
		}
	}
}

// recycle returns a sent trace's span slice for reuse.
func (g *traceGen) recycle(s []span) { g.free = append(g.free, s[:0]) }

// rootDuration draws a root duration: log-normal around 40ms (most requests
// are quick, a few take a second), clipped to [5ms, NormalMax); or
// SlowMin..SlowMax for slow traces.
func (g *traceGen) rootDuration(slow bool) int64 {
	if slow {
		return int64(SlowMin) + g.r.Int64N(int64(SlowMax-SlowMin))
	}
	ms := math.Exp(math.Log(40) + 1.1*g.r.NormFloat64())
	d := int64(ms * float64(time.Millisecond))
	return min(max(d, int64(5*time.Millisecond)), int64(NormalMax)-int64(time.Millisecond))
}

// within draws a child window inside [start, end).
func (g *traceGen) within(start, end uint64) (uint64, uint64) {
	d := int64(end - start)
	off := g.r.Int64N(d/2 + 1)
	cd := int64(float64(d-off) * (0.1 + 0.85*g.r.Float64()))
	return start + uint64(off), start + uint64(off+cd)
}

// trace generates one trace, records it in the truth, and returns its spans
// in random order.
func (g *traceGen) trace() []span {
	r, cfg := g.r, &g.cfg
	var tid [16]byte
	g.id(tid[:])
	isErr := r.Float64() < cfg.ErrorShare
	isSlow := r.Float64() < cfg.SlowShare
	n := g.size()
	rootSvc := r.IntN(min(cfg.Services, entryServices))
	if cfg.Services > entryServices && r.IntN(5) == 0 {
		rootSvc = r.IntN(cfg.Services)
	}
	start := g.next
	g.next += uint64(r.Int64N(g.step + 1))

	var spans []span
	if k := len(g.free); k > 0 {
		spans, g.free = g.free[k-1], g.free[:k-1]
	}
	g.par, g.open = g.par[:0], g.open[:0]
	add := func(s span, parent int32, open bool) int32 {
		s.traceID = tid
		s.errMsg = -1
		s.inst = uint8(r.IntN(instances))
		g.id(s.id[:])
		if parent >= 0 {
			s.parent = spans[parent].id
		}
		spans = append(spans, s)
		g.par = append(g.par, parent)
		i := int32(len(spans) - 1)
		if open {
			g.open = append(g.open, i)
		}
		return i
	}

	rs := &g.svcs[rootSvc]
	rootRoute := r.IntN(len(rs.routes))
	add(span{
		svc: int32(rootSvc), op: opServer, detail: uint8(rootRoute), path: uint8(r.IntN(len(rs.routes[rootRoute].paths))),
		start: start, end: start + uint64(g.rootDuration(isSlow)), status: okStatus(rs.routes[rootRoute].method),
	}, -1, true)
	if !isErr && rs.routes[rootRoute].method == "GET" && r.IntN(100) == 0 {
		spans[0].status = 404 // a client error: per semconv not an error on a SERVER span
	}

	for len(spans) < n {
		pi := g.open[r.IntN(len(g.open))]
		p := spans[pi]
		ps := &g.svcs[p.svc]
		st, en := g.within(p.start, p.end)
		roll := r.IntN(100)
		switch {
		case roll < 55 && cfg.Services > 1:
			// A call: CLIENT span in the caller, SERVER span in the callee
			// a little inside it (the network).
			callee := r.IntN(cfg.Services - 1)
			if callee >= int(p.svc) {
				callee++
			}
			cs := &g.svcs[callee]
			rt := r.IntN(len(cs.routes))
			path := uint8(r.IntN(len(cs.routes[rt].paths)))
			status := okStatus(cs.routes[rt].method)
			ci := add(span{svc: p.svc, peer: int32(callee), op: opClient, detail: uint8(rt), path: path,
				start: st, end: en, status: status}, pi, false)
			if len(spans) < n {
				net := min((en-st)/10, uint64(r.Int64N(int64(500*time.Microsecond))))
				add(span{svc: int32(callee), op: opServer, detail: uint8(rt), path: path,
					start: st + net, end: en - net, status: status}, ci, true)
			}
		case roll < 75 && ps.db != "":
			add(span{svc: p.svc, op: opDB, detail: uint8(r.IntN(len(ps.queries))), start: st, end: en}, pi, false)
		case roll < 88:
			add(span{svc: p.svc, op: opInternal, detail: uint8(r.IntN(len(ps.internal))), start: st, end: en}, pi, true)
		default:
			// Publish to the service's topic and, when there is room, its
			// consumption by some service within the parent's window.
			owner := p.svc
			pend := st + (en-st)/8
			prod := add(span{svc: p.svc, peer: owner, op: opProduce, start: st, end: pend}, pi, false)
			if len(spans) < n {
				consumer := int32(r.IntN(cfg.Services))
				cst := pend + uint64(r.Int64N(int64(en-pend)/4+1))
				add(span{svc: consumer, peer: owner, op: opConsume, start: cst, end: cst + (en-cst)/2}, prod, true)
			}
		}
	}

	if isErr {
		// One error origin (sometimes two), each propagating up some of the
		// way: the root may or may not end up an error span.
		origins := 1 + r.IntN(3)/2
		for range origins {
			i := int32(r.IntN(len(spans)))
			msg := int8(r.IntN(len(errorMessages)))
			spans[i].exception = r.IntN(2) == 0
			for i >= 0 {
				g.markError(&spans[i], msg)
				if r.IntN(2) == 0 {
					break
				}
				i = g.par[i]
			}
		}
	}

	t := g.truth
	t.Traces++
	t.Spans += n
	t.SpansByTrace[tid] = n
	key := rs.name + " " + rs.routes[rootRoute].template
	t.ByService[rs.name]++
	t.ByRoute[key]++
	if isErr {
		t.ErrorTraces[tid] = n
		t.ErrorKeys[key]++
	}
	if isSlow {
		t.SlowTraces[tid] = n
	}

	r.Shuffle(len(spans), func(i, j int) { spans[i], spans[j] = spans[j], spans[i] })
	return spans
}

func (g *traceGen) markError(s *span, msg int8) {
	s.errMsg = msg
	if s.op == opServer || s.op == opClient {
		s.status = 500
	}
}

// okStatus is the HTTP status of a successful request.
func okStatus(method string) uint16 {
	if method == "POST" {
		return 201
	}
	return 200
}
