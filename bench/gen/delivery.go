package gen

import (
	"container/heap"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"
)

// Delivery is traffic delivered as OpenTelemetry SDKs and a gateway
// Collector deliver it, in time: each service instance's SDK batches the
// spans that end and exports them on a timer of its own (the
// BatchSpanProcessor: every ExportInterval, at an independent random
// phase, or as soon as ExportMaxSpans are queued); a gateway Collector's
// batch processor gathers the exports for GatewayTimeout, or up to
// GatewayMaxSpans, and its kafka exporter writes each batch as records.
//
// This is what makes completion hard: a trace's root may be exported
// first and its downstream spans up to an export interval later, so a
// sampler that decides too soon after the root decides without them.
// Error traces carry their error only on spans outside the root's
// service, and some of them (LastShare) on the service instance that
// exports last.
type Delivery struct {
	// Config shapes the traces. ErrorShare is the share of error traces
	// among those with a span outside the root's service; SpansPerMessage
	// and Window are not used (the delivery decides what a record holds).
	Config
	// Rate is how many traces start per second (default 100), at
	// exponentially distributed intervals.
	Rate float64
	// ExportInterval is the SDKs' BatchSpanProcessor schedule delay
	// (default 5s, the OpenTelemetry SDKs' default).
	ExportInterval time.Duration
	// ExportMaxSpans exports an instance's queue at once when it holds
	// this many spans, and restarts its timer (default 512).
	ExportMaxSpans int
	// GatewayTimeout and GatewayMaxSpans are the gateway Collector's batch
	// processor timeout and send_batch_size (defaults 200ms and 8,192).
	GatewayTimeout  time.Duration
	GatewayMaxSpans int
	// ByTraceID is the kafka exporter's partition_traces_by_id: one record
	// per trace, keyed by its ID in lowercase hex. Otherwise a record is a
	// whole gateway batch, mixing traces, with an empty key.
	ByTraceID bool
	// LastShare is the share of error traces whose error is on the
	// service instance that exports the trace's spans last (default 0.5;
	// negative means none).
	LastShare float64
}

// Record is one Kafka record as the gateway's kafka exporter writes it.
type Record struct {
	Key   []byte // nil, or the trace ID in hex with ByTraceID
	Value []byte
	// At is when the exporter writes it, in the delivery's time (it starts
	// at Config.Start): the record's timestamp when produced in real time.
	At    time.Time
	Spans []SpanRef
}

// SpanRef says which trace a span of a record belongs to, for measuring
// arrival times.
type SpanRef struct {
	Trace [16]byte
	Root  bool
}

// WithDefaults returns d with zero fields set to their defaults.
func (d Delivery) WithDefaults() Delivery {
	d.Config = d.Config.WithDefaults()
	if d.Rate == 0 {
		d.Rate = 100
	}
	if d.ExportInterval == 0 {
		d.ExportInterval = 5 * time.Second
	}
	if d.ExportMaxSpans == 0 {
		d.ExportMaxSpans = 512
	}
	if d.GatewayTimeout == 0 {
		d.GatewayTimeout = 200 * time.Millisecond
	}
	if d.GatewayMaxSpans == 0 {
		d.GatewayMaxSpans = 8192
	}
	if d.LastShare == 0 {
		d.LastShare = 0.5
	}
	return d
}

func (d Delivery) validate() error {
	errs := []error{d.Config.validate()}
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !(d.Rate > 0) {
		bad("gen: Rate must be positive, got %v", d.Rate)
	}
	if d.ExportInterval <= 0 || d.GatewayTimeout <= 0 {
		bad("gen: ExportInterval and GatewayTimeout must be positive, got %v and %v", d.ExportInterval, d.GatewayTimeout)
	}
	if d.ExportMaxSpans < 1 || d.GatewayMaxSpans < 1 {
		bad("gen: ExportMaxSpans and GatewayMaxSpans must be positive, got %d and %d", d.ExportMaxSpans, d.GatewayMaxSpans)
	}
	if d.LastShare > 1 {
		bad("gen: LastShare must be at most 1, got %v", d.LastShare)
	}
	return errors.Join(errs...)
}

// Events of the delivery, in time order; at equal times, in this order.
const (
	evEnd    uint8 = iota // a span ends and joins its instance's queue
	evExport              // an instance's export timer fires
	evFlush               // the gateway's batch timer fires
	evStart               // a trace starts
)

type event struct {
	at   int64 // Unix nanoseconds
	kind uint8
	idx  int32  // instance (evExport), span in pending (evEnd)
	gen  uint32 // evExport: the instance's timer generation it was set in
	seq  uint64 // tie-break: order of scheduling
}

type events []event

func (h events) Len() int { return len(h) }
func (h events) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	if h[i].kind != h[j].kind {
		return h[i].kind < h[j].kind
	}
	return h[i].seq < h[j].seq
}
func (h events) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *events) Push(x any)   { *h = append(*h, x.(event)) }
func (h *events) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// sdk is one service instance's BatchSpanProcessor.
type sdk struct {
	queue []span
	next  int64  // when its timer fires next
	gen   uint32 // bumped when an export restarts the timer
}

// Deliver runs the delivery of d and calls emit with each record in time
// order, on the calling goroutine, as fast as it can: the caller paces it
// by Record.At if it wants real time (ProduceDelivery does). An error from
// emit stops it and is returned with the truth so far.
func Deliver(d Delivery, emit func(Record) error) (*Truth, error) {
	d = d.WithDefaults()
	if err := d.validate(); err != nil {
		return nil, err
	}
	cfg := d.Config
	cfg.ErrorShare = -1 // errors are placed here, outside the root's service
	g := newTraceGen(cfg)
	g.truth.LastExportErrors = map[[16]byte]int{}
	r := rand.New(rand.NewPCG(uint64(cfg.Seed), 0xde11_7e_5ca1e))
	enc := newEncoder(g.svcs)
	marshal := (&ptrace.ProtoMarshaler{}).MarshalTraces
	if cfg.Encoding == EncodingJSON {
		marshal = (&ptrace.JSONMarshaler{}).MarshalTraces
	}

	interval := int64(d.ExportInterval)
	t0 := cfg.Start.UnixNano()
	sdks := make([]sdk, len(g.svcs)*instances)
	var ev events
	var seq uint64
	push := func(e event) {
		seq++
		e.seq = seq
		heap.Push(&ev, e)
	}
	for i := range sdks {
		sdks[i].next = t0 + r.Int64N(interval)
		push(event{at: sdks[i].next, kind: evExport, idx: int32(i)})
	}
	push(event{at: t0, kind: evStart})

	var (
		pending   []span // spans not yet ended, by evEnd's idx
		free      []int32
		gateway   []span
		started   int
		inFlight  int // spans generated and not yet written
		flushDue  bool
		batchSpan []span
	)
	write := func(at int64, spans []span) error {
		rec := func(key []byte, spans []span) error {
			b, err := marshal(enc.encode(spans))
			if err != nil {
				return fmt.Errorf("gen: encoding record %d: %w", g.truth.Messages, err)
			}
			g.truth.Messages++
			refs := make([]SpanRef, len(spans))
			for i := range spans {
				refs[i] = SpanRef{Trace: spans[i].traceID, Root: spans[i].parent == [8]byte{}}
			}
			return emit(Record{Key: key, Value: b, At: time.Unix(0, at), Spans: refs})
		}
		inFlight -= len(spans)
		if !d.ByTraceID {
			return rec(nil, spans)
		}
		// One record per trace, in the order of each trace's first span.
		done := map[[16]byte]bool{}
		for i := range spans {
			id := spans[i].traceID
			if done[id] {
				continue
			}
			done[id] = true
			batchSpan = batchSpan[:0]
			for j := i; j < len(spans); j++ {
				if spans[j].traceID == id {
					batchSpan = append(batchSpan, spans[j])
				}
			}
			if err := rec([]byte(hex.EncodeToString(id[:])), batchSpan); err != nil {
				return err
			}
		}
		return nil
	}
	flush := func(at int64) error {
		for len(gateway) > 0 {
			n := min(len(gateway), d.GatewayMaxSpans)
			if err := write(at, gateway[:n]); err != nil {
				return err
			}
			gateway = gateway[n:]
		}
		gateway = nil
		flushDue = false
		return nil
	}
	export := func(at int64, s *sdk) error {
		if len(s.queue) == 0 {
			return nil
		}
		if !flushDue {
			flushDue = true
			push(event{at: at + int64(d.GatewayTimeout), kind: evFlush})
		}
		gateway = append(gateway, s.queue...)
		s.queue = s.queue[:0]
		if len(gateway) >= d.GatewayMaxSpans {
			n := len(gateway) / d.GatewayMaxSpans * d.GatewayMaxSpans
			if err := write(at, gateway[:n]); err != nil {
				return err
			}
			gateway = append([]span(nil), gateway[n:]...)
		}
		return nil
	}

	for ev.Len() > 0 {
		e := heap.Pop(&ev).(event)
		switch e.kind {
		case evStart:
			g.next = uint64(e.at)
			spans := g.trace()
			d.placeError(g, r, spans, sdks)
			inFlight += len(spans)
			for i := range spans {
				var k int32
				if n := len(free); n > 0 {
					k, free = free[n-1], free[:n-1]
					pending[k] = spans[i]
				} else {
					k = int32(len(pending))
					pending = append(pending, spans[i])
				}
				push(event{at: int64(spans[i].end), kind: evEnd, idx: k})
			}
			g.recycle(spans)
			if started++; started < cfg.Traces {
				gap := int64(r.ExpFloat64() / d.Rate * float64(time.Second))
				push(event{at: e.at + gap, kind: evStart})
			}
		case evEnd:
			s := pending[e.idx]
			free = append(free, e.idx)
			k := &sdks[int(s.svc)*instances+int(s.inst)]
			k.queue = append(k.queue, s)
			if len(k.queue) >= d.ExportMaxSpans {
				if err := export(e.at, k); err != nil {
					return g.truth, err
				}
				k.gen++
				k.next = e.at + interval
				push(event{at: k.next, kind: evExport, idx: int32(int(s.svc)*instances + int(s.inst)), gen: k.gen})
			}
		case evExport:
			k := &sdks[e.idx]
			if e.gen != k.gen {
				continue // the timer was restarted by an export at the size limit
			}
			if err := export(e.at, k); err != nil {
				return g.truth, err
			}
			if started >= cfg.Traces && inFlight == 0 {
				continue // everything written: the timers stop
			}
			k.next = e.at + interval
			push(event{at: k.next, kind: evExport, idx: e.idx, gen: k.gen})
		case evFlush:
			if err := flush(e.at); err != nil {
				return g.truth, err
			}
		}
	}
	return g.truth, nil
}

// placeError makes the trace of spans an error trace with d's share, if
// it has a span outside its root's service: one such span gets the error,
// for a LastShare of them on the instance outside the root's service that
// exports last (by the timers' current phases), which is recorded in
// Truth.LastExportErrors when it exports after the root's service too. All spans of a service in one trace are on one
// instance, as one request is served by one pod.
func (d *Delivery) placeError(g *traceGen, r *rand.Rand, spans []span, sdks []sdk) {
	var rootSvc int32 = -1
	var root *span
	inst := map[int32]uint8{}
	for i := range spans {
		s := &spans[i]
		if _, ok := inst[s.svc]; !ok {
			inst[s.svc] = uint8(r.IntN(instances))
		}
		s.inst = inst[s.svc]
		if s.parent == [8]byte{} {
			rootSvc, root = s.svc, s
		}
	}
	isErr := r.Float64() < d.ErrorShare
	last := r.Float64() < d.LastShare
	var outside []int
	for i := range spans {
		if spans[i].svc != rootSvc {
			outside = append(outside, i)
		}
	}
	if !isErr || len(outside) == 0 {
		return
	}
	pick := outside[r.IntN(len(outside))]
	if last {
		// The span whose instance's timer fires last after it ends; the
		// trace counts as erring on its last exporter only if no span of
		// the root's service is exported later.
		interval := int64(d.ExportInterval)
		exportAt := func(s *span) int64 {
			at := sdks[int(s.svc)*instances+int(s.inst)].next
			if end := int64(s.end); at < end {
				at += (end - at + interval - 1) / interval * interval
			}
			return at
		}
		var latest int64
		for _, i := range outside {
			if at := exportAt(&spans[i]); at > latest {
				latest, pick = at, i
			}
		}
		for i := range spans {
			if spans[i].svc == rootSvc && exportAt(&spans[i]) > latest {
				last = false
			}
		}
	}
	g.markError(&spans[pick], int8(r.IntN(len(errorMessages))))
	t := g.truth
	id := spans[pick].traceID
	t.ErrorTraces[id] = len(spans)
	rs := &g.svcs[root.svc]
	t.ErrorKeys[rs.name+" "+rs.routes[root.detail].template]++
	if last {
		t.LastExportErrors[id] = len(spans)
	}
}
